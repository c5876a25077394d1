"""Session resources: an async context manager a session owns, entered and exited by one task of it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from agents import Agent, ElicitationUnavailable, ScriptedModel, SessionLike, ToolCall, ToolContext, tool
from runtime import ClosedSessionError, Session, SessionResource, open_runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager


@attrs.define(eq=False)
class Tracked:
    """What a tracked manager did: which tasks entered and exited it, and how it was exited."""

    opened: int = 0
    entered_in: list[trio.lowlevel.Task] = attrs.field(factory=list)
    exited_in: list[trio.lowlevel.Task] = attrs.field(factory=list)
    exit_errors: list[BaseException | None] = attrs.field(factory=list)
    exit_finished: int = 0
    """Exits that ran to their end (past a checkpoint: a graceful close, even when the session is cancelled)."""
    open_gate: trio.Event | None = None
    fail_open: Exception | None = None
    fail_exit: Exception | None = None
    hang_exit: bool = False

    @asynccontextmanager
    async def manager(self) -> AsyncIterator[str]:
        self.opened += 1
        number = self.opened
        self.entered_in.append(trio.lowlevel.current_task())
        if self.open_gate is not None:
            await self.open_gate.wait()
        if self.fail_open is not None:
            raise self.fail_open
        error: BaseException | None = None
        try:
            yield f"connection {number}"
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.exited_in.append(trio.lowlevel.current_task())
            self.exit_errors.append(error)
            await trio.lowlevel.checkpoint()  # a graceful close awaits something (a goodbye, a process)
            if self.hang_exit:
                await trio.sleep_forever()
            self.exit_finished += 1
            if self.fail_exit is not None:
                raise self.fail_exit


def _agent(*turns: Any, tools: list[Any] | None = None) -> Agent:
    return Agent(name="a", model=ScriptedModel(list(turns)), tools=tools or [])


async def test_resource_is_opened_once_and_closed_with_the_session_in_the_task_that_opened_it() -> None:
    """Concurrent callers share one opening; the session's close exits the manager gracefully, in the same task."""
    gate = trio.Event()
    tracked = Tracked(open_gate=gate)
    got: list[SessionResource[str]] = []
    async with open_runtime() as runtime:
        async with runtime.open_session(_agent()) as session:

            async def use() -> None:
                got.append(await session.resource("db", tracked.manager))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(use)
                await trio.testing.wait_all_tasks_blocked()
                assert tracked.opened == 1  # the others wait for the one opening
                gate.set()
            assert len(got) == 3
            assert got[0] is got[1] is got[2]
            assert got[0].value == "connection 1"
            assert not got[0].closed
            assert await session.resource("db", tracked.manager) is got[0]
            owner = tracked.entered_in[0]
            assert owner is not trio.lowlevel.current_task()
        # Closing the session (a cancellation) still closed it gracefully: no error seen, the exit ran to its end.
        assert tracked.exited_in == [owner]
        assert tracked.exit_errors == [None]
        assert tracked.exit_finished == 1
        assert got[0].closed
        assert got[0].error is None
        assert session.error is None


async def test_resource_tasks_live_on_while_it_closes_with_its_session() -> None:
    """The session's closing does not cancel the manager's own tasks: its exit can still use them (a goodbye
    to a peer, an HTTP session's DELETE), and it stops them itself."""
    said: list[str] = []

    @asynccontextmanager
    async def with_a_peer() -> AsyncIterator[None]:
        requests, inbox = trio.open_memory_channel[tuple[str, trio.Event]](0)

        async def peer() -> None:
            async for message, answered in inbox:
                said.append(message)
                answered.set()

        async with trio.open_nursery() as nursery, requests:
            nursery.start_soon(peer)
            yield
            goodbye = trio.Event()
            await requests.send(("goodbye", goodbye))  # needs the peer task alive
            await goodbye.wait()
            await requests.aclose()

    async with open_runtime() as runtime:
        async with runtime.open_session(_agent()) as session:
            resource = await session.resource("peer", with_a_peer)
    assert said == ["goodbye"]
    assert resource.error is None


async def test_resource_is_shared_by_the_runs_of_a_session_and_outlives_them() -> None:
    """A resource a tool opens is there for the next run's tools, and closes with the session, not the run."""
    tracked = Tracked()
    values: list[str] = []

    @tool
    async def query(ctx: ToolContext[None]) -> str:
        """Uses the session's connection."""
        resource = await ctx.session.resource("db", tracked.manager)
        values.append(resource.value)
        return resource.value

    async with open_runtime() as runtime:
        async with runtime.open_session(
            _agent(ToolCall("query"), "one", ToolCall("query"), "two", tools=[query])
        ) as session:
            assert (await session.ask("first")).output == "one"
            assert tracked.exited_in == []  # the run ended; the resource did not
            assert (await session.ask("second")).output == "two"
        assert values == ["connection 1", "connection 1"]
        assert tracked.opened == 1
        assert tracked.exit_finished == 1


