"""HeldEvents: a durable run's events while its first durability point is being written.

A durable run's row and its user's message are written before its
``RunStarted`` is sent. The run does not wait for that write before it asks
its model: it sends its events into a :class:`HeldEvents`, which holds them,
in order, until the store has the run, then sends them on as they were.
A consumer, a stream handler and the run's log see exactly what they saw
when the run waited; the write costs the run nothing but the wait left
when the model answers first (a model's first token takes far longer), and
a turn that asks for tools before then is written with the run, in one commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

from agents._exceptions import describe

from ._store import StoreError
from .events import RunFinished, Usage

if TYPE_CHECKING:
    from ._handlers import Tee
    from ._journal import Journal
    from .events import Event

HELD_EVENTS: Final = 64
"""Events a run holds while its first durability point is written; past them it waits for the write."""


class HeldEvents:
    """An ``EventOut`` holding a run's events until its journal has written what it had when this was made.

    Made as the run starts: it asks the journal to write at once (:meth:`Journal.flush_soon`). Events
    sent meanwhile are held (at most :data:`HELD_EVENTS`; then :meth:`send` waits for the write), and
    sent on into the run's ``Tee`` as soon as the write is done: by the writer, as it commits, or by
    the next send. The run calls :meth:`settle` before it does anything but stream its model (before
    the model's answer joins the history, before any tool, before it ends), which waits for the
    write; while one task settles, what others send is held behind what it sends on. If the store
    could not write the run, its ``RunStarted`` goes on, and its ``Usage`` events (the tokens were
    spent), and nothing else until the run ends with that error, as if it had waited. A turn that
    asks for tools is written before any of them runs: the run first :meth:`record` s what it holds
    into its journal, to be written with the turn (its log then has them, as when the run did not
    hold them), and sends them on once that write is done. A run cancelled before it is written
    waits for the write briefly (``AgentRun``), then gives up what it still holds: nobody saw it
    start.
    """

    __slots__ = ("_events", "_failure", "_journal", "_next", "_recorded", "_settled", "_settling", "_ticket", "out")

    def __init__(self, out: Tee, journal: Journal) -> None:
        self.out = out
        """Where the events go once the run is written."""
        self._journal = journal
        self._events: list[Event] | None = []  # None once every held event has gone on
        self._next = 0  # the first held event not yet sent on
        self._recorded = 0  # held events before this one are in the journal already
        self._failure: str | None = None
        self._settled = False
        self._settling: trio.Event | None = None  # set while a task sends on what is held: others wait
        self._ticket = journal.flush_soon()
        journal.on_commit = self._committed

    @property
    def written(self) -> bool:
        """Whether the store has the run."""
        return self._journal.written(self._ticket)

    @property
    def settled(self) -> bool:
        """Whether :meth:`settle` is done: nothing is held, and nothing will be."""
        return self._settled

    def send_nowait(self, event: Event) -> None:
        if self._failure is not None and type(event) is not Usage:
            return  # the store did not take the run: it ends with that error, and nobody sees more of it
        events = self._events
        if events is not None:
            if self._settling is not None or not (self._journal.written(self._ticket) and self._send_on_nowait()):
                if len(events) - self._next >= HELD_EVENTS:
                    raise trio.WouldBlock
                events.append(event)
                return
        self.out.send_nowait(event)

    async def send(self, event: Event) -> None:
        while self._events is not None:
            await self.settle()
        if self._failure is not None and type(event) is not Usage:
            await trio.lowlevel.checkpoint()
            return
        await self.out.send(event)

    def send_last(self, event: Event, *, owed: bool = False) -> None:
        events = self._events
        if events is not None:
            if type(event) is not RunFinished:  # owed mid-run (a Usage whose send was cancelled): held as any
                events.append(event)
                return
            self._events = None
            self._journal.on_commit = None
            if self._journal.written(self._ticket):  # started and written: what it sent is owed to the consumer
                for at in range(self._next, len(events)):
                    self.out.send_last(events[at], owed=True, recorded=at < self._recorded)
            # Else dropped: the run was cancelled before it was written, and nobody saw it start.
        self.out.send_last(event, owed=owed)

    def record(self) -> None:
        """Copy what is held into the journal now (written with the next commit, the turn that asks for
        tools): it is still sent on only once the run is written."""
        events = self._events
        if events is not None:
            for at in range(max(self._recorded, self._next), len(events)):
                self.out.record_nowait(events[at])
            self._recorded = len(events)

    async def settle(self, *, failed: bool = False) -> str | None:
        """Wait until the run is written, and every held event has gone on (waiting for room); ``None``, or why
        the store could not write it (then only its ``RunStarted`` and ``Usage`` events went on, and what
        was :meth:`record` ed). Cancelled, it still holds what it did. A second task calling it meanwhile
        waits for the first.

        Args:
            failed: The write of what was recorded failed: send everything on now (the run ends with that
                write's error, as when it waited for the run before that write).
        """
        while True:
            while (settling := self._settling) is not None:  # another task sends on what is held: after it
                await settling.wait()
            if self._settled:
                await trio.lowlevel.checkpoint()
                return self._failure
            if failed or self._failure is not None or self._journal.written(self._ticket):
                break
            try:
                await self._journal.wait(self._ticket)  # then look again: another task may be settling
            except StoreError as exc:
                if self._failure is None:
                    self._failure = describe(exc)
                    events = self._events
                    if events is not None:
                        # What went on stays; RunStarted goes on, as when the run waited, and the Usage (spent).
                        sent = max(self._next, self._recorded, 1)
                        events[sent:] = [event for event in events[sent:] if type(event) is Usage]
        self._journal.on_commit = None  # this task sends on what is left: the writer's commits must not too
        events = self._events
        if events is not None:
            self._settling = trio.Event()
            out = self.out
            try:
                while self._events is events and self._next < len(events):  # (others' sends join the end)
                    held = events[self._next]
                    recorded = self._next < self._recorded
                    try:
                        out.send_nowait(held, recorded=recorded)
                    except trio.WouldBlock:
                        await out.send(held, recorded=recorded)  # cancelled while it waits: it went nowhere
                    self._next += 1
                if self._events is events:  # (else the run's end, send_last, took over)
                    self._events = None
            finally:
                done, self._settling = self._settling, None
                done.set()
        self._settled = True
        return self._failure

    def _committed(self) -> None:
        """The journal's commit callback (in the writer's task): once the run is written, send on what is held."""
        if self._journal.written(self._ticket):
            try:
                self._send_on_nowait()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the consumer has gone: the run is being cancelled, and its send_last decides

    def _send_on_nowait(self) -> bool:
        """Send on what is held while there is room (the run is written, and no task settles: it would be
        sending them); whether all of it went."""
        events = self._events
        if events is None:
            return True
        try:
            while self._next < len(events):
                self.out.send_nowait(events[self._next], recorded=self._next < self._recorded)
                self._next += 1
        except trio.WouldBlock:
            return False
        self._events = None
        self._journal.on_commit = None
        return True
