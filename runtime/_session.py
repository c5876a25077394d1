"""Session: one conversation with an agent, and the nursery that owns its tasks."""

from __future__ import annotations

import itertools
import logging
from collections import deque
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

import trio

from ._exceptions import ClosedSessionError, ReentrantRunError, RunFailedError
from ._latch import Latch
from ._loop import AgentRun
from ._stream import RunStream
from .events import Event

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import httpx

    from agents import Agent, Message

    from ._result import RunResult

logger = logging.getLogger("runtime")

DEFAULT_EVENT_BUFFER: Final = 64
"""Events a run may send ahead of its consumer before it waits for it."""

# The sessions whose runs the current task is part of: a tool calling run()
# on its own session would wait forever for the run slot its run holds.
_RUNNING_IN: ContextVar[tuple[Session, ...]] = ContextVar("trio_agents_running_in", default=())


class _RunSlot:
    """The session's FIFO run slot: one run at a time, in the order runs were started.

    This is the one lock held across awaits (DESIGN.md rule 4): its holder is
    a run, which closing the session always cancels. A run that finds the
    slot free takes it with no ticket (``None``); the others queue an event,
    set when their turn comes.
    """

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: deque[trio.Event] | None = None

    def take_ticket(self) -> trio.Event | None:
        if not self._held:
            self._held = True
            return None
        ticket = trio.Event()
        if self._waiters is None:
            self._waiters = deque()
        self._waiters.append(ticket)
        return ticket

    def release(self, ticket: trio.Event | None) -> None:
        if ticket is not None and not ticket.is_set():
            # It left the queue before its turn (cancelled while waiting).
            assert self._waiters is not None
            self._waiters.remove(ticket)
            return
        if self._waiters:
            self._waiters.popleft().set()  # the slot passes on, still held
        else:
            self._held = False


