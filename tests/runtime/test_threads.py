"""ToolThreads: the sync tools' thread limiter, checked against trio.CapacityLimiter and in a run; and each
session's share of it."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Final

import pytest
import trio
import trio.testing

from agents import Agent, ScriptedModel, ThreadLimiter, ToolCall
from runtime import open_runtime
from runtime._threads import SESSION_TOOL_THREADS, TOOL_THREADS, ToolThreads, session_threads, tool_threads
from runtime.events import ToolCallStarted

if TYPE_CHECKING:
    from collections.abc import Callable

WAIT: Final = 10
"""Seconds after which a broken case fails instead of hanging."""

LIMITERS: Final[dict[str, Callable[[int], ThreadLimiter]]] = {
    "ToolThreads": ToolThreads,
    "CapacityLimiter": trio.CapacityLimiter,
}


@pytest.fixture(params=sorted(LIMITERS))
def make_limiter(request: pytest.FixtureRequest) -> Callable[[int], ThreadLimiter]:
    """Each limiter in turn: ours, and trio's as the reference."""
    factory: Callable[[int], ThreadLimiter] = LIMITERS[request.param]
    return factory


class Blocking:
    """Work for worker threads that blocks until ``release`` (bounded by WAIT: a broken limiter fails its test
    instead of hanging), counting how many run at once and the most; ``reached`` is set once ``signal_at``
    have started."""

    def __init__(self, *, signal_at: int) -> None:
        self.release = threading.Event()
        self.reached = trio.Event()
        self.started: list[int] = []
        self.running = self.most = 0
        self._signal_at = signal_at
        self._lock = threading.Lock()

    def __call__(self, n: int) -> int:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.started.append(n)
            reached = len(self.started) == self._signal_at
        if reached:
            trio.from_thread.run_sync(self.reached.set)
        self.release.wait(WAIT)
        with self._lock:
            self.running -= 1
        return n


class Holders:
    """Tasks borrowing from a limiter, in the order they got it, and how many held it at once."""

    def __init__(self, limiter: ThreadLimiter) -> None:
        self.limiter = limiter
        self.order: list[int] = []
        self.holding = 0
        self.most = 0
        self.go_on = trio.Event()

    async def borrow(self, i: int, scope: trio.CancelScope | None = None) -> None:
        """Acquire (inside ``scope``), hold until ``go_on``, release."""
        borrower = object()
        with scope or trio.CancelScope():
            await self.limiter.acquire_on_behalf_of(borrower)
            try:
                self.order.append(i)
                self.holding += 1
                self.most = max(self.most, self.holding)
                await self.go_on.wait()
                await trio.lowlevel.checkpoint()  # let others run while this one still holds
                self.holding -= 1
            finally:
                self.limiter.release_on_behalf_of(borrower)


async def test_threads_never_more_than_total_at_once(make_limiter: Callable[[int], ThreadLimiter]) -> None:
    """With a limit of 2, six borrowers hold it two at a time and all get it in the end."""
    holders = Holders(make_limiter(2))
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(holders.borrow, i)
            await trio.testing.wait_all_tasks_blocked()
            assert holders.holding == 2
            holders.go_on.set()
    assert holders.most == 2
    assert sorted(holders.order) == list(range(6))


async def test_threads_waiters_are_served_in_fifo_order(make_limiter: Callable[[int], ThreadLimiter]) -> None:
    """Borrowers that had to wait get the limiter in the order they asked."""
    limiter = make_limiter(1)
    holders = Holders(limiter)
    holders.go_on.set()
    me = object()
    await limiter.acquire_on_behalf_of(me)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(holders.borrow, i)
                await trio.testing.wait_all_tasks_blocked()  # so each queues before the next
            assert holders.order == []
            limiter.release_on_behalf_of(me)
    assert holders.order == [0, 1, 2, 3, 4]
    assert holders.most == 1


