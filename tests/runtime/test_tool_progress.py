"""Tools that report progress (best-effort ToolProgress) and emit user-defined events (in order, never dropped).

A full stream is built deterministically: a small ``event_buffer`` and a
consumer that stops reading at a known event; ``wait_all_tasks_blocked``
tells when the run can go no further.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing

from agents import TRANSFER_TOOL, Agent, Hooks, RunContext, ScriptedModel, StopRun, ToolCall, ToolContext, tool
from runtime import ClosedRunStreamError, open_runtime
from runtime.events import (
    CustomEvent,
    Event,
    RunFinished,
    RunStarted,
    SubAgentEvent,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
)

if TYPE_CHECKING:
    from agents import Tool
    from runtime import RunResult


@attrs.frozen
class Step(CustomEvent):
    """A user-defined event, as a tool or hook would send it."""

    n: int


def of_interest(events: list[Event]) -> list[Event]:
    """The events that show order around tools: calls, progress, and custom events."""
    kinds = (ToolCallStarted, ToolCallFinished, ToolProgress, CustomEvent)
    return [event for event in events if isinstance(event, kinds)]


async def collect(agent: Agent[Any, Any], *, event_buffer: int = 64) -> tuple[list[Event], RunResult[Any]]:
    async with open_runtime(event_buffer=event_buffer) as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            events = [event async for event in stream]
        return events, stream.result


# -- progress -------------------------------------------------------------------


@tool
async def rows(ctx: ToolContext[None], count: int) -> str:
    """Process rows, reporting each."""
    for i in range(count):
        await ctx.report_progress(i + 1, total=count, message=f"row {i + 1}")
    return "processed"


async def test_progress_reports_become_tool_progress_events_of_their_call() -> None:
    """Each report_progress is a ToolProgress with the call's id, between its ToolCallStarted and ToolCallFinished."""
    agent = Agent(name="a", model=ScriptedModel([ToolCall("rows", {"count": 3}), "done"]), tools=[rows])
    events, result = await collect(agent)
    started, *progress, done = of_interest(events)
    assert isinstance(started, ToolCallStarted)
    assert isinstance(done, ToolCallFinished)
    assert progress == [ToolProgress(started.call_id, i, 3, f"row {i}") for i in (1, 2, 3)]
    assert done.result == "processed"
    assert result.progress_dropped == 0


def gated_reporter(go: trio.Event, reported: trio.Event, count: int, name: str = "report") -> Tool:
    """A tool that waits for ``go``, reports progress ``count`` times, then sets ``reported`` and returns."""

    async def report(ctx: ToolContext[None]) -> str:
        await go.wait()
        for i in range(count):
            await ctx.report_progress(i + 1, total=count)
        reported.set()
        return "reported"

    return tool(name=name)(report)


