"""A stdio server's process: owned by the connection's scope, named when it crashes, stopped and reaped."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
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
EXIT_LIMIT = 10  # seconds for a killed process to be gone


def _server(command: list[str], *flags: str, **options: Any) -> MCPServerStdio:
    options.setdefault("name", "test")
    options.setdefault("connect_timeout", 30)
    return MCPServerStdio(command[0], [*command[1:], *flags], **options)


def _alive(children: Children) -> list[int]:
    return [child.pid for child in children() if child.state != "Z"]


def _zombies(children: Children) -> list[int]:
    return [child.pid for child in children() if child.state == "Z"]


def _running(pid: int) -> bool:
    """Whether a process that is not our child (a server's) still runs: exited ones are gone, or zombies."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def _exited(pid: int) -> None:
    """Wait until a process that is not our child (a server's) has exited (a signal takes a moment to)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


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


async def test_stdio_server_that_never_answers_tools_list_fails_within_connect_timeout(
    legacy_server: list[str], children: Children
) -> None:
    """A server that answers initialize but never tools/list fails the run's toolset after connect_timeout,
    as one that never answers initialize does (the run used to wait for the list forever)."""
    server = _server(legacy_server, "--mute-list", connect_timeout=1.0, shutdown_grace=0.5)
    agent = Agent(name="a", model=ScriptedModel(["never"]), tools=[server])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            start = trio.current_time()
            with pytest.raises(RunFailedError) as failed:
                await session.ask("go")
            took = trio.current_time() - start
    assert failed.value.kind == "toolset"
    assert "MCP server 'test' did not list its tools within connect_timeout=1.0s" in str(failed.value)
    assert 1.0 <= took < 1.0 + 10
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


async def test_stdio_crash_with_a_child_holding_stdout_fails_the_call_and_kills_the_child(
    test_server: list[str], stream_run: StreamRun, children: Children
) -> None:
    """A server that crashes after starting a process that shares its stdout (so stdout never ends): the call
    in flight still fails, naming the exit status, and that process is killed with its group."""
    model = ScriptedModel([ToolCall("start_child", {}), ToolCall("crash", {"status": 3}), "done"])
    agent = Agent(name="a", model=model, tools=[_server(test_server)])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            events = await stream_run(session, "go")
    started, crash = [event for event in events if isinstance(event, ToolCallFinished)]
    assert crash.error is not None
    assert crash.error.startswith("MCP server 'test' crashed during crash: its process exited with status 3")
    assert events[-1] == RunFinished("completed")
    with trio.fail_after(EXIT_LIMIT):
        await _exited(int(started.result))
    assert _alive(children) == []
    assert _zombies(children) == []


async def test_stdio_crash_with_a_process_outside_its_group_holding_stdout_still_fails_the_call(
    test_server: list[str], stream_run: StreamRun, children: Children
) -> None:
    """A server that crashes while a process out of reach (a session of its own) holds its stdout open: the call
    in flight fails all the same, once the exit has had EXIT_WAIT to be read to its end."""
    model = ScriptedModel([ToolCall("start_child", {"own_group": True}), ToolCall("crash", {"status": 3}), "done"])
    agent = Agent(name="a", model=model, tools=[_server(test_server)])
    events: list[Event] = []
    try:
        with trio.fail_after(LIMIT):
            async with open_runtime() as runtime, runtime.open_session(agent) as session:
                events = await stream_run(session, "go")
    finally:
        for event in events:
            if isinstance(event, ToolCallFinished) and event.name == "start_child" and event.result:
                os.kill(int(event.result), signal.SIGKILL)  # not the server's to stop: it left the group
    crash = [event for event in events if isinstance(event, ToolCallFinished)][-1]
    assert crash.error is not None
    assert crash.error.startswith("MCP server 'test' crashed during crash: its process exited with status 3")
    assert events[-1] == RunFinished("completed")
    assert _alive(children) == []


async def test_stdio_close_stops_what_the_server_left_in_its_process_group(
    test_server: list[str], children: Children
) -> None:
    """A server that exits when its stdin closes but leaves a child behind: closing stops that child too."""
    server = _server(test_server, shutdown_grace=5, terminate_grace=0.5)
    agent = Agent(name="a", model=ScriptedModel([ToolCall("start_child", {}), "ok"]), tools=[server])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime:
            async with runtime.open_session(agent) as session:
                child = int((await session.ask("go")).tool_calls[0].result)
                assert _running(child)
        with trio.fail_after(EXIT_LIMIT):
            await _exited(child)
    assert _alive(children) == []
    assert _zombies(children) == []


async def test_stdio_server_that_exits_with_its_stdin_closed_is_named_by_its_exit_status(
    legacy_server: list[str], children: Children
) -> None:
    """A server that closes its stdin and exits (as a failed npx does): the toolset error names its exit status
    and last words, not only that our next message found its stdin closed."""
    server = _server(legacy_server, "--exit-at-initialize")
    agent = Agent(name="a", model=ScriptedModel(["never"]), tools=[server])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            with pytest.raises(RunFailedError) as failed:
                await session.ask("go")
    assert failed.value.kind == "toolset"
    assert "its process exited with status 1 (stderr: fatal: exiting at initialize)" in str(failed.value)
    assert "stdin" not in str(failed.value)
    assert _alive(children) == []
    assert _zombies(children) == []


ODD_ANSWERS_SERVER = Path(__file__).with_name("odd_answers_server.py")


async def test_stdio_answers_the_sdk_cannot_parse_end_their_calls(stream_run: StreamRun) -> None:
    """An answer holding a lone surrogate escape (JSON all the same: JavaScript writes one for a string cut
    mid-emoji) is read; an answer that is JSON but not JSON-RPC fails its own call with a clear error. Before,
    both were logged and dropped, and their calls (no tool_timeout) waited for ever: the run never ended."""
    server = _server([sys.executable, str(ODD_ANSWERS_SERVER)])
    turn = [ToolCall("snippet", {}), ToolCall("garbled", {}), ToolCall("echo", {})]
    agent = Agent(name="a", model=ScriptedModel([turn, "done"]), tools=[server])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            events = await stream_run(session, "go")
    finished = {event.name: event for event in events if isinstance(event, ToolCallFinished)}
    assert (finished["snippet"].result, finished["snippet"].error) == ("ok \ud83d", None)
    assert finished["garbled"].error is not None
    assert "answer is not a valid JSON-RPC message" in finished["garbled"].error
    assert (finished["echo"].result, finished["echo"].error) == ("echo", None)
    assert isinstance(events[-1], RunFinished)
    assert events[-1].reason == "completed"
