"""TaskGroup: the same cases run against a real trio nursery and against the group."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import pytest
import trio
import trio.testing

from runtime._task_group import TaskGroup


class Owner(Protocol):
    """What both a nursery and a TaskGroup offer, as the cases below use it."""

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> None: ...

    async def start(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> Any: ...

    def owned(self) -> int: ...


class NurseryOwner:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> None:
        self.nursery.start_soon(async_fn, *args)

    async def start(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> Any:
        return await self.nursery.start(async_fn, *args)

    def owned(self) -> int:
        return len(self.nursery.child_tasks)


class GroupOwner:
    def __init__(self, group: TaskGroup) -> None:
        self.group = group

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> None:
        self.group.start_soon(async_fn, *args)

    async def start(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> Any:
        return await self.group.start(async_fn, *args)

    def owned(self) -> int:
        return len(self.group)


@asynccontextmanager
async def open_nursery_owner() -> AsyncIterator[tuple[Owner, list[BaseException]]]:
    """A real nursery; its errors are collected when the block exits."""
    errors: list[BaseException] = []
    try:
        async with trio.open_nursery() as nursery:
            yield NurseryOwner(nursery), errors
    except BaseExceptionGroup as group:
        errors.extend(group.exceptions)


@asynccontextmanager
async def open_group_owner() -> AsyncIterator[tuple[Owner, list[BaseException]]]:
    """A TaskGroup in a parent nursery; its first error is collected when the block exits."""
    errors: list[BaseException] = []
    async with trio.open_nursery() as parent:
        group = TaskGroup(parent)
        try:
            yield GroupOwner(group), errors
            await trio.testing.wait_all_tasks_blocked()  # the tasks run as far as they can, as at a nursery's exit
        finally:
            await group.aclose()
        if group.error is not None:
            errors.append(group.error)


OWNERS = pytest.mark.parametrize("open_owner", [open_nursery_owner, open_group_owner], ids=["nursery", "group"])

OpenOwner = Callable[[], Any]


@OWNERS
async def test_task_group_start_returns_the_started_value(open_owner: OpenOwner) -> None:
    """start() returns what the task passed to started(), and the task goes on."""
    release = trio.Event()

    async def task(*, task_status: trio.TaskStatus[str]) -> None:
        task_status.started("ready")
        await release.wait()

    async with open_owner() as (owner, errors):
        assert await owner.start(task) == "ready"
        assert owner.owned() == 1
        release.set()
    assert errors == []


@OWNERS
async def test_task_group_task_that_never_calls_started_is_trios_runtime_error(open_owner: OpenOwner) -> None:
    """A task returning without started() makes start() raise trio's own RuntimeError, and leaves nothing."""

    async def task(*, task_status: trio.TaskStatus[None]) -> None:
        return None

    async with open_owner() as (owner, errors):
        with pytest.raises(RuntimeError, match=r"without calling task_status\.started\(\)"):
            await owner.start(task)
        assert owner.owned() == 0
    assert errors == []


@OWNERS
async def test_task_group_error_before_started_is_raised_by_start(open_owner: OpenOwner) -> None:
    """An error raised before started() comes out of start(), leaves nothing behind, and fails nothing."""

    async def task(*, task_status: trio.TaskStatus[None]) -> None:
        await trio.lowlevel.checkpoint()
        raise ValueError("bad config")

    async with open_owner() as (owner, errors):
        with pytest.raises(ValueError, match="bad config"):
            await owner.start(task)
        assert owner.owned() == 0
    assert errors == []


