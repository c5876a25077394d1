"""The seeds' scenarios (../shared/seeds/) that this slice can reproduce, each made impossible.

Each test would hang (caught by ``fail_after``), leak (caught by the leak
checker) or fail its assertions on the buggy shape the seed describes.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from agents import (
    Agent,
    Hooks,
    RunContext,
    ScriptedModel,
    StopRun,
    Tool,
    ToolCall,
    ToolResultMessage,
    tool,
)
from runtime import open_runtime
from runtime.events import ErrorEvent, Event, RunFinished, RunStarted, ToolCallFinished, ToolCallStarted

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence


class BrokenToolset:
    """A toolset whose server cannot be reached when the run starts."""

    @asynccontextmanager
    async def open_tools(self, ctx: RunContext[Any]) -> AsyncIterator[Sequence[Tool]]:
        raise ConnectionError("MCP server is down")
        yield []  # pragma: no cover


class Gatekeeper(Hooks):
    """Stops every prompt that mentions a secret."""

    async def on_user_prompt(self, ctx: RunContext[Any], prompt: str) -> StopRun | None:
        return StopRun("no secrets") if "secret" in prompt else None


async def test_cagent_3073_toolset_failure_ends_stream_and_frees_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Tools failing at run start: RunFinished("error"), the async for ends, and the next run works."""
    model = ScriptedModel(["second run answered"])
    agent = Agent(name="a", model=model, tools=[BrokenToolset()])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("first") as stream:
                events = [event async for event in stream]
        assert isinstance(events[0], RunStarted)
        error, finish = events[-2:]
        assert isinstance(error, ErrorEvent)
        assert error.kind == "toolset"
        assert "MCP server is down" in error.message
        assert isinstance(finish, RunFinished)
        assert finish.reason == "error"
        # The run slot was released and history is untouched by the failed run.
        assert session.history == ()
        with trio.fail_after(10):
            stopped_agent_session = session
            async with stopped_agent_session.run("again") as stream:
                again = [event async for event in stream]
        assert isinstance(again[-1], RunFinished)
        assert again[-1].reason == "error"


async def test_cagent_3073_hook_stop_ends_stream_and_next_run_works(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A user-prompt hook stopping the run: RunFinished("hook_stop"), the stream ends, the session goes on."""
    model = ScriptedModel(["hello"])
    agent = Agent(name="a", model=model, hooks=[Gatekeeper()])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("tell me the secret") as stream:
                events = [event async for event in stream]
            assert [type(e) for e in events] == [RunStarted, RunFinished]
            assert events[-1] == RunFinished("hook_stop", "no secrets")
            assert (await session.ask("hi")).output == "hello"


async def test_consumer_breaking_out_cancels_sleeping_tool_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Breaking out after the first event while a tool sleeps: the block exits at once, the tool is cancelled."""
    tool_cancelled = trio.Event()

    @tool
    async def nap() -> str:
        """Sleeps an hour."""
        try:
            await trio.sleep(3600)
        finally:
            tool_cancelled.set()
        return "rested"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("nap"), "done"]), tools=[nap])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            async for event in stream:
                if isinstance(event, ToolCallStarted):
                    await trio.testing.wait_all_tasks_blocked()
                    start = trio.current_time()
                    break
        assert trio.current_time() == start
        assert tool_cancelled.is_set()
        (result,) = [m for m in session.history if isinstance(m, ToolResultMessage)]
        assert result.is_error


async def test_session_closed_while_tool_sleeps_forever_closes_within_100ms(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Closing a session whose tool sleeps forever finishes within 100 ms of virtual time."""

    @tool
    async def forever() -> str:
        """Never returns."""
        await trio.sleep_forever()
        return "never"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("forever")]), tools=[forever])
    async with open_runtime() as runtime:
        handle = await runtime.start_session(agent)
        running = trio.Event()

        async def consume() -> None:
            async with handle.session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ToolCallStarted):
                        running.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await running.wait()
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await handle.aclose()
            assert trio.current_time() - start < 0.1


async def test_runtime_closed_with_1000_sessions_mid_run_leaves_no_task() -> None:
    """Closing a runtime whose 1,000 sessions are each mid-run ends every run, tool and session."""
    tools_cancelled = 0
    finishes: list[Event] = []

    @tool
    async def block() -> str:
        """Blocks until cancelled."""
        nonlocal tools_cancelled
        try:
            await trio.sleep_forever()
        finally:
            tools_cancelled += 1
        return "never"

    async with trio.open_nursery() as consumers:
        async with open_runtime() as runtime:
            handles = []
            for _ in range(1000):
                agent = Agent(name="a", model=ScriptedModel([ToolCall("block")]), tools=[block])
                handles.append(await runtime.start_session(agent))

            async def consume(session: Any) -> None:
                async with session.run("go") as stream:
                    async for event in stream:
                        if isinstance(event, RunFinished):
                            finishes.append(event)

            for handle in handles:
                consumers.start_soon(consume, handle.session)
            await trio.testing.wait_all_tasks_blocked()
            assert len(runtime.sessions) == 1000
        assert runtime.sessions == ()
        assert tools_cancelled == 1000
    assert finishes == [RunFinished("cancelled")] * 1000


async def test_all_four_tool_failures_keep_the_run_going() -> None:
    """Unknown tool, raising tool, bad arguments and a timeout in one turn: four error results, run goes on."""

    @tool
    async def fails() -> str:
        """Raises."""
        raise RuntimeError("tool bug")

    @tool
    async def typed(n: int) -> int:
        """Needs an int."""
        return n

    @tool
    async def hangs() -> str:
        """Never answers in time."""
        await trio.sleep_forever()
        return "never"

    calls = [ToolCall("missing"), ToolCall("fails"), ToolCall("typed", {"n": "many"}), ToolCall("hangs")]
    model = ScriptedModel([calls, "carried on"])
    agent = Agent(name="a", model=model, tools=[fails, typed, hangs], tool_timeout=0.05)
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run("go") as stream:
                events = [event async for event in stream]
    finished = {e.name: e.error for e in events if isinstance(e, ToolCallFinished)}
    assert set(finished) == {"missing", "fails", "typed", "hangs"}
    assert all(error for error in finished.values())
    assert events[-1] == RunFinished("completed")
    assert len(model.requests) == 2
