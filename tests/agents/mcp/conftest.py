"""Fixtures for the MCP tests: the reference server (stdio and streamable HTTP), our small test server, and
what it takes to watch their processes.

``everything_js``: the reference server's entry point, installed by make's set-up into ``.mcp/`` (skipped
only when ``node`` is missing; a missing install fails, loudly). ``everything(**options)``: a toolset of it.
``test_server``: ``tests/agents/mcp/mcp_test_server.py``, an ``MCPServer`` (FastMCP) server.
``legacy_server``: ``tests/agents/mcp/legacy_server.py``, a hand-written server of the 2025 protocol.
``everything_http``: starts the reference server's streamable-HTTP transport on a free port.
``children``: the live (and zombie) child processes of this test process.
``stream_run``: runs a prompt on a session, streaming, answering questions, and returns the events.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from agents.mcp import MCPServerStdio
from runtime.events import ElicitationRequest, Event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from agents import ElicitationAction
    from runtime import Session

REPO = Path(__file__).resolve().parents[3]
EVERYTHING_JS = REPO / ".mcp" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
TEST_SERVER = Path(__file__).with_name("mcp_test_server.py")
LEGACY_SERVER = Path(__file__).with_name("legacy_server.py")


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable; the tests that need it are skipped, saying why, where there is none."""
    path = shutil.which("node")
    if path is None:  # the one reason to skip: a missing install fails instead (see everything_js)
        pytest.skip(
            "node is not installed: the MCP reference server (@modelcontextprotocol/server-everything) needs Node.js"
        )
    return path


@pytest.fixture(scope="session")
def everything_js(node: str) -> Path:
    """The reference server's entry point (``node index.js stdio|streamableHttp``)."""
    if not EVERYTHING_JS.exists():
        pytest.fail(
            f"the MCP reference server is not installed at {EVERYTHING_JS.relative_to(REPO)}: make's set-up "
            "installs it (mkdir -p .mcp && cp tests/agents/mcp/npm/package*.json .mcp/ && npm ci --prefix .mcp)",
            pytrace=False,
        )
    return EVERYTHING_JS


@pytest.fixture
def everything(node: str, everything_js: Path) -> Callable[..., MCPServerStdio]:
    """``everything(**options)``: an ``MCPServerStdio`` toolset of the reference server (named ``everything``)."""

    def make(**options: Any) -> MCPServerStdio:
        options.setdefault("name", "everything")
        options.setdefault("connect_timeout", 30)  # a loaded machine starts node slowly
        return MCPServerStdio(node, [str(everything_js), "stdio"], **options)

    return make


@pytest.fixture(scope="session")
def test_server() -> list[str]:
    """The command line of our small test server (``[python, mcp_test_server.py]``)."""
    return [sys.executable, str(TEST_SERVER)]


@pytest.fixture(scope="session")
def legacy_server() -> list[str]:
    """The command line of our hand-written server of the 2025-06-18 protocol (``[python, legacy_server.py]``)."""
    return [sys.executable, str(LEGACY_SERVER)]


@attrs.define(eq=False)
class ChildProcess:
    """A child process of the test process, as /proc shows it."""

    pid: int
    name: str
    state: str
    """``Z`` for a zombie (exited, not reaped)."""


def _children() -> list[ChildProcess]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split at the last ")".
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == me:
            found.append(ChildProcess(int(entry), name, state))
    return found


@pytest.fixture
def children() -> Callable[[], list[ChildProcess]]:
    """``children()``: the child processes of this test process now, zombies included."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to see child processes")
    return _children


@attrs.define(eq=False)
class EverythingHTTP:
    """The reference server over streamable HTTP, on a port of its own; ``start()`` it again after ``kill()``."""

    node: str
    script: Path
    nursery: trio.Nursery
    port: int = attrs.field(factory=lambda: _free_port())
    processes: list[trio.Process] = attrs.field(factory=list)
    output: list[str] = attrs.field(factory=list)
    """What the servers printed (stdout and stderr), line by line."""
    _waiters: list[tuple[str, trio.Event]] = attrs.field(factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def process(self) -> trio.Process:
        return self.processes[-1]

    async def start(self) -> None:
        """Start a server and wait until it listens (it says so)."""
        since = len(self.output)
        process = await trio.lowlevel.open_process(
            [self.node, str(self.script), "streamableHttp"],
            env={**os.environ, "PORT": str(self.port)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        self.nursery.start_soon(self._read_output, process)
        with trio.fail_after(20):
            await self.printed(f"listening on port {self.port}", since=since)

    async def printed(self, text: str, *, since: int = 0) -> None:
        """Wait until a server prints a line holding ``text`` (from its line ``since`` on)."""
        if any(text in line for line in self.output[since:]):
            return
        event = trio.Event()
        self._waiters.append((text, event))
        await event.wait()

    async def kill(self) -> None:
        """Kill the server at once (no goodbye to its clients) and reap it."""
        self.process.kill()
        await self.process.wait()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for process in self.processes:
                if process.returncode is None:
                    process.kill()
                await process.wait()
                if process.stdout is not None:
                    await process.stdout.aclose()

    async def _read_output(self, process: trio.Process) -> None:
        assert process.stdout is not None
        partial = b""
        try:
            while chunk := await process.stdout.receive_some(65536):
                *lines, partial = (partial + chunk).split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace")
                    self.output.append(line)
                    for waiter in [w for w in self._waiters if w[0] in line]:
                        self._waiters.remove(waiter)
                        waiter[1].set()
        except trio.ClosedResourceError:
            pass  # the fixture closed the pipe


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def everything_http(nursery: trio.Nursery, node: str, everything_js: Path) -> AsyncIterator[EverythingHTTP]:
    """The reference server's streamable-HTTP transport, listening on a free port, killed after the test."""
    server = EverythingHTTP(node, everything_js, nursery)
    try:
        await server.start()
        yield server
    finally:
        await server.aclose()


@pytest.fixture
def stream_run() -> Callable[..., Awaitable[list[Event]]]:
    """``await stream_run(session, prompt, answer=None, on_event=None)``: stream one run and return its events;
    each question gets ``await answer(request)`` (an ``(action, content)`` pair), and each event is passed to
    ``await on_event(event)`` as it comes."""

    async def run(
        session: Session[Any],
        prompt: str,
        answer: Callable[[ElicitationRequest], Awaitable[tuple[ElicitationAction, Any]]] | None = None,
        on_event: Callable[[Event], Awaitable[None]] | None = None,
    ) -> list[Event]:
        events: list[Event] = []
        async with session.run(prompt) as stream:
            async for event in stream:
                events.append(event)
                if on_event is not None:
                    await on_event(event)
                if isinstance(event, ElicitationRequest) and answer is not None:
                    action, content = await answer(event)
                    await stream.respond(event.id, action, content)
        return events

    return run
