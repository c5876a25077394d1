"""Stream handlers: user code that consumes a session's events in a task of its own."""

from __future__ import annotations

import functools
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias, get_args

import attrs
import trio

if TYPE_CHECKING:
    from ._pipe import EventPipe
    from .events import Event

logger = logging.getLogger("runtime")

_SERVING: ContextVar[StreamHandler | None] = ContextVar("_SERVING", default=None)
"""The handler whose task this is (or whose task started this one): its drain() would wait for itself."""

Overflow: TypeAlias = Literal["block", "drop_oldest", "drop_newest"]
"""What happens when a handler's buffer is full: the run waits for it (``block``),
the oldest buffered event is dropped (``drop_oldest``), or the new one is (``drop_newest``)."""

Handler: TypeAlias = Callable[["Event"], Awaitable[object]]
"""An async function called with each event of the session, in order."""


@attrs.frozen
class HandlerStatistics:
    """What :meth:`StreamHandler.statistics` returns."""

    handled: int
    """Events the handler has returned from."""
    dropped: int
    """Events dropped because the buffer was full (``drop_oldest`` / ``drop_newest``)."""
    failed: int
    """Events the handler raised on (with ``on_error="log"``)."""
    buffered: int
    """Events waiting for the handler now."""


class StreamHandler:
    """A handler attached with ``Session.add_handler``: its buffer, its counters, and how to remove it."""

    def __init__(self, handler: Handler, *, buffer: int, overflow: Overflow, on_error: Literal["raise", "log"]) -> None:
        if buffer < 1:
            raise ValueError("a handler's buffer must hold at least one event")
        # Checked here: a misspelt value would otherwise behave as drop_newest / "log" without a word.
        if overflow not in get_args(Overflow):
            raise ValueError(f"overflow must be one of {', '.join(get_args(Overflow))}, not {overflow!r}")
        if on_error not in ("raise", "log"):
            raise ValueError(f"on_error must be raise or log, not {on_error!r}")
        if _surely_sync(handler):
            raise TypeError(f"a stream handler must be an async function, not {handler!r}")
        self.handler = handler
        self.overflow: Overflow = overflow
        self.on_error = on_error
        self._buffer: deque[Event] = deque()
        self._size = buffer
        self._handled = self._dropped = self._failed = 0
        self._wakeup = trio.Event()  # the handler's task waits for events here
        self._room = trio.Event()  # a blocked run waits for room here
        self._drained = trio.Event()  # drain() waits here for the next event to be settled
        self._taken = 0  # events ever buffered
        self._settled = 0  # of those, the ones handled, failed on or dropped from the buffer (drop_oldest)
        self._scope = trio.CancelScope()
        self._removed = False

    def statistics(self) -> HandlerStatistics:
        """The counters, at any time."""
        return HandlerStatistics(self._handled, self._dropped, self._failed, len(self._buffer))

    def remove(self) -> None:
        """Detach the handler: it gets no more events and its task ends."""
        self._removed = True
        self._scope.cancel()
        self._room.set()
        self._drained.set()

    async def drain(self) -> None:
        """Wait until the handler has handled every event buffered so far (or was removed).

        Called by the handler itself (or a task it started), it returns at
        once, after a checkpoint: every event before the one being handled
        has been handled, and the ones after wait for the handler to return,
        so waiting for them would never end.
        """
        if _SERVING.get() is self:
            await trio.lowlevel.checkpoint()
            return
        # Counted, not "until the buffer is empty": events that keep coming would put that off for ever.
        owed = self._taken
        while self._settled < owed and not self._removed:
            if self._drained.is_set():
                self._drained = trio.Event()
            await self._drained.wait()

    def full(self) -> bool:
        """Whether a ``block`` handler would make a run wait now."""
        return self.overflow == "block" and not self._removed and len(self._buffer) >= self._size

    def offer_nowait(self, event: Event, *, owed: bool = False) -> None:
        """Buffer an event without waiting; a full buffer drops it (``drop_newest``) or the oldest (``drop_oldest``).

        A ``block`` handler never drops: ``owed=True`` marks the few events a
        cancelled run still owes it (its ``RunFinished``, and one
        ``AgentSwitched`` and wrapped ``RunFinished`` per sub-agent it was in),
        which go in even past a full buffer: a bounded overshoot, once per
        cancelled run that had started (a run starts only once there is room,
        so the buffer holds at most its bound and one run's owed events). An
        event whose send was cancelled while it waited for room is not owed:
        it went to nobody (see :meth:`Tee.send`).
        """
        if self._removed:
            return
        if len(self._buffer) >= self._size and not (owed and self.overflow == "block"):
            self._dropped += 1
            if self.overflow != "drop_oldest":
                return  # the new event goes
            self._buffer.popleft()
            self._settled += 1
        self._buffer.append(event)
        self._taken += 1
        self._wakeup.set()

    async def room(self) -> None:
        """Wait until a ``block`` handler is no longer full (bounded by the run's cancel scope)."""
        while self.full():
            if self._room.is_set():  # a fresh one only once the last was used: all waiters share it
                self._room = trio.Event()
            await self._room.wait()

    async def serve(self) -> None:
        """The handler's task (in its session): call the handler on each event, in order."""
        _SERVING.set(self)
        with self._scope:
            while True:
                if not self._buffer:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                    continue
                event = self._buffer.popleft()
                self._room.set()
                try:
                    result = self.handler(event)
                    if not inspect.isawaitable(result):  # a sync function add_handler could not tell from an async one
                        raise TypeError(
                            f"stream handler {self.handler!r} returned {result!r}, not an awaitable: "
                            "a stream handler must be an async function"
                        )
                    await result
                except Exception:
                    if self.on_error == "raise":
                        raise  # fails the session, like any task of it
                    self._failed += 1
                    logger.exception("stream handler %r failed on %r", self.handler, event)
                else:
                    self._handled += 1
                finally:
                    self._settled += 1
                    self._drained.set()


