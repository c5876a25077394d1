"""RunSlot: a session's FIFO run slot, one run at a time."""

from __future__ import annotations

from collections import deque

import trio


class RunSlot:
    """The session's FIFO run slot: one run at a time, in the order runs were started.

    This is the one lock held across awaits (DESIGN.md rule 4): its holder is
    a run, which closing the session always cancels. A run that finds the
    slot free takes it with no ticket (``None``); the others queue an event,
    set when their turn comes. Unlike ``trio.StrictFIFOLock`` it is taken
    synchronously, when the run is created, so the queue order is the order of
    ``Session.run`` calls, not of the run tasks' first schedule.

    Example::

        ticket = slot.take_ticket()
        try:
            if ticket is not None:
                await ticket.wait()  # the slot is ours once this returns
            ...
        finally:
            slot.release(ticket)  # on every path, cancelled or not
    """

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: deque[trio.Event] | None = None

    def runs(self) -> int:
        """How many runs hold the slot or wait for it."""
        return self._held + len(self._waiters or ())

    def take_ticket(self) -> trio.Event | None:
        """Take the slot if it is free (``None``), else queue for it (an event set on our turn)."""
        if not self._held:
            self._held = True
            return None
        ticket = trio.Event()
        if self._waiters is None:
            self._waiters = deque()
        self._waiters.append(ticket)
        return ticket

    def release(self, ticket: trio.Event | None) -> None:
        """Give back what :meth:`take_ticket` returned: the slot if it was ours, else our place in the queue."""
        if ticket is not None and not ticket.is_set():
            # It left the queue before its turn (cancelled while waiting).
            assert self._waiters is not None
            self._waiters.remove(ticket)
            return
        if self._waiters:
            self._waiters.popleft().set()  # the slot passes on, still held
        else:
            self._held = False
