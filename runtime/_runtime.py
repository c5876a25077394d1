"""Runtime: the root nursery that owns every session, and the shared HTTP client."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Generic

import attrs
import trio
from typing_extensions import TypeVar

from agents.models import http_client as open_http_client

from ._exceptions import AgentRuntimeError, ClosedSessionError, SessionNotFoundError
from ._idle import IdleReaper, check_idle_timeout
from ._journal import Journal, default_owner, open_writer, recover, restore_usage, unfinished_calls, usage_from_json
from ._latch import Latch
from ._session import DEFAULT_EVENT_BUFFER, Restored, Session, new_session_id
from ._store import StoreCorruptError, StoreUnavailableError
from ._tracing import open_tracing
from .events import RunFinished

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import EllipsisType, TracebackType

    import httpx
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from agents import Agent
    from agents._agent import OutputT

    from ._journal import StoreWriter
    from ._store import SessionStore
    from ._tracing import Tracing

logger = logging.getLogger("runtime")

HandleOutputT = TypeVar("HandleOutputT", default=Any)
"""The session's output type; a bare ``SessionHandle`` is any session's (``SessionHandle[Any]``)."""


@attrs.define(eq=False)
class SessionHandle(Generic[HandleOutputT]):
    """A session started with ``Runtime.start_session``; it lives until closed.

    It is closed by :meth:`aclose`, by idle reaping, or by the runtime exiting.
    Generic in the agent's output type, as its :attr:`session` is.
    """

    session: Session[HandleOutputT]
    """The session; use ``handle.session.run(...)``."""

    @property
    def closed(self) -> bool:
        """Whether the session has been closed."""
        return self.session.closed

    @property
    def error(self) -> BaseException | None:
        """What made the session fail, if a task of its own raised (else ``None``)."""
        return self.session.error

    async def aclose(self) -> None:
        """Close the session and wait until all its tasks have finished. Idempotent."""
        await self.session.aclose()

    async def wait_closed(self) -> None:
        """Wait until the session has been closed, by anyone, and its tasks finished."""
        await self.session.wait_closed()


class _SessionBlock:
    """``async with runtime.open_session(...)``: a class, not a generator, to keep a run's footprint small."""

    __slots__ = ("_agent", "_create", "_runtime", "_session", "_session_id")

    def __init__(self, runtime: Runtime, agent: Agent[Any, Any], session_id: str | None, create: bool) -> None:
        self._runtime = runtime
        self._agent = agent
        self._session_id = session_id
        self._create = create
        self._session: Session[Any] | None = None

    async def __aenter__(self) -> Session[Any]:
        if self._session is not None:
            raise AgentRuntimeError("open_session() blocks can be entered only once")
        runtime = self._runtime
        if runtime._writer is None:
            await trio.lowlevel.checkpoint_if_cancelled()
            if not self._create:
                raise SessionNotFoundError(f"no session {self._session_id!r}: the runtime has no store")
            self._session = runtime._start(
                self._agent, session_id=self._session_id, idle_timeout=None, log_failure=False
            )
        else:
            self._session = await runtime._start_durable(
                self._agent, session_id=self._session_id, idle_timeout=None, log_failure=False, create=self._create
            )
        return self._session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._session is not None
        await self._session.aclose()
        error = self._session.error
        if error is None:
            return
        if exc is None or isinstance(exc, (ClosedSessionError, trio.Cancelled)):
            # What the block raised is the session's failure seen from inside (its run ended, the session
            # closed under it, its scope cancelled): the failure itself is what the block raises, with it as
            # the context, as a nursery raises a child's error rather than the Cancelled it caused.
            raise _unwrap(error)
        exc.add_note(f"while the session {self._session.id} had failed: {_unwrap(error)!r}")


