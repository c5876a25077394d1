"""RunSlot: the session's FIFO run slot, checked on its own and against trio.StrictFIFOLock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pytest
import trio
import trio.testing

from runtime._run_slot import RunSlot

if TYPE_CHECKING:
    from collections.abc import Callable


class _Lock(Protocol):
    async def acquire(self) -> None: ...
    def release(self) -> None: ...


class _SlotAsLock:
    """RunSlot used the way Session uses it, shaped as a lock (one holder at a time here)."""

    def __init__(self) -> None:
        self._slot = RunSlot()
        self._held: trio.Event | None = None

    async def acquire(self) -> None:
        ticket = self._slot.take_ticket()
        if ticket is not None:
            try:
                await ticket.wait()
            except BaseException:
                self._slot.release(ticket)
                raise
        self._held = ticket

    def release(self) -> None:
        self._slot.release(self._held)


LOCKS: dict[str, Callable[[], _Lock]] = {"RunSlot": _SlotAsLock, "StrictFIFOLock": trio.StrictFIFOLock}


@pytest.fixture(params=sorted(LOCKS))
def make_lock(request: pytest.FixtureRequest) -> Callable[[], _Lock]:
    factory: Callable[[], _Lock] = LOCKS[request.param]
    return factory


def _queue(slot: RunSlot) -> trio.Event:
    """Take a ticket from a slot that is held, so it must be a real one."""
    ticket = slot.take_ticket()
    assert ticket is not None
    return ticket


def test_run_slot_free_slot_is_taken_without_a_ticket() -> None:
    """The first taker gets the slot at once (no ticket); the next one gets a ticket that is not yet set."""
    slot = RunSlot()
    assert slot.take_ticket() is None
    ticket = slot.take_ticket()
    assert ticket is not None
    assert not ticket.is_set()


def test_run_slot_release_passes_the_slot_on_in_fifo_order() -> None:
    """Each release sets the oldest waiting ticket only, and the slot is free after the last one."""
    slot = RunSlot()
    first = slot.take_ticket()
    tickets = [_queue(slot) for _ in range(3)]
    released: trio.Event | None = first
    for i, ticket in enumerate(tickets):
        slot.release(released)
        assert [t.is_set() for t in tickets] == [j <= i for j in range(3)]
        released = ticket
    slot.release(released)
    assert slot.take_ticket() is None


def test_run_slot_passed_on_slot_stays_held() -> None:
    """While the slot passes to a waiter, a newcomer queues behind it instead of taking it."""
    slot = RunSlot()
    holder = slot.take_ticket()
    waiter = _queue(slot)
    slot.release(holder)
    assert waiter.is_set()
    newcomer = _queue(slot)
    assert not newcomer.is_set()
    slot.release(waiter)
    assert newcomer.is_set()


def test_run_slot_waiter_leaving_before_its_turn_leaves_the_queue() -> None:
    """Releasing a ticket that was never set removes it from the queue: the slot skips it."""
    slot = RunSlot()
    holder = slot.take_ticket()
    leaving, next_in_line = _queue(slot), _queue(slot)
    slot.release(leaving)
    assert not next_in_line.is_set()  # leaving did not pass on a slot it never held
    slot.release(holder)
    assert next_in_line.is_set()
    assert not leaving.is_set()
    slot.release(next_in_line)
    assert slot.take_ticket() is None


def test_run_slot_waiter_leaving_after_its_turn_came_passes_the_slot_on() -> None:
    """A waiter whose ticket was set (it held the slot) passes it on when it releases, even if it never ran."""
    slot = RunSlot()
    holder = slot.take_ticket()
    cancelled_late, next_in_line = _queue(slot), _queue(slot)
    slot.release(holder)
    slot.release(cancelled_late)
    assert next_in_line.is_set()


async def test_run_slot_serves_tasks_one_at_a_time_in_fifo_order(make_lock: Callable[[], _Lock]) -> None:
    """Tasks hold the slot one at a time, in the order they queued, skipping one cancelled while waiting."""
    lock = make_lock()
    order: list[int] = []
    holders = 0
    go_on = trio.Event()

    async def run(i: int, scope: trio.CancelScope) -> None:
        nonlocal holders
        with scope:
            await lock.acquire()
            try:
                holders += 1
                assert holders == 1
                order.append(i)
                if i == 0:
                    await go_on.wait()
                await trio.lowlevel.checkpoint()
                holders -= 1
            finally:
                lock.release()

    scopes = [trio.CancelScope() for _ in range(5)]
    async with trio.open_nursery() as nursery:
        for i, scope in enumerate(scopes):
            nursery.start_soon(run, i, scope)
            await trio.testing.wait_all_tasks_blocked()  # so each queues before the next
        scopes[2].cancel()
        await trio.testing.wait_all_tasks_blocked()
        go_on.set()
    assert order == [0, 1, 3, 4]
    assert scopes[2].cancelled_caught
