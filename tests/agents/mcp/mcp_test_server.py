"""A small MCP server written with the SDK's ``MCPServer`` (FastMCP in mcp 1.x), run over stdio by the tests.

For what the reference server cannot stage: a tool list that changes, a
cancelled call the server can tell us about, a JSON-RPC error of any code, a
call that waits for another, a crash with an exit status and last words, a
process it starts and leaves behind, a server that never answers
``initialize``, and one that ignores the end of its input and SIGTERM::

    python tests/agents/mcp/mcp_test_server.py [--hang-at-initialize] [--stubborn]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# The pipe the client reads, taken before the SDK points fd 1 at stderr (so prints can't corrupt it).
WIRE = os.dup(1)
HANG_AT_INITIALIZE = "--hang-at-initialize" in sys.argv
STUBBORN = "--stubborn" in sys.argv


@asynccontextmanager
async def lifespan(server: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
    if HANG_AT_INITIALIZE:
        await anyio.sleep_forever()  # the server reads no message: initialize is never answered
    yield {}


server: MCPServer[Any] = MCPServer("test-server", lifespan=lifespan)
cancelled: list[str] = []
cancellation = anyio.Event()
gate = anyio.Event()


@server.tool()
def echo(text: str) -> str:
    """Say it back."""
    return text


@server.tool()
async def add_tool(name: str, ctx: Context) -> str:
    """Add a tool called ``name`` (it doubles a number) and tell the client the tool list changed."""

    def double(x: int) -> int:
        return 2 * x

    server.add_tool(double, name=name, description="Doubles a number (added later).")
    if ctx.protocol_version is not None and ctx.protocol_version.startswith("2026"):
        await ctx.notify_tools_changed()  # 2026-07-28: to subscriptions/listen streams
    else:
        await ctx.session.send_tool_list_changed()
    return f"added {name}"


@server.tool()
async def slow(label: str, seconds: float, ctx: Context) -> str:
    """Work for ``seconds``, reporting progress ten times a second; remembers if it was cancelled."""
    steps = max(1, round(seconds * 10))
    try:
        for step in range(1, steps + 1):
            await anyio.sleep(seconds / steps)
            await ctx.report_progress(step, steps, f"step {step}")
    except anyio.get_cancelled_exc_class():
        cancelled.append(label)
        cancellation.set()
        raise
    return f"{label} done"


@server.tool()
async def cancellations() -> list[str]:
    """The labels of the slow calls that were cancelled (by ``notifications/cancelled``), once there is one."""
    with anyio.fail_after(10):
        await cancellation.wait()
    return cancelled


@server.tool()
def fail(message: str) -> str:
    """Fail with ``message`` (an ``isError`` result)."""
    raise ToolError(message)


@server.tool()
def refuse(message: str, code: int) -> str:
    """Answer with a JSON-RPC error of that ``code`` (not an ``isError`` result)."""
    raise MCPError(code=code, message=message)


@server.tool()
async def wait_for_gate() -> str:
    """Wait until ``open_gate`` is called."""
    await gate.wait()
    return "through the gate"


@server.tool()
def open_gate() -> str:
    """Let ``wait_for_gate`` calls through."""
    gate.set()
    return "opened"


@server.tool()
def crash(status: int) -> str:
    """Write last words on stderr and exit with ``status`` in the middle of the call."""
    print(f"fatal: crashing on purpose with status {status}", file=sys.stderr, flush=True)
    os._exit(status)


@server.tool()
def start_child(own_group: bool = False) -> int:
    """Start a process that holds this server's stdout (the client's end never sees it end while it lives) in
    its process group (or, ``own_group``, out of it) and sleeps; its process id."""
    command = [sys.executable, "-c", "import time; time.sleep(300)"]
    return subprocess.Popen(command, stdout=WIRE, start_new_session=own_group).pid


@server.tool()
def pid() -> int:
    """This server's process id."""
    return os.getpid()


@server.tool()
def weather(city: str) -> dict[str, Any]:
    """Structured content: the weather in ``city``."""
    return {"city": city, "celsius": 21}


if __name__ == "__main__":
    if STUBBORN:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server.run("stdio")
    if STUBBORN:
        time.sleep(3600)  # stdin ended: a well-behaved server exits now, this one waits for SIGKILL
