"""Session: one conversation with an agent, and the nursery that owns its tasks."""

from __future__ import annotations

import itertools
from collections import deque
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

import trio

from ._exceptions import ClosedSessionError, ReentrantRunError, RunFailedError
from ._loop import AgentRun
from ._stream import RunStream
from .events import Event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import httpx

    from agents import Agent, Message

    from ._result import RunResult

DEFAULT_EVENT_BUFFER: Final = 64
"""Events a run may send ahead of its consumer before it waits for it."""

# The sessions whose runs the current task is part of: a tool calling run()
# on its own session would wait forever for the run slot its run holds.
_RUNNING_IN: ContextVar[frozenset[Session]] = ContextVar("trio_agents_running_in", default=frozenset())


class _RunSlot:
    """The session's FIFO run slot: one run at a time, in the order run() was called.

    Tickets are events; the head of the queue holds the slot. This is the one
    lock held across awaits (DESIGN.md rule 4): its holder is a run, which
    closing the session always cancels.
    """

    def __init__(self) -> None:
        self._queue: deque[trio.Event] = deque()

    def take_ticket(self) -> trio.Event:
        ticket = trio.Event()
        self._queue.append(ticket)
        if len(self._queue) == 1:
            ticket.set()
        return ticket

    def release(self, ticket: trio.Event) -> None:
        was_head = self._queue[0] is ticket
        self._queue.remove(ticket)
        if was_head and self._queue:
            self._queue[0].set()


