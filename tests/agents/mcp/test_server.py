"""MCP servers as toolsets, against our small test server (tests/agents/mcp/mcp_test_server.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs
import mcp_types as types
import pytest
import trio
import trio.testing

from agents import Agent, Hooks, ScriptedModel, ToolCall, ToolContext
from agents.mcp import MCPResult, MCPServerStdio, MCPServerStreamableHTTP
from runtime import RunFailedError, open_runtime
from runtime.events import ElicitationRequest, RunFinished, ToolCallFinished, ToolProgress

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from runtime.events import Event

    StreamRun = Callable[..., Awaitable[list[Event]]]

LIMIT = 60  # seconds: real processes on a loaded machine
SLOW = 0.5  # seconds _SessionServer takes to answer echo("slow")


@attrs.define(eq=False)
class _SessionServer:
    """A minimal streamable-HTTP MCP server of the 2025 protocol, with sessions it can forget (as a restart
    does): then it answers requests naming one with 404, as the SDK's server does. ``echo`` of "slow" sends
    its answer, headers and all, after SLOW seconds; of "stall", never."""

    sessions: list[str] = attrs.field(factory=list)
    """The sessions it opened, in order."""
    forgotten: set[str] = attrs.field(factory=set)
    calls: list[tuple[str | None, int]] = attrs.field(factory=list)
    """Each tools/call: the session it named, and the status it was answered with."""
    hang_delete: bool = False
    """Never answer a DELETE (a session's end), as a stuck server or proxy would not."""
    deletes: int = 0

    def restart(self) -> None:
        self.forgotten.update(self.sessions)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                if not (chunk := await stream.receive_some()):
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            method, *lines = head.decode().split("\r\n")
            headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
            while len(body) < int(headers.get("content-length", 0)):
                body += await stream.receive_some()
            if method.startswith("DELETE"):
                self.deletes += 1
                if self.hang_delete:
                    await trio.sleep_forever()
            if b'"stall"' in body:
                await trio.sleep_forever()
            if b'"slow"' in body:
                await trio.sleep(SLOW)  # a tool that takes its time: nothing is sent until it is done
            status, answer, extra = self._answer(method.split()[0], headers.get("mcp-session-id"), body)
            out = json.dumps(answer).encode() if answer is not None else b""
            response = {"content-type": "application/json", "content-length": str(len(out)), **extra}
            fields = "".join(f"{name}: {value}\r\n" for name, value in response.items())
            await stream.send_all(f"HTTP/1.1 {status} X\r\nconnection: close\r\n{fields}\r\n".encode() + out)

    def _answer(self, method: str, session: str | None, body: bytes) -> tuple[int, Any, dict[str, str]]:
        if method != "POST":
            return 405, None, {}
        message = json.loads(body)
        what, id_ = message.get("method"), message.get("id")
        if session in self.forgotten:
            if what == "tools/call":
                self.calls.append((session, 404))
            return 404, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}, {}
        if id_ is None:
            return 202, None, {}
        if what == "initialize":
            self.sessions.append(f"session-{len(self.sessions)}")
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "sessions", "version": "1"},
            }
            return 200, {"jsonrpc": "2.0", "id": id_, "result": result}, {"mcp-session-id": self.sessions[-1]}
        if what == "tools/list":
            tool = {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}
            return 200, {"jsonrpc": "2.0", "id": id_, "result": {"tools": [tool]}}, {}
        if what == "tools/call" and message["params"]["arguments"]["text"] == "refuse":
            self.calls.append((session, 429))  # a server's own error, with the code the SDK uses for "closed"
            return 429, {"jsonrpc": "2.0", "id": id_, "error": {"code": -32000, "message": "rate limited"}}, {}
        if what == "tools/call":
            self.calls.append((session, 200))
            content = [{"type": "text", "text": message["params"]["arguments"]["text"]}]
            return 200, {"jsonrpc": "2.0", "id": id_, "result": {"content": content}}, {}
        return 200, {"jsonrpc": "2.0", "id": id_, "error": {"code": -32601, "message": "Method not found"}}, {}


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


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda value: MCPServerStdio("server", shutdown_grace=value), "shutdown_grace"),
        (lambda value: MCPServerStdio("server", terminate_grace=value), "terminate_grace"),
        (lambda value: MCPServerStdio("server", connect_timeout=value), "connect_timeout"),
        (lambda value: MCPServerStreamableHTTP("http://127.0.0.1:1/mcp", timeout=value), "timeout"),
        (lambda value: MCPServerStreamableHTTP("http://127.0.0.1:1/mcp", sse_read_timeout=value), "sse_read_timeout"),
    ],
)
@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_server_seconds_below_zero_or_nan_are_refused(make: Any, option: str, value: float) -> None:
    """A NaN grace or timeout was taken, and the connection's close (whose deadline is made of it) raised
    instead of ending the server: its process or HTTP session was left behind."""
    with pytest.raises(ValueError, match=f"{option} must be 0 or more seconds"):
        make(value)


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


