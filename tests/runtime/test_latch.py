"""Latch: a one-way awaitable flag, like trio.Event but with no checkpoint once set."""

from __future__ import annotations

from typing import Final

import trio
import trio.testing

from runtime._latch import Latch

WAIT: Final = 60
"""Mock seconds after which a test fails instead of hanging (autojump_clock)."""


async def test_latch_set_before_wait_returns_without_a_checkpoint(autojump_clock: trio.testing.MockClock) -> None:
    """Once set, wait returns at once and is not a checkpoint: even a cancelled scope does not interrupt it."""
    latch = Latch()
    latch.set()
    assert latch.is_set()
    with trio.fail_after(WAIT), trio.testing.assert_no_checkpoints():
        await latch.wait()
    with trio.CancelScope() as scope:
        scope.cancel()
        await latch.wait()
    assert not scope.cancelled_caught


async def test_latch_wait_before_set_blocks_until_set(autojump_clock: trio.testing.MockClock) -> None:
    """A waiter blocks until set is called, then wakes."""
    latch = Latch()
    woke = trio.Event()

    async def waiter() -> None:
        await latch.wait()
        woke.set()

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not latch.is_set()
            assert not woke.is_set()
            latch.set()
    assert woke.is_set()


async def test_latch_set_wakes_every_waiter(autojump_clock: trio.testing.MockClock) -> None:
    """All tasks waiting when set is called wake, and set again is harmless."""
    latch = Latch()
    woke: list[int] = []

    async def waiter(i: int) -> None:
        await latch.wait()
        woke.append(i)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(waiter, i)
            await trio.testing.wait_all_tasks_blocked()
            assert woke == []
            latch.set()
            latch.set()
    assert sorted(woke) == list(range(5))


async def test_latch_blocked_wait_is_cancellable_and_leaves_others_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A blocked wait is a checkpoint: cancelling one waiter neither wakes nor loses the others."""
    latch = Latch()
    woke: list[str] = []
    cancelled = trio.CancelScope()

    async def waiter(name: str, scope: trio.CancelScope) -> None:
        with scope:
            await latch.wait()
            woke.append(name)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, "cancelled", cancelled)
            nursery.start_soon(waiter, "kept", trio.CancelScope())
            await trio.testing.wait_all_tasks_blocked()
            cancelled.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert woke == []
            latch.set()
    assert woke == ["kept"]
    assert cancelled.cancelled_caught


def test_latch_costs_no_event_until_someone_waits() -> None:
    """Setting a latch nobody waited on makes no trio.Event (the reason Latch exists)."""
    latch = Latch()
    latch.set()
    assert latch._event is None
