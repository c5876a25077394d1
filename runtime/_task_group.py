"""TaskGroup: a nursery whose tasks run in a parent nursery, so an idle group owns no task."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import trio

from ._latch import Latch

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    Owns: TypeAlias = Callable[[trio.lowlevel.Task], bool]


class TaskGroup:
    """Tasks owned by one group, each run in ``nursery`` inside a cancel scope the group holds.

    It keeps a nursery's semantics where they matter to an owner:
    :meth:`start_soon` and :meth:`start` (with ``task_status``, an error
    before ``started()`` raised in the caller, trio's own ``RuntimeError``
    for a task that returns without calling it), a task that raises cancels
    its siblings, and the first error is kept. Two differences: the tasks
    live in a parent nursery (a session that owns no task costs a few
    objects, not a task and a nursery), and the error is not raised: the
    owner reads :attr:`error` (or hears of it through ``on_error``) when it
    chooses to.

    Once cancelled, the group is closed: it takes no new task, and it is
    finished when the last task has returned (:meth:`wait_finished`).
    :meth:`aclose` waits for that even when cancelled, as a nursery's exit
    does, unless one of the tasks waits in the same way for the caller (see
    :func:`join`).
    """

    __slots__ = (
        "_closed",
        "_closers",
        "_error",
        "_finished",
        "_left_alone",
        "_nursery",
        "_on_error",
        "_on_finished",
        "_scopes",
    )

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        on_error: Callable[[Exception], None] | None = None,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        """
        Args:
            nursery: Where the tasks run; it must outlive the group.
            on_error: Called with the first error a task raises.
            on_finished: Called once, when the group is closed and its last
                task has returned.
        """
        self._nursery = nursery
        self._on_error = on_error
        self._on_finished = on_finished
        self._scopes: list[trio.CancelScope] = []  # a list: smaller than a set, and short
        # For aclose() from inside: the group's tasks it is called from, and set when only they are left.
        self._closers: set[trio.lowlevel.Task] | None = None
        self._left_alone: trio.Event | None = None
        self._closed = False
        self._error: Exception | None = None
        self._finished = Latch()

    @property
    def closed(self) -> bool:
        """Whether :meth:`cancel` was called (no new task is accepted)."""
        return self._closed

    @property
    def finished(self) -> bool:
        """Whether the group is closed and every task it owned has returned."""
        return self._finished.is_set()

    @property
    def parent_cancelled(self) -> bool:
        """Whether the nursery the tasks run in is being cancelled (one of its tasks raised past its group)."""
        return self._nursery.cancel_scope.cancel_called

    @property
    def error(self) -> Exception | None:
        """The first error a task raised (``None`` if none did)."""
        return self._error

    def __len__(self) -> int:
        """How many tasks the group owns now (started or starting)."""
        return len(self._scopes)

    def start_soon(
        self,
        async_fn: Callable[..., Awaitable[object]],
        *args: object,
        name: object = None,
        scope: trio.CancelScope | None = None,
    ) -> None:
        """Start a task owned by the group, as ``nursery.start_soon`` does.

        Args:
            async_fn: The task.
            args: Its positional arguments.
            name: Its name, for debugging.
            scope: The cancel scope to run it in, for an owner that wants to
                cancel this task alone (the group cancels it too).

        Raises:
            trio.ClosedResourceError: the group is closed.
        """
        self._check_open()
        scope = scope or trio.CancelScope()
        self._scopes.append(scope)
        try:
            self._nursery.start_soon(self._own, scope, async_fn, args, name=name or async_fn)
        except BaseException:
            self._task_done(scope)
            raise

    async def start(self, async_fn: Callable[..., Awaitable[object]], *args: object, name: object = None) -> Any:
        """Start a task owned by the group and wait until it calls ``task_status.started()``, as ``nursery.start``.

        An error raised before ``started()`` is raised here and leaves
        nothing behind; after it, it is the group's error, as for
        :meth:`start_soon`.

        Returns:
            The value passed to ``task_status.started()``.

        Raises:
            trio.ClosedResourceError: the group is closed, or was cancelled
                before the task called ``started()``.
            RuntimeError: the task returned without calling ``started()``
                (trio's own error).
        """
        self._check_open()
        scope = trio.CancelScope()
        status = _TaskStatus()
        self._scopes.append(scope)
        try:
            return await self._nursery.start(self._own_started, scope, status, async_fn, args, name=name or async_fn)
        except BaseException:
            if not status.ran:  # nursery.start failed before the task ran: nothing else removes its scope
                self._task_done(scope)
            raise

    def cancel(self) -> None:
        """Close the group and cancel every task it owns (without waiting for them)."""
        self._closed = True
        for scope in list(self._scopes):
            scope.cancel()
        if not self._scopes:
            self._finish()

    async def aclose(self) -> None:
        """Cancel every task and wait until all have returned; idempotent, and complete even if cancelled.

        Called from inside one of the group's tasks (or a task that one of them started), it cannot wait for
        that task: it waits for all the others, and that task, cancelled, ends at its next checkpoint. Nor does
        it wait for a task of the group that waits (in a :func:`join`, down a chain of them) for the caller:
        that one, cancelled, ends once the caller has.
        """
        self.cancel()
        if self._finished.is_set():
            return
        me = trio.lowlevel.current_task()
        # Not waited for: the task it is closed from, and any task of the group that waits (in a join, down a
        # chain of them) for that one (a task leaving a run block whose run's hook closes the session): each
        # would wait for the other for ever, shielded. Cancelled, they end once this one does.
        not_waited = self._waiting_for(me)
        own = self._group_task(me)
        if own is not None:
            not_waited.add(own)
        if not not_waited:
            await join(self._finished, self._owns)
            return
        # Every task but those it is closed from (two may close it at once: each waits for the others').
        if self._closers is None or self._left_alone is None:
            self._closers, self._left_alone = set(), trio.Event()
        self._closers.update(not_waited)
        self._check_left_alone()
        await join(self._left_alone, self._owns_but_closers)

    def _waiting_for(self, task: trio.lowlevel.Task) -> set[trio.lowlevel.Task]:
        """The group's tasks that wait in a :func:`join`, directly or down a chain of joins, for ``task``."""
        try:
            joins = _JOINS.get()
        except LookupError:
            return set()
        waiting = set()
        for joined in list(joins):
            group_task = self._group_task(joined)
            if group_task is not None and _closes_loop(joins, task, _just(joined)):
                waiting.add(group_task)
        return waiting

    def _check_left_alone(self) -> None:
        if self._closers is not None and self._left_alone is not None and len(self._scopes) <= len(self._closers):
            self._left_alone.set()

    def _group_task(self, task: trio.lowlevel.Task) -> trio.lowlevel.Task | None:
        """The group's task ``task`` is, or runs under (``None`` if it is outside the group)."""
        for owner, _, group_task in _group_tasks(task):
            if owner is self:
                return group_task
        return None

    def _owns(self, task: trio.lowlevel.Task) -> bool:
        return self._group_task(task) is not None

    def _owns_but_closers(self, task: trio.lowlevel.Task) -> bool:
        group_task = self._group_task(task)
        return group_task is not None and group_task not in (self._closers or ())

    async def wait_finished(self) -> None:
        """Wait until the group is closed (by anyone) and every task has returned."""
        await self._finished.wait()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the task group is closed")

    async def _own(
        self, scope: trio.CancelScope, async_fn: Callable[..., Awaitable[object]], args: tuple[object, ...]
    ) -> None:
        try:
            with scope:
                await async_fn(*args)
        except Exception as exc:
            self._fail(exc)
        finally:
            self._task_done(scope)

    async def _own_started(
        self,
        scope: trio.CancelScope,
        status: _TaskStatus,
        async_fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        *,
        task_status: trio.TaskStatus[Any],
    ) -> None:
        status.ran = True
        status.status = task_status
        try:
            with scope:
                await async_fn(*args, task_status=status)
        except Exception as exc:
            if not status.started_yet:
                raise  # start() raises it in its caller
            self._fail(exc)
        finally:
            self._task_done(scope)
        if not status.started_yet and scope.cancelled_caught:
            raise trio.ClosedResourceError("the task group was closed before the task started")
        # A task that returned without calling started(): trio's nursery.start raises its own RuntimeError.

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
            if self._on_error is not None:
                self._on_error(error)
        self.cancel()

    def _task_done(self, scope: trio.CancelScope) -> None:
        self._scopes.remove(scope)
        self._check_left_alone()
        if self._closed and not self._scopes:
            self._finish()

    def _finish(self) -> None:
        if self._finished.is_set():
            return
        self._finished.set()
        on_finished, self._on_finished, self._on_error = self._on_finished, None, None  # no cycle with the owner
        if on_finished is not None:
            on_finished()


_OWNING_CODE: Final = frozenset({TaskGroup._own.__code__, TaskGroup._own_started.__code__})
"""The code of the coroutines a group's tasks run (what :func:`_group_tasks` looks for)."""


def _group_tasks(task: trio.lowlevel.Task | None) -> Iterator[tuple[object, object, trio.lowlevel.Task]]:
    """``(group, scope, group's task)`` for each group task ``task`` is or runs under, innermost first."""
    while task is not None:
        # A task of a group runs _own (or _own_started) of it: found from its coroutine, on these rare
        # paths, rather than kept in a list by every task (a session per run: memory per run).
        frame = getattr(task.coro, "cr_frame", None)
        if frame is not None and frame.f_code in _OWNING_CODE:
            local = frame.f_locals
            yield local.get("self"), local.get("scope"), task
        nursery = task.parent_nursery
        task = None if nursery is None else nursery.parent_task


def runs_in(scope: trio.CancelScope) -> Owns:
    """What :func:`join` waits for when it waits for the group task run in ``scope`` (``start_soon(scope=)``)."""
    return lambda task: any(owner_scope is scope for _, owner_scope, _ in _group_tasks(task))


_JOINS: Final[trio.lowlevel.RunVar[dict[trio.lowlevel.Task, Owns]]] = trio.lowlevel.RunVar("trio_agents_joins")
"""The tasks waiting in :func:`join`, shielded, and what each waits for."""


async def join(done: Latch | trio.Event, waits_for: Owns) -> None:
    """Wait until ``done`` is set: once the tasks ``waits_for`` names, cancelled just before, have ended.

    The wait is shielded, as a nursery's exit waits for its children however
    it is cancelled: what closes sessions and leaves run blocks returns only
    once their tasks have ended. One case is not: a caller that is cancelled
    while one of those tasks waits in a ``join`` of its own for the caller
    (directly, or down a chain of joins: a tool of session A closing session
    B while a tool of B closes A). Neither could ever end, and nothing could
    cancel them; so that caller's wait is not shielded: it raises
    ``Cancelled``, its task ends, and with it the loop.

    Raises:
        trio.Cancelled: the caller is cancelled and waiting would close a loop of joins.
    """
    if done.is_set():
        return
    me = trio.lowlevel.current_task()
    try:
        joins = _JOINS.get()
    except LookupError:
        joins = {}
        _JOINS.set(joins)
    # Only a cancelled caller can close a loop: each join cancels what it waits for, the next in the loop.
    if trio.current_effective_deadline() == -math.inf and _closes_loop(joins, me, waits_for):
        await done.wait()  # cancelled: it raises at once
        return
    joins[me] = waits_for
    try:
        with trio.CancelScope(shield=True):
            await done.wait()
    finally:
        del joins[me]


def waits_for_me(tasks: Owns) -> bool:
    """Whether one of ``tasks`` waits in a :func:`join`, directly or down a chain of joins, for the current task
    (a tool closing its own session, which waits for this task): then waiting for them would wait for ever."""
    try:
        joins = _JOINS.get()
    except LookupError:
        return False
    return _closes_loop(joins, trio.lowlevel.current_task(), tasks)


def _just(task: trio.lowlevel.Task) -> Owns:
    """The :data:`Owns` that names ``task`` alone."""
    return lambda other: other is task


def _closes_loop(joins: dict[trio.lowlevel.Task, Owns], me: trio.lowlevel.Task, waits_for: Owns) -> bool:
    """Whether a task ``waits_for`` names is in a join that waits, directly or down a chain of joins, for ``me``."""
    todo, seen = [waits_for], set()
    while todo:
        target = todo.pop()
        for task, its_target in joins.items():
            if task not in seen and target(task):
                if its_target(me):
                    return True
                seen.add(task)
                todo.append(its_target)
    return False


class _TaskStatus:
    """Passes ``started()`` on to the nursery's task status, remembering that the task ran and called it."""

    __slots__ = ("ran", "started_yet", "status")

    def __init__(self) -> None:
        self.ran = False
        self.started_yet = False
        self.status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED

    def started(self, value: Any = None) -> None:
        self.status.started(value)
        self.started_yet = True
