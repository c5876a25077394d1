"""Sessions: serialized runs, shared history, run streams, owned tasks."""

from __future__ import annotations

import itertools
import re
import time
from typing import cast

import pytest
import trio
import trio.lowlevel
import trio.testing

from agents import (
    Agent,
    AssistantMessage,
    ScriptedModel,
    SessionLike,
    ToolCall,
    ToolContext,
    ToolResultMessage,
    UserMessage,
    tool,
)
from runtime import (
    ClosedRunStreamError,
    ClosedSessionError,
    ReentrantRunError,
    RunFailedError,
    Session,
    open_runtime,
)
from runtime._session import new_session_id
from runtime.events import Event, RunFinished, RunStarted, TextDelta, ToolCallFinished, ToolCallStarted


async def test_session_runs_are_served_in_fifo_order() -> None:
    """Runs started together are served one at a time, in the order run() was called."""
    release = trio.Event()

    @tool
    async def hold() -> str:
        """Holds the run slot until released."""
        await release.wait()
        return "released"

    model = ScriptedModel([ToolCall("hold"), "one", "two", "three"])
    order: list[str] = []
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model, tools=[hold])) as session:

        async def consume(prompt: str) -> None:
            async with session.run(prompt) as stream:
                async for event in stream:
                    if isinstance(event, RunStarted):
                        order.append(prompt)

        async with trio.open_nursery() as nursery:
            for prompt in ("first", "second", "third"):
                nursery.start_soon(consume, prompt)
                await trio.testing.wait_all_tasks_blocked()
            # The first run holds the slot, so the other two are both waiting for it.
            assert order == ["first"]
            release.set()
    assert order == ["first", "second", "third"]
    assert [m.messages[-1] for m in model.requests[1:]] == [
        ToolResultMessage("call_1_0", "hold", "released"),
        UserMessage("second"),
        UserMessage("third"),
    ]


async def test_session_second_concurrent_run_sees_first_exchange() -> None:
    """Of two concurrent runs, the second's model request contains the first's whole exchange."""
    model = ScriptedModel([ToolCall("echo", {"text": "a"}), "first done", "second done"])

    gate = trio.Event()

    @tool
    async def echo(text: str) -> str:
        """Echo, once the gate opens."""
        await gate.wait()
        return text

    async with open_runtime() as runtime:
        async with runtime.open_session(Agent(name="a", model=model, tools=[echo])) as session:
            results: dict[str, str | None] = {}

            async def ask(prompt: str) -> None:
                results[prompt] = (await session.ask(prompt)).output

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, "q1")
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(ask, "q2")  # entered while q1 is still in its tool
                await trio.testing.wait_all_tasks_blocked()
                assert results == {}
                gate.set()
    assert results == {"q1": "first done", "q2": "second done"}
    last_request = model.requests[-1].messages
    assert last_request == (
        UserMessage("q1"),
        AssistantMessage("", (model.requests[1].messages[1].tool_calls[0],)),  # type: ignore[union-attr]
        ToolResultMessage("call_1_0", "echo", "a"),
        AssistantMessage("first done"),
        UserMessage("q2"),
    )


async def test_session_run_from_inside_own_run_is_a_typed_error() -> None:
    """A tool calling run() on its own session gets ReentrantRunError instead of a deadlock."""

    @tool
    async def recurse(ctx: ToolContext[None]) -> str:
        """Tries to start a run of its own session."""
        session = cast("Session", ctx.session)  # a tool is not offered run(): this one tries anyway
        async with session.run("again"):
            return "unreachable"

    model = ScriptedModel([ToolCall("recurse"), "done"])
    async with (
        open_runtime() as runtime,
        runtime.open_session(Agent(name="a", model=model, tools=[recurse])) as s,
    ):
        with trio.fail_after(5):
            result = await s.ask("go")
    (call,) = result.tool_calls
    assert call.error is not None
    assert call.error.startswith("ReentrantRunError:")
    assert result.output == "done"


