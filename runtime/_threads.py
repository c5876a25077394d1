"""ToolThreads: the limiter of sync tools' worker threads, FIFO and cheap when a thread is free; and each
session's share of them."""

from __future__ import annotations

import math
import weakref
from collections import deque
from typing import Final

import trio

TOOL_THREADS: Final = 40
"""Sync tools running at once in worker threads, per trio run (trio's own default): shared by every runtime and
session in it. A thread abandoned on cancel (a tool past ``tool_timeout``, a closed session's) holds its place
until its function really returns, so stuck tools leave fewer for everyone."""
SESSION_TOOL_THREADS: Final = TOOL_THREADS // 2
"""Of those, the most one session (its runs and their sub-agents) holds at once: a session whose tools hang
cannot take every thread from the others."""


class ToolThreads:
    """At most ``total`` sync tools in worker threads at once; callers wait their turn in FIFO order.

    It implements ``agents.ThreadLimiter`` (the two methods
    ``trio.to_thread.run_sync`` calls on its ``limiter``) with the semantics of
    ``trio.CapacityLimiter`` that matter here: never more than ``total``
    borrowers, waiters served first come first served, a released thread
    handed to the first waiter (a newcomer cannot take it first), and a
    cancelled waiter leaving the queue. Why not CapacityLimiter itself: it
    always yields on acquire (a scheduler round trip per tool call, for
    nothing when a thread is free, and ``to_thread`` checkpoints anyway), and
    a call waiting for a thread holds several frames through its ParkingLot.
    Here a free thread is taken with no schedule point and a waiter parks on
    its task. Left out: borrowers are not tracked (releasing without
    acquiring is not detected), and there is no ``*_nowait``,
    ``statistics()`` or resizing.
    """

    __slots__ = ("_free", "_waiting")

    def __init__(self, total: int) -> None:
        if total < 0:
            raise ValueError("total must be >= 0")
        self._free = total
        self._waiting: deque[trio.lowlevel.Task] = deque()

    def try_acquire(self) -> bool:
        """Take a thread if one is free now (never a schedule point)."""
        if self._free:
            self._free -= 1
            return True
        return False

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Take a thread, waiting in line if none is free (a checkpoint only if it waits)."""
        if self._free:
            self._free -= 1
            return
        task = trio.lowlevel.current_task()
        self._waiting.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiting.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)  # woken holding a thread

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give a thread back: to the first waiter if there is one."""
        if self._waiting:
            trio.lowlevel.reschedule(self._waiting.popleft())
        else:
            self._free += 1


class SessionThreads:
    """One session's share of the trio run's :class:`ToolThreads`: a call takes a place in the session's own
    ``share`` first (in line, first come first served), then a thread from the shared limiter (in its line),
    so the session never holds more than ``share`` at once, abandoned threads included. Calls that got their
    places together may get their threads in another order. Got from :func:`session_threads`."""

    __slots__ = ("__weakref__", "_own", "_shared")

    def __init__(self, shared: ToolThreads, share: int) -> None:
        self._own = ToolThreads(share)
        self._shared = shared

    def try_acquire(self) -> bool:
        """Take a thread if the session's share and the shared limiter both have one free now."""
        if self._own._free and self._shared._free:
            self._own._free -= 1
            self._shared._free -= 1
            return True
        return False

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Take a place in the session's share, then a thread (a checkpoint only if either waits)."""
        await self._own.acquire_on_behalf_of(borrower)
        try:
            await self._shared.acquire_on_behalf_of(borrower)
        except BaseException:
            self._own.release_on_behalf_of(borrower)
            raise

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give the thread back, then the place in the session's share."""
        self._shared.release_on_behalf_of(borrower)
        self._own.release_on_behalf_of(borrower)


class TimedThreads:
    """``threads`` for one call bounded by ``timeout`` (the deadline of ``scope``, entered around the call): the
    clock starts once the call has its thread. Waiting in line for one is not the tool's own work; the wait stays
    cancellable from outside and keeps its place in the FIFO."""

    __slots__ = ("_scope", "_threads", "_timeout")

    def __init__(self, threads: ToolThreads | SessionThreads, scope: trio.CancelScope, timeout: float) -> None:
        self._threads = threads
        self._scope = scope
        self._timeout = timeout

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Take a thread; if the call has to wait for one, its timeout starts over once it has it."""
        threads = self._threads
        if threads.try_acquire():  # no wait: nothing to take off the clock (and no schedule point)
            return
        self._scope.deadline = math.inf
        await threads.acquire_on_behalf_of(borrower)
        self._scope.deadline = trio.current_time() + self._timeout

    def release_on_behalf_of(self, borrower: object) -> None:
        self._threads.release_on_behalf_of(borrower)


_TOOL_THREADS: trio.lowlevel.RunVar[ToolThreads] = trio.lowlevel.RunVar("trio_agents_tool_threads")
_SESSION_THREADS: trio.lowlevel.RunVar[weakref.WeakValueDictionary[object, SessionThreads]] = trio.lowlevel.RunVar(
    "trio_agents_session_threads"
)


def tool_threads() -> ToolThreads:
    """This trio run's limiter of sync tools' threads (made on first use, :data:`TOOL_THREADS` wide)."""
    try:
        return _TOOL_THREADS.get()
    except LookupError:
        limiter = ToolThreads(TOOL_THREADS)
        _TOOL_THREADS.set(limiter)
        return limiter


def session_threads(session: object) -> SessionThreads:
    """``session``'s share of this trio run's sync-tool threads (:data:`SESSION_TOOL_THREADS` of
    :func:`tool_threads`): the session object's, not its id's (two runtimes may each have a session of one id).

    Kept only while something holds it (a call waiting or holding a thread, an abandoned thread that has
    not yet returned), and the session with it, so an idle session costs nothing; while anything does,
    every call of the session gets the same one.
    """
    try:
        shares = _SESSION_THREADS.get()
    except LookupError:
        shares = weakref.WeakValueDictionary()
        _SESSION_THREADS.set(shares)
    share = shares.get(session)
    if share is None:
        share = shares[session] = SessionThreads(tool_threads(), SESSION_TOOL_THREADS)
    return share
