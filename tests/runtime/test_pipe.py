"""EventPipe against trio's memory channel: one conformance suite run on both.

The cases are the subset of trio's own ``_tests/test_channel.py`` that
applies to one consumer and no clones (``test_channel``, ``test_553``,
``test_close_basics``, ``test_close_sync``, ``test_channel_fairness``,
``test_unbuffered``), plus cancellation and FIFO cases trio covers
elsewhere. Each runs against ``EventPipe`` and against
``trio.open_memory_channel`` behind a small adapter, so a case that passes
for the memory channel states trio's behaviour and the same case passing for
``EventPipe`` proves it matches. Not ported: clones, several receivers,
``statistics()`` (EventPipe keeps none), infinite capacity, ``async for``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings, strategies as st

from runtime._pipe import EventPipe

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

T = TypeVar("T")

WAIT: Final = 10
"""Seconds after which a broken case fails instead of hanging."""


class Pipe(Protocol[T]):
    """EventPipe's interface, which the memory-channel adapter implements too."""

    @property
    def receiver_closed(self) -> bool: ...
    def send_nowait(self, item: T) -> None: ...
    async def send(self, item: T) -> None: ...
    def close_sender(self) -> None: ...
    def receive_nowait(self) -> T: ...
    async def receive(self) -> T: ...
    def close_receiver(self) -> None: ...


class MemoryChannelPipe(Generic[T]):
    """``trio.open_memory_channel`` shaped as an EventPipe: the reference behaviour."""

    def __init__(self, capacity: int) -> None:
        self._send, self._receive = trio.open_memory_channel[T](capacity)

    @property
    def receiver_closed(self) -> bool:
        return self._send.statistics().open_receive_channels == 0

    def send_nowait(self, item: T) -> None:
        self._send.send_nowait(item)

    async def send(self, item: T) -> None:
        await self._send.send(item)

    def close_sender(self) -> None:
        self._send.close()

    def receive_nowait(self) -> T:
        return self._receive.receive_nowait()

    async def receive(self) -> T:
        return await self._receive.receive()

    def close_receiver(self) -> None:
        self._receive.close()


