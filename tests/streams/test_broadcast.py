"""A subscriber's bounded buffer: what it drops, and where it says so."""

from __future__ import annotations

import pytest
import trio

from streams._broadcast import Dropped, Subscriber


async def test_kept_items_are_never_dropped_and_gaps_are_marked_where_they_were() -> None:
    """Items put with keep=True outlive a full buffer and do not count in its size; each Dropped comes
    where the item it counts was, not ahead of a kept item that came before it."""
    subscriber: Subscriber[str] = Subscriber(2)
    for item in ["c1", "a1", "c2", "a2", "c3", "c4", "c5"]:
        subscriber.put(item, keep=item.startswith("a"))
    taken = [subscriber.get_nowait() for _ in range(7)]
    assert taken == [Dropped(1), "a1", Dropped(1), "a2", Dropped(1), "c4", "c5"]
    assert subscriber.dropped == 3
    with pytest.raises(trio.WouldBlock):
        subscriber.get_nowait()
