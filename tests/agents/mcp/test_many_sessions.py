"""Many sessions, each with its own stdio server connection, closed at once."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import trio

from agents import Agent, ScriptedModel, ToolCall
from runtime import SessionHandle, open_runtime

if TYPE_CHECKING:
    from collections.abc import Callable

    from agents.mcp import MCPServerStdio

SESSIONS = 100


async def test_many_sessions_with_a_server_each_close_at_once_leaving_nothing(
    everything: Callable[..., MCPServerStdio], children: Callable[[], list[Any]]
) -> None:
    """100 sessions each with its own reference server over stdio, all closed at once: every process is
    reaped, no file descriptor is left, and closing takes under 2 s."""
    server = everything(connect_timeout=120)  # 100 node processes starting at once on a small machine
    fds = len(os.listdir("/proc/self/fd"))
    handles: list[SessionHandle] = []
    with trio.fail_after(300):
        async with open_runtime() as runtime:

            async def open_one(number: int) -> None:
                model = ScriptedModel([ToolCall("echo", {"message": str(number)}), "ok"])
                handle = await runtime.start_session(Agent(name="a", model=model, tools=[server]))
                result = await handle.session.ask("go")
                assert result.tool_calls[0].result == f"Echo: {number}"
                handles.append(handle)

            async with trio.open_nursery() as nursery:
                for number in range(SESSIONS):
                    nursery.start_soon(open_one, number)
            assert len([child for child in children() if child.name == "node"]) == SESSIONS
            assert len(os.listdir("/proc/self/fd")) >= fds + 3 * SESSIONS  # stdin, stdout, stderr of each

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for handle in handles:
                    nursery.start_soon(handle.aclose)
            took = trio.current_time() - start
    print(f"closed {SESSIONS} sessions with a server each in {took:.2f} s")
    assert took < 2.0
    assert children() == []  # every process reaped: none alive, no zombie
    assert len(os.listdir("/proc/self/fd")) == fds
