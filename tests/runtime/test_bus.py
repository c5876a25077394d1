"""MessageBus: bounded queues, an explicit policy per publish, exact counters, close ends every consumer."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from runtime import (
    BusStatistics,
    ClosedBusError,
    DirectionStatistics,
    InboundMessage,
    MessageBus,
    OutboundMessage,
    PublishTimeoutError,
)


def _in(text: str = "hi") -> InboundMessage:
    return InboundMessage("web", "chat-1", text)


def _out(text: str = "hello", channel: str = "web") -> OutboundMessage:
    return OutboundMessage(channel, "chat-1", text)


async def test_bus_block_policy_waits_until_there_is_room() -> None:
    """A blocking publish on a full queue waits, and completes as soon as a consumer makes room."""
    bus = MessageBus(inbound_size=1)
    assert await bus.publish_inbound(_in("first"), policy="block")
    results: list[bool] = []

    async def publish_second() -> None:
        results.append(await bus.publish_inbound(_in("second"), policy="block"))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_second)
            await trio.testing.wait_all_tasks_blocked()
            assert results == []
            assert bus.statistics().inbound == DirectionStatistics(published=1, dropped=0, timed_out=0, buffered=1)
            assert (await bus.inbound().receive()).text == "first"
    assert results == [True]
    assert bus.statistics().inbound == DirectionStatistics(published=2, dropped=0, timed_out=0, buffered=1)


async def test_bus_block_policy_is_cancelled_by_the_callers_scope(autojump_clock: trio.testing.MockClock) -> None:
    """A blocking publish on a full queue ends when the caller's scope expires, counting nothing."""
    bus = MessageBus(outbound_size=1)
    bus.outbound("web")
    assert await bus.publish_outbound(_out("first"), policy="block")
    start = trio.current_time()
    with trio.move_on_after(3) as scope:
        await bus.publish_outbound(_out("second"), policy="block")
    assert scope.cancelled_caught
    assert trio.current_time() - start == pytest.approx(3)
    assert bus.statistics().outbound == DirectionStatistics(published=1, dropped=0, timed_out=0, buffered=1)


async def test_bus_timeout_policy_raises_publish_timeout_error(autojump_clock: trio.testing.MockClock) -> None:
    """A publish with a timeout raises PublishTimeoutError once the timeout expires, counting it as timed out."""
    bus = MessageBus(inbound_size=1)
    await bus.publish_inbound(_in(), policy="drop")
    start = trio.current_time()
    with pytest.raises(PublishTimeoutError):
        await bus.publish_inbound(_in(), policy=0.5)
    assert trio.current_time() - start == pytest.approx(0.5)
    assert bus.statistics().inbound == DirectionStatistics(published=1, dropped=0, timed_out=1, buffered=1)


async def test_bus_timeout_policy_drops_when_asked(autojump_clock: trio.testing.MockClock) -> None:
    """With on_timeout="drop" an expired publish returns False and counts as both timed out and dropped."""
    bus = MessageBus(outbound_size=1)
    bus.outbound("web")
    await bus.publish_outbound(_out(), policy="drop")
    start = trio.current_time()
    assert not await bus.publish_outbound(_out(), policy=2.0, on_timeout="drop")
    assert trio.current_time() - start == pytest.approx(2.0)
    assert bus.statistics().outbound == DirectionStatistics(published=1, dropped=1, timed_out=1, buffered=1)


async def test_bus_timeout_policy_succeeds_when_room_appears_in_time(autojump_clock: trio.testing.MockClock) -> None:
    """A publish with a timeout that gets room before it expires is published, not timed out."""
    bus = MessageBus(inbound_size=1)
    await bus.publish_inbound(_in("first"), policy="drop")

    async def consume_later() -> None:
        await trio.sleep(1)
        await bus.inbound().receive()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume_later)
            assert await bus.publish_inbound(_in("second"), policy=5.0)
    assert trio.current_time() == pytest.approx(1)
    assert bus.statistics().inbound == DirectionStatistics(published=2, dropped=0, timed_out=0, buffered=1)


async def test_bus_drop_policy_never_waits(autojump_clock: trio.testing.MockClock) -> None:
    """A publish with policy "drop" on a full queue returns False at once and counts a drop."""
    bus = MessageBus(inbound_size=1, outbound_size=1)
    bus.outbound("web")
    start = trio.current_time()
    assert await bus.publish_inbound(_in(), policy="drop")
    assert not await bus.publish_inbound(_in(), policy="drop")
    assert await bus.publish_outbound(_out(), policy="drop")
    assert not await bus.publish_outbound(_out(), policy="drop")
    assert trio.current_time() == start
    assert bus.statistics() == BusStatistics(
        inbound=DirectionStatistics(published=1, dropped=1, timed_out=0, buffered=1),
        outbound=DirectionStatistics(published=1, dropped=1, timed_out=0, buffered=1),
    )


