"""A run's events kept for replay, so any client can follow a run from its start (bounded)."""

from __future__ import annotations

from collections import deque
from typing import Any

import trio

from ._broadcast import Dropped


class RunLog:
    """The events of one run, as JSON objects; the oldest go once more than ``limit`` are kept."""

    def __init__(self, run_id: str, *, limit: int) -> None:
        self.run_id = run_id
        self._events: deque[dict[str, Any]] = deque()
        self._start = 0  # index (in the whole run) of _events[0]
        self._limit = limit
        self.finished = False
        self._changed = trio.Event()

    def append(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        if len(self._events) > self._limit:
            self._events.popleft()
            self._start += 1
        self._changed.set()

    def finish(self) -> None:
        self.finished = True
        self._changed.set()

    def follow(self) -> RunFollower:
        """A reader from the run's first event (or the oldest still kept)."""
        return RunFollower(self)


class RunFollower:
    """Reads a :class:`RunLog` at its own pace: :meth:`next` returns ``None`` after the last event."""

    def __init__(self, log: RunLog) -> None:
        self._log = log
        self._index = 0

    def next_nowait(self) -> dict[str, Any] | Dropped | None:
        """What :meth:`next` would give, without waiting.

        Raises:
            trio.WouldBlock: the run has no newer event yet.
        """
        log = self._log
        if self._index < log._start:
            gap = log._start - self._index
            self._index = log._start
            return Dropped(gap)
        if self._index < log._start + len(log._events):
            event = log._events[self._index - log._start]
            self._index += 1
            return event
        if log.finished:
            return None
        raise trio.WouldBlock

    async def next(self) -> dict[str, Any] | Dropped | None:
        await trio.lowlevel.checkpoint_if_cancelled()
        log = self._log
        while True:
            try:
                return self.next_nowait()
            except trio.WouldBlock:
                pass
            if log._changed.is_set():
                log._changed = trio.Event()
            await log._changed.wait()
