"""SessionResource: an async context manager that a session owns, entered and exited by one task of it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import trio

from ._latch import Latch

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable
    from contextlib import AbstractAsyncContextManager

logger = logging.getLogger("runtime")

T = TypeVar("T")

DEFAULT_CLOSE_TIMEOUT: Final = 10.0
"""Seconds a resource may take to close (its manager's ``__aexit__``) before it is cancelled."""

_UNSET: Final[Any] = object()


class SessionResource(Generic[T]):
    """A resource that a session owns, made by :meth:`Session.resource <runtime.Session.resource>`.

    One task of the session (its *owner*) enters the resource's async context
    manager, then waits; every other task uses :attr:`value`. The owner exits
    the manager when the resource is closed (:meth:`close`, :meth:`aclose`) or
    the session closes, in the same task that entered it: what anyio and trio
    cancel scopes require (the MCP SDK's clients are such managers), and what
    keeps a subprocess or a connection inside the session's lifetime.

    The owner never raises into the session (a task that raises closes its
    session): an error from the manager, while open or while closing, is kept
    in :attr:`error` and logged, and the resource counts as closed. Once
    closed, the session forgets it: the next ``Session.resource`` with its key
    opens a fresh one.
    """

    __slots__ = (
        "_close_requested",
        "_close_timeout",
        "_error",
        "_event",
        "_finished",
        "_forget",
        "_opened",
        "_value",
        "key",
        "name",
    )

    def __init__(
        self, key: Hashable, name: str, close_timeout: float, forget: Callable[[SessionResource[Any]], None]
    ) -> None:
        self.key = key
        """The key it was opened under."""
        self.name = name
        """Its name, for logs and errors."""
        self._close_timeout = close_timeout
        self._forget = forget
        self._value: T = _UNSET
        self._opened = Latch()  # set when opening ended, opened or not
        self._close_requested = False
        self._finished = Latch()
        self._error: Exception | None = None
        self._event: trio.Event | None = None  # what the owner waits on

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open" if self._value is not _UNSET else "opening"
        return f"<SessionResource {self.name} {state}>"

    @property
    def value(self) -> T:
        """What the manager's ``__aenter__`` returned (still there once closed: using it then fails as it does).

        Raises:
            AttributeError: the resource never opened (only while it is opening).
        """
        if self._value is _UNSET:
            raise AttributeError(f"{self!r} has no value: it never opened")
        return self._value

    @property
    def closed(self) -> bool:
        """Whether it is closing or closed (asked to, by the session closing, or by its own failure)."""
        return self._close_requested or self._finished.is_set()

    @property
    def error(self) -> Exception | None:
        """What its manager raised while open or while closing (``None`` if nothing)."""
        return self._error

    def close(self) -> None:
        """Ask the owner to close it, without waiting; idempotent.

        The session forgets it at once: the next ``Session.resource`` with its
        key opens a fresh one, even while this one is still closing. Safe to
        call from anywhere, even from a task the resource itself runs (a
        callback of an MCP client), which :meth:`aclose` would deadlock.
        """
        if self._close_requested:
            return
        self._close_requested = True
        self._forget(self)
        if self._event is not None:
            self._event.set()

    async def aclose(self) -> None:
        """Close it and wait until its owner has exited the manager; idempotent, and complete even if cancelled.

        Do not call it from a task the manager itself owns (it would wait for
        itself): use :meth:`close` there.
        """
        self.close()
        if not self._finished.is_set():
            with trio.CancelScope(shield=True):
                await self._finished.wait()

    async def wait_closed(self) -> None:
        """Wait until its owner has exited the manager (closed by anyone, for any reason)."""
        await self._finished.wait()

    # -- the owner ---------------------------------------------------------

    async def serve(
        self,
        opener: Callable[[], AbstractAsyncContextManager[T]],
        *,
        task_status: trio.TaskStatus[SessionResource[T]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The owner task: enter ``opener()``, report ``started``, wait, exit in this same task.

        An error entering the manager is raised (``Session.start`` raises it in
        the caller); nothing after ``started`` is.
        """
        try:
            failed = await self._serve(opener, task_status)
        finally:
            self._finished.set()
        if failed is not None:
            raise failed  # out of the nursery, which would have wrapped it in a group

    async def _serve(
        self, opener: Callable[[], AbstractAsyncContextManager[T]], task_status: trio.TaskStatus[SessionResource[T]]
    ) -> BaseException | None:
        # The watcher (a child of this task) is what the session's closing
        # cancels; the manager is shielded from it once open, so that its own
        # tasks (a connection's reader, an HTTP client) live on while it closes
        # gracefully: a stdio server's shutdown, an HTTP session's DELETE.
        async with trio.open_nursery() as watcher:
            with trio.CancelScope() as scope:  # not shielded while opening: the opener's caller may cancel it
                try:
                    manager = opener()
                    self._value = await manager.__aenter__()
                except BaseException as exc:
                    return exc  # re-raised by _run outside the nursery, which would wrap it (a Cancelled too)
                scope.shield = True
                watcher.start_soon(self._close_when_cancelled)
                task_status.started(self)
                try:
                    if not self._close_requested:
                        event = self._event = trio.Event()
                        await event.wait()
                except trio.Cancelled:
                    pass  # a task of the manager's own failed (its nursery cancels us): exit it below
                finally:
                    self._close_requested = True
                    self._forget(self)
                    # Bounded, so a manager that never finishes closing can't hold the session.
                    scope.deadline = trio.current_time() + self._close_timeout
                    try:
                        await manager.__aexit__(None, None, None)
                    except Exception as exc:
                        self._error = _unwrap(exc)
                        logger.warning("session resource %s failed: %r", self.name, self._error)
                    except BaseExceptionGroup as group:
                        # Cut by the close deadline while a task of its own failed: the failure is the
                        # resource's error, the deadline's Cancelled goes to `scope` (the TimeoutError below).
                        cancelled, failed = group.split(trio.Cancelled)
                        if not isinstance(failed, ExceptionGroup | None):
                            raise  # a KeyboardInterrupt among them: not the resource's to keep
                        if failed is not None:
                            self._error = _unwrap(failed)
                            logger.warning("session resource %s failed: %r", self.name, self._error)
                        if cancelled is not None:
                            raise cancelled from None
            if scope.cancelled_caught:
                self._error = TimeoutError(f"{self.name} did not close within {self._close_timeout}s")
                logger.warning("session resource %s did not close within %ss", self.name, self._close_timeout)
            watcher.cancel_scope.cancel()
        return None

    async def _close_when_cancelled(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.close()  # the session is closing: the owner exits the manager, gracefully

    def _opening_ended(self) -> None:
        self._opened.set()

    @property
    def _ready(self) -> bool:
        return self._value is not _UNSET and not self.closed


def _unwrap(error: Exception) -> Exception:
    """The one error inside nested single-error groups (an anyio task group's), else ``error``."""
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def open_resource(
    registry: dict[Hashable, SessionResource[Any]],
    key: Hashable,
    opener: Callable[[], AbstractAsyncContextManager[T]],
    *,
    name: str,
    close_timeout: float,
    start: Callable[..., Any],
    check_open: Callable[[], None],
) -> SessionResource[T]:
    """The session's resource ``key``, opened with ``opener`` in a task that ``start`` starts if there is none.

    Concurrent callers share one opening; if it fails or is cancelled, each of
    them tries again in turn.
    """
    while True:
        check_open()
        current = registry.get(key)
        if current is None:
            break
        if current._ready:
            return current
        await current._opened.wait()  # opening in another task: see what came of it

    def forget(resource: SessionResource[Any]) -> None:
        if registry.get(resource.key) is resource:
            del registry[resource.key]

    resource: SessionResource[T] = SessionResource(key, name, close_timeout, forget)
    registry[key] = resource
    try:
        await start(resource.serve, opener, name=f"resource {name}")
    finally:
        resource._opening_ended()
        if not resource._ready:
            forget(resource)
    return resource