async def test_bus_counters_are_exact_per_direction(autojump_clock: trio.testing.MockClock) -> None:
    """Each direction counts its own published, dropped and timed-out publishes, and what is buffered now."""
    bus = MessageBus(inbound_size=2, outbound_size=1)
    bus.outbound("a")
    bus.outbound("b")
    for _ in range(3):
        await bus.publish_inbound(_in(), policy="drop")  # 2 published, 1 dropped
    with pytest.raises(PublishTimeoutError):
        await bus.publish_inbound(_in(), policy=0.1)  # timed out, not dropped
    await bus.publish_outbound(_out(channel="a"), policy="drop")
    await bus.publish_outbound(_out(channel="b"), policy="drop")
    await bus.publish_outbound(_out(channel="a"), policy=0.1, on_timeout="drop")  # timed out and dropped
    await bus.publish_outbound(_out(channel="b"), policy="drop")  # dropped
    assert bus.statistics() == BusStatistics(
        inbound=DirectionStatistics(published=2, dropped=1, timed_out=1, buffered=2),
        outbound=DirectionStatistics(published=2, dropped=2, timed_out=1, buffered=2),
    )
    await bus.inbound().receive()
    await bus.outbound("a").receive()
    stats = bus.statistics()
    assert (stats.inbound.buffered, stats.outbound.buffered) == (1, 1)
    assert (stats.inbound.published, stats.outbound.published) == (2, 2)


async def test_bus_sizes_are_configurable_and_never_exceeded() -> None:
    """Each queue holds at most its configured size; every outbound queue gets the outbound size."""
    bus = MessageBus(inbound_size=3, outbound_size=2)
    for _ in range(10):
        await bus.publish_inbound(_in(), policy="drop")
        for channel in ("a", "b"):
            bus.outbound(channel)
            await bus.publish_outbound(_out(channel=channel), policy="drop")
    assert bus.inbound().statistics().max_buffer_size == 3
    assert bus.outbound("a").statistics().max_buffer_size == 2
    assert bus.statistics() == BusStatistics(
        inbound=DirectionStatistics(published=3, dropped=7, timed_out=0, buffered=3),
        outbound=DirectionStatistics(published=4, dropped=16, timed_out=0, buffered=4),
    )


@pytest.mark.parametrize("sizes", [{"inbound_size": -1}, {"outbound_size": -1}, {"outbound_size": float("nan")}])
def test_bus_sizes_below_zero_are_refused_when_made(sizes: dict[str, float]) -> None:
    """A size below zero is a ValueError from the constructor; an outbound one was taken, and failed only when
    the first channel's queue was made (in open_gateway), far from the mistake."""
    with pytest.raises(ValueError, match="must be 0 or more"):
        MessageBus(**sizes)  # type: ignore[arg-type]


async def test_bus_default_sizes_are_one_hundred() -> None:
    """Without sizes, each queue holds 100 messages."""
    bus = MessageBus()
    assert bus.inbound().statistics().max_buffer_size == 100
    assert bus.outbound("web").statistics().max_buffer_size == 100


async def test_bus_close_ends_async_for_on_inbound_after_draining() -> None:
    """Closing the bus lets the inbound consumer drain what is queued, then ends its loop."""
    bus = MessageBus()
    await bus.publish_inbound(_in("one"), policy="drop")
    await bus.publish_inbound(_in("two"), policy="drop")
    seen: list[str] = []

    async def consume() -> None:
        async for message in bus.inbound():
            seen.append(message.text)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == ["one", "two"]
            assert not bus.closed
            bus.close()
    assert bus.closed
    assert seen == ["one", "two"]


async def test_bus_close_ends_every_outbound_consumer() -> None:
    """Closing the bus ends the loop of every consumer of every channel's outbound queue."""
    bus = MessageBus()
    ended: list[str] = []

    async def consume(channel: str, tag: str) -> None:
        async for _ in bus.outbound(channel):
            pass
        ended.append(tag)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for channel in ("a", "b", "c"):
                nursery.start_soon(consume, channel, f"{channel}1")
                nursery.start_soon(consume, channel, f"{channel}2")
            await trio.testing.wait_all_tasks_blocked()
            assert ended == []
            bus.close()
    assert sorted(ended) == ["a1", "a2", "b1", "b2", "c1", "c2"]


async def test_bus_outbound_queue_made_after_close_is_already_finished() -> None:
    """A channel asking for its outbound queue after close gets one whose loop ends at once."""
    bus = MessageBus()
    bus.close()
    with trio.fail_after(5):
        async for _ in bus.outbound("late"):
            pytest.fail("a closed bus has nothing to deliver")


