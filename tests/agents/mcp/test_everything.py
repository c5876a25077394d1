"""Against the protocol's reference server, @modelcontextprotocol/server-everything, over stdio."""

from __future__ import annotations

import base64
import os
import signal
from typing import TYPE_CHECKING, Any

import pytest
import trio

from agents import Agent, ScriptedModel, ToolCall
from agents.mcp import MCPResult, MCPServerStdio
from runtime import RunFailedError, open_runtime
from runtime.events import ElicitationRequest, ErrorEvent, Event, RunFinished, ToolCallFinished, ToolProgress

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from agents import ElicitationAction

    Everything = Callable[..., MCPServerStdio]
    StreamRun = Callable[..., Awaitable[list[Event]]]
    Children = Callable[[], list[Any]]

LIMIT = 60  # seconds: real processes on a loaded machine


def _agent(server: MCPServerStdio, *turns: Any, **options: Any) -> Agent:
    return Agent(name="helper", model=ScriptedModel(list(turns)), tools=[server], **options)


def _finished(events: list[Event]) -> dict[str, ToolCallFinished]:
    return {event.call_id: event for event in events if isinstance(event, ToolCallFinished)}


def _nodes(children: Children) -> list[int]:
    return [child.pid for child in children() if child.name == "node" and child.state != "Z"]


def _zombies(children: Children) -> list[int]:
    return [child.pid for child in children() if child.state == "Z"]


async def test_everything_tools_are_listed_with_their_schemas_and_called(everything: Everything) -> None:
    """The model sees each tool with the input schema the server gave; concurrent calls share the connection."""
    model = ScriptedModel([[ToolCall("echo", {"message": "hi"}), ToolCall("get-sum", {"a": 2, "b": 3})], "done"])
    agent = Agent(name="helper", model=model, tools=[everything()])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            result = await session.ask("add")
    assert sorted((call.name, call.result, call.error) for call in result.tool_calls) == [
        ("echo", "Echo: hi", None),
        ("get-sum", "The sum of 2 and 3 is 5.", None),
    ]
    specs = {spec.name: spec for spec in model.requests[0].tools}
    assert {"echo", "get-sum", "trigger-long-running-operation", "get-tiny-image"} <= set(specs)
    assert "simulate-research-query" not in specs  # it runs only as a task, which this client does not do
    assert specs["echo"].description == "Echoes back the input string"
    assert specs["echo"].parameters == {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"message": {"type": "string", "description": "Message to echo"}},
        "required": ["message"],
    }


async def test_everything_connection_belongs_to_the_session(everything: Everything, children: Children) -> None:
    """One server process serves every run of a session; closing the session reaps it."""
    agent = _agent(
        everything(), ToolCall("echo", {"message": "one"}), "first", ToolCall("echo", {"message": "two"}), "second"
    )
    assert _nodes(children) == []
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            first = await session.ask("1")
            (pid,) = _nodes(children)
            second = await session.ask("2")
            assert _nodes(children) == [pid]
    assert first.tool_calls[0].result == "Echo: one"
    assert second.tool_calls[0].result == "Echo: two"
    assert _nodes(children) == []
    assert _zombies(children) == []


async def test_everything_run_lifetime_gives_each_run_its_own_server(
    everything: Everything, children: Children
) -> None:
    """With lifetime="run", each run starts its server and reaps it when it ends."""
    agent = _agent(
        everything(lifetime="run"),
        ToolCall("echo", {"message": "one"}),
        "first",
        ToolCall("echo", {"message": "two"}),
        "second",
    )
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            assert (await session.ask("1")).tool_calls[0].result == "Echo: one"
            assert _nodes(children) == []
            assert (await session.ask("2")).tool_calls[0].result == "Echo: two"
            assert _nodes(children) == []
    assert _zombies(children) == []


