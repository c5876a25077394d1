"""Gateway: chat channels in, agent sessions in the middle, replies out, over a MessageBus."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

import attrs
import pydantic_core
import trio

from ._bus import InboundMessage, MessageBus, OutboundMessage, Policy
from ._exceptions import ClosedBusError, ClosedSessionError
from ._runtime import single_errors
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

logger = logging.getLogger("runtime")

BEST_EFFORT_TIMEOUT: Final = 0.05
"""Seconds a reasoning or progress message may wait for room on the bus before it is dropped."""


@runtime_checkable
class Channel(Protocol):
    """A chat front end (webhook, WebSocket, a chat app), run by a :class:`Gateway`.

    ``run`` serves until cancelled: it publishes what people send with
    ``bus.publish_inbound`` and delivers ``bus.outbound(self.name)``. It calls
    ``task_status.started()`` only once it really serves (logged in,
    listening); login and reconnect-with-backoff are loops inside ``run``.
    """

    name: str

    async def run(self, bus: MessageBus, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled."""
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


class Gateway:
    """Routes each inbound message to the session of its (channel, chat id) and publishes the reply.

    Made by :func:`open_gateway`.
    """

    def __init__(self, runtime: Runtime, agent: Agent[Any, Any], bus: MessageBus, idle_timeout: float | None) -> None:
        self.runtime = runtime
        self.agent = agent
        self.bus = bus
        self._idle_timeout = idle_timeout
        self._sessions: dict[tuple[str, str], SessionHandle] = {}
        self._ready: dict[str, trio.Event] = {}
        self._handled = 0
        self._dropped = 0
        self._prune_at = 64

    def statistics(self) -> GatewayStatistics:
        """The counters, at any time."""
        live = sum(1 for handle in self._sessions.values() if not handle.closed)
        return GatewayStatistics(live, self._handled, self._dropped)

    async def wait_ready(self, channel: str) -> None:
        """Wait until the channel of that name has started serving."""
        await self._ready[channel].wait()

    def is_ready(self, channel: str) -> bool:
        """Whether the channel of that name has started serving."""
        return self._ready[channel].is_set()

    async def _start_channel(self, nursery: trio.Nursery, channel: Channel) -> None:
        # Each channel starts in a task of its own: one stuck logging in does
        # not hold up the others, and is cancelled with the gateway.
        await nursery.start(channel.run, self.bus)
        self._ready[channel.name].set()

    async def _route(self) -> None:
        async with self.bus.inbound() as inbound:
            async for message in inbound:
                for _ in range(2):  # a session reaped just as its message arrives: a fresh one
                    handle = await self._session_for(message)
                    try:
                        # In use until its run has begun: the reaper cannot close it in between.
                        with handle.session.in_use():
                            await handle.session.start(self._answer, handle, message)
                        break
                    except ClosedSessionError:
                        continue

    async def _session_for(self, message: InboundMessage) -> SessionHandle:
        key = (message.channel, message.chat_id)
        handle = self._sessions.get(key)
        if handle is not None and not handle.closed:
            return handle
        if len(self._sessions) >= self._prune_at:
            # Forget reaped chats now and then (amortized O(1)), so the map
            # tracks live chats, not every chat ever seen.
            self._sessions = {k: h for k, h in self._sessions.items() if not h.closed}
            self._prune_at = max(64, 2 * len(self._sessions))
        handle = await self.runtime.start_session(
            self.agent, session_id=f"{message.channel}:{message.chat_id}", idle_timeout=self._idle_timeout
        )
        self._sessions[key] = handle
        return handle

    async def _answer(
        self, handle: SessionHandle, message: InboundMessage, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Run the agent on one message (runs of a chat are served in order by its session).

        The reply is the run's output (the final answer's text, or a stop hook's message); for a typed
        output, the validated value as JSON; for a refusal, the refusal. Tool calls and tool progress go
        out as best-effort progress messages.
        """
        given: str | None = None  # a reply the run gave as it ended: a refusal, a stop hook's message
        error: str | None = None
        stalled = False  # once one extra was dropped, the rest of this answer's extras don't wait at all
        async with handle.session.run(message.text) as stream:
            task_status.started()  # the run is in the session: from now on it keeps the session
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
                        return
                    if event.reason == "hook_stop":
                        given = event.message  # a stop hook's message is the reply, typed output or not
                    elif event.reason not in ("completed", "refusal") and error is None:
                        # It ended short of an answer with no ErrorEvent (max_turns): say so, as MCP does.
                        error = f"the run ended: {event.reason}" + (f": {event.message}" if event.message else "")
        output = stream.result.output
        text = given if given is not None else output if isinstance(output, str) or output is None else None
        if text is None:
            try:
                text = pydantic_core.to_json(output, fallback=str).decode()
            except (ValueError, RecursionError) as exc:  # PydanticSerializationError is a ValueError
                error = error or f"the answer could not be sent as JSON: {exc}"
        if error is not None:
            reply = OutboundMessage(message.channel, message.chat_id, error, "error", message.message_id)
        else:
            reply = OutboundMessage(message.channel, message.chat_id, text or "", "reply", message.message_id)
        try:
            # The reply waits for room, bounded by the session's scope (closing it cancels the wait).
            await self.bus.publish_outbound(reply, policy="block")
        except ClosedBusError:
            return
        self._handled += 1

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
) -> AsyncIterator[Gateway]:
    """Run ``channels`` and answer their chats with ``agent`` until the block exits.

    Channels start concurrently (``gateway.wait_ready(name)`` waits for
    one); each chat gets a session of ``runtime``, reaped after
    ``idle_timeout`` seconds without a message. Leaving the block cancels the
    channels and closes the bus (and its chats' sessions).

    Example::

        async with open_runtime() as runtime, open_gateway(runtime, agent, [WebhookChannel(port=8080)]) as gw:
            await gw.wait_ready("webhook")
            await trio.sleep_forever()
    """
    names = [channel.name for channel in channels]
    if len(set(names)) != len(names):
        raise ValueError(f"channel names must be unique: {names}")
    bus = bus if bus is not None else MessageBus()
    gateway = Gateway(runtime, agent, bus, idle_timeout)
    try:
        async with single_errors(), trio.open_nursery() as nursery:
            for channel in channels:
                gateway._ready[channel.name] = trio.Event()
                bus.outbound(channel.name)  # its queue exists before its first reply
                nursery.start_soon(gateway._start_channel, nursery, channel, name=f"channel {channel.name}")
            nursery.start_soon(gateway._route, name="gateway router")
            try:
                yield gateway
            finally:
                nursery.cancel_scope.cancel()
    finally:
        bus.close()
        for handle in gateway._sessions.values():
            await handle.aclose()
