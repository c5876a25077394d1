"""RunStream: the consumer's side of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeAlias

import trio
from typing_extensions import TypeVar, deprecated

from ._exceptions import AgentRuntimeError, ClosedRunStreamError, UnknownElicitationError
from ._task_group import join, runs_in, waits_for_me
from .events import Event, RunFinished

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from agents import ElicitationAction
    from agents._content import Content

    from ._loop import AgentRun
    from ._pipe import EventPipe
    from ._result import RunResult

    StartRun: TypeAlias = Callable[[Any, Content | None, Any, bool], AgentRun]

OutputT_co = TypeVar("OutputT_co", covariant=True, default=Any)
"""The run's output type; a bare ``RunStream`` is any run's (``RunStream[Any]``)."""

_CANCELLED = RunFinished("cancelled")
_CANCEL_CHECK_EVERY = 32
"""``async for`` over a stream checks for cancellation at least every this many events."""


class RunStream(Generic[OutputT_co]):
    """One run: an async context manager that starts it, and an async iterator of its events.

    Generic in the agent's output type: :attr:`result` is a ``RunResult[OutputT_co]``
    (``Session[Weather].run`` returns a ``RunStream[Weather]``).

    Made by ``Session.run``; use it as ``async with session.run(...) as
    stream: async for event in stream: ...``. Entering starts the run's task
    (owned by the session); leaving cancels the run if it is still going
    and waits until its task has finished, even when cancelled, unless the
    run's task waits for this one (a tool of the run closing the session the
    block is in): then leaving raises ``Cancelled`` at once.

    The iterator is a class, not an async generator, so breaking out of
    ``async for`` is always safe. Each step is a checkpoint when it has to
    wait for an event; a step that finds one buffered returns it at once,
    and checks for cancellation every 32nd time (a check per event would
    cost a fifth of a streamed token). Its last event is exactly one
    :class:`~runtime.events.RunFinished`: if the run was cancelled before it
    could send one, the stream yields ``RunFinished("cancelled")`` itself
    (or the run's own, if it was cancelled once it had ended).
    """

    __slots__ = (
        "_answerable",
        "_deps",
        "_events",
        "_finished",
        "_left",
        "_owner",
        "_run",
        "_start",
        "_unchecked",
        "_user_input",
    )

    def __init__(
        self,
        owner: Any,
        start: StartRun,
        user_input: Content | None,
        deps: Any,
        *,
        left: Callable[[Any], None],
        answerable: bool = True,
    ) -> None:
        """``start(owner, ...)`` is the session's: it starts the run's task, owned by the session, and returns
        the run; ``left(owner)`` is called once the block that started it has exited (the session is in use
        until then). Functions and their owner, not two bound methods: 144 bytes less per run."""
        self._owner = owner
        self._start = start
        self._left = left
        self._user_input = user_input
        self._deps = deps
        self._answerable = answerable
        self._run: AgentRun | None = None
        self._events: EventPipe[Event] | None = None
        self._finished = False
        self._unchecked = 0  # events given since the last cancellation check

    async def __aenter__(self) -> RunStream[OutputT_co]:
        if self._run is not None:
            raise AgentRuntimeError("a RunStream can be entered only once; call session.run() again")
        self._run = self._start(self._owner, self._user_input, self._deps, self._answerable)
        self._events = self._run.events
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._run is not None
        assert self._events is not None
        # Cancel, wait until the task has finished (it does so promptly once
        # cancelled; shielded, as a nursery's exit waits, unless the run's task
        # waits for this one: join), and only then close our side.
        try:
            self._run.consumer_leaving()
            self._run.cancel_scope.cancel()
            if not self._run.done.is_set():
                await join(self._run.done, runs_in(self._run.cancel_scope))
            self._events.close_receiver()
        finally:
            self._left(self._owner)

    @deprecated("use 'async with session.run(...)', not 'with'", category=None)  # flagged by type checkers only
    def __enter__(self) -> None:
        raise TypeError("use 'async with session.run(...)', not 'with'")

    def __exit__(self, *exc: object) -> None:  # pragma: no cover - __enter__ always raises
        pass

    @property
    def run_id(self) -> str:
        """The run's id, as in its ``RunStarted`` event."""
        return self._started().run_id

    @property
    def result(self) -> RunResult[OutputT_co]:
        """What the run produced so far; final once ``RunFinished`` was seen."""
        return self._started().result()

    @property
    def pending_elicitations(self) -> tuple[str, ...]:
        """Ids of the questions waiting for an answer, oldest first.

        A question is listed from the moment it is asked, which can be just
        before its ``ElicitationRequest`` reaches this stream.
        """
        return tuple(self._started().pending)

    def cancel(self) -> None:
        """Cancel the run, without waiting: it ends with ``RunFinished("cancelled")``, its last event.

        Idempotent; a run that has already ended is left as it is.
        """
        self._started().cancel_scope.cancel()

    async def respond(self, request_id: str, action: ElicitationAction, content: Any = None) -> None:
        """Answer an :class:`~runtime.events.ElicitationRequest` of this run (or of a sub-agent's nested run).

        Args:
            request_id: The request's ``id``.
            action: ``"accept"`` (with ``content``), ``"decline"`` or ``"cancel"``.
            content: The answer; validated against the request's schema.

        Raises:
            UnknownElicitationError: no request with that id is pending (never
                was, already answered, or its tool has ended).
            InvalidElicitationResponse: unknown action, or content that does not
                match the schema; the request stays open.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        pending = self._started().pending.get(request_id)
        if pending is None:
            raise UnknownElicitationError(
                f"no pending elicitation {request_id!r} in run {self.run_id} (unknown, or already answered)"
            )
        pending.answer(action, content)  # raises, leaving it open, if the answer is not acceptable
        del self._started().pending[request_id]  # answered: a second answer is an error

    def _started(self) -> AgentRun:
        if self._run is None:
            raise AgentRuntimeError("the run has not started: use 'async with session.run(...) as stream'")
        return self._run

    def __aiter__(self) -> RunStream[OutputT_co]:
        return self

    def next_nowait(self) -> Event:
        """The next event if one is already buffered, without waiting (not a checkpoint, like trio's
        ``receive_nowait``): what ``async for`` would give next, ``RunFinished`` last.

        Raises:
            trio.WouldBlock: no event is buffered yet.
            trio.EndOfChannel: the stream already gave its ``RunFinished``.
            ClosedRunStreamError: the ``async with`` block has exited.
        """
        if self._finished:
            raise trio.EndOfChannel
        events = self._events
        if events is None:
            raise AgentRuntimeError("the run has not started: use 'async with session.run(...) as stream'")
        try:
            event = events.receive_nowait()
        except trio.EndOfChannel:
            self._finished = True
            return self._started().final or _CANCELLED
        except trio.ClosedResourceError:
            raise ClosedRunStreamError(
                f"run {self.run_id} was read after its 'async with session.run(...)' block exited"
            ) from None
        if type(event) is RunFinished:
            self._finished = True
        return event

    async def __anext__(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        events = self._events
        if events is None:
            raise AgentRuntimeError("the run has not started: use 'async with session.run(...) as stream'")
        # A checkpoint when nothing is buffered (receive); else a cancel point
        # every _CANCEL_CHECK_EVERY events (a full checkpoint per event would
        # cost more than the event).
        self._unchecked += 1
        if self._unchecked >= _CANCEL_CHECK_EVERY:
            self._unchecked = 0
            await trio.lowlevel.checkpoint_if_cancelled()
        try:
            try:
                event = events.receive_nowait()
            except trio.WouldBlock:
                event = None
            if event is None:  # waited for outside the except block, which would keep the WouldBlock alive
                self._unchecked = 0
                event = await events.receive()
        except trio.EndOfChannel:
            self._finished = True
            return self._started().final or _CANCELLED
        except trio.ClosedResourceError:
            raise ClosedRunStreamError(
                f"run {self.run_id} was read after its 'async with session.run(...)' block exited"
            ) from None
        if type(event) is RunFinished:
            self._finished = True
        return event


def run_waits_for_me(stream: RunStream[Any]) -> bool:
    """Whether ``stream``'s run waits for the current task (one of its tools closing the session this task is
    in): reading the run to its end would then wait for ever. For served mode's detached runs."""
    assert stream._run is not None, "the stream was not entered"
    return waits_for_me(runs_in(stream._run.cancel_scope))
