"""Worker-thread calls for the session stores: cancellable from the caller's scope, undone when abandoned.

A store runs every database call in a worker thread with
``trio.to_thread.run_sync(..., abandon_on_cancel=True)``: a cancelled caller
returns at once, and the thread runs on to the end of its statement (its
connection is never handed to another thread mid-statement). What an
abandoned call did must not outlive it unseen: a claim nobody received is
released. :class:`WorkerCall` is the handshake between the two sides: the
thread records its result under a lock, the cancelled side marks the call
abandoned under the same lock, and whichever side comes second undoes the
result.
"""

from __future__ import annotations

import hashlib
import queue
import socket
import threading
from typing import TYPE_CHECKING, Final, Generic, TypeVar, cast

import outcome
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

WAITING_CALLS: Final = 8
"""Calls a :class:`WorkerThread` has queued at once (it runs them one by one); more wait in Trio."""
INTERRUPT_TIMEOUT: Final = 1.0
"""Seconds a cancelled caller waits for its thread's statement to be interrupted (PostgreSQL), or for the undo
of a result it dropped, before it goes."""


class WorkerCall(Generic[T]):
    """One call's state, shared by its worker thread and the task waiting for it."""

    __slots__ = ("_abandoned", "_finished", "_interrupt", "_lock", "_result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._finished = False
        self._result: T | None = None
        self._interrupt: Callable[[], None] | None = None

    @property
    def abandoned(self) -> bool:
        """Whether the caller was cancelled (checked by a thread before it commits, to roll back instead)."""
        with self._lock:
            return self._abandoned

    def set_interrupt(self, interrupt: Callable[[], None] | None) -> None:
        """Name what stops the thread's current statement if the caller is cancelled (``None``: nothing).

        Clearing it waits for an interrupt being sent: one meant for this call's statement never
        reaches the next user of its connection.
        """
        with self._lock:
            self._interrupt = interrupt

    def _interrupt_now(self) -> None:
        with self._lock:
            if self._interrupt is not None:
                self._interrupt()


async def run_worker(
    fn: Callable[[WorkerCall[T]], T],
    *,
    limiter: trio.CapacityLimiter,
    undo: Callable[[T], None] | None = None,
) -> T:
    """Run ``fn(call)`` in a worker thread; if the caller is cancelled, abandon the thread and undo its result.

    Args:
        fn: The blocking call; it may check ``call.abandoned`` and register an interrupt.
        limiter: Bounds the store's threads (an abandoned thread keeps its token until it ends).
        undo: Called with ``fn``'s result if the caller was cancelled before it could receive it (in the
            thread when it finishes late; else in a thread of its own, waited for a moment). It must not raise.
    """
    call: WorkerCall[T] = WorkerCall()

    def work() -> T:
        result = fn(call)
        with call._lock:
            call._finished = True
            call._result = result
            abandoned = call._abandoned
        if abandoned and undo is not None:
            undo(result)
        return result

    try:
        return await trio.to_thread.run_sync(work, limiter=limiter, abandon_on_cancel=True)
    except trio.Cancelled:
        with call._lock:
            call._abandoned = True
            finished = call._finished
            result = call._result
            interruptible = call._interrupt is not None
        with trio.CancelScope(shield=True):
            if finished and undo is not None:
                # The thread was done, but Trio dropped its result when the cancel won the race. Bounded
                # like the interrupt: an undo that outlasts it is abandoned too, and still runs to its end.
                with trio.move_on_after(INTERRUPT_TIMEOUT):
                    await trio.to_thread.run_sync(undo, cast("T", result), abandon_on_cancel=True)
            elif not finished and interruptible:
                # Bounded: a server that cannot be reached must not hold up the cancellation for long.
                with trio.move_on_after(INTERRUPT_TIMEOUT):
                    await trio.to_thread.run_sync(call._interrupt_now, abandon_on_cancel=True)
        raise


class _Wakeup:
    """A socket pair: a thread sends a byte, the Trio task waiting in :func:`trio.lowlevel.wait_readable` wakes.

    Cheaper than ``TrioToken.run_sync_soon`` (~30 against ~50 µs a hop here): Trio's I/O wait wakes the task
    itself, where a callback would first wake Trio's callback task, which reschedules it a pass later.
    """

    __slots__ = ("_reader", "_writer")

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def set(self) -> None:
        self._writer.send(b"\0")

    async def wait(self) -> None:
        await trio.lowlevel.wait_readable(self._reader)

    def clear(self) -> None:
        self._reader.recv(1)

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class WorkerThread:
    """One thread of a store's own, running its calls one at a time, in order (SQLite's one connection).

    Cheaper per call than ``trio.to_thread`` (no thread hand-off, no limiter, and a finished call wakes
    its caller through a socket of its own), with the same contract as :func:`run_worker`: a cancelled
    caller abandons the call at once, the thread runs it to its end, and ``undo`` gets a result nobody
    received. At most :data:`WAITING_CALLS` calls are queued at once (each holds a socket pair); more
    wait their turn in Trio. Started by :meth:`start`, ended (after every queued call) by :meth:`stop`,
    which waits for the thread.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._idle: list[_Wakeup] = []  # made and free: a call takes one, and gives it back
        self._made = 0  # wakeups open, idle or in use (never more than WAITING_CALLS)
        self._turn = trio.lowlevel.ParkingLot()  # calls waiting for a wakeup
        self._stopping = False

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job()`` to run in the thread, after what is queued; from any thread, and nobody waits for
        it (it must not raise: it would end the thread)."""
        self._jobs.put(job)

    async def run(self, fn: Callable[[WorkerCall[T]], T], *, undo: Callable[[T], None] | None = None) -> T:
        """Run ``fn(call)`` in the thread; see :func:`run_worker`.

        Raises:
            trio.ClosedResourceError: :meth:`stop` has begun (the call would never run).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._idle and self._made >= WAITING_CALLS and not self._stopping:
            await self._turn.park()
        if self._stopping:
            raise trio.ClosedResourceError(f"{self._thread.name} is stopping")
        if self._idle:
            wakeup = self._idle.pop()
        else:
            wakeup = _Wakeup()
            self._made += 1
        call: WorkerCall[T] = WorkerCall()
        result: list[outcome.Outcome[T]] = []

        def job() -> None:
            done = outcome.capture(fn, call)
            with call._lock:
                call._finished = True
                abandoned = call._abandoned
                if not abandoned:
                    result.append(done)
                    wakeup.set()
            if abandoned and undo is not None and isinstance(done, outcome.Value):
                undo(done.value)

        self._jobs.put(job)
        try:
            await wakeup.wait()
        except BaseException as exc:
            with call._lock:
                finished = call._finished
                call._abandoned = not finished  # then the thread no longer touches the wakeup
            if not finished or not isinstance(exc, trio.Cancelled):
                self._discard(wakeup)
                done = result[0] if result else None
                if undo is not None and isinstance(done, outcome.Value):
                    undo(done.value)  # KeyboardInterrupt after it finished: nobody will receive it
                raise
            # It completed as the cancel came: its result is the caller's (the cancel is raised at the
            # caller's next checkpoint), as when a wait_task_rescheduled abort fails.
        wakeup.clear()
        self._idle.append(wakeup)
        self._turn.unpark()
        return result[0].unwrap()

    def _discard(self, wakeup: _Wakeup) -> None:
        wakeup.close()  # Trio no longer waits on it: a cancelled wait_readable has let it go
        self._made -= 1
        self._turn.unpark()

    async def stop(self) -> None:
        """Let the queued calls (abandoned ones too) finish, then end the thread and wait for it; calls
        still waiting for their turn, and later ones, raise :class:`trio.ClosedResourceError`."""
        self._stopping = True
        self._turn.unpark_all()
        self._jobs.put(None)
        if self._thread.is_alive():
            await trio.to_thread.run_sync(self._thread.join)
        for wakeup in self._idle:
            wakeup.close()
        self._made -= len(self._idle)
        self._idle.clear()


async def settle(limiter: trio.CapacityLimiter) -> None:
    """Wait until every thread holding a token of ``limiter`` has ended (abandoned ones too)."""
    borrowers = [object() for _ in range(int(limiter.total_tokens))]
    taken = []
    try:
        for borrower in borrowers:
            await limiter.acquire_on_behalf_of(borrower)
            taken.append(borrower)
    finally:
        for borrower in taken:
            limiter.release_on_behalf_of(borrower)


def session_hash(session_id: str) -> int:
    """A session id's 64-bit hash, unsigned (the key of its lock)."""
    digest = hashlib.blake2b(session_id.encode(), digest_size=8, person=b"trio-agents").digest()
    return int.from_bytes(digest, "big")