async def test_session_run_from_a_tool_of_another_session_is_allowed() -> None:
    """A tool may run a different session (only the own session is refused)."""
    inner_model = ScriptedModel(["inner answer"])

    async with open_runtime() as runtime, runtime.open_session(Agent(name="in", model=inner_model)) as inner:

        @tool
        async def delegate() -> str:
            """Asks the other session."""
            return str((await inner.ask("sub")).output)

        model = ScriptedModel([ToolCall("delegate"), "done"])
        async with runtime.open_session(Agent(name="out", model=model, tools=[delegate])) as outer:
            result = await outer.ask("go")
    assert [c.result for c in result.tool_calls] == ["inner answer"]


async def test_session_history_stays_valid_when_run_is_cancelled_mid_tool() -> None:
    """Leaving a run while its tools run leaves every tool call with a (cancelled) result."""
    model = ScriptedModel([[ToolCall("wait"), ToolCall("wait")], "next run"])

    @tool
    async def wait() -> str:
        """Sleeps forever."""
        await trio.sleep_forever()
        return "never"

    async with (
        open_runtime() as runtime,
        runtime.open_session(Agent(name="a", model=model, tools=[wait])) as s,
    ):
        async with s.run("go") as stream:
            async for event in stream:
                if isinstance(event, ToolCallStarted):
                    await trio.testing.wait_all_tasks_blocked()
                    break
        calls = s.history[1]
        assert isinstance(calls, AssistantMessage)
        results = [m for m in s.history if isinstance(m, ToolResultMessage)]
        assert [r.call_id for r in results] == [c.call_id for c in calls.tool_calls]
        assert all(r.is_error and "cancelled" in r.content for r in results)
        assert (await s.ask("again")).output == "next run"


async def test_run_stream_yields_exactly_one_run_finished_when_session_closes() -> None:
    """A consumer whose session is closed mid-run sees one RunFinished("cancelled"), last."""
    model = ScriptedModel([ToolCall("wait")])

    @tool
    async def wait() -> str:
        """Sleeps forever."""
        await trio.sleep_forever()
        return "never"

    events: list[Event] = []
    async with open_runtime() as runtime:
        handle = await runtime.start_session(Agent(name="a", model=model, tools=[wait]))
        async with handle.session.run("go") as stream:
            async for event in stream:
                events.append(event)
                if isinstance(event, ToolCallStarted):
                    await handle.aclose()
    assert events[-1] == RunFinished("cancelled")
    assert sum(isinstance(e, RunFinished) for e in events) == 1


async def test_run_stream_read_after_block_is_a_clear_error() -> None:
    """Reading a RunStream after its block exited raises ClosedRunStreamError (or ends, if finished)."""
    model = ScriptedModel(["a b c", "d"])
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
        async with session.run("x") as unfinished:
            await unfinished.__anext__()
        with pytest.raises(ClosedRunStreamError, match=r"after its 'async with session\.run"):
            await unfinished.__anext__()
        async with session.run("y") as complete:
            events = [event async for event in complete]
        assert isinstance(events[-1], RunFinished)
        with pytest.raises(StopAsyncIteration):
            await complete.__anext__()


async def test_run_stream_checks_for_cancellation_every_32_buffered_events() -> None:
    """A cancelled consumer reading buffered events is stopped within 32 of them, and at once when it must wait."""
    model = ScriptedModel([" ".join(f"w{i}" for i in range(100)), "b"])
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
        async with session.run("x") as stream:
            await trio.testing.wait_all_tasks_blocked()  # the whole run now waits in the buffer
            read = 0
            with trio.CancelScope() as scope:
                scope.cancel()
                async for _ in stream:
                    read += 1
            assert scope.cancelled_caught
            assert 0 < read < 32
    slow = ScriptedModel(["a b"], chunk_delay=3600)
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=slow)) as session:
        async with session.run("y") as stream:
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.WouldBlock):
                while True:
                    stream.next_nowait()  # take what is buffered
            with trio.CancelScope() as scope:
                scope.cancel()
                await stream.__anext__()
            assert scope.cancelled_caught