async def test_threads_released_thread_goes_to_the_waiter_not_a_newcomer(
    make_limiter: Callable[[int], ThreadLimiter],
) -> None:
    """A release hands the thread to the first waiter: a borrower arriving just after cannot take it first."""
    limiter = make_limiter(1)
    holders = Holders(limiter)
    holders.go_on.set()
    me = object()
    await limiter.acquire_on_behalf_of(me)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holders.borrow, 0)
            await trio.testing.wait_all_tasks_blocked()
            limiter.release_on_behalf_of(me)
            nursery.start_soon(holders.borrow, 1)
    assert holders.order == [0, 1]
    assert holders.most == 1


async def test_threads_cancelled_waiter_leaves_the_queue(make_limiter: Callable[[int], ThreadLimiter]) -> None:
    """A waiter cancelled in line never gets the limiter; those behind it move up, and no thread is lost."""
    limiter = make_limiter(1)
    holders = Holders(limiter)
    holders.go_on.set()
    scopes = [trio.CancelScope() for _ in range(3)]
    me = object()
    await limiter.acquire_on_behalf_of(me)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            for i, scope in enumerate(scopes):
                nursery.start_soon(holders.borrow, i, scope)
                await trio.testing.wait_all_tasks_blocked()
            scopes[1].cancel()
            await trio.testing.wait_all_tasks_blocked()
            limiter.release_on_behalf_of(me)
        # The one thread is free again: taking it does not wait.
        await limiter.acquire_on_behalf_of(me)
    limiter.release_on_behalf_of(me)
    assert holders.order == [0, 2]
    assert scopes[1].cancelled_caught


def test_threads_rejects_a_negative_total(make_limiter: Callable[[int], ThreadLimiter]) -> None:
    """A negative limit is a ValueError."""
    with pytest.raises(ValueError, match="must be >= 0"):
        make_limiter(-1)


async def test_threads_to_thread_runs_at_most_total_threads(make_limiter: Callable[[int], ThreadLimiter]) -> None:
    """Through trio.to_thread.run_sync, six blocking calls with a limit of 2 run two real threads at a time."""
    limiter = make_limiter(2)
    work = Blocking(signal_at=2)

    async def call(i: int) -> None:
        await trio.to_thread.run_sync(work, i, limiter=limiter)  # type: ignore[arg-type]

    try:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                for i in range(6):
                    nursery.start_soon(call, i)
                await work.reached.wait()
                # The other four wait in the limiter, in Trio, so no thread can start behind our back.
                await trio.testing.wait_all_tasks_blocked()
                assert len(work.started) == 2
                work.release.set()
    finally:
        work.release.set()
    assert work.most == 2
    assert sorted(work.started) == list(range(6))


# -- ToolThreads only ------------------------------------------------------------


async def test_threads_free_thread_is_taken_without_a_schedule_point() -> None:
    """Unlike CapacityLimiter, taking a free thread does not checkpoint (to_thread.run_sync does once anyway)."""
    limiter = ToolThreads(1)
    with trio.testing.assert_no_checkpoints():
        await limiter.acquire_on_behalf_of(None)
    limiter.release_on_behalf_of(None)


async def test_threads_one_limiter_per_trio_run() -> None:
    """tool_threads gives the same TOOL_THREADS-wide limiter for the whole trio run."""
    limiter = tool_threads()
    assert tool_threads() is limiter
    taken = [object() for _ in range(TOOL_THREADS)]
    for borrower in taken:
        await limiter.acquire_on_behalf_of(borrower)
    with trio.move_on_after(0) as scope:  # the next one has to wait: the limit is TOOL_THREADS
        await limiter.acquire_on_behalf_of(object())
    assert scope.cancelled_caught
    for borrower in taken:
        limiter.release_on_behalf_of(borrower)


