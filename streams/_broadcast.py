"""Fan-out to any number of subscribers, each with a bounded buffer: a slow one loses its oldest items, never memory."""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Generic, TypeVar

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Iterator

T = TypeVar("T")


@attrs.frozen
class Dropped:
    """``count`` items were dropped here because the subscriber fell a whole buffer behind."""

    count: int


class _Kept(Generic[T]):
    """An item put with ``keep=True``, and how many dropped items followed it."""

    __slots__ = ("gap_after", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.gap_after = 0


class Subscriber(Generic[T]):
    """One subscriber's buffer: :meth:`get` the items in order."""

    def __init__(self, size: int) -> None:
        self._items: deque[T | _Kept[T]] = deque()
        self._size = size
        self._kept = 0  # items put with keep=True, not yet taken: the size does not count them
        self._gap = 0  # dropped since the last get()
        self.dropped = 0
        """Items dropped so far."""
        self._wakeup = trio.Event()
        self._closed = False

    def put(self, item: T, *, keep: bool = False) -> None:
        """Buffer ``item``; when the buffer is full, drop the oldest item not kept.

        Args:
            item: The item.
            keep: Never drop this one, nor count it in the buffer's size; the
                caller bounds how many it keeps (a command's answer, put only
                when there is room for it).
        """
        if self._closed:
            return
        if keep:
            self._items.append(_Kept(item))
            self._kept += 1
        else:
            if len(self._items) - self._kept >= self._size:
                self._drop_oldest()
            self._items.append(item)
        self._wakeup.set()

    def _drop_oldest(self) -> None:
        self.dropped += 1
        if not self._kept or not isinstance(self._items[0], _Kept):
            self._items.popleft()
            self._gap += 1
            return
        # the gap is marked where the dropped item was: after the kept ones before it
        at = next(i for i, item in enumerate(self._items) if not isinstance(item, _Kept))
        before = self._items[at - 1]
        assert isinstance(before, _Kept)
        before.gap_after += 1
        del self._items[at]

    def _take(self) -> T:
        item = self._items.popleft()
        if isinstance(item, _Kept):
            self._kept -= 1
            self._gap = item.gap_after
            return item.item
        return item

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    def get_nowait(self) -> T | Dropped:
        """What :meth:`get` would give, without waiting.

        Raises:
            trio.WouldBlock: nothing is buffered.
            trio.EndOfChannel: the broadcast was closed and everything was read.
        """
        if self._gap:
            gap, self._gap = self._gap, 0
            return Dropped(gap)
        if self._items:
            return self._take()
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def get(self) -> T | Dropped:
        """The next item, or a :class:`Dropped` marking a gap before it.

        Raises:
            trio.EndOfChannel: the broadcast was closed and everything was read.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._gap:
                gap, self._gap = self._gap, 0
                return Dropped(gap)
            if self._items:
                return self._take()
            if self._closed:
                raise trio.EndOfChannel
            self._wakeup = trio.Event()
            await self._wakeup.wait()


class Broadcast(Generic[T]):
    """Publish without waiting; every subscriber gets every item, up to its buffer's size."""

    def __init__(self, *, buffer: int) -> None:
        self._buffer = buffer
        self._subscribers: list[Subscriber[T]] = []
        self._closed = False
        self._dropped = 0  # by subscribers that have left

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped(self) -> int:
        """Items dropped by all subscribers, present and past."""
        return self._dropped + sum(subscriber.dropped for subscriber in self._subscribers)

    def publish(self, item: T) -> None:
        for subscriber in self._subscribers:
            subscriber.put(item)

    def close(self) -> None:
        """End every subscription once its buffer is read; later ones end at once."""
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.close()

    def add(self) -> Subscriber[T]:
        """A new subscriber; :meth:`remove` it when done (or use :meth:`subscribe`)."""
        subscriber: Subscriber[T] = Subscriber(self._buffer)
        if self._closed:
            subscriber.close()
        self._subscribers.append(subscriber)
        return subscriber

    def remove(self, subscriber: Subscriber[T]) -> None:
        self._subscribers.remove(subscriber)
        self._dropped += subscriber.dropped

    @contextmanager
    def subscribe(self) -> Iterator[Subscriber[T]]:
        """A subscriber for the block."""
        subscriber = self.add()
        try:
            yield subscriber
        finally:
            self.remove(subscriber)