class Session:
    """One conversation with an agent; made by ``Runtime.open_session`` or ``start_session``.

    The session owns a nursery in its runtime: its runs, and any task given to
    :meth:`start_soon` or :meth:`start`, live there and are cancelled when the
    session closes. Runs are served one at a time, in the order :meth:`run`
    was called, and share the session's :attr:`history`.
    """

    __slots__ = (
        "__weakref__",
        "_became_idle",
        "_close_requested",
        "_closed",
        "_error",
        "_event_buffer",
        "_finished",
        "_history",
        "_http_client",
        "_last_active",
        "_nursery",
        "_parked",
        "_pending",
        "_ready",
        "_registry",
        "_run_count",
        "_runs_in_flight",
        "_slot",
        "agent",
        "id",
    )

    _ids = itertools.count(1)

    def __init__(
        self,
        agent: Agent,
        *,
        http_client: httpx.AsyncClient | None,
        event_buffer: int = DEFAULT_EVENT_BUFFER,
        session_id: str | None = None,
        registry: set[Session] | None = None,
    ) -> None:
        self.agent = agent
        """The agent every run of this session runs."""
        self.id = session_id or f"s{next(self._ids)}"
        """Unique within the process unless given."""
        self._http_client = http_client
        self._event_buffer = event_buffer
        self._history: list[Message] = []
        self._slot = _RunSlot()
        self._run_count = 0
        self._nursery: trio.Nursery | None = None
        # Tasks started before the session's own task has opened its nursery.
        self._pending: list[tuple[Callable[..., Awaitable[object]], tuple[object, ...], str | None]] = []
        self._ready = Latch()
        self._registry = registry if registry is not None else set()
        self._registry.add(self)
        self._closed = False
        self._close_requested = False
        self._parked: trio.lowlevel.Task | None = None
        self._finished = Latch()
        self._error: BaseException | None = None
        self._runs_in_flight = 0
        self._last_active = trio.current_time()
        self._became_idle: trio.Event | None = None

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

    def run(self, user_input: str, *, deps: Any = None) -> RunStream:
        """Run the agent on ``user_input``, streaming its events.

        Use the returned :class:`RunStream` as ``async with session.run(...)
        as stream:``. The run's task lives in the session's nursery; the block
        holds the receiving side. Leaving the block early cancels the run;
        once the block has exited, the run's task has finished and its
        channel is closed. Runs wait for the session's run slot in FIFO order
        (the order in which their blocks were entered).

        Example::

            async with session.run("What is 2 + 2?") as stream:
                async for event in stream:
                    print(event)

        Args:
            user_input: What the user said.
            deps: Anything; tools and hooks see it as ``ctx.deps``.

        Raises:
            ClosedSessionError: (on entering) the session is closed.
            ReentrantRunError: (on entering) inside one of this session's own runs.
        """
        return RunStream(self, user_input, deps)

    def _start_run(self, user_input: str, deps: Any) -> tuple[trio.MemoryReceiveChannel[Event], AgentRun]:
        """Start a run's task in the session's nursery (called by RunStream.__aenter__)."""
        if self in _RUNNING_IN.get():
            raise ReentrantRunError(
                f"{self!r}: run() was called from inside one of its own runs, which would wait "
                "forever for the run slot; use another session"
            )
        self._check_open()
        send, receive = trio.open_memory_channel[Event](self._event_buffer)
        self._run_count += 1
        run = AgentRun(
            run_id=f"{self.id}-r{self._run_count}",
            agent=self.agent,
            session=self,
            user_input=user_input,
            deps=deps,
            history=self._history,
            http_client=self._http_client,
            send=send,
        )
        ticket = self._slot.take_ticket()
        self._runs_in_flight += 1
        try:
            self._spawn(self._serve_run, (run, send, ticket), f"run {run.run_id}")
        except BaseException:
            self._run_ended(ticket)
            send.close()
            receive.close()
            raise
        return receive, run

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
        self._spawn(async_fn, args, name)

    async def start(self, async_fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None) -> Any:
        """Start a task in the session's nursery and wait until it calls ``task_status.started()``.

        Returns:
            The value passed to ``task_status.started()``.

        Raises:
            ClosedSessionError: the session is closed.
        """
        self._check_open()
        await self._ready.wait()
        self._check_open()
        assert self._nursery is not None
        return await self._nursery.start(async_fn, *args, name=name)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedSessionError(f"{self!r} is closed")

    def _spawn(self, async_fn: Callable[..., Awaitable[object]], args: tuple[object, ...], name: str | None) -> None:
        """Start a task in the session's nursery, or as soon as the nursery exists."""
        self._check_open()
        if self._nursery is None:
            self._pending.append((async_fn, args, name))
        else:
            self._nursery.start_soon(async_fn, *args, name=name)

    async def _serve_run(self, run: AgentRun, send: trio.MemorySendChannel[Event], ticket: trio.Event | None) -> None:
        _RUNNING_IN.set((*_RUNNING_IN.get(), self))
        try:
            with send, run.cancel_scope:
                if ticket is not None:
                    await ticket.wait()
                await run.drive()
        finally:
            self._run_ended(ticket)
            run.done.set()

    def _run_ended(self, ticket: trio.Event | None) -> None:
        self._slot.release(ticket)
        self._runs_in_flight -= 1
        self._last_active = trio.current_time()
        if self._runs_in_flight == 0 and self._became_idle is not None:
            self._became_idle.set()

    async def _serve(self, idle_timeout: float | None, log_failure: bool) -> None:
        """The session's life, run as a task of the runtime's nursery.

        A failure of one of its tasks ends the session only; it is kept on the
        session (and logged if ``log_failure``, when nobody will re-raise it).
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if idle_timeout is not None:
                    nursery.start_soon(self._close_when_idle, idle_timeout)
                for async_fn, args, name in self._pending:
                    nursery.start_soon(async_fn, *args, name=name)
                self._pending.clear()
                self._ready.set()
                # Closing is a request, not a cancellation of this task: the
                # body returns normally, and only the tasks the session still
                # owns are cancelled. (An idle session then closes without
                # raising anything: no Cancelled, no exception group.)
                await self._wait_for_close_request()
                nursery.cancel_scope.cancel()
        except* Exception as failure:
            self._error = failure
            if log_failure:
                logger.error("session %s failed", self.id, exc_info=failure)
        finally:
            self._mark_finished()

    async def _close_when_idle(self, idle_timeout: float) -> None:
        while True:
            if self._runs_in_flight:
                self._became_idle = trio.Event()
                await self._became_idle.wait()
                self._became_idle = None
                continue
            deadline = self._last_active + idle_timeout
            if trio.current_time() >= deadline:
                break
            await trio.sleep_until(deadline)
        self._request_close()

    def _request_close(self) -> None:
        self._closed = True
        if not self._close_requested:
            self._close_requested = True
            if self._parked is not None:
                trio.lowlevel.reschedule(self._parked)
                self._parked = None

    async def _wait_for_close_request(self) -> None:
        # What trio.Event.wait does, minus the Event: an idle session's task
        # is the bulk of its memory, and 10,000 idle sessions are a workload.
        if self._close_requested:
            return
        self._parked = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_wait)

    def _abort_wait(self, raise_cancel: object) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _mark_finished(self) -> None:
        self._closed = True
        self._registry.discard(self)
        self._ready.set()  # wakes start() callers, which then see the session closed
        self._finished.set()

    async def _aclose(self) -> None:
        """Close the session and wait until every task it owns has finished."""
        self._request_close()
        if self._finished.is_set():
            return
        if not self._pending and (self._nursery is None or not self._nursery.child_tasks):
            # It owns no task: nothing to wait for. (Its own task, owned by the
            # runtime, just returns when it next runs.)
            self._mark_finished()
            return
        with trio.CancelScope(shield=True):
            await self._finished.wait()
