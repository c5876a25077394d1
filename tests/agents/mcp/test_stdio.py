"""A stdio server's process: owned by the connection's scope, named when it crashes, stopped and reaped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

from agents import Agent, ScriptedModel, ToolCall
from agents.mcp import MCPServerStdio
from runtime import RunFailedError, open_runtime
from runtime.events import ErrorEvent, RunFinished, ToolCallFinished

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from runtime.events import Event

    StreamRun = Callable[..., Awaitable[list[Event]]]
    Children = Callable[[], list[Any]]

LIMIT = 60  # seconds: real processes on a loaded machine


def _server(command: list[str], *flags: str, **options: Any) -> MCPServerStdio:
    options.setdefault("name", "test")
    options.setdefault("connect_timeout", 30)
    return MCPServerStdio(command[0], [*command[1:], *flags], **options)


def _alive(children: Children) -> list[int]:
    return [child.pid for child in children() if child.state != "Z"]


def _zombies(children: Children) -> list[int]:
    return [child.pid for child in children() if child.state == "Z"]


async def test_stdio_crash_is_named_in_the_calls_error_and_the_next_call_restarts_it(
    test_server: list[str], stream_run: StreamRun, children: Children
) -> None:
    """A server that exits mid-call: the error says how (status, last words on stderr), the run goes on,
    and the next call starts a fresh server."""
    model = ScriptedModel([ToolCall("pid", {}), ToolCall("crash", {"status": 3}), ToolCall("pid", {}), "done"])
    agent = Agent(name="a", model=model, tools=[_server(test_server)])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            events = await stream_run(session, "go")
    first, crash, second = [event for event in events if isinstance(event, ToolCallFinished)]
    assert crash.error == (
        "MCP server 'test' crashed during crash: its process exited with status 3 "
        "(stderr: fatal: crashing on purpose with status 3)"
    )
    assert first.result != second.result  # two processes
    assert not any(isinstance(event, ErrorEvent) for event in events)
    assert events[-1] == RunFinished("completed")
    assert _alive(children) == []
    assert _zombies(children) == []


async def test_stdio_server_that_never_answers_initialize_fails_within_connect_timeout(
    test_server: list[str], children: Children
) -> None:
    """A server stuck before initialize fails the run's toolset after connect_timeout; its process is stopped
    (it ignores the end of its input, not SIGTERM) and reaped."""
    server = _server(test_server, "--hang-at-initialize", connect_timeout=1.0, shutdown_grace=0.5)
    agent = Agent(name="a", model=ScriptedModel(["never"]), tools=[server])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            start = trio.current_time()
            with pytest.raises(RunFailedError) as failed:
                await session.ask("go")
            took = trio.current_time() - start
    assert failed.value.kind == "toolset"
    assert "MCP server 'test' did not answer initialize within connect_timeout=1.0s" in str(failed.value)
    assert 1.0 <= took < 1.0 + 0.5 + 10  # the timeout, then at most the grace period and SIGTERM
    assert _alive(children) == []
    assert _zombies(children) == []


async def test_stdio_server_that_ignores_shutdown_and_sigterm_is_killed_and_reaped(
    test_server: list[str], children: Children
) -> None:
    """Closing waits shutdown_grace after closing stdin, then terminate_grace after SIGTERM, then kills."""
    server = _server(test_server, "--stubborn", shutdown_grace=0.5, terminate_grace=0.5)
    agent = Agent(name="a", model=ScriptedModel([ToolCall("echo", {"text": "hi"}), "ok"]), tools=[server])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime:
            async with runtime.open_session(agent) as session:
                assert (await session.ask("go")).tool_calls[0].result == "hi"
                assert len(_alive(children)) == 1
                start = trio.current_time()
            took = trio.current_time() - start
    assert 1.0 <= took < 1.0 + 10  # both grace periods, then SIGKILL
    assert _alive(children) == []
    assert _zombies(children) == []
