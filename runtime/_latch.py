"""Latch: a one-way flag that can be awaited, costing an Event only if someone waits."""

from __future__ import annotations

import trio


class Latch:
    """Set once, never cleared; ``wait`` returns at once after ``set``.

    Sessions and runs keep several of these and most are never awaited, so
    the ``trio.Event`` behind ``wait`` is made only by the first waiter.
    """

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: trio.Event | None = None

    def is_set(self) -> bool:
        """Whether :meth:`set` was called."""
        return self._set

    def set(self) -> None:
        """Set the latch and wake every waiter."""
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        """Wait until the latch is set (no checkpoint if it already is)."""
        if self._set:
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()