async def test_bus_publish_after_close_raises_closed_bus_error() -> None:
    """Publishing in either direction, with any policy, after close raises ClosedBusError."""
    bus = MessageBus()
    bus.outbound("web")
    bus.close()
    for policy in ("block", "drop", 1.0):
        with pytest.raises(ClosedBusError):
            await bus.publish_inbound(_in(), policy=policy)
        with pytest.raises(ClosedBusError):
            await bus.publish_outbound(_out(), policy=policy)
        with pytest.raises(ClosedBusError):
            await bus.publish_outbound(_out(channel="unknown"), policy=policy)
    assert bus.statistics().inbound == DirectionStatistics(published=0, dropped=0, timed_out=0, buffered=0)
    assert bus.statistics().outbound == DirectionStatistics(published=0, dropped=0, timed_out=0, buffered=0)


async def test_bus_close_wakes_a_blocked_publisher_with_closed_bus_error() -> None:
    """A publish blocked on a full queue raises ClosedBusError when the bus is closed, instead of waiting forever."""
    bus = MessageBus(inbound_size=1, outbound_size=1)
    bus.outbound("web")
    await bus.publish_inbound(_in(), policy="drop")
    await bus.publish_outbound(_out(), policy="drop")
    errors: list[str] = []

    async def publish_inbound() -> None:
        with pytest.raises(ClosedBusError):
            await bus.publish_inbound(_in(), policy="block")
        errors.append("inbound")

    async def publish_outbound() -> None:
        with pytest.raises(ClosedBusError):
            await bus.publish_outbound(_out(), policy=60.0)
        errors.append("outbound")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_inbound)
            nursery.start_soon(publish_outbound)
            await trio.testing.wait_all_tasks_blocked()
            bus.close()
    assert sorted(errors) == ["inbound", "outbound"]


async def test_bus_outbound_for_a_channel_without_a_queue_is_dropped_and_counted() -> None:
    """An outbound message for a channel that never asked for its queue is dropped and counted, whatever the policy."""
    bus = MessageBus()
    bus.outbound("web")
    with trio.fail_after(5):
        assert not await bus.publish_outbound(_out(channel="nobody"), policy="block")
        assert not await bus.publish_outbound(_out(channel="nobody"), policy=1.0)
        assert not await bus.publish_outbound(_out(channel="nobody"), policy="drop")
    assert bus.statistics().outbound == DirectionStatistics(published=0, dropped=3, timed_out=0, buffered=0)
    assert bus.outbound("web").statistics().current_buffer_used == 0


async def test_bus_publish_that_does_not_wait_is_still_a_cancel_point() -> None:
    """A publish inside an already-cancelled scope raises Cancelled, as every Trio async function does."""
    bus = MessageBus()
    with trio.CancelScope() as scope:
        scope.cancel()
        await bus.publish_inbound(_in(), policy="drop")
    assert bus.statistics().inbound.published == 0


async def test_bus_zero_seconds_publishes_when_there_is_room_and_drops_when_there_is_none() -> None:
    """A number is how long to wait for room: 0 waits not at all, but room there now is taken."""
    bus = MessageBus(inbound_size=1)
    assert await bus.publish_inbound(_in("first"), policy=0, on_timeout="drop")
    assert not await bus.publish_inbound(_in("second"), policy=0, on_timeout="drop")
    assert bus.statistics().inbound == DirectionStatistics(published=1, dropped=1, timed_out=1, buffered=1)


@pytest.mark.parametrize("policy", [-1, "Drop", True, float("nan")])
async def test_bus_a_policy_that_is_none_of_the_policies_is_a_value_error(policy: object) -> None:
    bus = MessageBus()
    with pytest.raises(ValueError, match="policy must be"):
        await bus.publish_inbound(_in(), policy=policy)  # type: ignore[arg-type]
    assert bus.statistics().inbound == DirectionStatistics(published=0, dropped=0, timed_out=0, buffered=0)


@pytest.mark.parametrize("on_timeout", ["rasie", None, "Drop"])
@pytest.mark.parametrize("direction", ["inbound", "outbound"])
async def test_bus_an_on_timeout_that_is_neither_raise_nor_drop_is_a_value_error(
    on_timeout: object, direction: str
) -> None:
    """A misspelt ``on_timeout`` is a ValueError at once, even with room on the bus; before, it dropped the
    message silently once a publish timed out (``publish_*`` returned False)."""
    bus = MessageBus()
    with pytest.raises(ValueError, match="on_timeout must be 'raise' or 'drop'"):
        if direction == "inbound":
            await bus.publish_inbound(_in(), policy=1, on_timeout=on_timeout)  # type: ignore[arg-type]
        else:
            await bus.publish_outbound(_out(), policy=1, on_timeout=on_timeout)  # type: ignore[arg-type]
    assert bus.statistics().inbound.published == bus.statistics().outbound.published == 0