IMPLEMENTATIONS: Final[dict[str, Callable[[int], Pipe[Any]]]] = {
    "EventPipe": EventPipe,
    "memory_channel": MemoryChannelPipe,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make_pipe(request: pytest.FixtureRequest) -> Callable[[int], Pipe[Any]]:
    """Each implementation in turn."""
    factory: Callable[[int], Pipe[Any]] = IMPLEMENTATIONS[request.param]
    return factory


@asynccontextmanager
async def bounded_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery that fails with TooSlowError instead of hanging when a case is broken."""
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            yield nursery


def drain(pipe: Pipe[T]) -> list[T]:
    """Everything receive_nowait gives until it would block."""
    items = []
    while True:
        try:
            items.append(pipe.receive_nowait())
        except trio.WouldBlock:
            return items


# -- buffering and order (trio: test_channel) ----------------------------------


async def test_pipe_delivers_in_order_and_bounds_the_buffer(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """Items arrive in FIFO order; send_nowait raises WouldBlock once the buffer is full, receive_nowait once empty."""
    pipe = make_pipe(2)
    pipe.send_nowait(1)
    await pipe.send(2)
    with pytest.raises(trio.WouldBlock):
        pipe.send_nowait(3)
    assert await pipe.receive() == 1
    assert pipe.receive_nowait() == 2
    with pytest.raises(trio.WouldBlock):
        pipe.receive_nowait()


async def test_pipe_send_and_receive_are_checkpoints(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """send and receive checkpoint even when they need not wait."""
    pipe = make_pipe(1)
    with trio.testing.assert_checkpoints():
        await pipe.send(1)
    with trio.testing.assert_checkpoints():
        assert await pipe.receive() == 1


async def test_pipe_send_with_a_cancel_pending_delivers_nothing(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """A send in a cancelled scope raises Cancelled and its item is not buffered, though there was room."""
    pipe = make_pipe(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await pipe.send("never")
    assert scope.cancelled_caught
    with pytest.raises(trio.WouldBlock):
        pipe.receive_nowait()


async def test_pipe_receive_with_a_cancel_pending_takes_nothing(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """A receive in a cancelled scope raises Cancelled and leaves the buffered item in place."""
    pipe = make_pipe(1)
    pipe.send_nowait("kept")
    with trio.CancelScope() as scope:
        scope.cancel()
        await pipe.receive()
    assert scope.cancelled_caught
    assert pipe.receive_nowait() == "kept"


def test_pipe_rejects_a_negative_capacity(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """A negative capacity is a ValueError."""
    with pytest.raises(ValueError, match="must be >= 0"):
        make_pipe(-1)


# -- capacity 0 (trio: test_unbuffered) -----------------------------------------


async def test_pipe_capacity_zero_is_a_rendezvous(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """With no buffer, nothing moves unless both sides are there; a blocked send completes when received."""
    pipe = make_pipe(0)
    with pytest.raises(trio.WouldBlock):
        pipe.receive_nowait()
    with pytest.raises(trio.WouldBlock):
        pipe.send_nowait(1)
    sent = trio.Event()

    async def send() -> None:
        with trio.testing.assert_checkpoints():
            await pipe.send(1)
        sent.set()

    async with bounded_nursery() as nursery:
        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        with trio.testing.assert_checkpoints():
            assert await pipe.receive() == 1
    with pytest.raises(trio.WouldBlock):
        pipe.receive_nowait()


async def test_pipe_capacity_zero_hands_over_to_a_waiting_receiver(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """With no buffer, send_nowait succeeds when the consumer is waiting, handing the item straight to it."""
    pipe = make_pipe(0)
    received: list[str] = []

    async def consumer() -> None:
        received.append(await pipe.receive())
        received.append(await pipe.receive())

    async with bounded_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        pipe.send_nowait("direct")
        await trio.testing.wait_all_tasks_blocked()
        await pipe.send("awaited")
    assert received == ["direct", "awaited"]


# -- blocked senders: room, fairness, FIFO (trio: test_channel_fairness) --------


async def test_pipe_blocked_send_resumes_when_the_consumer_makes_room(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """A send to a full pipe waits until the consumer takes an item, then its item follows in order."""
    pipe = make_pipe(1)
    pipe.send_nowait(1)
    sent = trio.Event()

    async def producer() -> None:
        await pipe.send(2)
        sent.set()

    async with bounded_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        assert pipe.receive_nowait() == 1
    assert sent.is_set()
    assert pipe.receive_nowait() == 2


async def test_pipe_room_goes_to_a_blocked_sender_first(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """When the consumer frees a place, a blocked sender owns it: send_nowait cannot jump the queue."""
    pipe = make_pipe(1)
    pipe.send_nowait(1)
    async with bounded_nursery() as nursery:
        nursery.start_soon(pipe.send, 2)
        await trio.testing.wait_all_tasks_blocked()
        assert pipe.receive_nowait() == 1
        with pytest.raises(trio.WouldBlock):
            pipe.send_nowait(3)
        assert await pipe.receive() == 2


async def test_pipe_item_sent_to_a_waiting_receiver_is_its_own(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """An item sent while the consumer waits goes to that receive, not to a receive_nowait that runs first."""
    pipe = make_pipe(1)
    received: list[int] = []

    async def consumer() -> None:
        received.append(await pipe.receive())

    async with bounded_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        pipe.send_nowait(2)
        with pytest.raises(trio.WouldBlock):
            pipe.receive_nowait()
    assert received == [2]


@pytest.mark.parametrize("capacity", [0, 1])
async def test_pipe_blocked_senders_are_served_in_fifo_order(
    make_pipe: Callable[[int], Pipe[Any]], capacity: int
) -> None:
    """Senders blocked on a full pipe deliver in the order they blocked."""
    pipe = make_pipe(capacity)
    if capacity:
        pipe.send_nowait("buffered")
    async with bounded_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(pipe.send, i)
            await trio.testing.wait_all_tasks_blocked()  # so each blocks before the next
        received = [await pipe.receive() for _ in range(5 + capacity)]
    assert received == ["buffered"] * capacity + [0, 1, 2, 3, 4]


# -- cancellation ------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, 1])
async def test_pipe_cancelled_blocked_send_is_not_delivered_and_leaves_the_queue(
    make_pipe: Callable[[int], Pipe[Any]], capacity: int
) -> None:
    """A blocked send that is cancelled never delivers, and the senders behind it move up."""
    pipe = make_pipe(capacity)
    if capacity:
        pipe.send_nowait("buffered")
    scopes = {name: trio.CancelScope() for name in ("first", "withdrawn", "last")}

    async def send(name: str) -> None:
        with scopes[name]:
            await pipe.send(name)

    async with bounded_nursery() as nursery:
        for name in scopes:
            nursery.start_soon(send, name)
            await trio.testing.wait_all_tasks_blocked()
        scopes["withdrawn"].cancel()
        await trio.testing.wait_all_tasks_blocked()
        received = [await pipe.receive() for _ in range(2 + capacity)]
    assert received == ["buffered"] * capacity + ["first", "last"]
    assert scopes["withdrawn"].cancelled_caught
    with pytest.raises(trio.WouldBlock):
        pipe.receive_nowait()


@pytest.mark.parametrize("capacity", [0, 1])
async def test_pipe_cancelled_receive_leaves_no_stale_waiter(
    make_pipe: Callable[[int], Pipe[Any]], capacity: int, autojump_clock: trio.testing.MockClock
) -> None:
    """After a receive times out (trio #553), sends behave as if it never waited."""
    pipe = make_pipe(capacity)
    with trio.move_on_after(10) as timeout:
        await pipe.receive()
    assert timeout.cancelled_caught
    if capacity:
        pipe.send_nowait("buffered")
        assert pipe.receive_nowait() == "buffered"
    else:
        with pytest.raises(trio.WouldBlock):
            pipe.send_nowait("nobody is receiving")


# -- closing (trio: test_channel, test_close_basics, test_close_sync) -------------


async def test_pipe_close_sender_drains_then_ends(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """After the producers close, buffered items still arrive, then EndOfChannel, for good; sends are closed."""
    pipe = make_pipe(4)
    pipe.send_nowait("last")
    pipe.close_sender()
    pipe.close_sender()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await pipe.send("too late")
    with pytest.raises(trio.ClosedResourceError):
        pipe.send_nowait("too late")
    assert pipe.receive_nowait() == "last"
    with pytest.raises(trio.EndOfChannel):
        await pipe.receive()
    with pytest.raises(trio.EndOfChannel):
        pipe.receive_nowait()
    assert not pipe.receiver_closed


async def test_pipe_close_sender_fails_blocked_sends_without_delivering(
    make_pipe: Callable[[int], Pipe[Any]],
) -> None:
    """Closing the producers' side fails blocked sends with ClosedResourceError; their items never arrive."""
    pipe = make_pipe(0)
    errors: list[type[BaseException]] = []

    async def producer() -> None:
        try:
            await pipe.send("blocked")
        except trio.ClosedResourceError as exc:
            errors.append(type(exc))

    async with bounded_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        pipe.close_sender()
    assert errors == [trio.ClosedResourceError]
    with pytest.raises(trio.EndOfChannel):
        pipe.receive_nowait()
    with pytest.raises(trio.EndOfChannel):
        await pipe.receive()


async def test_pipe_close_sender_wakes_a_waiting_consumer(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """A consumer blocked in receive gets EndOfChannel when the producers close."""
    pipe = make_pipe(4)
    ended = trio.Event()

    async def consumer() -> None:
        with pytest.raises(trio.EndOfChannel):
            await pipe.receive()
        ended.set()

    async with bounded_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        pipe.close_sender()
    assert ended.is_set()


@pytest.mark.parametrize("capacity", [0, 1])
async def test_pipe_close_receiver_breaks_blocked_and_later_sends(
    make_pipe: Callable[[int], Pipe[Any]], capacity: int
) -> None:
    """Closing the consumer's side fails blocked sends and later ones with BrokenResourceError, for good."""
    pipe = make_pipe(capacity)
    if capacity:
        pipe.send_nowait("dropped")
    errors: list[type[BaseException]] = []

    async def producer() -> None:
        try:
            await pipe.send("blocked")
        except trio.BrokenResourceError as exc:
            errors.append(type(exc))

    async with bounded_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        pipe.close_receiver()
        pipe.close_receiver()  # idempotent
    assert errors == [trio.BrokenResourceError]
    assert pipe.receiver_closed
    with pytest.raises(trio.BrokenResourceError):
        pipe.send_nowait("later")
    with pytest.raises(trio.BrokenResourceError):
        await pipe.send("later")
    with pytest.raises(trio.ClosedResourceError):
        pipe.receive_nowait()
    with pytest.raises(trio.ClosedResourceError):
        await pipe.receive()


async def test_pipe_close_receiver_wakes_a_waiting_consumer(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """A receive blocked when its own side is closed raises ClosedResourceError."""
    pipe = make_pipe(0)
    closed = trio.Event()

    async def consumer() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await pipe.receive()
        closed.set()

    async with bounded_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        pipe.close_receiver()
    assert closed.is_set()


async def test_pipe_own_side_closed_wins_over_the_other(make_pipe: Callable[[int], Pipe[Any]]) -> None:
    """With both sides closed, each side reports its own closing: ClosedResourceError, not Broken or EndOfChannel."""
    pipe = make_pipe(1)
    pipe.send_nowait(1)
    pipe.close_sender()
    pipe.close_receiver()
    with pytest.raises(trio.ClosedResourceError):
        pipe.send_nowait(2)
    with pytest.raises(trio.ClosedResourceError):
        pipe.receive_nowait()


# -- EventPipe only -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "make_room"),
    [
        (1, "receive_nowait"),
        (0, "receive"),
        (1, "close_sender"),
        (1, "close_receiver"),
    ],
)
async def test_pipe_room_waits_until_a_send_would_not_block(capacity: int, make_room: str) -> None:
    """EventPipe.room (for a Tee) returns once a send would not wait, without sending anything itself."""
    pipe = EventPipe[int](capacity)
    if capacity:
        pipe.send_nowait(1)
    with trio.testing.assert_checkpoints():
        with trio.move_on_after(0) as timeout:
            await pipe.room()  # no room: it waits
    assert timeout.cancelled_caught
    roomy = trio.Event()

    async def wait_for_room() -> None:
        await pipe.room()
        roomy.set()

    async with bounded_nursery() as nursery:
        nursery.start_soon(wait_for_room)
        await trio.testing.wait_all_tasks_blocked()
        assert not roomy.is_set()
        if make_room == "receive":
            nursery.start_soon(pipe.receive)
        else:
            getattr(pipe, make_room)()
        await roomy.wait()
        with trio.testing.assert_checkpoints():
            await pipe.room()  # room, or closed: it returns at once, a checkpoint all the same
        if make_room.startswith("receive"):
            pipe.send_nowait(2)  # room() took nothing: the room is there for a send


async def test_pipe_refuses_a_second_concurrent_receiver() -> None:
    """EventPipe has one consumer: a second task waiting in receive is a BusyResourceError (trio allows it)."""
    pipe = EventPipe[int](1)
    async with bounded_nursery() as nursery:
        nursery.start_soon(pipe.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await pipe.receive()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("implementation", sorted(IMPLEMENTATIONS))
@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(0, 4),
    producers=st.lists(st.lists(st.integers(), max_size=12), min_size=1, max_size=4),
    consumer_delays=st.lists(st.booleans(), max_size=40),
)
def test_pipe_delivers_everything_once_in_each_producers_order(
    implementation: str, capacity: int, producers: list[list[int]], consumer_delays: list[bool]
) -> None:
    """Under any interleaving, every item arrives exactly once and each producer's items keep their order."""

    async def main() -> list[tuple[int, int]]:
        pipe: Pipe[tuple[int, int]] = IMPLEMENTATIONS[implementation](capacity)
        received: list[tuple[int, int]] = []
        delays = iter(consumer_delays)

        async def produce(index: int, items: list[int]) -> None:
            for item in items:
                await pipe.send((index, item))

        async def consume() -> None:
            while True:
                try:
                    received.append(await pipe.receive())
                except trio.EndOfChannel:
                    return
                if next(delays, False):
                    await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            async with trio.open_nursery() as senders:
                for index, items in enumerate(producers):
                    senders.start_soon(produce, index, items)
            pipe.close_sender()
        return received

    received = trio.run(main)
    assert sorted(received) == sorted((i, x) for i, items in enumerate(producers) for x in items)
    for index, items in enumerate(producers):
        assert [x for i, x in received if i == index] == items