async def test_progress_on_a_full_stream_is_dropped_and_counted_never_blocking_the_tool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With the stream full and its consumer not reading, reports are dropped and counted; the tool goes on."""
    buffer, count = 4, 100
    go, reported = trio.Event(), trio.Event()
    agent = Agent(
        name="a", model=ScriptedModel([ToolCall("report"), "done"]), tools=[gated_reporter(go, reported, count)]
    )
    with trio.fail_after(10):  # a blocked tool would deadlock: autojump makes that a prompt failure
        async with open_runtime(event_buffer=buffer) as runtime, runtime.open_session(agent) as session:
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ToolCallStarted):
                        break
                # The consumer stops reading; the stream's buffer is empty and the tool waits for go.
                await trio.testing.wait_all_tasks_blocked()
                go.set()
                await reported.wait()  # every report made while nobody reads
                assert stream.result.progress_dropped == count - buffer
                rest = [event async for event in stream]
            result = stream.result
    progress = [event for event in rest if isinstance(event, ToolProgress)]
    assert [event.progress for event in progress] == [1, 2, 3, 4]  # what fit, in order
    assert result.progress_dropped == count - buffer
    assert isinstance(rest[-1], RunFinished)
    assert rest[-1].reason == "completed"


async def test_progress_dropped_in_a_sub_agent_counts_in_the_top_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sub-agent's dropped reports are counted in the RunResult its parent's consumer gets."""
    buffer, count = 2, 10
    go, reported = trio.Event(), trio.Event()
    helper = Agent(
        name="helper", model=ScriptedModel([ToolCall("report"), "helped"]), tools=[gated_reporter(go, reported, count)]
    )
    model = ScriptedModel([ToolCall(TRANSFER_TOOL, {"agent": "helper", "task": "report"}), "done"])
    agent = Agent(name="boss", model=model, sub_agents=[helper])
    with trio.fail_after(10):
        async with open_runtime(event_buffer=buffer) as runtime, runtime.open_session(agent) as session:
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, SubAgentEvent) and isinstance(event.event, ToolCallStarted):
                        break
                await trio.testing.wait_all_tasks_blocked()
                go.set()
                await reported.wait()
                rest = [event async for event in stream]
            result = stream.result
    wrapped = [e.event for e in rest if isinstance(e, SubAgentEvent) and isinstance(e.event, ToolProgress)]
    assert [event.progress for event in wrapped] == [1, 2]
    assert result.progress_dropped == count - buffer
    assert result.reason == "completed"


async def test_nothing_of_a_call_is_sent_after_its_tool_call_finished() -> None:
    """A sync tool past tool_timeout whose thread goes on reporting: its progress after its ToolCallFinished
    is dropped and counted, and its ctx.emit is a ClosedRunStreamError, while the run goes on."""
    release = threading.Event()
    late: list[BaseException | None] = []
    reported = trio.Event()

    @tool
    def slow(ctx: ToolContext[None]) -> str:
        """Blocks, then reports once its call has timed out."""
        release.wait()
        trio.from_thread.run(ctx.report_progress, 2)
        try:
            trio.from_thread.run(ctx.emit, Step(2))
        except ClosedRunStreamError as exc:
            late.append(exc)
        else:
            late.append(None)
        trio.from_thread.run_sync(reported.set)
        return "late"

    @tool
    async def after() -> str:
        """Lets the timed-out thread report, and waits until it has."""
        release.set()
        await reported.wait()
        return "after"

    model = ScriptedModel([ToolCall("slow"), ToolCall("after"), "done"])
    agent = Agent(name="a", model=model, tools=[slow, after], tool_timeout=0.05)
    with trio.fail_after(10):
        events, result = await collect(agent)
    assert [type(event).__name__ for event in of_interest(events)] == [
        "ToolCallStarted",
        "ToolCallFinished",
        "ToolCallStarted",
        "ToolCallFinished",
    ]
    (timed_out, _) = [event for event in events if isinstance(event, ToolCallFinished)]
    assert timed_out.error == "tool 'slow' took longer than tool_timeout=0.05s"
    assert result.progress_dropped == 1
    assert len(late) == 1
    assert isinstance(late[0], ClosedRunStreamError)
    assert "after its tool call had ended" in str(late[0])
    assert result.reason == "completed"


async def test_progress_reported_after_the_run_ended_leaves_its_result_as_it_was() -> None:
    """A timed-out sync tool's thread that reports after the run's RunFinished changes nothing of its result,
    final once RunFinished was seen: progress_dropped went on counting those."""
    release, reported = threading.Event(), threading.Event()

    @tool
    def slow(ctx: ToolContext[None]) -> str:
        """Blocks; reports once released (after the run has ended)."""
        release.wait()
        for step in range(5):
            trio.from_thread.run(ctx.report_progress, step)
        reported.set()
        return "late"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("slow"), "done"]), tools=[slow], tool_timeout=0.05)
    with trio.fail_after(10):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            async with session.run("go") as stream:
                async for _ in stream:
                    pass
                at_the_end = stream.result.progress_dropped
                release.set()
                await trio.to_thread.run_sync(reported.wait)
                assert stream.result.progress_dropped == at_the_end == 0


