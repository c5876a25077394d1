"""RunStream: the consumer's side of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._exceptions import ClosedRunStreamError
from .events import Event, RunFinished

if TYPE_CHECKING:
    from ._loop import AgentRun
    from ._result import RunResult

_CANCELLED = RunFinished("cancelled")


class RunStream:
    """The events of one run, in order; made by ``Session.run``.

    An async iterator (not an async generator, so breaking out of ``async
    for`` is always safe). Its last event is exactly one
    :class:`~runtime.events.RunFinished`: if the run was cancelled before it
    could send one, the stream yields ``RunFinished("cancelled")`` itself.
    """

    def __init__(self, receive: trio.MemoryReceiveChannel[Event], run: AgentRun) -> None:
        self._receive = receive
        self._run = run
        self._finished = False

    @property
    def run_id(self) -> str:
        """The run's id, as in its ``RunStarted`` event."""
        return self._run.run_id

    @property
    def result(self) -> RunResult:
        """What the run produced so far; final once ``RunFinished`` was seen."""
        return self._run.result()

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        # A cancel point always; a schedule point only when nothing is buffered
        # (a full checkpoint per event would cost more than the event).
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            try:
                event = self._receive.receive_nowait()
            except trio.WouldBlock:
                event = await self._receive.receive()
        except trio.EndOfChannel:
            self._finished = True
            return _CANCELLED
        except trio.ClosedResourceError:
            raise ClosedRunStreamError(
                f"run {self.run_id} was read after its 'async with session.run(...)' block exited"
            ) from None
        if type(event) is RunFinished:
            self._finished = True
        return event