async def test_server_http_session_the_server_forgot_is_replaced_by_the_next_call(
    nursery: trio.Nursery, stream_run: StreamRun
) -> None:
    """A 404 to a request naming our session (the server restarted, or ended it): that call fails saying so,
    and the next call starts a new session instead of naming the forgotten one forever."""
    remote = _SessionServer()
    port = await nursery.start(remote.serve)

    class RestartBeforeTwo(Hooks):
        async def before_tool(self, ctx: ToolContext[Any], arguments: dict[str, Any]) -> None:
            if arguments == {"text": "two"}:
                remote.restart()

    server = MCPServerStreamableHTTP(f"http://127.0.0.1:{port}/mcp", name="remote", timeout=10)
    calls = [ToolCall("echo", {"text": text}) for text in ("one", "two", "three")]
    agent = Agent(name="a", model=ScriptedModel([*calls, "done"]), tools=[server], hooks=[RestartBeforeTwo()])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            events = await stream_run(session, "go")
    one, two, three = [event for event in events if isinstance(event, ToolCallFinished)]
    assert one.result == "one"
    assert two.error == (
        "MCP server 'remote' went away during echo: it no longer knows our session (HTTP 404 for its Mcp-Session-Id)"
    )
    assert three.result == "three"
    assert remote.calls == [("session-0", 200), ("session-0", 404), ("session-1", 200)]


async def test_server_http_sse_read_timeout_bounds_the_wait_for_an_answer_and_timeout_does_not(
    nursery: trio.Nursery, stream_run: StreamRun
) -> None:
    """Over HTTP an answer may take longer than ``timeout`` (a server sends nothing until the tool is done);
    ``sse_read_timeout`` bounds the wait: past it the call fails, and the next call connects again."""
    remote = _SessionServer()
    port = await nursery.start(remote.serve)
    server = MCPServerStreamableHTTP(f"http://127.0.0.1:{port}/mcp", name="remote", timeout=0.1, sse_read_timeout=2)
    calls = [ToolCall("echo", {"text": text}) for text in ("slow", "stall", "three")]
    agent = Agent(name="a", model=ScriptedModel([*calls, "done"]), tools=[server])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            events = await stream_run(session, "go")
    slow, stall, three = [event for event in events if isinstance(event, ToolCallFinished)]
    assert slow.result == "slow"
    assert stall.error is not None
    assert stall.error.startswith("MCP server 'remote' went away during echo")
    assert three.result == "three"
    assert remote.sessions == ["session-0", "session-1"]


async def test_server_http_delete_never_answered_holds_the_end_for_timeout_only(
    nursery: trio.Nursery, stream_run: StreamRun
) -> None:
    """A server (or a proxy) that never answers the DELETE ending its session: closing waits for it ``timeout``
    at most, not ``sse_read_timeout`` (before, only the close guard, ``timeout`` + 5 s, cut it off): the run's
    end with ``lifetime="run"``, the session's close with the default."""
    remote = _SessionServer(hang_delete=True)
    port = await nursery.start(remote.serve)
    url = f"http://127.0.0.1:{port}/mcp"
    for lifetime in ("run", "session"):
        server = MCPServerStreamableHTTP(url, name="remote", timeout=0.2, sse_read_timeout=60, lifetime=lifetime)
        agent = Agent(name="a", model=ScriptedModel([ToolCall("echo", {"text": "hi"}), "done"]), tools=[server])
        with trio.fail_after(2.5):  # the close guard would end it at 5.2 s
            async with open_runtime() as runtime, runtime.open_session(agent) as session:
                events = await stream_run(session, "go")
        assert events[-1] == RunFinished("completed")
    assert remote.deletes == 2


async def test_server_error_with_the_code_of_connection_closed_fails_only_that_call(test_server: list[str]) -> None:
    """A server's own JSON-RPC error with code -32000 (the SDK's "connection closed" too) is that call's error:
    the call in flight beside it completes, and the process is kept."""
    refused = trio.Event()

    class OpenGateAfterRefusal(Hooks):
        async def before_tool(self, ctx: ToolContext[Any], arguments: dict[str, Any]) -> None:
            if ctx.tool_name == "open_gate":
                await refused.wait()

        async def after_tool(self, ctx: ToolContext[Any], result: Any, error: str | None) -> None:
            if ctx.tool_name == "refuse":
                refused.set()

    refusal = ToolCall("refuse", {"message": "rate limited", "code": -32000})
    # wait_for_gate is in flight until open_gate, which comes once refuse has failed.
    turns: list[Any] = [ToolCall("pid", {}), [ToolCall("wait_for_gate", {}), refusal, ToolCall("open_gate", {})]]
    turns += [ToolCall("pid", {}), "done"]
    agent = Agent(name="a", model=ScriptedModel(turns), tools=[_server(test_server)], hooks=[OpenGateAfterRefusal()])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            result = await session.ask("go")
    calls = {call.call_id: call for call in result.tool_calls}
    assert calls["call_2_1"].error == "MCP server 'test' refused refuse: rate limited"
    assert calls["call_2_0"].result == "through the gate"
    assert calls["call_2_2"].result == "opened"
    assert calls["call_3_0"].result == calls["call_1_0"].result  # the same process


