"""Tool-call argument deltas: ToolCallDelta events while the model writes a call, then ToolCallStarted."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from agents import Agent, ScriptedModel, StopChunk, ToolCall, ToolCallChunk, ToolCallDeltaChunk, tool
from runtime import open_runtime
from runtime.events import Event, ToolCallDelta, ToolCallFinished, ToolCallStarted

if TYPE_CHECKING:
    from agents import ModelChunk


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def turn(*chunks: ModelChunk) -> list[ModelChunk]:
    """A scripted response streaming exactly these chunks."""
    return list(chunks)


async def collect(agent: Agent) -> list[Event]:
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("go") as stream:
            return [event async for event in stream]


async def test_tool_call_deltas_stream_the_arguments_before_the_call_starts() -> None:
    """Each call's argument pieces arrive as ToolCallDelta events that join to its JSON, all before ToolCallStarted."""
    arguments = {"a": 12, "b": 30}
    model = ScriptedModel([ToolCall("add", arguments), "42"], stream_arguments=True)
    events = await collect(Agent(name="a", model=model, tools=[add]))
    deltas = [event for event in events if isinstance(event, ToolCallDelta)]
    (started,) = [event for event in events if isinstance(event, ToolCallStarted)]
    assert len(deltas) > 1
    assert {(delta.call_id, delta.name) for delta in deltas} == {(started.call_id, "add")}
    assert json.loads("".join(delta.arguments_delta for delta in deltas)) == arguments
    assert events.index(deltas[-1]) < events.index(started)
    assert started.arguments == arguments


async def test_tool_call_deltas_of_parallel_calls_keep_their_ids() -> None:
    """With several calls in one response, each delta names its own call; each call's pieces join to its arguments."""
    first, second = {"a": 1, "b": 2}, {"a": 300, "b": 400}
    model = ScriptedModel([[ToolCall("add", first), ToolCall("add", second)], "done"], stream_arguments=True)
    events = await collect(Agent(name="a", model=model, tools=[add]))
    started = [event for event in events if isinstance(event, ToolCallStarted)]
    joined = {
        call.call_id: "".join(
            e.arguments_delta for e in events if isinstance(e, ToolCallDelta) and e.call_id == call.call_id
        )
        for call in started
    }
    assert [json.loads(joined[call.call_id]) for call in started] == [first, second]
    assert {e.result for e in events if isinstance(e, ToolCallFinished)} == {3, 700}


async def test_tool_call_deltas_are_only_for_watching() -> None:
    """The call that runs is the complete ToolCallChunk, whatever the deltas said (as the protocol has it)."""
    model = ScriptedModel(
        [
            turn(
                ToolCallDeltaChunk("c1", "ad", '{"a": 1'),
                ToolCallDeltaChunk("c1", "add", ', "b": 2}'),
                ToolCallChunk("c1", "add", {"a": 1, "b": 2}),
                StopChunk("tool_use"),
            ),
            "done",
        ]
    )
    events = await collect(Agent(name="a", model=model, tools=[add]))
    deltas = [(e.name, e.arguments_delta) for e in events if isinstance(e, ToolCallDelta)]
    assert deltas == [("ad", '{"a": 1'), ("add", ', "b": 2}')]
    assert [e.result for e in events if isinstance(e, ToolCallFinished)] == [3]


async def test_tool_call_deltas_are_off_unless_the_model_streams_them() -> None:
    """A model that sends whole calls only produces no ToolCallDelta events."""
    events = await collect(Agent(name="a", model=ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"]), tools=[add]))
    assert not [event for event in events if isinstance(event, ToolCallDelta)]