async def test_run_stream_result_matches_streamed_events() -> None:
    """RunStream.result holds the output, usage and tool calls of the finished run."""
    model = ScriptedModel([ToolCall("double", {"x": 4}), "eight"])

    @tool
    def double(x: int) -> int:
        """Double it."""
        return 2 * x

    async with (
        open_runtime() as runtime,
        runtime.open_session(Agent(name="a", model=model, tools=[double])) as s,
    ):
        async with s.run("go") as stream:
            events = [event async for event in stream]
    result = stream.result
    assert result.output == "".join(e.text for e in events if isinstance(e, TextDelta)) == "eight"
    assert result.reason == "completed"
    assert [(c.name, c.result) for c in result.tool_calls] == [
        (e.name, e.result) for e in events if isinstance(e, ToolCallFinished)
    ]
    assert result.usage.output_tokens > 0


async def test_ask_raises_run_failed_on_error() -> None:
    """ask() raises RunFailedError carrying the error kind and the partial result."""
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=ScriptedModel([]))) as s:
        with pytest.raises(RunFailedError, match="ran out of turns") as info:
            await s.ask("go")
    assert info.value.kind == "model"
    assert info.value.result.reason == "error"


async def test_ask_raises_closed_session_when_the_session_is_closed_during_the_run() -> None:
    """ask() of a run that closing its session cancels raises ClosedSessionError."""
    entered = trio.Event()

    @tool
    async def hold() -> str:
        """Waits until the session closes."""
        entered.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    agent = Agent(name="a", model=ScriptedModel([ToolCall("hold"), "done"]), tools=[hold])
    async with open_runtime() as runtime:
        handle = await runtime.start_session(agent)

        async def close_when_held() -> None:
            await entered.wait()
            await handle.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_when_held)
            with pytest.raises(ClosedSessionError, match="was closed during the run"):
                await handle.session.ask("go")


async def test_ask_whose_tool_raises_keyboard_interrupt_raises_it_bare() -> None:
    """A tool's KeyboardInterrupt reaches ask()'s caller as itself, as it does run()'s: the run ends cancelled
    because the runtime is going down, not because the session was closed (no ClosedSessionError beside it)."""

    @tool
    async def interrupt() -> str:
        """Ctrl-C landing in the tool."""
        raise KeyboardInterrupt

    agent = Agent(name="a", model=ScriptedModel([ToolCall("interrupt"), "done"]), tools=[interrupt])
    with pytest.raises(KeyboardInterrupt):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            await session.ask("go")


async def test_shielded_ask_whose_tool_raises_keyboard_interrupt_does_not_wait_for_ever() -> None:
    """ask() in a shielded scope (cleanup code) whose tool raises KeyboardInterrupt returns at once with a
    ClosedSessionError, and the KeyboardInterrupt still leaves the runtime's block: it waited for its session
    to close, which only the block's exit does, and the block waited for it."""

    @tool
    async def interrupt() -> str:
        """Ctrl-C landing in the tool."""
        raise KeyboardInterrupt

    agent = Agent(name="a", model=ScriptedModel([ToolCall("interrupt"), "done"]), tools=[interrupt])
    with pytest.raises(BaseExceptionGroup) as caught:
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            # The deadline only guards the test from a hang: a shielded wait no outer timeout can end.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 5) as shielded:
                await session.ask("go")
    assert not shielded.cancelled_caught
    assert caught.value.subgroup(KeyboardInterrupt) is not None
    assert caught.value.subgroup(ClosedSessionError) is not None


async def test_closed_session_refuses_runs_and_tasks() -> None:
    """A closed session raises ClosedSessionError from run(), ask(), start_soon() and start()."""
    async with open_runtime() as runtime:
        handle = await runtime.start_session(Agent(name="a", model=ScriptedModel(["x"])))
        await handle.aclose()
        await handle.aclose()  # idempotent
        session = handle.session
        assert session.closed
        with pytest.raises(ClosedSessionError):
            async with session.run("x"):
                pass  # pragma: no cover
        with pytest.raises(ClosedSessionError):
            await session.ask("x")
        with pytest.raises(ClosedSessionError):
            session.start_soon(trio.sleep_forever)
        with pytest.raises(ClosedSessionError):
            await session.start(trio.sleep_forever)


