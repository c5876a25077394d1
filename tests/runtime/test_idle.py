"""IdleReaper: idle sessions closed on time by the runtime's one task, none kept once closed."""

from __future__ import annotations

import gc
import weakref

import pytest
import trio
import trio.testing

from agents import Agent, ScriptedModel
from runtime import open_runtime
from runtime._idle import IdleReaper
from runtime._latch import Latch


def _all_tasks() -> int:
    """How many tasks the run has now."""
    count, todo = 0, [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        count += 1
        todo.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


async def test_idle_sessions_cost_no_task_of_their_own(autojump_clock: trio.testing.MockClock) -> None:
    """A hundred sessions with an idle timeout add no task: one reaper closes them all, each on time."""
    agent = Agent(name="a", model=ScriptedModel([]))
    async with open_runtime() as runtime:
        await trio.testing.wait_all_tasks_blocked()
        before = _all_tasks()
        opened = trio.current_time()
        handles = [await runtime.start_session(agent, idle_timeout=10 + k % 3) for k in range(100)]
        await trio.testing.wait_all_tasks_blocked()
        assert _all_tasks() == before
        closed_at: dict[float, list[float]] = {10: [], 11: [], 12: []}
        with trio.fail_after(100):  # virtual time: a reaper that was never woken fails here, not hangs
            async with trio.open_nursery() as nursery:
                for k, handle in enumerate(handles):

                    async def note(handle: object = handle, timeout: float = 10 + k % 3) -> None:
                        await handle.wait_closed()  # type: ignore[attr-defined]
                        closed_at[timeout].append(trio.current_time() - opened)

                    nursery.start_soon(note)
        assert {timeout: set(times) for timeout, times in closed_at.items()} == {10: {10}, 11: {11}, 12: {12}}
        assert runtime.sessions == ()


async def test_a_session_used_again_counts_from_its_last_use(autojump_clock: trio.testing.MockClock) -> None:
    """Of two sessions with the same timeout, the one used later is reaped later: the queue stays in order."""
    agent = Agent(name="a", model=ScriptedModel(["ok"] * 4))
    async with open_runtime(idle_timeout=10) as runtime:
        first = await runtime.start_session(agent)
        second = await runtime.start_session(agent)
        start = trio.current_time()
        await trio.sleep(5)
        await first.session.ask("again")  # first now idle from t=5, second from t=0
        with trio.fail_after(100):
            await second.wait_closed()
        assert trio.current_time() - start == pytest.approx(10)
        assert not first.closed
        with trio.fail_after(100):
            await first.wait_closed()
        assert trio.current_time() - start == pytest.approx(15)


async def test_a_closed_session_is_forgotten(autojump_clock: trio.testing.MockClock) -> None:
    """A session closed before its idle time ran out is not kept alive by the reaper until then."""
    async with open_runtime(idle_timeout=3600) as runtime:
        handle = await runtime.start_session(Agent(name="a", model=ScriptedModel([])))
        await handle.aclose()
        session = weakref.ref(handle.session)
        del handle
        gc.collect()
        assert session() is None


async def test_the_reaper_wakes_for_an_earlier_deadline(autojump_clock: trio.testing.MockClock) -> None:
    """Asleep until a late deadline, the reaper is woken by an earlier one watched meanwhile."""
    reaper, stop, reaped = IdleReaper(), Latch(), list[str]()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        reaper.watch(100, lambda: reaped.append(f"late at {trio.current_time() - start:g}"))
        nursery.start_soon(reaper.serve, stop)
        await trio.testing.wait_all_tasks_blocked()
        reaper.watch(5, lambda: reaped.append(f"early at {trio.current_time() - start:g}"))
        await trio.sleep(200)
        stop.set()
    assert reaped == ["early at 5", "late at 100"]


async def test_watching_again_moves_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    """watch() of a watched reap restarts its countdown; forget() ends it."""
    reaper, stop, reaped = IdleReaper(), Latch(), list[float]()
    start = trio.current_time()

    def reap() -> None:
        reaped.append(trio.current_time() - start)

    def never() -> None:
        reaped.append(-1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reaper.serve, stop)
        reaper.watch(10, reap)
        reaper.watch(10, never)
        await trio.sleep(4)
        reaper.watch(10, reap)
        reaper.forget(10, never)
        await trio.sleep(100)
        stop.set()
    assert reaped == [14]


async def test_a_timeout_no_session_uses_any_more_keeps_nothing(autojump_clock: trio.testing.MockClock) -> None:
    """Idle timeouts are any float: sessions each with a timeout of their own, closed or reaped, leave no
    queue behind in the reaper."""
    agent = Agent(name="a", model=ScriptedModel([]))
    async with open_runtime() as runtime:
        closed = [await runtime.start_session(agent, idle_timeout=60 + k / 1000) for k in range(50)]
        reaped = [await runtime.start_session(agent, idle_timeout=1 + k / 1000) for k in range(50)]
        for handle in closed:
            await handle.aclose()
        assert sorted(runtime._reaper._queues) == [1 + k / 1000 for k in range(50)]
        with trio.fail_after(10):
            for handle in reaped:
                await handle.wait_closed()
        assert runtime._reaper._queues == {}