@pytest.mark.parametrize(
    ("progress", "total"),
    [(math.nan, None), (math.inf, None), (1.0, math.nan), (1.0, -math.inf)],
)
async def test_progress_must_be_a_finite_number(progress: float, total: float | None) -> None:
    """report_progress raises ValueError for nan or infinite progress or total, and sends nothing."""
    caught: list[Exception] = []

    @tool
    async def bad(ctx: ToolContext[None]) -> str:
        """Report nonsense."""
        try:
            await ctx.report_progress(progress, total=total)
        except ValueError as exc:
            caught.append(exc)
        return "ok"

    events, _ = await collect(Agent(name="a", model=ScriptedModel([ToolCall("bad"), "done"]), tools=[bad]))
    assert len(caught) == 1
    assert "finite" in str(caught[0])
    assert not [event for event in events if isinstance(event, ToolProgress)]


# -- emit -----------------------------------------------------------------------


@tool
async def stepper(ctx: ToolContext[None], steps: int) -> str:
    """Emit steps, with progress between them."""
    for i in range(steps):
        await ctx.emit(Step(i))
        await ctx.report_progress(i)
    return "stepped"


async def test_emit_sends_custom_events_in_order_with_the_runs_other_events() -> None:
    """Custom events come between their tool's ToolCallStarted and ToolCallFinished, in order with its progress."""
    agent = Agent(name="a", model=ScriptedModel([ToolCall("stepper", {"steps": 3}), "done"]), tools=[stepper])
    events, _ = await collect(agent)
    started, *middle, done = of_interest(events)
    assert isinstance(started, ToolCallStarted)
    assert isinstance(done, ToolCallFinished)
    call = started.call_id
    assert middle == [
        Step(0),
        ToolProgress(call, 0),
        Step(1),
        ToolProgress(call, 1),
        Step(2),
        ToolProgress(call, 2),
    ]


async def test_emit_on_a_full_stream_waits_for_room_and_drops_nothing(autojump_clock: trio.testing.MockClock) -> None:
    """Unlike progress, a custom event waits for room: while nobody reads the tool stays put; then every one arrives."""
    count = 20
    emitted: list[int] = []

    @tool
    async def chatty(ctx: ToolContext[None]) -> str:
        """Emit many steps."""
        for i in range(count):
            await ctx.emit(Step(i))
            emitted.append(i)
        return "said it all"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("chatty"), "done"]), tools=[chatty])
    with trio.fail_after(10):
        async with open_runtime(event_buffer=2) as runtime, runtime.open_session(agent) as session:
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ToolCallStarted):
                        break
                await trio.testing.wait_all_tasks_blocked()
                assert len(emitted) == 2  # as many as the buffer holds: the tool waits for room for the next
                rest = [event async for event in stream]
    assert [event for event in rest if isinstance(event, Step)] == [Step(i) for i in range(count)]
    assert emitted == list(range(count))


class EmittingHooks(Hooks):
    """Hooks that each emit a custom event."""

    async def on_user_prompt(self, ctx: RunContext[Any], prompt: str) -> StopRun | None:
        await ctx.emit(Step(-1))
        return None

    async def before_tool(self, ctx: ToolContext[Any], arguments: dict[str, Any]) -> None:
        await ctx.emit(Step(100))

    async def after_tool(self, ctx: ToolContext[Any], result: Any, error: str | None) -> None:
        await ctx.emit(Step(200))

    async def on_run_end(self, ctx: RunContext[Any], reason: str) -> None:
        await ctx.emit(Step(999))