async def test_session_tasks_are_cancelled_when_session_closes() -> None:
    """Tasks given to start_soon/start live in the session and end when it closes."""
    ended: list[str] = []

    async def listener(name: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(f"{name} ready")
        try:
            await trio.sleep_forever()
        finally:
            ended.append(name)

    async with open_runtime() as runtime:
        async with runtime.open_session(Agent(name="a", model=ScriptedModel([]))) as session:
            session.start_soon(listener, "soon")
            assert await session.start(listener, "started") == "started ready"
            await trio.testing.wait_all_tasks_blocked()
            assert ended == []
        assert sorted(ended) == ["soon", "started"]


async def test_open_session_raises_a_failing_task_error_at_exit() -> None:
    """A task of an open_session that raises fails that session; the error surfaces at block exit."""

    async def crash() -> None:
        raise ValueError("listener broke")

    async with open_runtime() as runtime:
        with pytest.raises(ValueError, match="listener broke"):
            async with runtime.open_session(Agent(name="a", model=ScriptedModel([]))) as session:
                session.start_soon(crash)
                await trio.testing.wait_all_tasks_blocked()
                assert session.closed


async def test_open_session_raises_the_session_error_a_run_was_closed_by() -> None:
    """A handler that raises (on_error="raise") fails the session while ``ask`` runs: ``ask`` raises
    ClosedSessionError, and the block raises the handler's error, with that as its context. Before, the
    block raised the ClosedSessionError and the handler's error was lost (not raised, chained or logged)."""
    release = trio.Event()

    @tool
    async def slow() -> str:
        """Waits until the test lets it go (never: the session fails first)."""
        await release.wait()
        return "x"

    async def broken(event: Event) -> None:
        if isinstance(event, ToolCallStarted):
            raise ValueError("the transcript disk is full")

    agent = Agent(name="a", model=ScriptedModel([ToolCall("slow"), "done"]), tools=[slow])
    with trio.fail_after(5):
        async with open_runtime() as runtime:
            with pytest.raises(ValueError, match="the transcript disk is full") as raised:
                async with runtime.open_session(agent) as session:
                    session.add_handler(broken)
                    await session.ask("go")
    assert isinstance(raised.value.__context__, ClosedSessionError)


async def test_open_session_keeps_its_own_error_and_notes_the_session_error() -> None:
    """An error of the block's own, raised after the session failed, is what the block raises: the session's
    error is named in a note, not lost."""

    async def crash() -> None:
        raise ValueError("listener broke")

    async with open_runtime() as runtime:
        with pytest.raises(KeyError) as raised:
            async with runtime.open_session(Agent(name="a", model=ScriptedModel([]))) as session:
                session.start_soon(crash)
                await trio.testing.wait_all_tasks_blocked()
                raise KeyError("the caller's own")
    (note,) = raised.value.__notes__
    assert note == f"while the session {session.id} had failed: ValueError('listener broke')"


async def test_session_ids_are_unique_and_settable() -> None:
    """Sessions get distinct ids unless one is given."""
    agent = Agent(name="a", model=ScriptedModel([]))
    async with open_runtime() as runtime:
        async with runtime.open_session(agent) as one, runtime.open_session(agent) as two:
            assert one.id != two.id
        async with runtime.open_session(agent, session_id="chat-42") as named:
            assert named.id == "chat-42"
            assert runtime.sessions == (named,)


def test_made_session_ids_sort_in_the_order_they_are_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """A made id is ``s``, the time in ms and 16 random hex digits: ids made a millisecond apart sort in
    that order (a store's index grows at its end), ids made in the same millisecond still differ."""
    clock = itertools.count(1_764_900_000_000_000_000, 1_000_000)  # ns, 1 ms apart
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))
    made = [new_session_id() for _ in range(200)]
    assert sorted(made) == made
    assert all(re.fullmatch(r"s[0-9a-f]{27}", session_id) for session_id in made)
    monkeypatch.setattr(time, "time_ns", lambda: 1_764_900_000_000_000_000)
    assert len({new_session_id() for _ in range(200)}) == 200


async def test_session_start_error_before_started_is_raised_to_the_caller() -> None:
    """A task that raises before task_status.started() raises from start(); the session stays open."""

    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise ConnectionRefusedError("cannot listen")

    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=ScriptedModel(["ok"]))) as s:
        with pytest.raises(ConnectionRefusedError, match="cannot listen"):
            await s.start(broken)
        assert not s.closed
        assert (await s.ask("still there?")).output == "ok"