class Runtime:
    """Owns every session and the shared HTTP client; made by :func:`open_runtime`."""

    def __init__(
        self,
        http_client: httpx.AsyncClient,
        *,
        idle_timeout: float | None,
        event_buffer: int,
        writer: StoreWriter | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._nursery: trio.Nursery | None = None
        self._tracing = tracing
        self._writer = writer
        self._exit_requested = Latch()
        self._sessions_done = Latch()  # the sessions' nursery has closed
        self.http_client = http_client
        """The HTTP client every model of this runtime uses."""
        self.idle_timeout = idle_timeout
        """Seconds a started session may stay without a run before it is closed (``None``: never)."""
        self._event_buffer = event_buffer
        self._sessions: set[Session[Any]] = set()
        self._reaper = IdleReaper()
        self._closed = False

    async def _hold_sessions(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Own the nursery every session's tasks live in, and close idle sessions, until the runtime exits.

        The nursery is shielded from cancellation from outside: leaving the
        runtime block closes each session, which cancels the tasks it owns
        (each in a scope of the session's). That is the graceful order of
        DESIGN.md; the nursery then joins them all.
        """
        try:
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started()
                    await self._reaper.serve(self._exit_requested)  # closes idle sessions until the runtime exits
        finally:
            self._sessions_done.set()

    def _exit(self) -> None:
        self._closed = True
        for session in list(self._sessions):
            session.cancel()
        self._exit_requested.set()

    @property
    def store(self) -> SessionStore | None:
        """Where its sessions live (``open_runtime(store=...)``), or ``None``: in this process's memory."""
        return None if self._writer is None else self._writer.store

    @property
    def sessions(self) -> tuple[Session[Any], ...]:
        """The sessions that are open now."""
        return tuple(self._sessions)

    def open_session(
        self, agent: Agent[Any, OutputT], *, session_id: str | None = None, create: bool = True
    ) -> AbstractAsyncContextManager[Session[OutputT]]:
        """Open a session for ``agent``; leaving the block closes it and waits for its tasks.

        Its tasks live in the runtime's nursery, so the runtime exiting closes
        it too. If one of its tasks raised, the error is raised here when the
        block exits.

        With a store, ``session_id`` opens that session if the store has it
        (its history, its interrupted runs marked ``interrupted`` and repaired,
        the questions a run was waiting on in :attr:`Session.pending`), and
        makes it otherwise (unless ``create`` is false); the session is this
        process's until it closes.

        Example::

            async with runtime.open_session(agent) as session:
                result = await session.ask("hello")

        Raises:
            ClosedSessionError: the runtime is closed.
            SessionOwnedError: (with a store) another process has the session open.
            SessionNotFoundError: ``create`` is false and there is no such session.
            StoreUnavailableError: (with a store) the store cannot be reached.
            StoreCorruptError: (with a store) the session's rows are not what trio-agents writes.
            TypeError: ``session_id`` is not a ``str`` (or ``None``).
            ValueError: ``session_id`` is empty (``None`` makes one up), holds NUL or a lone surrogate, or is
                longer than 1,024 bytes of UTF-8 (the same rule with a store and without).
        """
        check_session_id(session_id)
        return _SessionBlock(self, agent, session_id, create)

    async def start_session(
        self,
        agent: Agent[Any, OutputT],
        *,
        session_id: str | None = None,
        idle_timeout: float | EllipsisType | None = ...,
        create: bool = True,
    ) -> SessionHandle[OutputT]:
        """Start a session that lives in the runtime until closed, reaped when idle, or the runtime exits.

        Args:
            agent: What the session runs.
            session_id: Its id; made up if not given.
            idle_timeout: Close it after this many seconds (above zero) without a
                run (a run counts until its ``async with`` block exits) or a
                :meth:`Session.in_use` block; defaults to the runtime's
                ``idle_timeout``; ``None``: never.
            create: With a store: make the session if the store has none of that
                id (else :class:`SessionNotFoundError`). Without one, a session is
                always new.

        A failure inside the session (one of its own tasks raising) closes
        that session only; it is logged and kept on :attr:`SessionHandle.error`.

        Raises:
            ClosedSessionError: the runtime is closed.
            SessionOwnedError: (with a store) another process has the session open.
            SessionNotFoundError: ``create`` is false and there is no such session.
            StoreUnavailableError: (with a store) the store cannot be reached.
            StoreCorruptError: (with a store) the session's rows are not what trio-agents writes.
            TypeError: ``session_id`` is not a ``str`` (or ``None``).
            ValueError: ``session_id`` is empty (``None`` makes one up), holds NUL or a lone surrogate, or is
                longer than 1,024 bytes of UTF-8 (the same rule with a store and without); or
                ``idle_timeout`` is not above zero (NaN included) or ``None``.
        """
        check_session_id(session_id)
        timeout = self.idle_timeout if idle_timeout is ... else idle_timeout
        check_idle_timeout(timeout)
        if self._writer is None:
            await trio.lowlevel.checkpoint_if_cancelled()
            if not create:
                raise SessionNotFoundError(f"no session {session_id!r}: the runtime has no store")
            session = self._start(agent, session_id=session_id, idle_timeout=timeout, log_failure=True)
        else:
            session = await self._start_durable(
                agent, session_id=session_id, idle_timeout=timeout, log_failure=True, create=create
            )
        return SessionHandle(session)

    def _start(
        self,
        agent: Agent[Any, OutputT],
        *,
        session_id: str | None,
        idle_timeout: float | None,
        log_failure: bool,
        restored: Restored | None = None,
    ) -> Session[OutputT]:
        if self._closed:
            raise ClosedSessionError("the runtime is closed")
        assert self._nursery is not None
        return Session(
            agent,
            self._nursery,
            http_client=self.http_client,
            event_buffer=self._event_buffer,
            session_id=session_id,
            registry=self._sessions,
            idle_timeout=idle_timeout,
            reaper=self._reaper,
            log_failure=log_failure,
            restored=restored,
            tracing=self._tracing,
            runtime_done=self._sessions_done,
        )

    async def _start_durable(
        self,
        agent: Agent[Any, OutputT],
        *,
        session_id: str | None,
        idle_timeout: float | None,
        log_failure: bool,
        create: bool = True,
    ) -> Session[OutputT]:
        """Claim the session in the store, load and recover it, and start it holding its claim."""
        if self._closed:
            raise ClosedSessionError("the runtime is closed")
        writer = self._writer
        assert writer is not None
        store = writer.store
        # An id made here is in no store yet: it is only locked now, and made by its first checkpoint.
        fresh = create and not session_id
        session_id = session_id or new_session_id()
        closing = writer.closing.get(session_id)
        if closing is not None:  # closed here a moment ago: its last changes are being written
            if writer.failure is not None:  # and cannot be, for now: do not wait for the store to return
                raise StoreUnavailableError(
                    f"session {session_id!r} is still closing: its last changes wait for {store.url}"
                ) from writer.failure
            await closing.released.wait()
        if fresh:
            snapshot = await store.claim(session_id, agent.name, create=True, fresh=True)
        else:
            snapshot = await store.claim(session_id, agent.name, create=create)
        if snapshot is None:
            raise SessionNotFoundError(f"no session {session_id!r} in {store.url}")
        try:
            try:
                history, interrupted, suspended, unchanged = recover(snapshot)
                usage = usage_from_json(snapshot.usage)
                # An interrupted run's log, read and each call it left unfinished found: rows of its too.
                logs = [(row, await store.events(session_id, row.run_id)) for row in interrupted]
                unfinished = [(row, len(log), unfinished_calls(log)) for row, log in logs]
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:  # rows we did not write
                raise StoreCorruptError(f"session {session_id!r} in {store.url} cannot be read: {exc!r}") from exc
            waiting = () if suspended is None else suspended.questions
            journal = Journal(
                writer,
                session_id,
                snapshot.version,
                history,
                snapshot.runs,
                waiting,
                unchanged,
                create=agent.name if fresh else None,
                rows=len(snapshot.messages),
            )
            # Questions of calls that have their result (answered before the process stopped, or repaired as
            # interrupted) wait no more: their rows go with the recovery.
            journal.forget_questions(row.elicitation_id for row in snapshot.pending if row not in waiting)
            for row, logged, owed_events in unfinished:
                # Its log ends as every run's does: each call it started finished (a sub-agent's too), one
                # RunFinished.
                journal.run_row(row, first_event=logged)
                for owed in owed_events:
                    journal.event(row.run_id, owed)
                journal.event(row.run_id, RunFinished("interrupted", "the process running it stopped"))
            session = self._start(
                agent,
                session_id=session_id,
                idle_timeout=idle_timeout,
                log_failure=log_failure,
                restored=Restored(journal, history, len(snapshot.runs), suspended),
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await store.release(session_id)
            raise
        restore_usage(session._usage, usage)
        # From here on, closing the session hands its journal to the writer, which lets the claim go.
        if not fresh:
            try:
                await journal.flush()  # the recovery is written before the session is used
            except BaseException:
                await session.aclose()
                raise
        return session


@asynccontextmanager
async def open_runtime(
    *,
    idle_timeout: float | None = None,
    http_client: httpx.AsyncClient | None = None,
    event_buffer: int = DEFAULT_EVENT_BUFFER,
    store: SessionStore | None = None,
    owner: str | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    trace_content: bool = False,
) -> AsyncIterator[Runtime]:
    """Open a runtime: the nursery every session lives in.

    Leaving the block closes every session (and so every run and every task
    a session owns) and waits until all of them have finished. With a store,
    what they left is written then (for up to 10 s), however the block is
    left: its error, cancellation or ``KeyboardInterrupt`` goes on after that.

    Example::

        async with open_runtime() as runtime:
            async with runtime.open_session(agent) as session:
                print((await session.ask("hi")).output)

    Args:
        idle_timeout: Default for ``start_session``: close a started session
            after this many seconds without a run (above zero; ``None``: never).
        http_client: Share this client instead of opening one (it is not
            closed on exit).
        event_buffer: Events a run may send ahead of a slow consumer (0 or more).
        store: Keep sessions in it (:class:`SQLiteStore`, :class:`PostgresStore`): their
            history, their runs' logs and their pending questions outlive this process,
            and ``open_session(agent, session_id=...)`` opens one again. ``None``: in memory.
        owner: How this process names itself to others that find a session it holds
            (default ``host:pid``).
        tracer_provider: Where its OpenTelemetry spans go (see the README's "Tracing"): ``None``,
            the global provider, so runs are traced once an SDK is configured. Spans and metrics
            need ``opentelemetry-api`` (``pip install 'trio-agents[otel]'``); without it nothing is
            traced and nothing of OpenTelemetry is imported.
        meter_provider: Where its OpenTelemetry metrics go (``None``: the global provider).
        trace_content: Record what runs say in their spans: messages, instructions, tool
            arguments and results. Off by default: they can hold secrets.

    Raises:
        StoreUnavailableError, StoreCorruptError, StoreVersionError: (on entering) the store
            cannot be used.
        ImportError: a provider was given, and ``opentelemetry-api`` is not installed.
        ValueError: ``event_buffer`` is negative, or ``idle_timeout`` is not above zero (NaN included)
            or ``None``.
    """
    if event_buffer < 0:
        raise ValueError(f"event_buffer must be 0 or more, not {event_buffer!r}")
    check_idle_timeout(idle_timeout)
    tracing = open_tracing(tracer_provider, meter_provider, content=trace_content)
    # Sessions contain their own failures, so a group here holds what the
    # block raised: single_errors() gives it back as it was.
    async with single_errors(), open_http_client(http_client) as client, AsyncExitStack() as stack:
        # The writer outlives the sessions' nursery: what closing sessions write is written.
        writer = (
            None if store is None else await stack.enter_async_context(open_writer(store, owner or default_owner()))
        )
        async with trio.open_nursery() as nursery:
            runtime = Runtime(
                client, idle_timeout=idle_timeout, event_buffer=event_buffer, writer=writer, tracing=tracing
            )
            await nursery.start(runtime._hold_sessions)
            if tracing is not None:
                tracing.watch(runtime)
            try:
                yield runtime
            finally:
                runtime._exit()
                if tracing is not None:
                    tracing.unwatch(runtime)


def _unwrap(error: BaseException) -> BaseException:
    """A group holding one error becomes that error, so callers can ``except`` it."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


@asynccontextmanager
async def single_errors() -> AsyncIterator[None]:
    """Around a nursery: its group of one error comes out as that error (trio-websocket's rule)."""
    try:
        yield
    except BaseExceptionGroup as group:
        error = _unwrap(group)
        if error is group:
            raise
        context = error.__context__
        try:
            raise error
        finally:
            error.__context__ = context


MAX_SESSION_ID_BYTES: Final = 1024
"""The longest session id, in bytes of UTF-8: PostgreSQL indexes a run's rows by the session id and the run id
(the session id again, with ``-r`` and its number), and refuses an index row of more than 2,704 bytes."""


def check_session_id(session_id: str | None) -> None:
    """Refuse an id that is empty (it read as "make one up": a durable session given it was a new one each
    time), or one that not every store can hold: one with NUL, a lone surrogate, or more than
    :data:`MAX_SESSION_ID_BYTES` bytes; the same ids for every store, and for none."""
    if session_id is None:
        return
    if not isinstance(session_id, str):
        raise TypeError(f"session_id must be a str (or None to make one up), not {type(session_id).__name__}")
    if not session_id:
        raise ValueError("session_id is empty: give an id, or None to make one up")
    try:
        size = len(session_id.encode())
    except UnicodeEncodeError:
        raise ValueError(f"session_id {session_id!r:.80} holds a lone surrogate: it must be UTF-8 text") from None
    if "\x00" in session_id:
        raise ValueError(f"session_id {session_id!r:.80} holds NUL, which no session id may")
    if size > MAX_SESSION_ID_BYTES:
        raise ValueError(f"session_id is {size} bytes of UTF-8; at most {MAX_SESSION_ID_BYTES} are allowed")