def _surely_sync(handler: object) -> bool:
    """Whether calling ``handler`` cannot give an awaitable: not callable, a builtin (``print``, ``list.append``),
    or an async generator function, maybe in a ``functools.partial``. Any other callable may return one
    (``lambda event: channel.send(event)``): :meth:`StreamHandler.serve` checks what it returns."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    return not callable(handler) or inspect.isbuiltin(handler) or inspect.isasyncgenfunction(handler)


class Sink(Protocol):
    """What a :class:`Tee` copies events to: a stream handler, or a durable run's recorder."""

    def full(self) -> bool:
        """Whether a send would wait for this sink now."""

    def offer_nowait(self, event: Event, *, owed: bool = False) -> None:
        """Take the event (when not full, or when ``owed``)."""

    async def room(self) -> None:
        """Wait until it may not be full (another task may fill it first: check :meth:`full` again)."""


class Tee:
    """A run's event pipe, with a copy of each event for the session's handlers (and its store's journal)."""

    __slots__ = ("_handlers", "_journal", "_pipe", "_shown", "_started")

    def __init__(self, pipe: EventPipe[Event], handlers: tuple[Sink, ...], journal: Sink | None = None) -> None:
        self._pipe = pipe
        self._handlers = handlers if journal is None else (*handlers, journal)
        self._shown = handlers  # what a recorded event still goes to
        self._journal = () if journal is None else (journal,)
        self._started = False  # the run's first event (its RunStarted) went in: its end is owed to the handlers

    def record_nowait(self, event: Event) -> None:
        """Copy ``event`` into the run's journal alone, now; the consumer and the handlers get it later, by a
        send with ``recorded=True`` (a durable run's held events, written with the turn that asked for tools
        before anyone may see them: ``runtime._held``)."""
        for journal in self._journal:
            journal.offer_nowait(event, owed=True)

    def send_nowait(self, event: Event, *, recorded: bool = False) -> None:
        handlers = self._shown if recorded else self._handlers
        for handler in handlers:
            if handler.full():
                raise trio.WouldBlock  # the run will wait in send() instead
        self._pipe.send_nowait(event)
        for handler in handlers:
            handler.offer_nowait(event)
        self._started = True

    async def send(self, event: Event, *, recorded: bool = False) -> None:
        """Wait for room in the pipe and in every handler, then hand the event to all of them at once.

        Nothing is handed over until everyone has room, and then with no
        checkpoint in between: a send cancelled while it waits (the run's
        scope, or a tool's timeout around ``ctx.emit``) reaches nobody, so a
        block handler's buffer stays within its bound and the handlers see
        exactly what the consumer sees.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        pipe = self._pipe
        handlers = self._shown if recorded else self._handlers
        waited = False
        while True:
            for handler in handlers:
                if handler.full():
                    await handler.room()
                    waited = True
                    break
            else:
                try:
                    pipe.send_nowait(event)  # raises Closed/BrokenResourceError before anyone has it
                    break
                except trio.WouldBlock:
                    pass
                await pipe.room()  # outside the except block, so the WouldBlock isn't kept alive while we wait
                waited = True
        for handler in handlers:  # none is full: checked with no checkpoint since
            handler.offer_nowait(event)
        self._started = True
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def send_last(self, event: Event, *, owed: bool = False, recorded: bool = False) -> None:
        """Send what a cancelled run sends last: to the consumer if there is room (or ``owed``, see
        :meth:`EventPipe.send_last`), and to every handler, once the run's ``RunStarted`` reached them.

        A run cancelled before that (waiting for room in a full ``block`` handler, or for its
        store) reaches the handlers not at all: they never saw it start, and a stuck handler's
        buffer takes no owed ``RunFinished`` from each run that waits for it. Its journal, which
        has the run's row already, gets it always (once: ``recorded``, it has it).
        """
        self._pipe.send_last(event, owed=owed)
        if self._started:
            sinks = self._shown if recorded else self._handlers
        else:
            sinks = () if recorded else self._journal
        for handler in sinks:
            handler.offer_nowait(event, owed=True)