async def test_session_start_of_a_task_that_never_calls_started_is_trios_error() -> None:
    """A task that returns without started() makes start() raise trio's RuntimeError; the session stays open."""

    async def forgetful(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.lowlevel.checkpoint()

    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=ScriptedModel(["ok"]))) as s:
        with pytest.raises(RuntimeError, match=r"without calling task_status\.started\(\)"):
            await s.start(forgetful)
        assert not s.closed
        assert s.error is None
        assert (await s.ask("still there?")).output == "ok"
        with trio.fail_after(1):
            await s.aclose()  # nothing of the task is left to wait for
        await s.aclose()  # idempotent
        assert s.closed


async def test_session_closed_while_a_task_starts_raises_closed_session() -> None:
    """Closing the session while start() waits for started() makes start() raise ClosedSessionError."""
    async with open_runtime() as runtime:
        handle = await runtime.start_session(Agent(name="a", model=ScriptedModel([])))

        async def never_ready(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await trio.sleep_forever()

        async def close_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            await handle.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_soon)
            with pytest.raises(ClosedSessionError, match="closed before the task started"):
                await handle.session.start(never_ready)


async def test_session_task_failing_after_start_cancels_its_siblings() -> None:
    """A task raising after it started fails the session: its other tasks are cancelled, the error kept."""
    sibling_cancelled = trio.Event()

    async def sibling() -> None:
        try:
            await trio.sleep_forever()
        finally:
            sibling_cancelled.set()

    async def fails_later(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.testing.wait_all_tasks_blocked()
        raise OSError("peer vanished")

    async with open_runtime() as runtime:
        handle = await runtime.start_session(Agent(name="a", model=ScriptedModel([])))
        handle.session.start_soon(sibling)
        await handle.session.start(fails_later)
        await handle.wait_closed()
        assert sibling_cancelled.is_set()
        assert isinstance(handle.error, OSError)
        assert handle.closed


async def test_idle_session_owns_no_task() -> None:
    """Starting and closing a session without work spawns no Trio task at all."""

    class Spawns(trio.abc.Instrument):
        count = 0

        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            Spawns.count += 1

    async with open_runtime() as runtime:
        trio.lowlevel.add_instrument(spawns := Spawns())
        try:
            handles = [await runtime.start_session(Agent(name="a", model=ScriptedModel([]))) for _ in range(50)]
            for handle in handles:
                await handle.aclose()
        finally:
            trio.lowlevel.remove_instrument(spawns)
    assert Spawns.count == 0


async def test_close_callbacks_run_after_every_task_has_ended_in_order(caplog: pytest.LogCaptureFixture) -> None:
    """call_when_closed: after the session's runs and tasks have ended, in order, before wait_closed returns;
    one that raises is logged and the next still runs; given after that, it runs at once."""
    seen: list[str] = []

    async def listener() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.checkpoint()  # ends a scheduling round after the cancel
            seen.append("listener ended")

    def fail() -> None:
        seen.append("failing callback")
        raise RuntimeError("boom")

    async with open_runtime() as runtime:
        handle = await runtime.start_session(Agent(name="a", model=ScriptedModel([])))
        handle.session.start_soon(listener)
        handle.session.call_when_closed(lambda: seen.append("first"))
        handle.session.call_when_closed(fail)
        handle.session.call_when_closed(lambda: seen.append("third"))
        await trio.testing.wait_all_tasks_blocked()
        handle.session.cancel()
        assert seen == []
        await handle.wait_closed()
        assert seen == ["listener ended", "first", "failing callback", "third"]
        handle.session.call_when_closed(lambda: seen.append("late"))
        assert seen[-1] == "late"
    assert "a close callback of session" in caplog.text
    assert "boom" in caplog.text


async def test_outer_cancellation_closes_sessions_through_runtime_exit(autojump_clock: trio.testing.MockClock) -> None:
    """A deadline around the runtime block ends its runs (RunFinished("cancelled")) and its sessions, promptly."""
    tool_cancelled = trio.Event()

    @tool
    async def forever() -> str:
        """Never returns."""
        try:
            await trio.sleep_forever()
        finally:
            tool_cancelled.set()
        return "never"

    seen: list[Event] = []
    with trio.move_on_after(5) as deadline:
        async with open_runtime() as runtime:
            handle = await runtime.start_session(
                Agent(name="a", model=ScriptedModel([ToolCall("forever")]), tools=[forever])
            )
            async with handle.session.run("go") as stream:
                async for event in stream:
                    seen.append(event)
    assert deadline.cancelled_caught
    assert trio.current_time() == pytest.approx(5)
    assert tool_cancelled.is_set()
    assert handle.closed
    assert isinstance(seen[-1], ToolCallStarted)  # the consumer itself was cancelled mid-stream


async def test_session_is_what_a_tool_may_use_of_its_session() -> None:
    """A tool sees its session through agents.SessionLike: its id, its history, and the tasks it owns."""
    seen: list[object] = []
    done = trio.Event()

    async def owned(value: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(f"started {value}")

    async def later() -> None:
        done.set()

    @tool
    async def inspect(ctx: ToolContext[None]) -> str:
        """Looks at its session."""
        session: SessionLike = ctx.session
        seen.extend([session.id, len(session.history), await session.start(owned, "a")])
        session.start_soon(later)
        return "ok"

    model = ScriptedModel([ToolCall("inspect"), "done"])
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model, tools=[inspect])) as s:
        checked: SessionLike = s  # runtime.Session is one (mypy checks this line)
        with trio.fail_after(5):
            await s.ask("go")
            await done.wait()
    assert seen == [checked.id, 2, "started a"]  # history: the prompt, and the turn that called the tool


