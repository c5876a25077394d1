"""Against the protocol's reference server, @modelcontextprotocol/server-everything, over streamable HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

from agents import Agent, Hooks, ScriptedModel, ToolCall, ToolContext
from agents.mcp import MCPServerStreamableHTTP
from runtime import open_runtime
from runtime.events import ElicitationRequest, ErrorEvent, RunFinished, ToolCallFinished, ToolProgress

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from agents import ElicitationAction
    from runtime.events import Event

    StreamRun = Callable[..., Awaitable[list[Event]]]

pytestmark = pytest.mark.filterwarnings(
    # The SDK's HTTP client (httpx2) leaves its response iterators (async generators)
    # to the garbage collector, and Trio warns about each. Exactly those, nothing else.
    "ignore:Async generator 'httpx2\\.:ResourceWarning",
    "ignore:Async generator 'httpcore2\\.:ResourceWarning",
)

LIMIT = 60  # seconds: a real server process on a loaded machine


def _finished(events: list[Event]) -> dict[str, ToolCallFinished]:
    return {event.call_id: event for event in events if isinstance(event, ToolCallFinished)}


async def test_everything_http_calls_progress_and_elicitation(everything_http: Any, stream_run: StreamRun) -> None:
    """Tools are called, progress streams, a question is answered; closing ends the server's session (DELETE)."""
    server = MCPServerStreamableHTTP(everything_http.url, name="everything")
    agent = Agent(
        name="helper",
        model=ScriptedModel(
            [
                [ToolCall("echo", {"message": "over http"}), ToolCall("get-sum", {"a": 40, "b": 2})],
                ToolCall("trigger-long-running-operation", {"duration": 0.6, "steps": 3}),
                ToolCall("trigger-elicitation-request", {}),
                "done",
            ]
        ),
        tools=[server],
    )

    async def answer(request: ElicitationRequest) -> tuple[ElicitationAction, Any]:
        return "accept", {"name": "Grace Hopper"}

    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime:
            async with runtime.open_session(agent) as session:
                events = await stream_run(session, "go", answer)
            await everything_http.printed("Received session termination request for session")
    finished = _finished(events)
    assert finished["call_1_0"].result == "Echo: over http"
    assert finished["call_1_1"].result == "The sum of 40 and 2 is 42."
    assert [e.progress for e in events if isinstance(e, ToolProgress)] == [1.0, 2.0, 3.0]
    assert "- Name: Grace Hopper" in finished["call_3_0"].result
    assert events[-1] == RunFinished("completed")


async def test_everything_http_server_gone_mid_call_gives_an_error_result_and_the_next_call_reconnects(
    everything_http: Any, stream_run: StreamRun
) -> None:
    """A server killed during a call: the call's error says so, the run goes on (no ErrorEvent), and once a
    server listens again the next call connects afresh."""

    class RestartFirst(Hooks):
        async def before_tool(self, ctx: ToolContext[Any], arguments: dict[str, Any]) -> None:
            if ctx.tool_name == "echo":
                await everything_http.start()  # a server listens again before the next call

    server = MCPServerStreamableHTTP(everything_http.url, name="everything")
    agent = Agent(
        name="helper",
        model=ScriptedModel(
            [
                ToolCall("trigger-long-running-operation", {"duration": 60, "steps": 120}),
                ToolCall("echo", {"message": "back"}),
                "done",
            ]
        ),
        tools=[server],
        hooks=[RestartFirst()],
    )
    killed = False

    async def kill_on_progress(event: Event) -> None:
        nonlocal killed
        if isinstance(event, ToolProgress) and not killed:
            killed = True
            await everything_http.kill()

    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            events = await stream_run(session, "go", on_event=kill_on_progress)
    finished = _finished(events)
    error = finished["call_1_0"].error
    assert error is not None
    assert error.startswith("MCP server 'everything' went away during trigger-long-running-operation: ")
    assert finished["call_2_0"].result == "Echo: back"
    assert not any(isinstance(event, ErrorEvent) for event in events)
    assert events[-1] == RunFinished("completed")