async def test_everything_long_running_tool_reports_progress(everything: Everything, stream_run: StreamRun) -> None:
    """The server's progress notifications for a call become ToolProgress events of that call, in order."""
    agent = _agent(everything(), ToolCall("trigger-long-running-operation", {"duration": 0.6, "steps": 3}), "done")
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            events = await stream_run(session, "go")
    progress = [(e.call_id, e.progress, e.total) for e in events if isinstance(e, ToolProgress)]
    assert progress == [("call_1_0", 1.0, 3.0), ("call_1_0", 2.0, 3.0), ("call_1_0", 3.0, 3.0)]
    finished = _finished(events)["call_1_0"]
    assert finished.result == "Long running operation completed. Duration: 0.6 seconds, Steps: 3."
    assert events.index(finished) > max(i for i, e in enumerate(events) if isinstance(e, ToolProgress))


@pytest.mark.parametrize(
    ("action", "content", "expected"),
    [
        ("accept", {"name": "Ada Lovelace", "check": True}, "- Name: Ada Lovelace"),
        ("decline", None, "User declined to provide the requested information"),
        ("cancel", None, "User cancelled the elicitation dialog"),
    ],
)
async def test_everything_elicitation_reaches_the_consumer_with_its_schema(
    everything: Everything, stream_run: StreamRun, action: ElicitationAction, content: Any, expected: str
) -> None:
    """The server's elicitation request is an ElicitationRequest on the run's stream, answered with respond()."""
    asked: list[ElicitationRequest] = []

    async def answer(request: ElicitationRequest) -> tuple[ElicitationAction, Any]:
        asked.append(request)
        return action, content

    agent = _agent(everything(), ToolCall("trigger-elicitation-request", {}), "done")
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            events = await stream_run(session, "go", answer)
    (request,) = asked
    assert request.message == "Please provide inputs for the following fields:"
    assert request.schema is not None
    assert request.schema["required"] == ["name"]
    assert request.schema["properties"]["name"]["type"] == "string"
    assert request.agent == "helper"
    result = _finished(events)["call_1_0"].result
    assert expected in result


async def test_everything_elicitation_with_no_one_to_answer_is_declined(everything: Everything) -> None:
    """Run with ask() (no consumer), the server's question is declined and the call goes on."""
    agent = _agent(everything(), ToolCall("trigger-elicitation-request", {}), "done")
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            result = await session.ask("go")
    assert "User declined to provide the requested information" in result.tool_calls[0].result
    assert result.output == "done"


async def test_everything_tool_error_is_an_error_result_the_model_sees(
    everything: Everything, stream_run: StreamRun
) -> None:
    """An isError result (the server refused the arguments) is the call's error; the run goes on."""
    model = ScriptedModel([ToolCall("get-sum", {"a": "two", "b": 3}), "sorry"])
    agent = Agent(name="helper", model=model, tools=[everything()])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            events = await stream_run(session, "go")
    error = _finished(events)["call_1_0"].error
    assert error is not None
    assert "Input validation error" in error
    assert "expected number" in error
    assert not any(isinstance(event, ErrorEvent) for event in events)
    assert events[-1] == RunFinished("completed")
    assert model.requests[1].messages[-1].content == error  # type: ignore[union-attr]


async def test_everything_cancelled_call_leaves_the_connection_usable(
    everything: Everything, children: Children
) -> None:
    """A call cut off by tool_timeout is an error result; the same server process answers the next call."""
    agent = _agent(
        everything(),
        ToolCall("trigger-long-running-operation", {"duration": 60, "steps": 60}),
        ToolCall("echo", {"message": "still here"}),
        "done",
        tool_timeout=1.5,
    )
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            result = await session.ask("go")
            first, second = result.tool_calls
            assert len(_nodes(children)) == 1
    assert first.error == "tool 'trigger-long-running-operation' took longer than tool_timeout=1.5s"
    assert second.result == "Echo: still here"
    assert result.reason == "completed"