async def test_a_session_closed_from_its_own_handler_or_task_closes_and_its_runtime_exits() -> None:
    """aclose() from inside the session (a stream handler on RunFinished; a task of session.start_soon)
    cannot wait for the task it runs in: the session still closes, and leaving the runtime does not hang."""
    with trio.fail_after(5):
        async with open_runtime() as runtime:
            by_handler = (await runtime.start_session(Agent(name="a", model=ScriptedModel(["hi"])))).session

            async def close_when_done(event: Event) -> None:
                if isinstance(event, RunFinished):
                    await by_handler.aclose()

            by_handler.add_handler(close_when_done)
            await by_handler.ask("hello")
            await by_handler.wait_closed()

            by_task = (await runtime.start_session(Agent(name="b", model=ScriptedModel(["hi"])))).session
            by_task.start_soon(by_task.aclose)
            await by_task.wait_closed()
        assert by_handler.closed
        assert by_task.closed


async def test_a_task_a_tool_starts_in_its_session_is_not_inside_the_run() -> None:
    """The "remind me later" pattern: a tool starts a session task that asks the session once the run is
    over. It is not inside the run (no ReentrantRunError): it waits for the run slot like anyone."""
    reminded: list[str] = []
    done = trio.Event()

    async def remind(session: SessionLike) -> None:
        # It waits for the slot: the run that started it goes on.
        result = await cast("Session[str]", session).ask("reminder due")
        reminded.append(str(result.output))
        done.set()

    @tool
    async def remind_later(ctx: ToolContext[None]) -> str:
        """Schedule a reminder."""
        ctx.session.start_soon(remind, ctx.session)
        return "scheduled"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("remind_later", {}), "ok", "reminded"]), tools=[remind_later])
    with trio.fail_after(5):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            assert (await session.ask("remind me")).output == "ok"
            await done.wait()
    assert reminded == ["reminded"]