async def test_emit_from_hooks_lands_where_each_hook_runs() -> None:
    """A hook's events come where it runs: prompt hook first, tool hooks around the tool, run-end hook last."""
    agent = Agent(
        name="a",
        model=ScriptedModel([ToolCall("stepper", {"steps": 1}), "done"]),
        tools=[stepper],
        hooks=[EmittingHooks()],
    )
    events, _ = await collect(agent)
    assert isinstance(events[0], RunStarted)
    assert events[1] == Step(-1)
    shown = [type(event).__name__ if not isinstance(event, Step) else event.n for event in of_interest(events)]
    assert shown == [-1, "ToolCallStarted", 100, 0, "ToolProgress", 200, "ToolCallFinished", 999]
    assert events[-2] == Step(999)
    assert isinstance(events[-1], RunFinished)


async def test_emit_reaches_stream_handlers_in_the_same_order() -> None:
    """A session's stream handler sees the custom events too, in the order the consumer sees them."""
    seen: list[Event] = []

    async def record(event: Event) -> None:
        seen.append(event)

    agent = Agent(name="a", model=ScriptedModel([ToolCall("stepper", {"steps": 3}), "done"]), tools=[stepper])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        handler = session.add_handler(record)
        async with session.run("go") as stream:
            streamed = [event async for event in stream]
        await handler.drain()
    assert seen == streamed
    assert [event for event in seen if isinstance(event, Step)] == [Step(0), Step(1), Step(2)]


async def test_emit_from_a_sub_agents_tool_reaches_the_parent_wrapped() -> None:
    """A sub-agent's custom event reaches the parent's stream as a SubAgentEvent, like its other events."""
    helper = Agent(name="helper", model=ScriptedModel([ToolCall("stepper", {"steps": 1}), "ok"]), tools=[stepper])
    model = ScriptedModel([ToolCall(TRANSFER_TOOL, {"agent": "helper", "task": "step"}), "done"])
    events, _ = await collect(Agent(name="boss", model=model, sub_agents=[helper]))
    assert SubAgentEvent("helper", Step(0)) in events
    assert Step(0) not in events


class NotAnEvent:
    pass


class PlainSubclass(CustomEvent):
    """Not an attrs class of its own: its fields would not be seen, on the wire or in handlers."""

    def __init__(self, n: int) -> None:
        object.__setattr__(self, "n", n)


@attrs.frozen
class Named(CustomEvent):
    name: str  # reserved: on the wire "name" is the class name


@pytest.mark.parametrize(
    "event",
    [TextDelta("forged"), RunFinished("completed"), {"n": 1}, NotAnEvent(), "Step", PlainSubclass(1), Named("x")],
)
async def test_emit_of_anything_but_a_custom_event_raises_type_error(event: object) -> None:
    """ctx.emit takes CustomEvent subclasses only: not built-in events (a tool cannot forge RunFinished), not data."""
    caught: list[Exception] = []

    @tool
    async def forge(ctx: ToolContext[None]) -> str:
        """Try to emit something that is not a custom event."""
        try:
            await ctx.emit(event)
        except TypeError as exc:
            caught.append(exc)
        return "tried"

    events, result = await collect(Agent(name="a", model=ScriptedModel([ToolCall("forge"), "done"]), tools=[forge]))
    assert len(caught) == 1
    assert "CustomEvent" in str(caught[0])
    assert not any(e is event for e in events)
    assert sum(isinstance(e, RunFinished) for e in events) == 1
    assert result.reason == "completed"


async def test_emit_after_the_run_ended_is_a_closed_run_stream_error() -> None:
    """A session task holding a tool's context emits after the run: a clear runtime error, not trio's."""
    outcome: list[BaseException] = []
    run_over, ran_late = trio.Event(), trio.Event()

    @tool
    async def later(ctx: ToolContext[None]) -> str:
        """Leave a task behind that emits once the run is over."""

        async def emit_late() -> None:
            await run_over.wait()
            try:
                await ctx.emit(Step(1))
            except ClosedRunStreamError as exc:
                outcome.append(exc)
            ran_late.set()

        ctx.session.start_soon(emit_late)
        return "scheduled"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("later"), "done"]), tools=[later])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(5):
            await session.ask("go")
            run_over.set()
            await ran_late.wait()
    assert len(outcome) == 1
    assert "after its run had ended" in str(outcome[0])
