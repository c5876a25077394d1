"""MCP servers as toolsets, against our small test server (tests/agents/mcp/mcp_test_server.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

from agents import Agent, ScriptedModel, ToolCall
from agents.mcp import MCPResult, MCPServerStdio, MCPServerStreamableHTTP
from runtime import open_runtime
from runtime.events import ToolCallFinished, ToolProgress

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from runtime.events import Event

    StreamRun = Callable[..., Awaitable[list[Event]]]

LIMIT = 60  # seconds: real processes on a loaded machine


def _server(command: list[str], **options: Any) -> MCPServerStdio:
    options.setdefault("name", "test")
    options.setdefault("connect_timeout", 30)
    return MCPServerStdio(command[0], command[1:], **options)


def test_server_options_are_checked() -> None:
    """A wrong lifetime, or a string where a sequence belongs, fails at once."""
    with pytest.raises(ValueError, match="lifetime must be 'session' or 'run'"):
        MCPServerStdio("server", lifetime="forever")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not one string"):
        MCPServerStdio("server", "--flag")
    with pytest.raises(TypeError, match="not one string"):
        MCPServerStdio("server", allow="echo")


def test_server_names_and_reprs() -> None:
    """A server is named after its command or its host unless named; its repr says what it runs."""
    stdio = MCPServerStdio("/usr/bin/mcp-files", ["--root", "/tmp"])
    assert stdio.name == "mcp-files"
    assert repr(stdio) == "<MCPServerStdio 'mcp-files': /usr/bin/mcp-files --root /tmp>"
    http = MCPServerStreamableHTTP("https://tools.example.com/mcp", headers={"Authorization": "Bearer x"})
    assert http.name == "tools.example.com"
    assert repr(http) == "<MCPServerStreamableHTTP 'tools.example.com': https://tools.example.com/mcp>"
    assert "Bearer" not in repr(http)


async def test_server_results_and_errors(test_server: list[str]) -> None:
    """Plain text is a str; structured content rides along; a tool's error is the call's error."""
    agent = Agent(
        name="a",
        model=ScriptedModel(
            [
                [
                    ToolCall("echo", {"text": "hi"}),
                    ToolCall("weather", {"city": "Oslo"}),
                    ToolCall("fail", {"message": "no such city"}),
                ],
                "done",
            ]
        ),
        tools=[_server(test_server)],
    )
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            result = await session.ask("go")
    calls = {call.name: call for call in result.tool_calls}
    assert calls["echo"].result == "hi"
    weather = calls["weather"].result
    assert isinstance(weather, MCPResult)
    assert weather.structured == {"city": "Oslo", "celsius": 21}
    assert calls["fail"].error == "Error executing tool fail: no such city"


async def test_server_tool_list_change_is_seen_by_the_next_run(test_server: list[str]) -> None:
    """Tools are listed once per connection, and again after the server says its list changed."""
    model = ScriptedModel([ToolCall("add_tool", {"name": "double"}), "added", ToolCall("double", {"x": 21}), "doubled"])
    server = _server(test_server)
    agent = Agent(name="a", model=model, tools=[server])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            first = await session.ask("add a tool")
            assert first.tool_calls[0].result == "added double"
            # The server's notice travels apart from add_tool's answer (on 2026-07-28, on its own stream):
            # the next run must see the change once the notice has come, whenever that is.
            connection = (await session.resource(server, server._open)).value
            assert await connection.wait_for_tool_change() >= 1
            second = await session.ask("use it")
    assert "double" not in {spec.name for spec in model.requests[0].tools}
    assert "double" in {spec.name for spec in model.requests[2].tools}
    assert second.tool_calls[0].result == "42"


async def test_server_cancelled_call_sends_notifications_cancelled(test_server: list[str]) -> None:
    """A call cut off by tool_timeout is cancelled on the server too; the connection serves the next call."""
    agent = Agent(
        name="a",
        model=ScriptedModel(
            [ToolCall("slow", {"label": "timed out", "seconds": 60}), ToolCall("cancellations", {}), "done"]
        ),
        tools=[_server(test_server)],
        tool_timeout=2,  # long enough for the server to be running the call (it reports progress every 0.1 s)
    )
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            result = await session.ask("go")
    slow, cancellations = result.tool_calls
    assert slow.error == "tool 'slow' took longer than tool_timeout=2s"
    assert cancellations.result.structured == {"result": ["timed out"]}


async def test_server_run_left_mid_call_cancels_it_on_the_server(test_server: list[str], stream_run: StreamRun) -> None:
    """A consumer leaving its run during a call cancels the call on the server; the next run's calls go on."""
    model = ScriptedModel([ToolCall("slow", {"label": "left", "seconds": 60}), ToolCall("cancellations", {}), "done"])
    agent = Agent(name="a", model=model, tools=[_server(test_server)])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ToolProgress):
                        break  # the server is running the call: leave the block, which cancels the run
            assert stream.result.reason == "cancelled"
            events = await stream_run(session, "again")
    (finished,) = [event for event in events if isinstance(event, ToolCallFinished)]
    assert finished.result.structured == {"result": ["left"]}