async def test_threads_sync_tools_in_a_run_wait_for_the_runtimes_limiter() -> None:
    """A run's sync tool takes its thread from tool_threads: with all taken, it waits there until one is freed."""
    called: list[int] = []

    def record(n: int) -> int:
        called.append(n)
        return n

    limiter = tool_threads()
    taken = [object() for _ in range(TOOL_THREADS)]
    for borrower in taken:
        await limiter.acquire_on_behalf_of(borrower)
    model = ScriptedModel([ToolCall("record", {"n": 7}), "done"])
    results: list[Any] = []

    async def run(session: Any) -> None:
        results.append(await session.ask("go"))

    with trio.fail_after(WAIT):
        async with (
            open_runtime() as runtime,
            runtime.open_session(Agent(name="a", model=model, tools=[record])) as session,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, session)
                await trio.testing.wait_all_tasks_blocked()
                assert len(limiter._waiting) == 1  # the tool call, in line for a thread
                assert called == []
                limiter.release_on_behalf_of(taken.pop())
    for borrower in taken:
        limiter.release_on_behalf_of(borrower)
    assert called == [7]
    assert [c.result for c in results[0].tool_calls] == [7]


async def test_threads_the_wait_for_a_thread_does_not_count_against_tool_timeout(
    mock_clock: trio.testing.MockClock,
) -> None:
    """With every thread of the trio run taken (as abandoned threads of a closed session hold theirs), a sync
    tool waits in line for one past its tool_timeout, then runs and gives its result: the timeout bounds the
    tool's own work, from the moment it has its thread. The wait counted, and the call timed out without
    having run."""
    called: list[int] = []

    def double(x: int) -> int:
        called.append(x)
        return 2 * x

    limiter = tool_threads()
    taken = [object() for _ in range(TOOL_THREADS)]
    for borrower in taken:
        await limiter.acquire_on_behalf_of(borrower)
    model = ScriptedModel([ToolCall("double", {"x": 21}), "done"])
    agent = Agent(name="a", model=model, tools=[double], tool_timeout=1.0)
    results: list[Any] = []

    async def run(session: Any) -> None:
        results.append(await session.ask("go"))

    try:
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, session)
                await trio.testing.wait_all_tasks_blocked()
                assert len(limiter._waiting) == 1  # the call, in line for a thread
                mock_clock.jump(10)  # well past its tool_timeout (the clock stands still otherwise)
                await trio.testing.wait_all_tasks_blocked()
                assert len(limiter._waiting) == 1  # still in line, not timed out
                limiter.release_on_behalf_of(taken.pop())
    finally:
        for borrower in taken:
            limiter.release_on_behalf_of(borrower)
    assert called == [21]
    (call,) = results[0].tool_calls
    assert (call.result, call.error) == (42, None)


async def test_threads_a_call_waiting_for_a_thread_is_cancelled_at_once_and_leaves_the_line() -> None:
    """A sync tool call under tool_timeout waiting for a thread ends at once when its session closes, and
    leaves the line: the thread freed next goes to the one behind it."""
    limiter = tool_threads()
    taken = [object() for _ in range(TOOL_THREADS)]
    for borrower in taken:
        await limiter.acquire_on_behalf_of(borrower)

    def record(n: int) -> int:
        return n

    agent = Agent(name="a", model=ScriptedModel([ToolCall("record", {"n": 1})]), tools=[record], tool_timeout=1.0)
    try:
        with trio.fail_after(WAIT):
            async with open_runtime() as runtime:
                async with runtime.open_session(agent) as session, session.run("go") as stream:
                    async for event in stream:
                        if isinstance(event, ToolCallStarted):
                            break
                    await trio.testing.wait_all_tasks_blocked()
                    assert len(limiter._waiting) == 1
                assert not limiter._waiting  # the session closed: its call left the line
                last = object()
                limiter.release_on_behalf_of(taken.pop())
                await limiter.acquire_on_behalf_of(last)  # the freed thread was not handed to a gone waiter
                taken.append(last)
    finally:
        for borrower in taken:
            limiter.release_on_behalf_of(borrower)


