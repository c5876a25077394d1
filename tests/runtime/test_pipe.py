"""EventPipe: a run's bounded event stream, with trio memory-channel semantics for one consumer."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings, strategies as st

from runtime._pipe import EventPipe


async def test_pipe_delivers_in_order_and_bounds_the_buffer() -> None:
    """Items arrive in FIFO order; send_nowait raises WouldBlock once the buffer is full."""
    pipe = EventPipe[int](2)
    pipe.send_nowait(1)
    pipe.send_nowait(2)
    with pytest.raises(trio.WouldBlock):
        pipe.send_nowait(3)
    assert [pipe.receive_nowait(), await pipe.receive()] == [1, 2]
    with pytest.raises(trio.WouldBlock):
        pipe.receive_nowait()


async def test_pipe_blocked_send_resumes_when_the_consumer_takes() -> None:
    """A send to a full pipe waits until the consumer makes room, then its item follows in order."""
    pipe = EventPipe[int](1)
    pipe.send_nowait(1)
    sent = trio.Event()

    async def producer() -> None:
        await pipe.send(2)
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        assert pipe.receive_nowait() == 1
        await sent.wait()
    assert pipe.receive_nowait() == 2


async def test_pipe_cancelled_send_is_withdrawn() -> None:
    """A blocked send that is cancelled never delivers its item."""
    pipe = EventPipe[str](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipe.send, "withdrawn")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    with pytest.raises(trio.WouldBlock):
        pipe.receive_nowait()


async def test_pipe_capacity_zero_hands_over_directly() -> None:
    """With no buffer, a send completes only when the consumer receives it."""
    pipe = EventPipe[str](0)
    received: list[str] = []

    async def consumer() -> None:
        received.append(await pipe.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        pipe.send_nowait("direct")
    assert received == ["direct"]


async def test_pipe_close_sender_drains_then_ends() -> None:
    """After the producers close, buffered items still arrive, then EndOfChannel."""
    pipe = EventPipe[int](4)
    pipe.send_nowait(7)
    pipe.close_sender()
    pipe.close_sender()  # idempotent
    assert await pipe.receive() == 7
    with pytest.raises(trio.EndOfChannel):
        await pipe.receive()
    with pytest.raises(trio.ClosedResourceError):
        pipe.send_nowait(8)


async def test_pipe_close_sender_wakes_a_waiting_consumer() -> None:
    """A consumer blocked in receive gets EndOfChannel when the producers close."""
    pipe = EventPipe[int](4)
    outcome: list[str] = []

    async def consumer() -> None:
        try:
            await pipe.receive()
        except trio.EndOfChannel:
            outcome.append("end")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        pipe.close_sender()
    assert outcome == ["end"]


async def test_pipe_close_receiver_breaks_blocked_and_later_sends() -> None:
    """Closing the consumer's side fails blocked sends and later ones with BrokenResourceError."""
    pipe = EventPipe[int](0)
    errors: list[type[BaseException]] = []

    async def producer() -> None:
        try:
            await pipe.send(1)
        except trio.BrokenResourceError as exc:
            errors.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        pipe.close_receiver()
    assert errors == [trio.BrokenResourceError]
    with pytest.raises(trio.BrokenResourceError):
        pipe.send_nowait(2)
    with pytest.raises(trio.ClosedResourceError):
        pipe.receive_nowait()


async def test_pipe_cancelled_receive_leaves_no_stale_waiter() -> None:
    """A receive that is cancelled leaves the pipe as it was: the next send is buffered."""
    pipe = EventPipe[int](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipe.receive)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    pipe.send_nowait(5)
    assert pipe.receive_nowait() == 5


async def test_pipe_refuses_a_second_concurrent_receiver() -> None:
    """Only one task may wait in receive at a time."""
    pipe = EventPipe[int](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipe.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await pipe.receive()
        nursery.cancel_scope.cancel()


def test_pipe_rejects_negative_capacity() -> None:
    """A negative capacity is a clear error."""
    with pytest.raises(ValueError, match="capacity"):
        EventPipe[int](-1)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(0, 4),
    producers=st.lists(st.lists(st.integers(), max_size=12), min_size=1, max_size=4),
    consumer_delays=st.lists(st.booleans(), max_size=40),
)
def test_pipe_delivers_everything_once_in_each_producers_order(
    capacity: int, producers: list[list[int]], consumer_delays: list[bool]
) -> None:
    """Under any interleaving, every item arrives exactly once and each producer's items keep their order."""

    async def main() -> list[tuple[int, int]]:
        pipe = EventPipe[tuple[int, int]](capacity)
        received: list[tuple[int, int]] = []
        delays = iter(consumer_delays)

        async def produce(index: int, items: list[int]) -> None:
            for item in items:
                await pipe.send((index, item))

        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as senders:
                for index, items in enumerate(producers):
                    senders.start_soon(produce, index, items)

                async def consume() -> None:
                    while True:
                        try:
                            received.append(await pipe.receive())
                        except trio.EndOfChannel:
                            return
                        if next(delays, False):
                            await trio.lowlevel.checkpoint()

                nursery.start_soon(consume)
            pipe.close_sender()
        return received

    received = trio.run(main)
    assert sorted(received) == sorted((i, x) for i, items in enumerate(producers) for x in items)
    for index, items in enumerate(producers):
        assert [x for i, x in received if i == index] == items
