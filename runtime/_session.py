"""Session: one conversation with an agent, and the tasks it owns."""

from __future__ import annotations

import functools
import logging
import secrets
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

import attrs
import trio

from agents._agent import OutputT
from agents._content import Content, user_content

from ._bridge import ElicitationBridge, clear_target
from ._exceptions import (
    ClosedSessionError,
    NothingToResumeError,
    ReentrantRunError,
    RunFailedError,
)
from ._handlers import Handler, Overflow, StreamHandler, Tee
from ._journal import CLOSE_FLUSH_TIMEOUT, Recorder, run_input_to_json
from ._loop import AgentRun
from ._pipe import EventPipe
from ._resources import DEFAULT_CLOSE_TIMEOUT, SessionResource, open_resource
from ._run_slot import RunSlot
from ._store import RunRow
from ._stream import RunStream
from ._tally import UsageTally
from ._task_group import TaskGroup
from .events import RunFinished

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
    from contextlib import AbstractAsyncContextManager

    import httpx

    from agents import Agent, ElicitationAction, Message, RunUsage, UserContent

    from ._idle import IdleReaper
    from ._journal import Journal, Resumption, Suspended
    from ._latch import Latch
    from ._result import RunResult
    from ._tracing import Tracing
    from .events import ElicitationRequest, Event

logger = logging.getLogger("runtime")

T = TypeVar("T")

DEFAULT_EVENT_BUFFER: Final = 256
"""Events a run may send ahead of its consumer before it waits for it.

About one network read of a token stream (64 KiB of SSE is 200-300 tokens):
the run hands a read's tokens over in one go instead of waiting for the
consumer several times per read. The buffer grows only while the consumer
is behind."""

# The sessions whose runs the current task is part of: a tool calling run()
# on its own session would wait forever for the run slot its run holds.
_RUNNING_IN: ContextVar[tuple[Session[Any], ...]] = ContextVar("trio_agents_running_in", default=())


