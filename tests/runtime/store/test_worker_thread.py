"""WorkerThread: a store's own thread, whose finished calls wake their callers through a socket.

The contract is ``run_worker``'s: a cancelled caller abandons its call at once and the thread runs it
to its end; a call that finished as its caller was cancelled still gives the caller its result.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from runtime._worker import WAITING_CALLS, WorkerThread

if TYPE_CHECKING:
    from runtime._worker import WorkerCall

SYNC_TIMEOUT = 10.0
"""Seconds a test blocks on a threading.Event set by the worker thread (a bound, never a wait on time)."""


def open_fds() -> int:
    """This process's open sockets (a wakeup is a socket pair; files other tests' threads may still be
    closing are not counted)."""
    sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return sockets


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
async def test_calls_one_after_another_reuse_one_wakeup_and_stop_closes_it() -> None:
    before = open_fds()
    thread = WorkerThread("test worker")
    thread.start()
    results = []
    for k in range(50):

        def double(call: WorkerCall[int], k: int = k) -> int:
            return k * 2

        results.append(await thread.run(double))
    assert results == [k * 2 for k in range(50)]
    assert open_fds() - before == 2  # one socket pair, whatever the number of calls
    await thread.stop()
    assert open_fds() == before


async def test_an_error_in_the_thread_is_raised_to_the_caller_and_the_thread_goes_on() -> None:
    thread = WorkerThread("test worker")
    thread.start()

    def broken(call: WorkerCall[None]) -> None:
        raise LookupError("no such row")

    with pytest.raises(LookupError, match="no such row"):
        await thread.run(broken)
    assert await thread.run(lambda call: "next") == "next"
    await thread.stop()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
async def test_a_cancelled_caller_abandons_the_call_and_closes_its_wakeup_and_the_call_ends_undone() -> None:
    before = open_fds()
    thread = WorkerThread("test worker")
    thread.start()
    go, ended = threading.Event(), threading.Event()
    undone: list[str] = []

    def slow(call: WorkerCall[str]) -> str:
        go.wait(SYNC_TIMEOUT)
        return "claimed"

    with trio.CancelScope() as scope:
        scope.cancel()
        await thread.run(slow, undo=undone.append)  # cancelled before it starts: nothing is queued
    assert scope.cancelled_caught
    async with trio.open_nursery() as nursery:

        async def caller() -> None:
            await thread.run(slow, undo=undone.append)

        nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # the caller is gone at once; its call is still running
    go.set()
    thread.submit(ended.set)  # runs after the abandoned call
    await trio.to_thread.run_sync(ended.wait, SYNC_TIMEOUT)
    assert undone == ["claimed"]  # the result nobody received
    assert open_fds() - before == 0  # the abandoned caller closed its wakeup; no other was left open
    await thread.stop()


async def test_a_call_that_finished_as_its_caller_was_cancelled_gives_the_caller_its_result() -> None:
    thread = WorkerThread("test worker")
    thread.start()
    go, behind = threading.Event(), threading.Event()
    got: list[str] = []
    undone: list[str] = []

    def claim(call: WorkerCall[str]) -> str:
        go.wait(SYNC_TIMEOUT)
        return "claimed"

    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def caller() -> None:
            with scope:
                got.append(await thread.run(claim, undo=undone.append))
                await trio.lowlevel.checkpoint()  # the cancel arrives here
                got.append("not reached")

        nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        go.set()
        thread.submit(behind.set)
        # Blocks this Trio thread until the call has finished and woken its caller's socket, so that
        # the cancel below comes before Trio has seen the wakeup: the race, made certain.
        assert behind.wait(SYNC_TIMEOUT)
        scope.cancel()
    assert got == ["claimed"]
    assert scope.cancelled_caught
    assert undone == []  # received, so not undone
    assert await thread.run(lambda call: "reused") == "reused"  # its wakeup was drained before reuse
    await thread.stop()


class Crowd:
    """A call that holds the thread until ``go`` is set (``-1``), then ``n`` callers behind it (``3 * k``);
    each caller's outcome by its ``k``: its result, or ``"closed"`` if the thread was stopping."""

    def __init__(self, thread: WorkerThread) -> None:
        self.thread = thread
        self.go = threading.Event()
        self.outcomes: dict[int, int | str] = {}

    async def arrive(self, nursery: trio.Nursery, n: int) -> None:
        nursery.start_soon(self._call, -1)
        await trio.testing.wait_all_tasks_blocked()  # its call holds the thread: the next ones queue up
        for k in range(n):
            nursery.start_soon(self._call, k)
        await trio.testing.wait_all_tasks_blocked()

    async def _call(self, k: int) -> None:
        def hold(call: WorkerCall[int]) -> int:
            self.go.wait(SYNC_TIMEOUT)
            return -1

        def triple(call: WorkerCall[int]) -> int:
            return 3 * k

        try:
            result: int = await self.thread.run(hold if k < 0 else triple)
            self.outcomes[k] = result
        except trio.ClosedResourceError:
            self.outcomes[k] = "closed"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
async def test_many_callers_at_once_hold_a_bounded_number_of_sockets_and_all_get_their_results() -> None:
    """A burst of callers (a reconnecting crowd claiming sessions) queues at most WAITING_CALLS calls, each
    with its socket pair; the rest wait their turn in Trio, and every one gets its own result."""
    before = open_fds()
    thread = WorkerThread("test worker")
    thread.start()
    crowd = Crowd(thread)
    async with trio.open_nursery() as nursery:
        await crowd.arrive(nursery, 50)
        assert open_fds() - before == 2 * WAITING_CALLS  # bounded, whatever the number of callers
        crowd.go.set()
    assert crowd.outcomes == {-1: -1, **{k: 3 * k for k in range(50)}}
    await thread.stop()
    assert open_fds() == before


async def test_stop_runs_the_queued_calls_and_fails_those_still_waiting_their_turn() -> None:
    """stop() lets every queued call finish; a caller still waiting for its turn, or calling after, gets
    ClosedResourceError at once instead of queueing behind the end (where it would wait forever)."""
    thread = WorkerThread("test worker")
    thread.start()
    crowd = Crowd(thread)
    with trio.fail_after(SYNC_TIMEOUT):  # a caller queued behind the end would hang here
        async with trio.open_nursery() as nursery:
            await crowd.arrive(nursery, 12)
            nursery.start_soon(thread.stop)
            await trio.testing.wait_all_tasks_blocked()  # the waiting callers have been told
            assert list(crowd.outcomes.values()).count("closed") == 13 - WAITING_CALLS
            crowd.go.set()
    ran = {k: outcome for k, outcome in crowd.outcomes.items() if outcome != "closed"}
    assert len(ran) == WAITING_CALLS
    assert all(outcome == (-1 if k < 0 else 3 * k) for k, outcome in ran.items())
    with pytest.raises(trio.ClosedResourceError):
        await thread.run(lambda call: None)