async def test_resource_error_entering_is_raised_to_the_caller_and_the_next_call_tries_again() -> None:
    """An opener that fails raises in resource(); nothing is left behind and the session stays open."""
    tracked = Tracked(fail_open=ConnectionRefusedError("no server"))
    async with open_runtime() as runtime, runtime.open_session(_agent("ok")) as session:
        with pytest.raises(ConnectionRefusedError, match="no server"):
            await session.resource("db", tracked.manager)
        assert not session.closed
        assert session.error is None
        tracked.fail_open = None
        resource = await session.resource("db", tracked.manager)
        assert resource.value == "connection 2"
        assert (await session.ask("still there?")).output == "ok"


async def test_resource_waiters_try_again_when_the_opening_they_waited_for_is_cancelled() -> None:
    """If the caller that is opening leaves, a caller waiting for that opening opens it itself."""
    gate = trio.Event()
    tracked = Tracked(open_gate=gate)
    async with open_runtime() as runtime, runtime.open_session(_agent()) as session:
        got: list[SessionResource[str]] = []

        async def waiter() -> None:
            got.append(await session.resource("db", tracked.manager))

        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as first:
                nursery.start_soon(waiter)  # started after the first caller: it waits for that opening

                async def cancel_soon() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    first.cancel()

                nursery.start_soon(cancel_soon)
                await session.resource("db", tracked.manager)
            assert first.cancelled_caught
            await trio.testing.wait_all_tasks_blocked()
            assert tracked.opened == 2  # the waiter is opening it now
            gate.set()
        assert [r.value for r in got] == ["connection 2"]
        # The cancelled opening was exited (by the manager's own unwinding) in the task that entered it.
        assert tracked.exited_in == []


async def test_resource_failing_while_open_is_recorded_never_raised_into_the_session() -> None:
    """A manager whose own task fails closes the resource with its error; the session goes on, and the next
    call opens a fresh one."""

    @asynccontextmanager
    async def with_a_worker() -> AsyncIterator[trio.Event]:
        crash = trio.Event()

        async def worker() -> None:
            await crash.wait()
            raise ConnectionResetError("peer went away")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            yield crash
            nursery.cancel_scope.cancel()

    async with open_runtime() as runtime, runtime.open_session(_agent("ok")) as session:
        resource = await session.resource("peer", with_a_worker)
        resource.value.set()
        with trio.fail_after(5):
            await resource.wait_closed()
        assert resource.closed
        assert isinstance(resource.error, ConnectionResetError)
        assert session.error is None
        assert not session.closed
        fresh = await session.resource("peer", with_a_worker)
        assert fresh is not resource
        assert not fresh.closed
        assert (await session.ask("still there?")).output == "ok"


async def test_resource_aclose_exits_it_in_its_owner_and_the_next_call_opens_a_fresh_one() -> None:
    """aclose() waits until the owner task has exited the manager; it is idempotent, and close() does not wait."""
    tracked = Tracked()
    async with open_runtime() as runtime, runtime.open_session(_agent()) as session:
        first = await session.resource("db", tracked.manager)
        await first.aclose()
        assert tracked.exited_in == tracked.entered_in
        assert tracked.exit_finished == 1
        await first.aclose()
        assert first.closed
        second = await session.resource("db", tracked.manager)
        assert second.value == "connection 2"
        second.close()
        assert second.closed
        third = await session.resource("db", tracked.manager)  # at once, while the second one still closes
        assert third.value == "connection 3"
        await second.wait_closed()
        assert tracked.exit_finished == 2


async def test_resource_exit_error_is_kept_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """An error raised while the manager exits is the resource's error, and a warning; never the session's."""
    tracked = Tracked(fail_exit=BrokenPipeError("stdin already closed"))
    async with open_runtime() as runtime, runtime.open_session(_agent()) as session:
        resource = await session.resource("db", tracked.manager, name="the database")
        await resource.aclose()
        assert isinstance(resource.error, BrokenPipeError)
        assert session.error is None
    assert "session resource the database failed" in caplog.text


async def test_resource_that_never_finishes_closing_is_cut_off_after_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A manager whose exit hangs holds the session's close for close_timeout seconds, no longer."""
    tracked = Tracked(hang_exit=True)
    async with open_runtime() as runtime:
        async with runtime.open_session(_agent()) as session:
            resource = await session.resource("db", tracked.manager, close_timeout=3)
            start = trio.current_time()
        assert trio.current_time() - start == pytest.approx(3)
        assert isinstance(resource.error, TimeoutError)
        assert "did not close within 3" in str(resource.error)