async def test_a_block_stream_handler_running_its_own_session_is_a_typed_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A block handler calling ask() on its own session gets ReentrantRunError at once: the new run would
    wait for the handler (its buffer full) while the handler waits for the run, a deadlock."""
    refused: list[BaseException] = []
    agent = Agent(name="a", model=ScriptedModel(["one two three four five"] * 2))
    with trio.fail_after(5):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:

            async def follow_up(event: Event) -> None:
                if isinstance(event, RunFinished) and not refused:
                    try:
                        await session.ask("follow-up")
                    except ReentrantRunError as exc:
                        refused.append(exc)

            handler = session.add_handler(follow_up, buffer=1)
            await session.ask("first")
            await handler.drain()
            assert session.run_count == 1  # the follow-up never started
    assert len(refused) == 1


async def test_a_drop_stream_handler_may_run_its_own_session() -> None:
    """A handler that drops what it cannot take never holds a run up, so it may ask its session (its run
    waits for the slot like anyone's)."""
    answers: list[object] = []
    agent = Agent(name="a", model=ScriptedModel(["one two three four five", "again and again"]))
    with trio.fail_after(5):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:

            async def follow_up(event: Event) -> None:
                if isinstance(event, RunFinished) and not answers:
                    answers.append((await session.ask("follow-up")).output)

            handler = session.add_handler(follow_up, overflow="drop_newest")
            await session.ask("first")
            await handler.drain()
    assert answers == ["again and again"]


async def test_a_tool_closing_the_session_whose_tool_asks_its_own_closes_both(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A tool of session A asks a helper session B, whose tool closes A: A's run block waits for B's run,
    which waits to close A. Both close, and A's consumer sees its run end with RunFinished("cancelled")."""
    async with open_runtime() as runtime:
        sessions: dict[str, Session[str]] = {}

        @tool
        async def end_conversation() -> str:
            """Close the user's session."""
            await sessions["a"].aclose()
            return "closed"

        @tool
        async def ask_helper() -> str:
            """Ask the helper agent."""
            helper = Agent(
                name="helper", model=ScriptedModel([ToolCall("end_conversation"), "bye"]), tools=[end_conversation]
            )
            async with runtime.open_session(helper) as b:
                sessions["b"] = b
                return str((await b.ask("should we stop?")).output)

        agent = Agent(name="a", model=ScriptedModel([ToolCall("ask_helper"), "x"]), tools=[ask_helper])
        sessions["a"] = a = (await runtime.start_session(agent)).session
        with trio.fail_after(60):
            async with a.run("go") as stream:
                events = [event async for event in stream]
            await a.wait_closed()
        assert events[-1] == RunFinished("cancelled")
        assert a.closed
        assert sessions["b"].closed


async def test_tools_of_two_sessions_closing_each_other_close_both(autojump_clock: trio.testing.MockClock) -> None:
    """A tool of session A closes B while a tool of B closes A, in the same tick: each would wait for the
    other's run, which waits for it. Both close, and each run ends with RunFinished("cancelled")."""
    sessions: dict[str, Session[str]] = {}
    arrived = trio.Event()
    inside: list[str] = []

    @tool
    async def close_other(ctx: ToolContext[None]) -> str:
        """Close the other session."""
        inside.append(ctx.agent.name)
        if len(inside) == 2:
            arrived.set()  # the second goes straight on; the first wakes in the same tick
        else:
            await arrived.wait()
        await sessions["b" if ctx.agent.name == "a" else "a"].aclose()
        return "closed"

    last: dict[str, Event] = {}

    async def consume(name: str) -> None:
        async with sessions[name].run("go") as stream:
            async for event in stream:
                last[name] = event

    async with open_runtime() as runtime:
        for name in "ab":
            agent = Agent(name=name, model=ScriptedModel([ToolCall("close_other"), "x"]), tools=[close_other])
            sessions[name] = (await runtime.start_session(agent)).session
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume, "a")
                nursery.start_soon(consume, "b")
        assert sessions["a"].closed
        assert sessions["b"].closed
    assert last == {"a": RunFinished("cancelled"), "b": RunFinished("cancelled")}


async def test_a_run_consumed_by_a_task_of_its_session_may_close_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A task of the session consumes a run whose tool closes the session from inside: the tool waits for
    the consumer, whose run block waits for the tool's run. The session closes."""
    closing: list[Session[str]] = []

    @tool
    async def end() -> str:
        """Close the session."""
        await closing[0].aclose()
        return "closed"

    async def consume(session: Session[str]) -> None:
        async with session.run("go") as stream:
            async for _ in stream:
                pass

    agent = Agent(name="a", model=ScriptedModel([ToolCall("end"), "x"]), tools=[end])
    async with open_runtime() as runtime:
        session = (await runtime.start_session(agent)).session
        closing.append(session)
        session.start_soon(consume, session)
        with trio.fail_after(60):
            await session.wait_closed()
        assert session.error is None
