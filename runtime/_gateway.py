"""Gateway: chat channels in, agent sessions in the middle, replies out, over a MessageBus."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable
from urllib.parse import quote

import attrs
import pydantic_core
import trio

from ._bus import InboundMessage, MessageBus, OutboundMessage, Policy
from ._exceptions import ClosedBusError, ClosedSessionError
from ._idle import check_idle_timeout
from ._runtime import check_session_id, single_errors
from ._store import StoreError
from .events import (
    ErrorEvent,
    ReasoningDelta,
    Refusal,
    RunFinished,
    ToolCallStarted,
    ToolProgress,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from agents import Agent

    from ._runtime import Runtime, SessionHandle
    from ._stream import RunStream

logger = logging.getLogger("runtime")

BEST_EFFORT_TIMEOUT: Final = 0.05
"""Seconds a reasoning or progress message may wait for room on the bus before it is dropped."""

MAX_IN_FLIGHT: Final = 1000
"""The default of :func:`open_gateway`'s ``max_in_flight``."""
MAX_WAITING_PER_CHAT: Final = 16
"""The default of :func:`open_gateway`'s ``max_waiting_per_chat`` (served mode's ``max_queued_runs``)."""


@runtime_checkable
class Channel(Protocol):
    """A chat front end (webhook, WebSocket, a chat app), run by a :class:`Gateway`.

    ``run`` serves until cancelled: it publishes what people send with
    ``bus.publish_inbound`` and delivers ``bus.outbound(self.name)``. It calls
    ``task_status.started()`` only once it really serves (logged in,
    listening); login and reconnect-with-backoff are loops inside ``run``.
    """

    name: str

    async def run(self, bus: MessageBus, *, task_status: trio.TaskStatus[Any]) -> None:
        """Serve until cancelled (the gateway starts it with ``nursery.start``: no default is needed)."""
        ...


@attrs.frozen
class GatewayStatistics:
    """What :meth:`Gateway.statistics` returns."""

    sessions: int
    """Chats with a live session now."""
    handled: int
    """Inbound messages answered (with a reply or an error reply)."""
    best_effort_dropped: int
    """Reasoning and progress messages dropped because the bus had no room in time."""
    in_flight: int = 0
    """Messages taken from the bus and not answered yet (at most ``max_in_flight``)."""


@attrs.define(eq=False)
class _Slot:
    """One message's place under ``max_in_flight``, handed from the router to the task that answers it; given
    back once the message is answered (or given up), which lets its chat's next reply go out."""

    _gateway: Gateway
    _key: tuple[str, str]
    _before: _Slot | None
    """The chat's message before this one, while it is unanswered: this one's reply waits for its."""
    done: trio.Event = attrs.field(factory=trio.Event)
    _held: bool = True
    _in_line: bool = True
    """Counted among its chat's unanswered messages (not a message refused at once, out of its turn)."""

    async def wait_turn(self) -> None:
        """Wait until the chat's earlier messages are answered: a chat's replies go out in its messages' order
        (the error replies of a failed session's waiting messages, published by tasks of their own, too)."""
        before = self._before
        if before is not None:
            await before.done.wait()
            self._before = None  # (cancelled waiting, it still waits when its reply goes out from outside)

    def release(self) -> None:
        """Give the place back (once: whoever ends up holding it may call this)."""
        if self._held:
            self._held = False
            self._before = None
            self.done.set()
            gateway = self._gateway
            gateway._in_flight -= 1
            gateway._slots.release()
            if gateway._last.get(self._key) is self:
                del gateway._last[self._key]
            if self._in_line:
                left = gateway._unanswered[self._key] - 1
                if left:
                    gateway._unanswered[self._key] = left
                else:
                    del gateway._unanswered[self._key]