class Session:
    """One conversation with an agent; made by ``Runtime.open_session`` or ``start_session``.

    The session owns a nursery in its runtime: its runs, and any task given to
    :meth:`start_soon` or :meth:`start`, live there and are cancelled when the
    session closes. Runs are served one at a time, in the order :meth:`run`
    was called, and share the session's :attr:`history`.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        agent: Agent,
        *,
        http_client: httpx.AsyncClient | None,
        event_buffer: int = DEFAULT_EVENT_BUFFER,
        session_id: str | None = None,
    ) -> None:
        self.agent = agent
        """The agent every run of this session runs."""
        self.id = session_id or f"s{next(self._ids)}"
        """Unique within the process unless given."""
        self._http_client = http_client
        self._event_buffer = event_buffer
        self._history: list[Message] = []
        self._slot = _RunSlot()
        self._run_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._finished = trio.Event()
        self._error: BaseException | None = None
        self._runs_in_flight = 0
        self._last_active = 0.0
        self._became_idle = trio.Event()

    def __repr__(self) -> str:
        return f"<Session {self.id} agent={self.agent.name!r}{' closed' if self._closed else ''}>"

    @property
    def history(self) -> tuple[Message, ...]:
        """The conversation so far: every run's messages, oldest first."""
        return tuple(self._history)

    @property
    def closed(self) -> bool:
        """Whether the session has been closed (no new runs or tasks are accepted)."""
        return self._closed

    @asynccontextmanager
    async def run(self, user_input: str, *, deps: Any = None) -> AsyncIterator[RunStream]:
        """Run the agent on ``user_input``, streaming its events.

        The run's task lives in the session's nursery; this block holds the
        receiving side. Leaving the block early cancels the run; once the
        block has exited, the run's task has finished and its channel is
        closed. Runs wait for the session's run slot in FIFO order.

        Example::

            async with session.run("What is 2 + 2?") as stream:
                async for event in stream:
                    print(event)

        Args:
            user_input: What the user said.
            deps: Anything; tools and hooks see it as ``ctx.deps``.

        Raises:
            ClosedSessionError: the session is closed.
            ReentrantRunError: called from inside one of this session's own runs.
        """
        if self in _RUNNING_IN.get():
            raise ReentrantRunError(
                f"{self!r}: run() was called from inside one of its own runs, which would wait "
                "forever for the run slot; use another session"
            )
        nursery = self._open_nursery()
        send, receive = trio.open_memory_channel[Event](self._event_buffer)
        run = AgentRun(
            run_id=f"{self.id}-r{next(self._run_ids)}",
            agent=self.agent,
            session=self,
            user_input=user_input,
            deps=deps,
            history=self._history,
            http_client=self._http_client,
            send=send,
        )
        scope = trio.CancelScope()
        done = trio.Event()
        ticket = self._slot.take_ticket()
        self._runs_in_flight += 1
        try:
            nursery.start_soon(self._serve_run, run, send, scope, ticket, done, name=f"run {run.run_id}")
        except BaseException:
            self._run_ended(ticket)
            send.close()
            receive.close()
            raise
        try:
            yield RunStream(receive, run)
        finally:
            # Cancel, then wait until the task has finished (it always finishes
            # promptly once cancelled), and only then close our side.
            scope.cancel()
            with trio.CancelScope(shield=True):
                await done.wait()
            receive.close()

    async def ask(self, user_input: str, *, deps: Any = None) -> RunResult:
        """Run the agent on ``user_input`` and return the result, without streaming.

        Returns:
            The :class:`RunResult`; its ``reason`` is ``completed``,
            ``max_turns`` or ``hook_stop``.

        Raises:
            RunFailedError: the run ended with ``error`` or ``timeout``.
            ClosedSessionError: the session was closed before or during the run.
            ReentrantRunError: called from inside one of this session's own runs.
        """
        async with self.run(user_input, deps=deps) as stream:
            async for _ in stream:
                pass
        result = stream.result
        if result.reason in ("error", "timeout"):
            error = result.error
            raise RunFailedError(
                error.message if error else f"the run ended with {result.reason}",
                kind=error.kind if error else result.reason,
                result=result,
            )
        if result.reason == "cancelled":
            raise ClosedSessionError(f"{self!r} was closed during the run")
        return result

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None) -> None:
        """Start a task in the session's nursery; it is cancelled when the session closes.

        If it raises, the session fails: its other tasks are cancelled and the
        error reaches whoever owns the session (never another session).

        Raises:
            ClosedSessionError: the session is closed.
        """
        self._open_nursery().start_soon(async_fn, *args, name=name)

    async def start(self, async_fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None) -> Any:
        """Start a task in the session's nursery and wait until it calls ``task_status.started()``.

        Returns:
            The value passed to ``task_status.started()``.

        Raises:
            ClosedSessionError: the session is closed.
        """
        return await self._open_nursery().start(async_fn, *args, name=name)

    def _open_nursery(self) -> trio.Nursery:
        if self._closed or self._nursery is None:
            raise ClosedSessionError(f"{self!r} is closed")
        return self._nursery

    async def _serve_run(
        self,
        run: AgentRun,
        send: trio.MemorySendChannel[Event],
        scope: trio.CancelScope,
        ticket: trio.Event,
        done: trio.Event,
    ) -> None:
        _RUNNING_IN.set(_RUNNING_IN.get() | {self})
        try:
            with send, scope:
                await ticket.wait()
                await run.drive()
        finally:
            self._run_ended(ticket)
            done.set()

    def _run_ended(self, ticket: trio.Event) -> None:
        self._slot.release(ticket)
        self._runs_in_flight -= 1
        self._last_active = trio.current_time()
        if self._runs_in_flight == 0:
            self._became_idle.set()

    async def _serve(self, idle_timeout: float | None, *, task_status: trio.TaskStatus[None]) -> None:
        """The session's life, run as a task of the runtime's nursery."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._last_active = trio.current_time()
                if idle_timeout is not None:
                    nursery.start_soon(self._close_when_idle, idle_timeout)
                task_status.started()
                await trio.sleep_forever()
        except* Exception as failure:
            self._error = failure
        finally:
            self._closed = True
            self._finished.set()

    async def _close_when_idle(self, idle_timeout: float) -> None:
        while True:
            if self._runs_in_flight:
                self._became_idle = trio.Event()
                await self._became_idle.wait()
                continue
            deadline = self._last_active + idle_timeout
            if trio.current_time() >= deadline:
                break
            await trio.sleep_until(deadline)
        self._cancel()

    def _cancel(self) -> None:
        self._closed = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _aclose(self) -> None:
        """Close the session and wait until every task it owns has finished."""
        self._cancel()
        with trio.CancelScope(shield=True):
            await self._finished.wait()