async def test_everything_killed_mid_call_gives_an_error_result_and_the_next_call_starts_it_again(
    everything: Everything, stream_run: StreamRun, children: Children
) -> None:
    """A server killed during a call: that call's error names the kill, the run goes on (no ErrorEvent), and
    the next call runs on a fresh server process; the killed one is reaped."""
    agent = _agent(
        everything(),
        ToolCall("trigger-long-running-operation", {"duration": 60, "steps": 120}),
        ToolCall("echo", {"message": "again"}),
        "done",
    )
    killed: list[int] = []

    async def kill_on_progress(event: Event) -> None:
        if isinstance(event, ToolProgress) and not killed:
            (pid,) = _nodes(children)
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            events = await stream_run(session, "go", on_event=kill_on_progress)
            (fresh,) = _nodes(children)
    finished = _finished(events)
    error = finished["call_1_0"].error
    assert error is not None
    assert error.startswith("MCP server 'everything' crashed during trigger-long-running-operation: ")
    assert "its process was killed by SIGKILL" in error
    assert finished["call_2_0"].result == "Echo: again"
    assert fresh != killed[0]
    assert not any(isinstance(event, ErrorEvent) for event in events)
    assert events[-1] == RunFinished("completed")
    assert _nodes(children) == []
    assert _zombies(children) == []


async def test_everything_images_resources_and_structured_content(everything: Everything) -> None:
    """An image is a placeholder for the model with its data kept; a text resource is read with its URI;
    structured content rides along."""
    agent = _agent(
        everything(),
        [
            ToolCall("get-tiny-image", {}),
            ToolCall("get-resource-reference", {"resourceType": "Text", "resourceId": 2}),
            ToolCall("get-structured-content", {"location": "Chicago"}),
        ],
        "done",
    )
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            result = await session.ask("go")
    calls = {call.name: call.result for call in result.tool_calls}
    image = calls["get-tiny-image"]
    assert isinstance(image, MCPResult)
    assert image.startswith("Here's the image you requested:\n[image: image/png, ")
    (picture,) = [part for part in image.parts if isinstance(part, dict)]
    assert picture["media_type"] == "image/png"
    assert base64.b64decode(picture["data"]).startswith(b"\x89PNG")
    assert picture["data"] not in image
    resource = calls["get-resource-reference"]
    assert "[resource demo://resource/dynamic/text/2 (text/plain)]\nResource 2: " in resource
    structured = calls["get-structured-content"]
    assert isinstance(structured, MCPResult)
    assert set(structured.structured) == {"temperature", "conditions", "humidity"}


async def test_everything_prefix_and_filters_name_two_servers_apart(everything: Everything) -> None:
    """Two servers with the same tools: prefixes tell them apart, allow and deny choose among them."""
    model = ScriptedModel([[ToolCall("a_echo", {"message": "to a"}), ToolCall("b_get-sum", {"a": 1, "b": 1})], "ok"])
    first = everything(name="a", prefix="a", allow={"echo", "get-sum"})
    second = everything(name="b", prefix="b", deny={"echo"})
    agent = Agent(name="helper", model=model, tools=[first, second])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            result = await session.ask("go")
    names = {spec.name for spec in model.requests[0].tools}
    assert {"a_echo", "a_get-sum"} == {name for name in names if name.startswith("a_")}
    assert "b_echo" not in names
    assert {"b_get-sum", "b_get-tiny-image"} <= names
    assert sorted((call.name, call.result) for call in result.tool_calls) == [
        ("a_echo", "Echo: to a"),
        ("b_get-sum", "The sum of 1 and 1 is 2."),
    ]


async def test_everything_a_server_that_cannot_start_fails_the_run_with_a_toolset_error() -> None:
    """A command that does not exist ends the run with a "toolset" error naming the server."""
    server = MCPServerStdio("/nonexistent/mcp-server", name="ghost")
    agent = Agent(name="helper", model=ScriptedModel(["never"]), tools=[server])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            with pytest.raises(RunFailedError) as failed:
                await session.ask("go")
    assert failed.value.kind == "toolset"
    assert "could not connect to MCP server 'ghost'" in str(failed.value)
    assert "FileNotFoundError" in str(failed.value)