# -- each session's share --------------------------------------------------------


@pytest.mark.parametrize("same_id", [False, True], ids=["another-id", "same-id-another-runtime"])
async def test_threads_a_session_with_hanging_tools_leaves_threads_for_the_others(same_id: bool) -> None:
    """A session whose sync tools all hang holds SESSION_TOOL_THREADS threads at most, its other calls waiting
    in its own line: another session's sync tool still gets a thread and answers, even one with the same id
    in another runtime (a share is the session's, not its id's). Before, the hanging session took all
    TOOL_THREADS and every other session's sync tools waited for it."""
    calls = TOOL_THREADS + 5
    blocking = Blocking(signal_at=SESSION_TOOL_THREADS)

    def hang(n: int) -> int:
        return blocking(n)

    def double(x: int) -> int:
        return 2 * x

    hanging = Agent(name="h", model=ScriptedModel([[ToolCall("hang", {"n": n}) for n in range(calls)], "done"]),
                    tools=[hang])  # fmt: skip
    other = Agent(name="o", model=ScriptedModel([ToolCall("double", {"x": 21}), "done"]), tools=[double])
    results: list[Any] = []

    async def ask(session: Any) -> None:
        results.append(await session.ask("go"))

    try:
        with trio.fail_after(WAIT):
            async with (
                open_runtime() as runtime,
                open_runtime() as elsewhere,
                runtime.open_session(hanging) as stuck,
                (elsewhere if same_id else runtime).open_session(
                    other, session_id=stuck.id if same_id else None
                ) as healthy,
            ):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ask, stuck)
                    await blocking.reached.wait()
                    await trio.testing.wait_all_tasks_blocked()
                    assert tool_threads()._free == TOOL_THREADS - SESSION_TOOL_THREADS
                    answered = await healthy.ask("go")  # its tool gets one of the threads left
                    assert [call.result for call in answered.tool_calls] == [42]
                    assert blocking.running == SESSION_TOOL_THREADS  # the hanging session never took more
                    blocking.release.set()
    finally:
        blocking.release.set()
    assert blocking.most == SESSION_TOOL_THREADS
    assert sorted(call.result for call in results[0].tool_calls) == list(range(calls))
    assert tool_threads()._free == TOOL_THREADS  # every thread given back, shares too


async def test_threads_a_session_share_waiting_for_a_thread_is_cancelled_cleanly() -> None:
    """A call that has its place in the session's share but waits for a thread of the trio run's, cancelled,
    gives its place back: the session's share is whole again, and nothing waits anywhere."""
    shared = tool_threads()
    taken = [object() for _ in range(TOOL_THREADS)]
    for borrower in taken:
        await shared.acquire_on_behalf_of(borrower)
    share = session_threads(object())
    with trio.move_on_after(0) as scope:
        await share.acquire_on_behalf_of(object())
    assert scope.cancelled_caught
    assert not shared._waiting
    assert share._own._free == SESSION_TOOL_THREADS
    for borrower in taken:
        shared.release_on_behalf_of(borrower)
    assert share.try_acquire()
    assert shared._free == TOOL_THREADS - 1
    share.release_on_behalf_of(None)
    assert shared._free == TOOL_THREADS


async def test_threads_a_session_share_is_one_per_session_while_anything_holds_it() -> None:
    """Every call of a session gets the same share while anything holds it (a call, or trio for an abandoned
    thread); another session has its own; a share nothing holds is gone (an idle session keeps nothing)."""

    class Session:
        """Stands for a session: shares are keyed by the object."""

    one, two = Session(), Session()
    first = session_threads(one)
    assert session_threads(one) is first
    assert session_threads(two) is not first
    assert first.try_acquire()
    assert session_threads(one) is first  # its tokens stay counted against the session
    first.release_on_behalf_of(None)
    gone = weakref.ref(first)
    del first  # reference counting alone frees it
    assert gone() is None