async def test_server_http_error_status_with_code_32000_keeps_the_session(
    nursery: trio.Nursery, stream_run: StreamRun
) -> None:
    """An HTTP error status whose body is the server's JSON-RPC error -32000 fails that call only: the next
    call goes on in the same session (no new session, no DELETE)."""
    remote = _SessionServer()
    port = await nursery.start(remote.serve)
    server = MCPServerStreamableHTTP(f"http://127.0.0.1:{port}/mcp", name="remote", timeout=10)
    calls = [ToolCall("echo", {"text": text}) for text in ("one", "refuse", "three")]
    agent = Agent(name="a", model=ScriptedModel([*calls, "done"]), tools=[server])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            events = await stream_run(session, "go")
    one, refused, three = [event for event in events if isinstance(event, ToolCallFinished)]
    assert one.result == "one"
    assert refused.error == "MCP server 'remote' refused echo: rate limited"
    assert three.result == "three"
    assert remote.calls == [("session-0", 200), ("session-0", 429), ("session-0", 200)]


async def test_server_question_outlives_the_call_it_was_asked_during(legacy_server: list[str]) -> None:
    """Over stdio (2025 protocol) a question does not say which call it is for: when the call it was asked
    during ends first, the question stays open until answered, and the answer reaches the server."""
    ask_in_flight, asked = trio.Event(), trio.Event()

    class Order(Hooks):
        async def before_tool(self, ctx: ToolContext[Any], arguments: dict[str, Any]) -> None:
            if ctx.tool_name == "quick":
                await ask_in_flight.wait()  # quick is the later call: the one a question goes to
            elif ctx.tool_name == "release":
                await asked.wait()  # quick ends only once its question is being asked

    turns: list[Any] = [[ToolCall("ask", {}), ToolCall("quick", {}), ToolCall("release", {})], "done"]
    agent = Agent(name="a", model=ScriptedModel(turns), tools=[_server(legacy_server)], hooks=[Order()])
    question: ElicitationRequest | None = None
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            async with session.run("go") as stream:
                async for event in stream:
                    if isinstance(event, ToolProgress):
                        ask_in_flight.set()
                    elif isinstance(event, ElicitationRequest):
                        question = event
                        asked.set()
                    elif isinstance(event, ToolCallFinished) and event.name == "release":
                        # The server answered quick before release: let quick's call see its answer first.
                        await trio.testing.wait_all_tasks_blocked()
                        assert question is not None
                        await stream.respond(question.id, "accept", {"name": "Ada"})
    calls = {call.name: call for call in stream.result.tool_calls}
    assert calls["ask"].result == "accept: Ada"
    assert calls["quick"].result == "quick done"
    assert question is not None
    assert question.message == "Your name?"


def test_server_tools_no_model_can_call_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    """A tool with an empty name, or one that runs only as a task, is not offered to the model (and a warning
    says so)."""
    schema: dict[str, Any] = {"type": "object"}
    listed = [
        types.Tool(name="", input_schema=schema),
        types.Tool(name="research", input_schema=schema, execution=types.ToolExecution(task_support="required")),
        types.Tool(name="maybe", input_schema=schema, execution=types.ToolExecution(task_support="optional")),
        types.Tool(name="echo", input_schema=schema),
    ]
    with caplog.at_level("WARNING", logger="agents.mcp"):
        tools = MCPServerStdio("server", name="s")._make_tools(listed)
    assert [tool.name for tool in tools] == ["maybe", "echo"]
    assert caplog.messages == [
        "MCP server s: a tool with an empty name is left out (no model can call it)",
        "MCP server s: tool 'research' is left out: it runs only as a task, which this client does not do",
    ]


_LAUNCHER = """
import os, sys
count, server = sys.argv[1], sys.argv[2]
launch = len(open(count).read()) if os.path.exists(count) else 0
open(count, "a").write("x")
flags = [["--exit-at-initialize"], ["--mute-list"]][launch] if launch < 2 else []
os.execv(sys.executable, [sys.executable, server, *flags])
"""


async def test_server_fresh_connection_that_does_not_list_its_tools_is_not_kept_for_the_next_run(
    legacy_server: list[str], tmp_path: Any
) -> None:
    """The first connection breaks at tools/list, and the fresh one it is retried on never lists its tools:
    that run fails, and the next run tries a fresh connection again (the silent one was kept, and the next
    run waited connect_timeout on it and failed too)."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(_LAUNCHER)
    count = tmp_path / "launches"
    server = MCPServerStdio(
        legacy_server[0],
        [str(launcher), str(count), legacy_server[1]],
        name="flaky",
        connect_timeout=1.0,
        shutdown_grace=0.5,
    )
    agent = Agent(name="a", model=ScriptedModel(["first", "second"]), tools=[server])
    with trio.fail_after(LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            with pytest.raises(RunFailedError, match="did not list its tools") as first:
                await session.ask("go")
            second = await session.ask("again")
    assert first.value.kind == "toolset"
    assert second.output == "first"
    assert count.read_text() == "xxx"
