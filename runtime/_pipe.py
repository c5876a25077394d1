"""EventPipe: a run's bounded event stream, from its tasks to its one consumer."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import outcome
import trio

T = TypeVar("T")


class _BlockedSend(Generic[T]):
    """A send waiting for room: its task and its item (compared by identity)."""

    __slots__ = ("item", "task")

    def __init__(self, task: trio.lowlevel.Task, item: T) -> None:
        self.task = task
        self.item = item


class EventPipe(Generic[T]):
    """A bounded FIFO from any number of producer tasks to one consumer, like a trio memory channel.

    Semantics follow ``trio.open_memory_channel`` (``send`` blocks while the
    buffer is full; ``receive`` raises ``EndOfChannel`` once the producers'
    side is closed and drained; a closed consumer side makes sends raise
    ``BrokenResourceError``), for one consumer only and with none of the
    clone machinery. Why not the memory channel itself: a channel pair costs
    1.8 KB, most of it an empty deque and two ordered dicts, and every run
    owns one; with 1,000 runs in flight that was a tenth of their memory.
    """

    __slots__ = ("_buffer", "_capacity", "_receiver", "_receiver_closed", "_room_waiters", "_sender_closed", "_senders")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        self._buffer: list[T] = []  # short: a list beats a deque's 64-slot first block
        self._sender_closed = False
        self._receiver_closed = False
        self._receiver: trio.lowlevel.Task | None = None
        self._senders: deque[_BlockedSend[T]] | None = None
        self._room_waiters: list[trio.lowlevel.Task] | None = None  # in room(), woken together

    @property
    def receiver_closed(self) -> bool:
        """Whether the consumer has closed its side."""
        return self._receiver_closed

    # -- the producers' side --------------------------------------------------

    def send_nowait(self, item: T) -> None:
        """Send without waiting.

        Raises:
            trio.WouldBlock: the buffer is full.
            trio.ClosedResourceError: the producers' side was closed.
            trio.BrokenResourceError: the consumer closed its side.
        """
        if self._sender_closed:
            raise trio.ClosedResourceError("the pipe was closed for sending")
        if self._receiver_closed:
            raise trio.BrokenResourceError("the consumer closed the pipe")
        if self._receiver is not None:
            task, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(task, outcome.Value(item))
        elif len(self._buffer) < self._capacity:
            self._buffer.append(item)
        else:
            raise trio.WouldBlock

    def send_last(self, item: T, *, owed: bool = False) -> None:
        """Send if there is room, else drop it: for what a cancelled run sends last (the consumer makes up for it).

        ``owed``: what a cancelled sub-agent's run owes a parent that goes on (its ``RunFinished``, the
        ``AgentSwitched`` back), which nobody would make up for: it goes in even past a full buffer (a
        bounded overshoot: two events per cancelled sub-agent).
        """
        try:
            self.send_nowait(item)
        except trio.WouldBlock:
            if owed:
                self._buffer.append(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def room(self) -> None:
        """Wait until :meth:`send_nowait` may not block: room in the buffer, a receiver waiting, or a side
        closed (a checkpoint). Another producer may take the room first: check again with ``send_nowait``.

        For a sender that must hand its item to others at the same time (``Tee``): it waits for room
        everywhere first, then sends to all without a checkpoint between, so a cancel sends to none.
        """
        if (
            len(self._buffer) < self._capacity
            or self._receiver is not None
            or self._sender_closed
            or self._receiver_closed
        ):
            await trio.lowlevel.checkpoint()
            return
        task = trio.lowlevel.current_task()
        if self._room_waiters is None:
            self._room_waiters = [task]
        else:
            self._room_waiters.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            if self._room_waiters is not None:  # still in it: a wake-up takes the whole list
                self._room_waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _roomy(self) -> None:
        """Wake every task waiting in :meth:`room`."""
        waiting, self._room_waiters = self._room_waiters, None
        for task in waiting or ():
            trio.lowlevel.reschedule(task)

    async def send(self, item: T) -> None:
        """Send, waiting while the buffer is full (a checkpoint, like trio's ``send``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.send_nowait(item)
            blocked = False
        except trio.WouldBlock:
            blocked = True
        if not blocked:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self._senders is None:
            self._senders = deque()
        entry = _BlockedSend(trio.lowlevel.current_task(), item)
        self._senders.append(entry)

        def abort(_: object) -> trio.lowlevel.Abort:
            senders = self._senders
            if senders is not None:
                for i, waiting in enumerate(senders):
                    if waiting is entry:
                        del senders[i]
                        break
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def close_sender(self) -> None:
        """Close the producers' side: the consumer drains the buffer, then gets ``EndOfChannel``."""
        if self._sender_closed:
            return
        self._sender_closed = True
        for blocked in self._senders or ():
            trio.lowlevel.reschedule(blocked.task, outcome.Error(trio.ClosedResourceError("the pipe was closed")))
        self._senders = None
        self._roomy()
        if self._receiver is not None and not self._buffer:
            task, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(task, outcome.Error(trio.EndOfChannel()))

    # -- the consumer's side --------------------------------------------------

    def receive_nowait(self) -> T:
        """Take the next item without waiting.

        Raises:
            trio.WouldBlock: nothing is buffered.
            trio.EndOfChannel: the producers' side is closed and drained.
            trio.ClosedResourceError: the consumer's side was closed.
        """
        if self._receiver_closed:
            raise trio.ClosedResourceError("the pipe was closed for receiving")
        senders = self._senders
        if self._buffer:
            item = self._buffer.pop(0)
            if senders:  # room now: take the first blocked send's item in
                blocked = senders.popleft()
                self._buffer.append(blocked.item)
                trio.lowlevel.reschedule(blocked.task)
            elif self._room_waiters is not None:
                self._roomy()
            return item
        if senders:  # capacity 0: hand over directly
            blocked = senders.popleft()
            trio.lowlevel.reschedule(blocked.task)
            return blocked.item
        if self._sender_closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> T:
        """Take the next item, waiting for one (a checkpoint, like trio's ``receive``).

        Raises:
            trio.EndOfChannel: the producers' side is closed and drained.
            trio.ClosedResourceError: the consumer's side was closed.
            trio.BusyResourceError: another task is already waiting in ``receive``.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            item = self.receive_nowait()
            blocked = False
        except trio.WouldBlock:
            blocked = True
        if not blocked:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        if self._receiver is not None:
            raise trio.BusyResourceError("another task is already receiving from this pipe")
        self._receiver = trio.lowlevel.current_task()
        if self._room_waiters is not None:  # room for one, even with no buffer
            self._roomy()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._receiver = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)  # type: ignore[no-any-return]

    def close_receiver(self) -> None:
        """Close the consumer's side: buffered items are dropped, blocked and later sends fail."""
        if self._receiver_closed:
            return
        self._receiver_closed = True
        self._buffer.clear()
        for blocked in self._senders or ():
            trio.lowlevel.reschedule(
                blocked.task, outcome.Error(trio.BrokenResourceError("the consumer closed the pipe"))
            )
        self._senders = None
        self._roomy()
        if self._receiver is not None:
            task, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(task, outcome.Error(trio.ClosedResourceError("the pipe was closed")))
