"""IdleReaper: closes the sessions left idle past their timeout, all from the runtime's one task."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._latch import Latch


class IdleReaper:
    """Counts down each watched session's idle time and calls its ``reap`` when the count runs out.

    A task per session cost a spawn, a timer and two cancel scopes for every
    session (served mode makes one per client); here a session costs one
    entry. Entries are kept per timeout, oldest first: a session is moved to
    the end whenever it becomes idle again, so each queue stays in deadline
    order and the next deadline is at its head. ``reap`` decides: a session
    busy again when its turn comes is only dropped, and watched again when it
    next becomes idle.
    """

    __slots__ = ("_queues", "_wake")

    def __init__(self) -> None:
        # timeout -> {reap: deadline}, in deadline order (an OrderedDict: its head is O(1) after many pops)
        self._queues: dict[float, OrderedDict[Callable[[], None], float]] = {}
        self._wake: trio.CancelScope | None = None

    def watch(self, timeout: float, reap: Callable[[], None]) -> None:
        """(Re)start the countdown of ``reap``'s session: ``reap()`` is called ``timeout`` seconds from now."""
        deadline = trio.current_time() + timeout
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = OrderedDict()
        queue[reap] = deadline
        queue.move_to_end(reap)
        if self._wake is not None and deadline < self._wake.deadline:
            self._wake.deadline = deadline

    def forget(self, timeout: float, reap: Callable[[], None]) -> None:
        """Stop watching ``reap``'s session (it closed): nothing of it is kept."""
        queue = self._queues.get(timeout)
        if queue is not None:
            queue.pop(reap, None)
            if not queue:  # timeouts are any float: keep no queue for one no session uses now
                del self._queues[timeout]

    async def serve(self, stop: Latch) -> None:
        """Call each ``reap`` whose deadline has passed, until ``stop`` is set."""
        while not stop.is_set():
            heads = [next(iter(queue.values())) for queue in self._queues.values() if queue]
            with trio.CancelScope(deadline=min(heads, default=math.inf)) as self._wake:
                await stop.wait()
            self._wake = None
            now = trio.current_time()
            for queue in list(self._queues.values()):  # a reap may watch or forget: it changes _queues
                _reap_due(queue, now)


def _reap_due(queue: OrderedDict[Callable[[], None], float], now: float) -> None:
    """Call (and forget) each ``reap`` of ``queue`` whose deadline has passed, in deadline order. A function of
    its own: the last one called is no local of ``serve``'s, which would keep its session alive while idle."""
    while queue:
        reap, deadline = next(iter(queue.items()))
        if deadline > now:
            return
        del queue[reap]
        reap()


def check_idle_timeout(idle_timeout: float | None) -> None:
    """Refuse an ``idle_timeout`` that is not ``None`` or above zero: NaN read as "never", below zero as "now"
    (``open_server``'s rule, for every way a session gets one)."""
    if idle_timeout is not None and not idle_timeout > 0:
        raise ValueError(f"idle_timeout must be above zero, not {idle_timeout!r}")