class Gateway:
    """Routes each inbound message to the session of its (channel, chat id) and publishes the reply.

    Made by :func:`open_gateway`.
    """

    def __init__(
        self,
        runtime: Runtime,
        agent: Agent[Any, Any],
        bus: MessageBus,
        idle_timeout: float | None,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_waiting_per_chat: int | None = MAX_WAITING_PER_CHAT,
    ) -> None:
        self.runtime = runtime
        self.agent = agent
        self.bus = bus
        self._idle_timeout = idle_timeout
        self._slots = trio.Semaphore(max_in_flight, max_value=max_in_flight)
        self._in_flight = 0  # slots given to messages (the router may hold one more, waiting for a message)
        self._nursery: trio.Nursery | None = None  # open_gateway's: error replies are published from it
        self._closing = False
        self._sessions: dict[tuple[str, str], SessionHandle] = {}
        # Chats whose session is being opened, and their messages in order (the first is the one opening it).
        self._opening: dict[tuple[str, str], deque[tuple[InboundMessage, _Slot]]] = {}
        self._last: dict[tuple[str, str], _Slot] = {}  # each chat's latest unanswered message
        self._unanswered: dict[tuple[str, str], int] = {}  # each chat's unanswered messages (those in line)
        self._max_waiting = max_waiting_per_chat
        self._ready: dict[str, trio.Event] = {}
        self._handled = 0
        self._dropped = 0

    def statistics(self) -> GatewayStatistics:
        """The counters, at any time."""
        live = sum(1 for handle in self._sessions.values() if not handle.closed)
        return GatewayStatistics(live, self._handled, self._dropped, self._in_flight)

    async def wait_ready(self, channel: str) -> None:
        """Wait until the channel of that name has started serving.

        Raises:
            ValueError: no channel of the gateway has that name.
        """
        await self._ready_event(channel).wait()

    def is_ready(self, channel: str) -> bool:
        """Whether the channel of that name has started serving.

        Raises:
            ValueError: no channel of the gateway has that name.
        """
        return self._ready_event(channel).is_set()

    def _ready_event(self, channel: str) -> trio.Event:
        try:
            return self._ready[channel]
        except KeyError:
            known = ", ".join(repr(name) for name in self._ready)
            raise ValueError(f"the gateway has no channel named {channel!r}; its channels: {known}") from None

    async def _start_channel(self, nursery: trio.Nursery, channel: Channel) -> None:
        # Each channel starts in a task of its own: one stuck logging in does
        # not hold up the others, and is cancelled with the gateway.
        await nursery.start(channel.run, self.bus)
        self._ready[channel.name].set()

    async def _route(self) -> None:
        async with self.bus.inbound() as inbound:
            while True:
                # A place first, then a message: with max_in_flight messages unanswered the router takes
                # no more, so the bus's inbound queue fills and its bound reaches the channels.
                await self._slots.acquire()
                try:
                    message = await inbound.receive()
                except trio.EndOfChannel:
                    self._slots.release()
                    return
                self._in_flight += 1
                key = (message.channel, message.chat_id)
                unanswered = self._unanswered.get(key, 0)
                if self._max_waiting is not None and unanswered > self._max_waiting:
                    # One chat (a flood, an agent that hangs) must not take every place: refused at once, out
                    # of its turn, so the refusal never waits behind the answers it is refused for.
                    text = (
                        f"too many messages waiting in this chat (at most {self._max_waiting} behind the one being "
                        "answered): send it again once the chat has been answered"
                    )
                    self._reply_error(message, text, _Slot(self, key, None, in_line=False))
                    continue
                self._unanswered[key] = unanswered + 1
                slot = self._last[key] = _Slot(self, key, self._last.get(key))
                waiting = self._opening.get(key)
                if waiting is not None:  # its session is being opened: after the messages already waiting
                    waiting.append((message, slot))
                    continue
                handle = self._sessions.get(key)
                if handle is not None and not handle.closed:
                    try:
                        await self._start_answer(handle, message, slot)
                        continue
                    except ClosedSessionError:
                        pass  # reaped as the message came: a fresh session, opened as any is
                # Opening a session may wait on its store (a claim, a long history to load, the last one's
                # tasks ending): in a task of its own, so other chats' messages go on; this chat's next ones
                # wait behind it, in order.
                nursery = self._nursery
                assert nursery is not None  # the router runs in it
                self._opening[key] = deque([(message, slot)])
                nursery.start_soon(self._open_and_dispatch, key, name=f"open the session of {key}")

    async def _open_and_dispatch(self, key: tuple[str, str]) -> None:
        """Dispatch a chat's messages in order, the first opening its session, those the router adds meanwhile
        after it; the chat's messages go straight to its session again once none waits here."""
        waiting = self._opening[key]
        try:
            while waiting:
                message, slot = waiting.popleft()
                try:
                    await self._dispatch(message, slot)
                except BaseException:
                    slot.release()  # the gateway is closing: nobody answers it (a slot given on is released once)
                    raise
        finally:
            del self._opening[key]
            for _, slot in waiting:
                slot.release()

    async def _dispatch(self, message: InboundMessage, slot: _Slot) -> None:
        """Start the answer to ``message`` in its chat's session; the slot goes with it once its run has begun."""
        for _ in range(2):  # a session reaped just as its message arrives: a fresh one
            try:
                handle = await self._session_for(message)
            except StoreError as exc:
                # This chat's session cannot be had (another process holds it, the store is down): that
                # chat gets an error reply, the others go on.
                self._reply_error(message, f"the chat's session could not be started: {exc}", slot)
                return
            try:
                await self._start_answer(handle, message, slot)
                return
            except ClosedSessionError:
                continue
        self._reply_error(message, "the chat's session was closed before the message could be answered", slot)

    async def _start_answer(self, handle: SessionHandle, message: InboundMessage, slot: _Slot) -> None:
        """Start the answer to ``message`` in ``handle``'s session.

        Raises:
            ClosedSessionError: the session was closed first; nothing was started, and ``slot`` is still the
                caller's.
        """
        # In use until its run has begun: the reaper cannot close it in between.
        with handle.session.in_use():
            await handle.session.start(self._answer, handle, message, slot)

    async def _session_for(self, message: InboundMessage) -> SessionHandle:
        key = (message.channel, message.chat_id)
        handle = self._sessions.get(key)
        if handle is not None:
            if not handle.closed:
                return handle
            # Closed, its tasks still ending (a hook's second of grace, a resource closing): with a store, its
            # claim is let go only once they have, and opening it again before that would find it taken.
            await handle.session.wait_closed()
        handle = await self.runtime.start_session(
            self.agent, session_id=_session_id(message.channel, message.chat_id), idle_timeout=self._idle_timeout
        )
        self._sessions[key] = handle
        # Forgotten once closed (reaped, failed): a chat gone quiet keeps nothing, its history least of all.
        handle.session.call_when_closed(functools.partial(self._forget, key, handle))
        return handle

    def _forget(self, key: tuple[str, str], handle: SessionHandle) -> None:
        if self._sessions.get(key) is handle:
            del self._sessions[key]

    def _reply_error(self, message: InboundMessage, text: str, slot: _Slot) -> None:
        """Publish an error reply to ``message`` from a task of the gateway, then release its slot."""
        self._reply_outside(OutboundMessage(message.channel, message.chat_id, text, "error", message.message_id), slot)

    def _reply_outside(self, reply: OutboundMessage, slot: _Slot) -> None:
        """Publish ``reply`` from a task of the gateway, then release its slot.

        Not from the chat's session: this is how a message whose session is failing or closed still
        gets its answer. Nothing is sent once the gateway is closing.
        """
        if self._closing or self._nursery is None:
            slot.release()
            return
        self._nursery.start_soon(self._publish_reply, reply, slot, name=f"reply to {reply.reply_to}")

    async def _publish_reply(self, reply: OutboundMessage, slot: _Slot) -> None:
        try:
            await slot.wait_turn()
            await self.bus.publish_outbound(reply, policy="block")
        except ClosedBusError:
            return
        finally:
            slot.release()
        self._handled += 1

    async def _answer(
        self, handle: SessionHandle, message: InboundMessage, slot: _Slot, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Run the agent on one message (runs of a chat are served in order by its session).

        The reply is the run's output (the final answer's text, or a stop hook's message); for a typed
        output, the validated value as JSON; for a refusal, the refusal. Tool calls and tool progress go
        out as best-effort progress messages. A run cut short (its session failed or was closed) gets an
        error reply, published from outside the session. Once the run has begun, ``slot`` is this
        task's to release.
        """
        began = answered = False
        reply: OutboundMessage | None = None
        try:
            # In use until the reply is out, not only while the run lasts: reaping the session in between
            # would cancel a reply still waiting for room on the bus.
            with handle.session.in_use():
                # A chat cannot answer a tool's question: it gets ElicitationUnavailable (an approval, a
                # refusal) at once, not a wait that would hold the chat for good.
                async with handle.session.run(message.text, answerable=False) as stream:
                    task_status.started()  # the run is in the session: from now on it keeps the session
                    began = True
                    ended = await self._follow(message, stream)
                if ended is None:
                    return  # cancelled: the error reply goes out below, from outside the session
                reply = _reply(message, stream, *ended)
                try:
                    # The reply waits for its turn and for room, bounded by the session's scope (closing it
                    # cancels the wait).
                    await slot.wait_turn()
                    await self.bus.publish_outbound(reply, policy="block")
                    self._handled += 1
                except ClosedBusError:
                    pass
                answered = True
        finally:
            if not began:
                pass  # the router still holds the slot: start() raises, and it tries a fresh session
            elif answered:
                slot.release()
            elif reply is not None:  # the session closed while the reply waited for room: it goes out anyway
                self._reply_outside(reply, slot)
            else:
                why = "failed" if handle.session.error is not None else "was closed"
                self._reply_error(message, f"the chat's session {why} before the message was answered", slot)

    async def _follow(self, message: InboundMessage, stream: RunStream) -> tuple[str | None, str | None] | None:
        """Pass the run's extras on as best-effort messages; returns ``(given, error)`` as it ended, or ``None``
        if it was cancelled.

        ``given`` is a reply the run gave as it ended (a refusal, a stop hook's message); ``error`` what
        went wrong, if anything did.
        """
        given: str | None = None
        error: str | None = None
        stalled = False  # once one extra was dropped, the rest of this answer's extras don't wait at all
        async for event in stream:
            if isinstance(event, ReasoningDelta):
                sent = await self._best_effort(message, "reasoning", event.text, stalled)
                stalled = stalled or not sent
            elif isinstance(event, ToolCallStarted):
                sent = await self._best_effort(message, "progress", f"calling {event.name}", stalled)
                stalled = stalled or not sent
            elif isinstance(event, ToolProgress):
                sent = await self._best_effort(message, "progress", _progress_text(event), stalled)
                stalled = stalled or not sent
            elif isinstance(event, Refusal):
                given = event.text or "(the model declined to answer)"
            elif isinstance(event, ErrorEvent):
                error = event.message
            elif isinstance(event, RunFinished):
                if event.reason == "cancelled":
                    return None
                if event.reason == "hook_stop":
                    given = event.message  # a stop hook's message is the reply, typed output or not
                elif event.reason not in ("completed", "refusal") and error is None:
                    # It ended short of an answer with no ErrorEvent (max_turns): say so, as MCP does.
                    error = f"the run ended: {event.reason}" + (f": {event.message}" if event.message else "")
        return given, error

    async def _best_effort(
        self, message: InboundMessage, kind: Literal["reasoning", "progress"], text: str, stalled: bool
    ) -> bool:
        """Publish a reasoning or progress message if there is room soon; returns whether it went out."""
        extra = OutboundMessage(message.channel, message.chat_id, text, kind, message.message_id)
        policy: Policy = "drop" if stalled else BEST_EFFORT_TIMEOUT
        try:
            if await self.bus.publish_outbound(extra, policy=policy, on_timeout="drop"):
                return True
        except ClosedBusError:
            pass
        self._dropped += 1
        return False


def _reply(message: InboundMessage, stream: RunStream, given: str | None, error: str | None) -> OutboundMessage:
    """The answer to ``message``: the run's output (or what it gave as it ended), or an error reply."""
    output = stream.result.output
    text = given if given is not None else output if isinstance(output, str) or output is None else None
    if text is None:
        try:
            text = pydantic_core.to_json(output, fallback=str).decode()
        except (ValueError, RecursionError) as exc:  # PydanticSerializationError is a ValueError
            error = error or f"the answer could not be sent as JSON: {exc}"
    if error is not None:
        return OutboundMessage(message.channel, message.chat_id, error, "error", message.message_id)
    return OutboundMessage(message.channel, message.chat_id, text or "", "reply", message.message_id)


def _session_id(channel: str, chat_id: str) -> str:
    """The id of the session of chat ``chat_id`` on ``channel``: one per pair, never the same for two.

    ``channel:chat_id`` when the channel's name has no ``:`` (as ever: sessions stored under those ids
    stay theirs). Otherwise ``channel:chat_id`` could be another pair's (``a`` + ``x:y``, ``a:x`` + ``y``):
    both parts are percent-encoded and joined by ``/``, an id with no ``:`` at all, so it is no other's.
    A client picks the chat id: one that makes an id no session may have (NUL, a lone surrogate, over
    :data:`MAX_SESSION_ID_BYTES`) gets ``chat-`` and the SHA-256 of the pair, the same every time, with
    neither ``:`` nor ``/``, so no other's either.
    """
    try:
        if ":" not in channel:
            natural = f"{channel}:{chat_id}"
        else:
            natural = f"{quote(channel, safe='')}/{quote(chat_id, safe='')}"  # UTF-8: a lone surrogate raises
        check_session_id(natural)
    except ValueError:  # UnicodeEncodeError too
        pair = json.dumps([channel, chat_id]).encode()  # ASCII (lone surrogates escaped): one text per pair
        return f"chat-{hashlib.sha256(pair).hexdigest()}"
    return natural


def _progress_text(event: ToolProgress) -> str:
    done = f"{event.progress:g}" if event.total is None else f"{event.progress:g}/{event.total:g}"
    return f"{event.message} ({done})" if event.message else f"progress {done}"


@asynccontextmanager
async def open_gateway(
    runtime: Runtime,
    agent: Agent[Any, Any],
    channels: Sequence[Channel],
    *,
    bus: MessageBus | None = None,
    idle_timeout: float | None = 600.0,
    max_in_flight: int = MAX_IN_FLIGHT,
    max_waiting_per_chat: int | None = MAX_WAITING_PER_CHAT,
) -> AsyncIterator[Gateway]:
    """Run ``channels`` and answer their chats with ``agent`` until the block exits.

    Channels start concurrently (``gateway.wait_ready(name)`` waits for
    one); each chat gets a session of ``runtime``, reaped after
    ``idle_timeout`` seconds (above zero; ``None``: never) without a message. Its id is
    ``"{channel}:{chat_id}"`` (for a channel whose name has a ``:``, both
    parts percent-encoded and joined by ``/``, so no two chats share one);
    a chat id that would make an id no session may have (NUL, a lone
    surrogate, over 1,024 bytes) gets ``"chat-"`` and the SHA-256 of the
    pair instead: its chat is answered, in the same session each time.
    A chat whose session cannot be started (with a store: another process
    holds it, the store is down) gets an error reply; the others go on.

    At most ``max_in_flight`` messages are being answered (or waiting for
    their chat's earlier ones) at a time; past that the gateway takes no
    more from the bus, whose inbound queue then fills, so channels see the
    bus's bound. Of those, at most ``max_waiting_per_chat`` may be one
    chat's messages waiting behind the one of it being answered: past that,
    a message of that chat gets an error reply at once (a chat that floods,
    or whose agent hangs, cannot take the places of every other chat;
    ``None``: no limit). Leaving the block cancels the channels and closes
    the bus (and its chats' sessions).

    Raises:
        ValueError: channel names are not unique, ``max_in_flight`` is below 1, ``max_waiting_per_chat`` is
            below 0, or ``idle_timeout`` is not above zero (NaN included) or ``None``.

    Example::

        async with open_runtime() as runtime, open_gateway(runtime, agent, [WebhookChannel(port=8080)]) as gw:
            await gw.wait_ready("webhook")
            await trio.sleep_forever()
    """
    names = [channel.name for channel in channels]
    if len(set(names)) != len(names):
        raise ValueError(f"channel names must be unique: {names}")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
    if max_waiting_per_chat is not None and not max_waiting_per_chat >= 0:  # NaN too: no limit, silently
        raise ValueError(f"max_waiting_per_chat must be at least 0 (or None), not {max_waiting_per_chat}")
    check_idle_timeout(idle_timeout)
    bus = bus if bus is not None else MessageBus()
    gateway = Gateway(runtime, agent, bus, idle_timeout, max_in_flight, max_waiting_per_chat)
    try:
        async with single_errors(), trio.open_nursery() as nursery:
            gateway._nursery = nursery
            for channel in channels:
                gateway._ready[channel.name] = trio.Event()
                bus.outbound(channel.name)  # its queue exists before its first reply
                nursery.start_soon(gateway._start_channel, nursery, channel, name=f"channel {channel.name}")
            nursery.start_soon(gateway._route, name="gateway router")
            try:
                yield gateway
            finally:
                gateway._closing = True  # runs cancelled from here on are the gateway's doing: no error replies
                nursery.cancel_scope.cancel()
    finally:
        bus.close()
        for handle in list(gateway._sessions.values()):  # (each forgets itself as it closes)
            await handle.aclose()