@asynccontextmanager
async def _connection_whose_reader_fails_as_it_is_cut() -> AsyncIterator[str]:
    """A connection with a reader task whose cleanup fails once cancelled, and a goodbye never answered."""
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise BrokenPipeError("reader: pipe closed")

        nursery.start_soon(reader)
        yield "connection"
        await trio.sleep_forever()  # the goodbye: cut off by close_timeout


async def test_resource_cut_off_by_close_timeout_while_its_task_fails_never_fails_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A manager cut off by close_timeout while a task of its own fails (a group of the deadline's Cancelled and
    that error) is a resource error like any other, never the session's: the group went up through the owner
    and failed the session, the resource's error left None."""
    async with open_runtime() as runtime, runtime.open_session(_agent("ok")) as session:
        resource = await session.resource("db", _connection_whose_reader_fails_as_it_is_cut, close_timeout=1)
        await resource.aclose()
        assert isinstance(resource.error, TimeoutError)
        assert "did not close within 1" in str(resource.error)
        assert not session.closed
        assert session.error is None
        assert (await session.ask("still there?")).output == "ok"


@pytest.mark.parametrize("close_timeout", [-1.0, float("nan")])
async def test_resource_close_timeout_below_zero_or_nan_is_refused_before_anything_opens(close_timeout: float) -> None:
    """A NaN close timeout was taken, then its deadline raised inside the close: the manager was never exited
    (a connection, a process leaked) and the session failed."""
    tracked = Tracked()
    async with open_runtime() as runtime, runtime.open_session(_agent()) as session:
        with pytest.raises(ValueError, match="close_timeout must be 0 or more"):
            await session.resource("db", tracked.manager, close_timeout=close_timeout)
        assert tracked.opened == 0
        assert not session.closed


async def test_resource_opener_that_raises_is_its_error_alone() -> None:
    """An opener that raises (a bad URL, before any manager exists) raises its own error in resource(), as an
    error entering the manager does: it came wrapped in an ExceptionGroup of the owner's nursery."""

    def bad_opener() -> AbstractAsyncContextManager[str]:
        raise ValueError("bad DSN 'postgres://'")

    async with open_runtime() as runtime, runtime.open_session(_agent("ok")) as session:
        with pytest.raises(ValueError, match="bad DSN"):
            await session.resource("db", bad_opener)
        assert not session.closed


async def test_resource_of_a_closed_session_is_refused() -> None:
    """resource() on a closed session raises ClosedSessionError and opens nothing."""
    tracked = Tracked()
    async with open_runtime() as runtime:
        async with runtime.open_session(_agent()) as session:
            pass
        with pytest.raises(ClosedSessionError):
            await session.resource("db", tracked.manager)
    assert tracked.opened == 0


async def test_resource_opening_when_the_session_closes_raises_closed_session() -> None:
    """A session closed while a resource opens makes resource() raise ClosedSessionError; nothing is left."""
    tracked = Tracked(open_gate=trio.Event())
    async with open_runtime() as runtime:
        handle = await runtime.start_session(_agent())

        async def close_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            await handle.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_soon)
            with pytest.raises(ClosedSessionError):
                await handle.session.resource("db", tracked.manager)
    assert tracked.opened == 1


async def test_resource_owner_serves_no_run_even_when_a_run_opened_it() -> None:
    """The owner task was started by a run's tool, but its manager cannot ask that run's consumer."""
    asked: list[BaseException] = []

    @asynccontextmanager
    async def asking(session: Session[Any]) -> AsyncIterator[None]:
        try:
            await session.elicitation.elicit("who?", schema=None, timeout=None, agent="a")
        except ElicitationUnavailable as exc:
            asked.append(exc)
        yield

    @tool
    async def connect(ctx: ToolContext[None]) -> str:
        """Opens the session's resource."""
        session = ctx.session
        assert isinstance(session, Session)
        await session.resource("x", lambda: asking(session))
        return "connected"

    async with open_runtime() as runtime:
        agent = _agent(ToolCall("connect"), "done", tools=[connect])
        async with runtime.open_session(agent) as session, session.run("go") as stream:
            async for _ in stream:
                pass
    assert stream.result.tool_calls[0].result == "connected"
    assert len(asked) == 1


def test_resource_is_part_of_session_like() -> None:
    """runtime.Session is what agents.SessionLike describes, resource() included."""
    session: type[SessionLike] = Session
    assert session.resource is Session.resource
