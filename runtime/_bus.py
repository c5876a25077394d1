"""MessageBus: bounded inbound and outbound queues between chat channels and the gateway."""

from __future__ import annotations

import itertools
from typing import Literal, TypeAlias, TypeVar

import attrs
import trio

from ._exceptions import ClosedBusError, PublishTimeoutError

Policy: TypeAlias = Literal["block", "drop"] | float
"""How a publish waits for room: ``"block"`` (as long as the caller's cancel
scope allows), ``"drop"`` (never waits), or a number of seconds (then
``on_timeout`` decides: raise ``PublishTimeoutError``, or drop)."""

_M = TypeVar("_M", "InboundMessage", "OutboundMessage")

_message_ids = itertools.count(1)
_Queue: TypeAlias = "tuple[trio.MemorySendChannel[OutboundMessage], trio.MemoryReceiveChannel[OutboundMessage]]"


@attrs.frozen
class InboundMessage:
    """A message from a person, as a channel received it."""

    channel: str
    """The channel's name: replies go back through it."""
    chat_id: str
    """The conversation it belongs to; one session per (channel, chat_id)."""
    text: str
    message_id: str = attrs.field(factory=lambda: f"m{next(_message_ids)}")
    """Unique in the process; replies refer to it."""


@attrs.frozen
class OutboundMessage:
    """Something for a channel to deliver to a chat."""

    channel: str
    chat_id: str
    text: str
    kind: Literal["reply", "reasoning", "progress", "error"] = "reply"
    """``reply`` ends the answer to ``reply_to``; the others are best-effort extras."""
    reply_to: str | None = None
    """The ``message_id`` of the inbound message this answers."""


@attrs.frozen
class DirectionStatistics:
    """Counters of one direction of the bus."""

    published: int
    """Messages accepted into the queue."""
    dropped: int
    """Messages not accepted: no room with the drop policy, a timeout set to drop, or no such channel."""
    timed_out: int
    """Publishes whose timeout expired (dropped or raised)."""
    buffered: int
    """Messages waiting in the queue now."""


@attrs.frozen
class BusStatistics:
    """What :meth:`MessageBus.statistics` returns."""

    inbound: DirectionStatistics
    outbound: DirectionStatistics


@attrs.define(eq=False)
class _Direction:
    size: int
    published: int = 0
    dropped: int = 0
    timed_out: int = 0

    async def publish(
        self,
        send: trio.MemorySendChannel[_M] | None,
        message: _M,
        policy: Policy,
        on_timeout: Literal["raise", "drop"],
    ) -> bool:
        if policy != "block" and policy != "drop":
            if isinstance(policy, bool) or not isinstance(policy, int | float) or not policy >= 0:
                raise ValueError(f"policy must be 'block', 'drop' or seconds to wait (0 or more), not {policy!r}")
        if on_timeout != "raise" and on_timeout != "drop":
            raise ValueError(f"on_timeout must be 'raise' or 'drop', not {on_timeout!r}")
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancel point, even when it never waits
        if send is None:
            self.dropped += 1
            return False
        try:
            if policy == "drop":
                try:
                    send.send_nowait(message)
                except trio.WouldBlock:
                    self.dropped += 1
                    return False
            elif policy == "block":
                await send.send(message)
            else:
                timed_out = False
                try:
                    send.send_nowait(message)  # room now: published, whatever the wait allowed (0 s too)
                except trio.WouldBlock:
                    with trio.move_on_after(policy) as deadline:
                        await send.send(message)
                    timed_out = deadline.cancelled_caught
                if timed_out:
                    self.timed_out += 1
                    if on_timeout == "raise":
                        raise PublishTimeoutError(f"no room on the bus within {policy}s")
                    self.dropped += 1
                    return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ClosedBusError("the message bus is closed") from None
        self.published += 1
        return True


class MessageBus:
    """Bounded queues: one inbound (channels → gateway), one outbound per channel (gateway → channel).

    Every publish states its policy (see :data:`Policy`); nothing is ever
    buffered beyond the sizes given here, and counters say what was
    dropped. Closing the bus ends every consumer's ``async for``.

    Raises:
        ValueError: a size is below 0 (0: a publish waits for its consumer).

    Example::

        bus = MessageBus(inbound_size=100, outbound_size=100)
        await bus.publish_inbound(InboundMessage("webhook", "chat-1", "hi"), policy=0.5)
    """

    def __init__(self, *, inbound_size: int = 100, outbound_size: int = 100) -> None:
        # Checked here, both: an outbound size is used only when a channel's queue is made, far from the mistake.
        for name, size in (("inbound_size", inbound_size), ("outbound_size", outbound_size)):
            if not size >= 0:  # NaN too
                raise ValueError(f"{name} must be 0 or more, not {size!r}")
        self._inbound_send, self._inbound_receive = trio.open_memory_channel[InboundMessage](inbound_size)
        self._outbound: dict[str, _Queue] = {}
        self._in = _Direction(inbound_size)
        self._out = _Direction(outbound_size)
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def publish_inbound(
        self, message: InboundMessage, *, policy: Policy, on_timeout: Literal["raise", "drop"] = "raise"
    ) -> bool:
        """Queue a message for the gateway. Returns False if it was dropped.

        Raises:
            PublishTimeoutError: no room within the timeout, and ``on_timeout="raise"``.
            ClosedBusError: the bus is closed.
            ValueError: ``policy`` is none of those of :data:`Policy`, or ``on_timeout`` neither of its two.
        """
        self._check_open()
        return await self._in.publish(self._inbound_send, message, policy, on_timeout)

    async def publish_outbound(
        self, message: OutboundMessage, *, policy: Policy, on_timeout: Literal["raise", "drop"] = "raise"
    ) -> bool:
        """Queue a message for the channel that owns its chat. Returns False if it was dropped.

        A message for a channel that has not called :meth:`outbound` is dropped (and counted).

        Raises:
            PublishTimeoutError: no room within the timeout, and ``on_timeout="raise"``.
            ClosedBusError: the bus is closed.
            ValueError: ``policy`` is none of those of :data:`Policy`, or ``on_timeout`` neither of its two.
        """
        self._check_open()
        pair = self._outbound.get(message.channel)
        send = pair[0] if pair is not None else None
        return await self._out.publish(send, message, policy, on_timeout)

    def inbound(self) -> trio.MemoryReceiveChannel[InboundMessage]:
        """The gateway's side: inbound messages, until the bus is closed."""
        return self._inbound_receive

    def outbound(self, channel: str) -> trio.MemoryReceiveChannel[OutboundMessage]:
        """A channel's side: the messages for its chats, until the bus is closed."""
        if channel not in self._outbound:
            self._outbound[channel] = trio.open_memory_channel[OutboundMessage](self._out.size)
            if self._closed:
                self._outbound[channel][0].close()
        return self._outbound[channel][1]

    def statistics(self) -> BusStatistics:
        """The counters, at any time."""
        buffered_out = sum(receive.statistics().current_buffer_used for _, receive in self._outbound.values())
        return BusStatistics(
            inbound=DirectionStatistics(
                self._in.published, self._in.dropped, self._in.timed_out,
                self._inbound_receive.statistics().current_buffer_used,
            ),
            outbound=DirectionStatistics(self._out.published, self._out.dropped, self._out.timed_out, buffered_out),
        )  # fmt: skip

    def close(self) -> None:
        """Close the bus: consumers drain what is queued, then their loops end; publishing raises."""
        self._closed = True
        self._inbound_send.close()
        for send, _ in self._outbound.values():
            send.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedBusError("the message bus is closed")