@OWNERS
async def test_task_group_error_after_started_cancels_siblings(open_owner: OpenOwner) -> None:
    """A task failing after started() cancels its siblings; its error is the owner's."""
    cancelled: list[str] = []
    fail = trio.Event()

    async def sibling() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append("sibling")
            raise

    async def task(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await fail.wait()
        raise KeyError("late")

    async with open_owner() as (owner, errors):
        owner.start_soon(sibling)
        await owner.start(task)
        fail.set()
        await trio.testing.wait_all_tasks_blocked()  # a nursery cancels its body here; a group keeps the error
    assert cancelled == ["sibling"]
    assert [type(e) for e in errors] == [KeyError]


async def test_task_group_failed_start_leaves_nothing_behind() -> None:
    """When the parent nursery refuses the task, start() raises and the group owns nothing."""
    async with trio.open_nursery() as parent:
        pass
    group = TaskGroup(parent)

    async def task(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()  # pragma: no cover - never runs

    with pytest.raises(RuntimeError, match="closed"):
        await group.start(task)
    with pytest.raises(RuntimeError, match="closed"):
        group.start_soon(trio.sleep_forever)
    assert len(group) == 0
    with trio.fail_after(1):
        await group.aclose()  # finishes: nothing is left to wait for
    assert group.finished


async def test_task_group_cancelled_before_started_raises_closed() -> None:
    """A group closed while a task starts makes start() raise ClosedResourceError, not trio's RuntimeError."""

    async def task(*, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as parent:
        group = TaskGroup(parent)

        async def close_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            group.cancel()

        parent.start_soon(close_soon)
        with pytest.raises(trio.ClosedResourceError):
            await group.start(task)
        assert len(group) == 0
        assert group.finished
        with pytest.raises(trio.ClosedResourceError):
            group.start_soon(trio.sleep_forever)


async def test_task_group_keeps_the_first_error_and_reports_it_once() -> None:
    """Of two failing tasks, the first error is kept and on_error hears of it once; on_finished runs once."""
    heard: list[Exception] = []
    finished: list[bool] = []
    first_heard = trio.Event()

    def on_error(error: Exception) -> None:
        heard.append(error)
        first_heard.set()

    async def fail(error: Exception) -> None:
        raise error

    async def fail_second(error: Exception) -> None:
        with trio.CancelScope(shield=True):  # fails even though the first failure cancelled it
            await first_heard.wait()
        raise error

    async with trio.open_nursery() as parent:
        group = TaskGroup(parent, on_error=on_error, on_finished=lambda: finished.append(True))
        first, second = ValueError("first"), ValueError("second")
        group.start_soon(fail_second, second)
        group.start_soon(fail, first)
        await group.wait_finished()
    assert group.error is first
    assert heard == [first]
    assert finished == [True]
    assert group.closed


async def test_task_group_scope_given_to_start_soon_cancels_that_task_alone() -> None:
    """A task started in a caller's scope can be cancelled alone; the group cancels it too."""
    ended: list[str] = []

    async def task(name: str) -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.append(name)

    async with trio.open_nursery() as parent:
        group = TaskGroup(parent)
        alone = trio.CancelScope()
        group.start_soon(task, "alone", scope=alone)
        group.start_soon(task, "other")
        await trio.testing.wait_all_tasks_blocked()
        alone.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert ended == ["alone"]
        assert len(group) == 1
        await group.aclose()
    assert ended == ["alone", "other"]
    assert group.error is None


async def test_task_group_aclose_completes_when_its_caller_is_cancelled() -> None:
    """aclose() waits for every task even if the caller's scope is cancelled meanwhile (a shielded join)."""
    ended = trio.Event()

    async def slow_to_end() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.01)
            ended.set()

    async with trio.open_nursery() as parent:
        group = TaskGroup(parent)
        group.start_soon(slow_to_end)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as outer:
            outer.cancel()
            await group.aclose()
        assert ended.is_set()
        assert group.finished


@pytest.mark.parametrize("nested", [False, True], ids=["its-own-task", "a-task-it-started"])
async def test_task_group_aclose_from_inside_waits_for_the_others_and_ends_its_caller(nested: bool) -> None:
    """aclose() from one of the group's tasks, or from a task one of them started, cannot wait for that
    task: it waits for every other, and the caller's task, cancelled, ends at its next checkpoint."""
    others_ended = trio.Event()
    returned: list[bool] = []

    async def other() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.checkpoint()
            others_ended.set()

    async def closer(group: TaskGroup) -> None:
        await group.aclose()
        returned.append(others_ended.is_set())
        await trio.lowlevel.checkpoint()  # cancelled: it ends here
        raise AssertionError("not cancelled")  # pragma: no cover

    async def closer_in_a_nursery(group: TaskGroup) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(closer, group)

    with trio.fail_after(5):
        async with trio.open_nursery() as parent:
            group = TaskGroup(parent)
            group.start_soon(other)
            await trio.testing.wait_all_tasks_blocked()
            group.start_soon(closer_in_a_nursery if nested else closer, group)
            await group.wait_finished()
    assert returned == [True]
    assert group.finished


async def test_task_group_aclose_from_two_of_its_tasks_at_once_ends_both() -> None:
    """Two tasks of the group close it at once: each waits for the others but not for the other closer."""
    returned: list[str] = []

    async def closer(name: str, group: TaskGroup) -> None:
        await trio.testing.wait_all_tasks_blocked()  # both are in: they close it together
        await group.aclose()
        returned.append(name)

    with trio.fail_after(5):
        async with trio.open_nursery() as parent:
            group = TaskGroup(parent)
            group.start_soon(closer, "a", group)
            group.start_soon(closer, "b", group)
            await group.wait_finished()
    assert sorted(returned) == ["a", "b"]


async def test_task_group_aclose_of_each_other_from_two_groups_ends_both() -> None:
    """A task of group A closes group B while a task of B closes A: each would wait, shielded, for the
    other; the second leaves the first (which waits for it) out of its wait and returns, then ends at its
    next checkpoint, cancelled by the first; both groups finish."""
    outcomes: dict[str, str] = {}

    async def closer(name: str, other: TaskGroup) -> None:
        await trio.testing.wait_all_tasks_blocked()  # both are in: they close each other together
        try:
            await other.aclose()
        except trio.Cancelled:
            outcomes[name] = "cancelled"
            raise
        outcomes[name] = "returned"

    with trio.fail_after(5):
        async with trio.open_nursery() as parent:
            a, b = TaskGroup(parent), TaskGroup(parent)
            a.start_soon(closer, "a", b)
            b.start_soon(closer, "b", a)
            await a.wait_finished()
            await b.wait_finished()
    # The first closer waited for the other group; the second did not wait for the first (which waits for it).
    assert sorted(outcomes.values()) == ["returned", "returned"]
    assert a.error is None
    assert b.error is None


async def test_task_group_aclose_from_outside_still_waits_when_two_groups_close_each_other() -> None:
    """A loop is broken only where it is closed: a caller outside both groups, cancelled, still waits
    (shielded) until every task of the group it closes has ended, slow cleanup included."""
    ended: list[str] = []

    async def closer(name: str, other: TaskGroup) -> None:
        await trio.testing.wait_all_tasks_blocked()
        try:
            await other.aclose()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.01)
            ended.append(name)

    async with trio.open_nursery() as parent:
        a, b = TaskGroup(parent), TaskGroup(parent)
        a.start_soon(closer, "a", b)
        b.start_soon(closer, "b", a)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as outer:
            outer.cancel()
            await a.aclose()
        assert a.finished
        assert "a" in ended
        await b.wait_finished()
    assert sorted(ended) == ["a", "b"]