class Session(Generic[OutputT]):
    """One conversation with an agent; made by ``Runtime.open_session`` or ``start_session``.

    Generic in the agent's output type: ``ask`` returns a ``RunResult[OutputT]``.

    The session owns tasks: its runs and any task given to
    :meth:`start_soon` or :meth:`start`. Each runs in the runtime's nursery
    inside a cancel scope the session holds, so closing the session cancels
    them and waits until they have finished, and a task that raises closes
    its own session, never another. (A session has no task of its own: an
    idle one costs a few objects, not a task.) Runs are served one at a time,
    in the order :meth:`run` blocks were entered, and share :attr:`history`.
    """

    __slots__ = (
        "__weakref__",
        "_close_callbacks",
        "_event_buffer",
        "_handlers",
        "_history",
        "_http_client",
        "_idle",
        "_journal",
        "_registry",
        "_resources",
        "_run_count",
        "_runs_in_flight",
        "_runtime_done",
        "_slot",
        "_suspended",
        "_tasks",
        "_tracing",
        "_usage",
        "agent",
        "elicitation",
        "id",
    )

    def __init__(
        self,
        agent: Agent[Any, OutputT],
        nursery: trio.Nursery,
        *,
        http_client: httpx.AsyncClient | None = None,
        event_buffer: int = DEFAULT_EVENT_BUFFER,
        session_id: str | None = None,
        registry: set[Session[Any]] | None = None,
        idle_timeout: float | None = None,
        reaper: IdleReaper | None = None,
        log_failure: bool = False,
        restored: Restored | None = None,
        tracing: Tracing | None = None,
        runtime_done: Latch | None = None,
    ) -> None:
        self.agent = agent
        """The agent every run of this session runs."""
        self.id = session_id or new_session_id()
        """Unique across processes and restarts unless given (a durable session is found again by it)."""
        self.elicitation = ElicitationBridge()
        """Routes its tools' questions to the consumer of the run they belong to."""
        self._http_client = http_client
        self._tracing = tracing
        self._runtime_done = runtime_done  # set once the nursery its tasks run in has closed
        self._event_buffer = event_buffer
        self._handlers: list[StreamHandler] = []
        self._slot = RunSlot()
        self._usage = UsageTally(agent.session_usage_limits)
        if restored is None:
            self._history: list[Message] = []
            self._run_count = 0
            self._journal: Journal | None = None
            self._suspended: Suspended | None = None
        else:
            self._history = restored.history
            self._run_count = restored.runs
            self._journal = restored.journal
            self._suspended = restored.suspended
            restored.journal.track_usage(self._usage)
        self._tasks = TaskGroup(
            nursery, on_error=self._log_failure if log_failure else None, on_finished=self._unregister
        )
        self._runs_in_flight = 0
        self._close_callbacks: list[Callable[[], object]] | None = None
        self._registry = registry if registry is not None else set()
        self._registry.add(self)
        self._resources: dict[Hashable, SessionResource[Any]] | None = None  # made by the first resource()
        # The runtime's reaper closes it once idle for idle_timeout (it has no task of its own for that).
        self._idle = None if idle_timeout is None or reaper is None else (reaper, idle_timeout)
        if self._idle is not None:
            self._idle[0].watch(self._idle[1], self._reap)

    def __repr__(self) -> str:
        return f"<Session {self.id} agent={self.agent.name!r}{' closed' if self._tasks.closed else ''}>"

    @property
    def history(self) -> tuple[Message, ...]:
        """The conversation so far: every run's messages, oldest first."""
        return tuple(self._history)

    @property
    def pending(self) -> tuple[ElicitationRequest, ...]:
        """The questions an interrupted run was waiting on when its process stopped (a durable session's).

        Answer them with :meth:`resume` (``answers``), or in the stream of the
        next :meth:`resume` or :meth:`run`, where they are asked again with the
        same ids. Empty when nothing waits.
        """
        return () if self._suspended is None else self._suspended.requests()

    @property
    def suspended_run(self) -> str | None:
        """The id of the interrupted run that :meth:`resume` continues, if one waits for answers."""
        return None if self._suspended is None else self._suspended.run_id

    @property
    def run_count(self) -> int:
        """Runs started in this session so far (a durable session's earlier processes' included)."""
        return self._run_count

    @property
    def durable(self) -> bool:
        """Whether the session lives in a store (``open_runtime(store=...)``)."""
        return self._journal is not None

    @property
    def usage(self) -> RunUsage:
        """What all runs of this session have spent so far (checked against ``Agent.session_usage_limits``)."""
        return self._usage.snapshot()

    @property
    def handlers(self) -> tuple[StreamHandler, ...]:
        """The stream handlers attached now (:meth:`add_handler`), with their counters (``statistics()``)."""
        return tuple(self._handlers)

    @property
    def closed(self) -> bool:
        """Whether the session has been closed (no new runs or tasks are accepted)."""
        return self._tasks.closed

    @property
    def error(self) -> Exception | None:
        """What made the session fail, if one of its own tasks raised (else ``None``)."""
        return self._tasks.error

    def cancel(self) -> None:
        """Close the session without waiting: refuse new runs and tasks, and cancel every task it owns.

        Each run it cancels ends with ``RunFinished("cancelled")``. Idempotent.
        """
        self._tasks.cancel()

    async def aclose(self) -> None:
        """Close the session and wait until every task it owns has finished.

        Idempotent; it completes even if the caller is cancelled. Called from inside the session (a
        stream handler, a task of :meth:`start_soon`, a tool, a hook), it waits for every other task: the
        one it runs in is cancelled, and ends at its next checkpoint. Nor does it wait for a task of the
        session that waits for the caller (leaving a run block of the caller's run, closing the caller's
        session: two sessions whose tools close each other): cancelled, that task ends once the caller has,
        and waiting for it would wait for ever.
        """
        await self._tasks.aclose()

    async def wait_closed(self) -> None:
        """Wait until the session has been closed, by anyone, and every task it owned has finished."""
        await self._tasks.wait_finished()

    async def _runs_stored(self) -> None:
        """Wait until the runs started so far (their rows) are in the store; returns at once in memory.

        For served mode's ``202``: a run's id it answers survives a restart, and is never given to another run.

        Raises:
            StoreUnavailableError: the store failed to write them (they are kept, and written once it can).
        """
        if self._journal is not None:
            await self._journal.flush()

    async def wait_released(self) -> None:
        """Wait until a closed durable session is let go: what it left written, its lock released.

        Closing does not wait for that: a session's last changes go with the
        writer's next group commit, and its lock with them, so another process
        (or runtime) opening it a moment after it closed may still find it
        owned. Wait for this first to hand it over at once (served mode's
        ``DELETE`` does). Returns at once for a session in memory, and without
        waiting while the store is failing (the lock is let go with the last
        changes, or when the runtime exits); waits at most
        ``CLOSE_FLUSH_TIMEOUT`` (10 s) otherwise. Waits for the session to
        close first.
        """
        journal = self._journal
        if journal is None:
            return
        await self.wait_closed()
        if journal.released.is_set() or journal.writer.failure is not None:
            return
        journal.writer.mark(journal, urgent=True)  # no group-commit delay: someone waits for it
        with trio.move_on_after(CLOSE_FLUSH_TIMEOUT):
            await journal.released.wait()

    def call_when_closed(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once the session has been closed and every task it owned has finished.

        For what must follow a session without a task of its own waiting for
        it (served mode ends a session's streams this way). Callbacks run in
        the order given, in whichever task finishes last, before
        :meth:`wait_closed` returns; they must not block. One that raises is
        logged, and the others still run. Given after that point, the callback
        runs at once.
        """
        if self._tasks.finished:
            _call_logged(callback, self.id)
        elif self._close_callbacks is None:
            self._close_callbacks = [callback]
        else:
            self._close_callbacks.append(callback)

    def run(self, user_input: UserContent, *, deps: Any = None, answerable: bool = True) -> RunStream[OutputT]:
        """Run the agent on ``user_input``, streaming its events.

        Use the returned :class:`RunStream` as ``async with session.run(...)
        as stream:``. The run's task is owned by the session (see the class
        docstring); the block holds the receiving side. Leaving the block early cancels the run;
        once the block has exited, the run's task has finished and its
        channel is closed. Runs wait for the session's run slot in FIFO order
        (the order in which their blocks were entered).

        Example::

            async with session.run("What is 2 + 2?") as stream:
                async for event in stream:
                    print(event)

            async with session.run(["What is in it?", ImagePart(url=photo_url)]) as stream:
                ...

        Args:
            user_input: What the user said: text, or a sequence of text and content
                parts (:class:`~agents.ImagePart`, :class:`~agents.DocumentPart` ...;
                a plain ``str`` item is a text part).
            deps: Anything; tools and hooks see it as ``ctx.deps``.
            answerable: Whether this block answers the run's questions (``respond``). ``False`` for a
                consumer that only watches (a chat channel, a log): a tool's ``ctx.elicit`` then raises
                ``ElicitationUnavailable`` at once and a call needing approval is refused, as under
                :meth:`ask`, instead of waiting for an answer that never comes.

        Raises:
            TypeError, ValueError: (at once) ``user_input`` is not text or parts, or is no parts at all.
            ClosedSessionError: (on entering) the session is closed.
            ReentrantRunError: (on entering) inside one of this session's own runs, or one of its
                stream handlers with ``overflow="block"``.
        """
        return RunStream(
            self,
            Session._start_run,
            user_content(user_input),
            deps,
            left=Session._became_unused,
            answerable=answerable,
        )

    def resume(
        self, answers: Mapping[str, tuple[ElicitationAction, Any]] | None = None, *, deps: Any = None
    ) -> RunStream[OutputT]:
        """Continue the run that was interrupted while it waited for answers (see :attr:`pending`).

        The resuming run is a new run (its ``RunStarted`` names the run it
        resumes in ``resumes``): the tool calls that were waiting are called
        again, a pending question they ask again (the same message, schema and
        agent: a sub-agent they run asks its own) answered from ``answers``
        (by question id: ``(action, content)``) or asked again on this stream
        with its old id, and the loop goes on
        from there; the model is not asked again for the turn that made those
        calls. From the moment it starts, this stream lists the questions not
        answered in ``answers`` (``pending_elicitations``; :attr:`pending` is
        then empty) and takes their answers (``respond``), even before their
        calls ask them again. An answer given either way is checked when its
        question is asked again, by the tool's own schema as a live answer is
        (the tool gets its pydantic model, say); one it refuses is not given:
        the question is asked again on this stream with its id. :meth:`run`
        does the same first when a run is suspended, then adds its user's
        message. A resuming run that ends
        before it has made those calls leaves the session suspended.

        Tools that can be resumed this way are those that may be called again:
        anything a tool does before its question happens twice, so it must be
        idempotent.

        Example::

            async with runtime.open_session(agent, session_id="s-42") as session:
                for question in session.pending:
                    print(question.message)
                async with session.resume({question.id: ("accept", None)}) as stream:
                    async for event in stream:
                        ...

        Raises:
            NothingToResumeError: (on entering) no run of this session waits for answers.
            UnknownElicitationError: (on entering) an answer names no pending question.
            InvalidElicitationResponse: (on entering) an answer's action is not ``accept``, ``decline`` or
                ``cancel``.
        """
        return RunStream(
            self, functools.partial(Session._start_run, answers=answers or {}), None, deps, left=Session._became_unused
        )

    def _start_run(
        self,
        user_input: Content | None,
        deps: Any,
        answerable: bool,
        answers: Mapping[str, tuple[ElicitationAction, Any]] | None = None,
    ) -> AgentRun:
        """Start a run's task, owned by this session (RunStream.__aenter__ calls it)."""
        if self in _RUNNING_IN.get():
            raise ReentrantRunError(
                f"{self!r}: run() was called from inside one of its own runs (or a block stream handler), "
                "which would wait forever for the run slot; use another session"
            )
        self._check_open()
        suspended = self._suspended
        taken = None
        queued = self._slot.runs() > 0  # it waits for its turn
        if answers is not None:  # resume(): it takes the interrupted run now (a second resume() is refused)
            if suspended is None:
                raise NothingToResumeError(f"{self!r} has no interrupted run waiting for answers")
            taken = (suspended, suspended.resumption(answers))  # refuses answers that fit no question
            self._suspended = None
        elif suspended is not None and not queued:
            # A run that starts now resumes it, so a resume() right after it cannot take it too (a run
            # that waits for its turn takes it then, if nothing took it first: _begin).
            taken = (suspended, suspended.resumption(None))
            self._suspended = None
        events: EventPipe[Event] = EventPipe(self._event_buffer)  # not EventPipe[Event](): typing's call is slow
        self._run_count += 1
        run_id = f"{self.id}-r{self._run_count}"
        journal = self._journal
        row = None
        if journal is not None:
            # The run's row and its user's message are written before its RunStarted (drive() waits for it).
            # A run that waits for its turn says where its message goes when its turn comes (_begin): until
            # then, after the whole history.
            if queued:
                row = RunRow(run_id, self._run_count, run_input_to_json(user_input, None), "running")
            else:
                resumes = None if suspended is None else suspended.run_id
                row = RunRow(
                    run_id,
                    self._run_count,
                    run_input_to_json(user_input, len(self._history)),
                    "running",
                    resumes=resumes,
                )
            journal.run_row(row)
        run = AgentRun(
            run_id=run_id,
            agent=self.agent,
            session=self,
            user_input=user_input,
            deps=deps,
            history=self._history,
            http_client=self._http_client,
            events=events,
            bridge=self.elicitation,
            # Its tools may ask the human only while a consumer streams the run.
            consumer=events if answerable else None,
            session_usage=self._usage,
            journal=journal,
            tracing=self._tracing,
        )
        if taken is not None:  # its questions are answerable from now on, not from its turn (_begin)
            run.resume(taken[1])
        ticket = self._slot.take_ticket()
        # In use (not reaped) until both its task has ended and its consumer has left its block (RunStream
        # calls _became_unused): a consumer may still be reading buffered events after the task ended.
        self._runs_in_flight += 2
        try:
            self._tasks.start_soon(
                self._serve_run,
                run,
                events,
                ticket,
                None if journal is None else (row if queued else None, user_input, taken),
                name=f"run {run.run_id}",
                scope=run.cancel_scope,
            )
        except BaseException:
            if taken is not None:  # it never ran: the interrupted run still waits
                self._suspended = taken[0]
            self._run_ended(ticket)
            self._became_unused()  # nor will the block be left: it was never entered
            events.close_sender()
            events.close_receiver()
            raise
        return run

    async def ask(self, user_input: UserContent, *, deps: Any = None) -> RunResult[OutputT]:
        """Run the agent on ``user_input`` and return the result, without streaming.

        ``user_input`` is text, or text and content parts, as for :meth:`run`.

        Returns:
            The :class:`RunResult`; its ``reason`` is ``completed``,
            ``max_turns`` or ``hook_stop`` (with a typed output, only a
            ``completed`` run has one: ``output`` is ``None`` otherwise).

        Raises:
            RunFailedError: the run ended with any other reason (``error``,
                ``timeout``, ``refusal``, ``usage_limit``, or one added later);
                its ``result`` holds the refusal, the stop reason and the usage.
            ClosedSessionError: the session was closed before or during the run.
            ReentrantRunError: called from inside one of this session's own runs, or one of its
                stream handlers with ``overflow="block"``.
            TypeError, ValueError: ``user_input`` is not text or parts, or is no parts at all.
        """
        # Nobody can answer a tool's question here: elicit() raises ElicitationUnavailable.
        async with RunStream(
            self, Session._start_run, user_content(user_input), deps, left=Session._became_unused, answerable=False
        ) as stream:
            async for _ in stream:
                pass
        result: RunResult[OutputT] = stream.result
        if result.reason == "cancelled":
            if not self.closed and self._runtime_done is not None and self._tasks.parent_cancelled:
                # Not closed: a task raised past its session (a tool's KeyboardInterrupt), which cancels every
                # session's tasks, then the caller's block once they have ended. The caller gets that
                # cancellation, not a false ClosedSessionError beside the real error (a shielded caller
                # gets the ClosedSessionError: it is not waiting for a cancellation that cannot reach it).
                await self._runtime_done.wait()
            await trio.lowlevel.checkpoint_if_cancelled()
            raise ClosedSessionError(f"{self!r} was closed during the run")
        if result.reason not in ("completed", "max_turns", "hook_stop"):
            error = result.error
            if error is not None:
                message, kind = error.message, error.kind
            elif result.reason == "refusal":
                message, kind = f"the model refused: {result.refusal or '(no text)'}", "refusal"
            else:
                message, kind = f"the run ended with {result.reason}", result.reason
            raise RunFailedError(message, kind=kind, result=result)
        return result

    def add_handler(
        self,
        handler: Handler,
        *,
        buffer: int = 256,
        overflow: Overflow = "block",
        on_error: Literal["raise", "log"] = "raise",
    ) -> StreamHandler:
        """Call ``handler`` with every event of this session's runs that start from now on, in order.

        A run starts when its turn comes: one entered before this call and
        still waiting for the run slot is seen. The handler runs in a task of
        the session, with a buffer of its own: with ``overflow="block"`` a
        handler a whole buffer behind makes the run wait for it, and it sees
        every event of every run, each run ending with exactly one
        ``RunFinished`` (even a run cancelled while it waited for the
        handler). A run cancelled before its ``RunStarted`` reached the
        handlers (while it waited for its turn, or for room in a full
        handler) reaches them not at all, though its consumer gets
        ``RunFinished("cancelled")``. ``"drop_oldest"`` and ``"drop_newest"``
        never slow the run and count what they drop. A handler that raises fails the
        session (``on_error="raise"``) or is logged and counted (``"log"``). A ``block``
        handler may not run this session (``run``, ``ask``: :class:`ReentrantRunError`, as
        from a run): the run would wait for the handler, and the handler for the run.

        Example::

            async def transcript(event: Event) -> None:
                print(type(event).__name__, attrs.asdict(event), file=log)

            session.add_handler(transcript, overflow="drop_oldest")

        Raises:
            ClosedSessionError: the session is closed.
            ValueError: ``buffer`` is less than 1, or ``overflow`` or ``on_error`` is not one of the values above.
            TypeError: ``handler`` cannot be an async function (not callable, a builtin such as
                ``print``). A sync function that this cannot tell from one returning an awaitable
                (a ``lambda`` may) raises TypeError, naming it, from its first call instead:
                a handler raising, as ``on_error`` says.
        """
        attached = StreamHandler(handler, buffer=buffer, overflow=overflow, on_error=on_error)
        self._check_open()
        self._tasks.start_soon(self._serve_handler, attached, name=f"stream handler {handler!r}")
        self._handlers.append(attached)
        return attached

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """While the block runs, the session counts as busy for idle reaping, as during a run.

        For what uses a session between its runs: the served runtime holds it
        for each connection watching the session (an SSE feed, an ``updates``
        or ``workspace`` WebSocket), so a client that only listens does not
        see its session reaped. The idle time counts again from the block's
        end. Tasks given to :meth:`start_soon` do not count: only this does.

        Example::

            with session.in_use():
                await serve_the_watcher()
        """
        self._runs_in_flight += 1  # reaping waits for this count (runs and holders) to fall to 0
        try:
            yield
        finally:
            self._became_unused()

    def _load(self) -> tuple[int, int, int]:
        """``(runs, buffered events, dropped events)``: its live runs, and what its stream handlers hold and dropped
        (read by the runtime's tracing gauges)."""
        buffered = dropped = 0
        for handler in self._handlers:
            statistics = handler.statistics()
            buffered += statistics.buffered
            dropped += statistics.dropped
        return self._slot.runs(), buffered, dropped

    async def _serve_handler(self, handler: StreamHandler) -> None:
        # A block handler holds up every run of the session: its run() would wait for the slot a run holds,
        # or that run would wait for it (a full buffer), so it is refused as from a run. A drop handler is not.
        _RUNNING_IN.set((self,) if handler.overflow == "block" else ())
        try:
            await handler.serve()
        finally:
            handler.remove()
            if handler in self._handlers:
                self._handlers.remove(handler)

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None) -> None:
        """Start a task owned by the session; it is cancelled when the session closes.

        If it raises, the session fails: its other tasks are cancelled and the
        error reaches whoever owns the session (never another session).

        Raises:
            ClosedSessionError: the session is closed.
        """
        self._check_open()
        self._tasks.start_soon(self._outside_runs, async_fn, args, name=name or async_fn)

    async def start(self, async_fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None) -> Any:
        """Start a task owned by the session and wait until it calls ``task_status.started()``.

        As ``nursery.start``: an exception raised before ``started()`` is
        raised here (and nothing of the task is left behind); after it, it
        fails the session as for :meth:`start_soon`.

        Returns:
            The value passed to ``task_status.started()``.

        Raises:
            ClosedSessionError: the session is closed, or was closed before
                the task called ``started()``.
            RuntimeError: the task returned without calling ``started()``
                (trio's own error).
        """
        self._check_open()
        try:
            return await self._tasks.start(self._own_resource, async_fn, *args, name=name or async_fn)
        except trio.ClosedResourceError:
            if not self._tasks.closed:
                raise  # the task's own error
            raise ClosedSessionError(f"{self!r} was closed before the task started") from None

    async def resource(
        self,
        key: Hashable,
        opener: Callable[[], AbstractAsyncContextManager[T]],
        *,
        name: str | None = None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> SessionResource[T]:
        """The session's resource ``key``, opened first (``opener()``, entered) if the session has none open.

        For what the session's runs share and the session must close: an MCP
        server's connection, a database pool. The resource's async context
        manager is entered by a task of the session, its *owner*, started with
        :meth:`start`, which holds it open and exits it, in that same task,
        when the resource is closed or the session closes (gracefully: the
        exit is shielded, for at most ``close_timeout`` seconds). Other tasks
        use ``resource.value``. Concurrent callers with one key share one
        opening. The owner never raises into the session: an error from the
        manager once open is kept in ``resource.error`` and closes the
        resource; the next call with its key opens a fresh one.

        Example::

            async def pool(ctx: ToolContext[None]) -> Pool:
                resource = await ctx.session.resource("db", lambda: open_pool(DSN))
                return resource.value

        Args:
            key: What identifies the resource in this session (hashable).
            opener: Makes the async context manager (called in the owner task).
            name: For logs and errors (default: ``repr(key)``).
            close_timeout: Seconds the manager's exit may take.

        Returns:
            The open :class:`SessionResource`.

        Raises:
            ClosedSessionError: the session is closed, or closed while opening.
            ValueError: ``close_timeout`` is below zero, or NaN.
            Exception: whatever entering the manager raised (nothing is left behind).
        """
        if not close_timeout >= 0:  # NaN too: its deadline would raise in the close, and the manager never exit
            raise ValueError(f"close_timeout must be 0 or more seconds, not {close_timeout!r}")
        resources = self._resources
        if resources is None:
            resources = self._resources = {}
        return await open_resource(
            resources,
            key,
            opener,
            name=name or repr(key),
            close_timeout=close_timeout,
            start=self._start_owner,
            check_open=self._check_open,
        )

    async def _start_owner(self, serve: Callable[..., Awaitable[object]], *args: object, name: str) -> Any:
        return await self.start(serve, *args, name=f"{name} of session {self.id}")

    @staticmethod
    async def _own_resource(
        serve: Callable[..., Awaitable[object]], *args: object, task_status: trio.TaskStatus[Any]
    ) -> None:
        # A task of the session serves no run, though a run's task (a tool) may have started it: it must
        # not ask that run's consumer, nor count as inside the run (its session.ask() would be refused).
        _RUNNING_IN.set(())
        clear_target()
        await serve(*args, task_status=task_status)

    @staticmethod
    async def _outside_runs(async_fn: Callable[..., Awaitable[object]], args: tuple[object, ...]) -> None:
        _RUNNING_IN.set(())  # as _own_resource, for start_soon
        clear_target()
        await async_fn(*args)

    def _check_open(self) -> None:
        if self._tasks.closed:
            raise ClosedSessionError(f"{self!r} is closed")

    def _log_failure(self, error: Exception) -> None:
        logger.error("session %s failed", self.id, exc_info=error)

    def _unregister(self) -> None:
        # Every task has ended, runs included: a durable session's last changes go to the runtime's
        # writer, which writes them with its next commit and then lets the session go in the store.
        self._registry.discard(self)
        if self._idle is not None:
            self._idle[0].forget(self._idle[1], self._reap)
        if self._journal is not None:
            self._journal.writer.closed(self._journal)
        callbacks, self._close_callbacks = self._close_callbacks, None
        for callback in callbacks or ():
            _call_logged(callback, self.id)

    async def _serve_run(
        self,
        run: AgentRun,
        events: EventPipe[Event],
        ticket: trio.Event | None,
        start: tuple[RunRow | None, Content | None, tuple[Suspended, Resumption] | None] | None,
    ) -> None:
        # Like _own, inlined: run.cancel_scope is the scope the session owns it by.
        # Runs in run.cancel_scope, in the session's task group: only a bug in
        # the loop itself raises, and that fails the session.
        _RUNNING_IN.set((*_RUNNING_IN.get(), self))
        resuming = None if start is None else start[2]
        started = False
        try:
            if ticket is not None:
                await ticket.wait()
            started = True
            # Its turn: the handlers attached now (not when its block was entered) see it, and its journal.
            journal = self._journal
            if self._handlers or journal is not None:
                recorder = None if journal is None else Recorder(journal, run.run_id)
                run.copy_to(Tee(events, tuple(self._handlers), recorder))
            if start is not None:  # a durable session's run (only one can be suspended)
                resuming = self._begin(run, *start)
            await run.drive()
        finally:
            if resuming is not None and not resuming[1].done and self._suspended is None:
                self._suspended = resuming[0]  # it ended before calling them again: the next run resumes
            if not started and self._journal is not None:
                # In its log too, as the stream says; its handlers never saw it start, so they get nothing (Tee).
                self._journal.event(run.run_id, RunFinished("cancelled"))
            events.close_sender()
            self._run_ended(ticket)
            run.done.set()

    def _begin(
        self,
        run: AgentRun,
        row: RunRow | None,
        user_input: Content | None,
        taken: tuple[Suspended, Resumption] | None,
    ) -> tuple[Suspended, Resumption] | None:
        """The run's turn has come: it resumes the interrupted run (``taken`` by resume(), or one still
        waiting), and its row (``row``: one written while it waited) says where in the history its message
        goes."""
        if taken is None and self._suspended is not None:
            suspended, self._suspended = self._suspended, None
            taken = (suspended, suspended.resumption(None))
        if taken is not None:
            run.resume(taken[1])
        if row is not None and self._journal is not None:
            resumes = None if taken is None else taken[0].run_id
            self._journal.run_row(
                attrs.evolve(row, input=run_input_to_json(user_input, len(self._history)), resumes=resumes)
            )
        return taken

    def _run_ended(self, ticket: trio.Event | None) -> None:
        self._slot.release(ticket)
        self._became_unused()

    def _became_unused(self) -> None:
        self._runs_in_flight -= 1
        if self._runs_in_flight == 0 and self._idle is not None and not self._tasks.closed:
            self._idle[0].watch(self._idle[1], self._reap)  # the idle time counts from now

    def _reap(self) -> None:
        """Its idle time ran out (the reaper calls it): close it, unless a run or a holder came meanwhile."""
        if not self._runs_in_flight:
            self._tasks.cancel()


def _call_logged(callback: Callable[[], object], session_id: str) -> None:
    try:
        callback()
    except Exception:
        logger.exception("a close callback of session %s failed", session_id)


def new_session_id() -> str:
    """A session id no other process or restart makes: ``s``, the time in ms (11 hex digits), 16 random ones.

    Time first, as in UUIDv7: ids made one after another sort one after another, so a store's indexes
    grow at their end (one warm page per table a commit) instead of at a random page each.
    """
    return f"s{time.time_ns() // 1_000_000:011x}{secrets.token_hex(8)}"


class Restored:
    """What a durable session is opened with: its recovered history, its journal, the run that waits."""

    __slots__ = ("history", "journal", "runs", "suspended")

    def __init__(self, journal: Journal, history: list[Message], runs: int, suspended: Suspended | None) -> None:
        self.journal = journal
        self.history = history
        self.runs = runs
        self.suspended = suspended
