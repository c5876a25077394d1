"""Agents served as MCP servers (``streams._mcp``), driven by the ``mcp`` SDK's own client.

Over streamable HTTP against a served runtime's ``/mcp`` (in this process,
Hypercorn on port 0), and over stdio against ``python -m streams mcp --agent
tests.streams.mcp_agents:agent`` (a real process, from the repository root).
Real sockets and processes, so the real clock, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import functools
import itertools
import json
import signal
import subprocess
import sys
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx
import httpx2
import mcp.types as types
import pytest
import trio
import trio.testing
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from agents import Agent, ScriptedModel, ToolCall, ToolContext, ToolResultMessage, tool
from streams import _mcp, open_server
from streams._mcp import TASK_SCHEMA, serve_stdio, tool_description, tool_name
from tests.streams import mcp_agents

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mcp.client.session import ClientRequestContext, ElicitationFnT

    from agents import ModelRequest
    from agents.models import Turn
    from streams import Server
    from streams._broadcast import Subscriber
    from streams._runlog import RunLog

pytestmark = [
    # The SDK's HTTP client (httpx2, its fork of httpx) leaves its SSE and body iterators to the
    # garbage collector, and Trio warns about each (DESIGN.md, "Known sharp edges"). Only the
    # warnings about those modules' async generators are let through; every other stays an error.
    pytest.mark.filterwarnings(r"ignore:Async generator 'httpx2\.:ResourceWarning"),
    pytest.mark.filterwarnings(r"ignore:Async generator 'httpcore2\.:ResourceWarning"),
]

ROOT: Final = Path(__file__).resolve().parents[2]
TIMEOUT: Final = 20
TOKEN: Final = "s3cret"
AUTH: Final = {"authorization": f"Bearer {TOKEN}"}
TOOL: Final = "echo_bot"
INITIALIZE: Final = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
MCP_HEADERS: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


class Progress:
    """What a call's progress callback received."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.text = ""

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.values.append(progress)
        self.text += message or ""


class Asked:
    """An elicitation callback answering from a list (the last answer again when it runs out)."""

    def __init__(self, *answers: types.ElicitResult) -> None:
        self.answers = list(answers)
        self.questions: list[types.ElicitRequestParams] = []

    async def __call__(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        self.questions.append(params)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def accept(content: dict[str, Any]) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content=content)


def logged(log: RunLog) -> list[dict[str, Any]]:
    """The events of a finished run, as the served session recorded them."""
    follower = log.follow()
    events = []
    while (event := follower.next_nowait()) is not None:
        assert isinstance(event, dict)
        events.append(event)
    return events


def text_of(result: types.CallToolResult) -> str:
    (block,) = result.content
    assert isinstance(block, types.TextContent)
    return block.text


@asynccontextmanager
async def serving(agent: Agent[Any, Any] = mcp_agents.agent, **options: Any) -> AsyncIterator[Server]:
    async with open_server(agent, token=TOKEN, **options) as server:
        yield server


@asynccontextmanager
async def connected(
    server: Server, *, token: str = TOKEN, elicit: ElicitationFnT | None = None
) -> AsyncIterator[ClientSession]:
    """The SDK's streamable HTTP client, initialized, on ``/mcp``; leaving ends the MCP session (DELETE)."""
    timeout = httpx2.Timeout(TIMEOUT, read=300)  # as the SDK's own default: a GET stream may stay quiet
    headers = {"authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write, elicitation_callback=elicit) as session,
    ):
        await session.initialize()
        yield session


# -- streamable HTTP ---------------------------------------------------------------------------


async def test_mcp_http_lists_the_agent_as_one_tool_named_and_described_after_it() -> None:
    """tools/list shows one tool: the agent's name made a tool name, its instructions' first line, input {task}."""
    with trio.fail_after(TIMEOUT):
        async with serving() as server, connected(server) as session:
            assert session.server_info is not None
            assert session.server_info.name == "echo bot"
            listed = await session.list_tools()
    (tool,) = listed.tools
    assert tool.name == TOOL == tool_name(mcp_agents.agent)
    assert tool.description == "Repeats what it is told."
    assert tool.input_schema == TASK_SCHEMA
    assert tool.output_schema is None


async def test_mcp_http_call_answers_and_streams_the_text_as_progress() -> None:
    """A call is a run: its answer is the result, and its streamed text arrives as progress notifications first."""
    progress = Progress()
    with trio.fail_after(TIMEOUT):
        async with serving() as server, connected(server) as session:
            result = await session.call_tool(TOOL, {"task": "hello there world"}, progress_callback=progress)
            (served,) = server.sessions.values()
            described = served.describe()
    assert not result.is_error
    assert text_of(result) == "You said: hello there world"
    assert result.structured_content is None
    assert progress.text == "You said: hello there world"
    assert progress.values == sorted(set(progress.values))  # increasing
    assert progress.values[-1] == len(progress.text)
    # The run went in the MCP session's own served session, recorded like any other.
    assert described["id"].startswith("mcp-")
    assert described["runs"] == 1


async def test_mcp_http_runs_of_one_mcp_session_share_its_session() -> None:
    """Every call of one MCP session runs in the same session; another MCP session has its own."""
    with trio.fail_after(TIMEOUT):
        async with serving() as server, connected(server) as first, connected(server) as second:
            for task in ("one", "two"):
                await first.call_tool(TOOL, {"task": task})
            await second.call_tool(TOOL, {"task": "three"})
            runs = sorted(served.run_count for served in server.sessions.values())
            histories = sorted(len(served.session.history) for served in server.sessions.values())
    assert runs == [1, 2]
    assert histories == [2, 4]  # each run: the task and the answer


async def test_mcp_http_typed_output_is_structured_content_with_its_schema() -> None:
    """An agent with an output type declares it as the tool's outputSchema and answers structuredContent."""
    with trio.fail_after(TIMEOUT):
        async with serving(mcp_agents.typed_agent) as server, connected(server) as session:
            (tool,) = (await session.list_tools()).tools
            result = await session.call_tool("weather", {"task": "Paris"})
    assert tool.output_schema is not None
    assert tool.output_schema["type"] == "object"
    assert set(tool.output_schema["properties"]) == {"city", "celsius"}
    assert not result.is_error
    assert result.structured_content == {"city": "Paris", "celsius": 21.5}
    assert json.loads(text_of(result)) == {"city": "Paris", "celsius": 21.5}


async def test_mcp_http_typed_output_json_cannot_carry_is_an_error_result() -> None:
    """An output with a float JSON has no number for (infinity) is the call's error result, saying why: not
    ``Infinity`` in the text (no strict JSON parser takes it) beside structuredContent its schema refuses."""
    with trio.fail_after(TIMEOUT):
        async with serving(mcp_agents.typed_agent) as server, connected(server) as session:
            result = await session.call_tool("weather", {"task": "the sun"})
            after = await session.call_tool("weather", {"task": "Paris"})
    assert result.is_error
    assert result.structured_content is None
    assert text_of(result) == "the agent's output holds a number JSON cannot carry (infinity or NaN)"
    assert after.structured_content == {"city": "Paris", "celsius": 21.5}  # the session goes on


@pytest.mark.parametrize(
    ("answer", "said"),
    [(accept({"answer": True}), "accept True"), (types.ElicitResult(action="decline"), "decline None")],
)
async def test_mcp_http_elicitation_in_the_run_is_asked_of_the_client(answer: types.ElicitResult, said: str) -> None:
    """A tool's question becomes elicitation/create (a one-field form for a bool); the run gets the answer."""
    asked = Asked(answer)
    with trio.fail_after(TIMEOUT):
        async with serving() as server, connected(server, elicit=asked) as session:
            result = await session.call_tool(TOOL, {"task": "ask"})
    assert text_of(result) == f"The tool said: {said}"
    (question,) = asked.questions
    assert isinstance(question, types.ElicitRequestFormParams)
    assert question.message == mcp_agents.QUESTION
    assert question.requested_schema == {
        "type": "object",
        "properties": {"answer": {"type": "boolean"}},
        "required": ["answer"],
    }


async def test_mcp_http_an_answer_that_does_not_fit_is_asked_again() -> None:
    """Content that fails the question's schema is not given to the run: the client is asked again, told why."""
    asked = Asked(accept({"answer": "maybe"}), accept({"answer": False}))
    with trio.fail_after(TIMEOUT):
        async with serving() as server, connected(server, elicit=asked) as session:
            result = await session.call_tool(TOOL, {"task": "ask"})
    assert text_of(result) == "The tool said: accept False"
    first, second = asked.questions
    assert first.message == mcp_agents.QUESTION
    assert second.message.startswith(mcp_agents.QUESTION)
    assert "answer again" in second.message


async def test_mcp_http_a_client_that_cannot_answer_questions_cancels_them() -> None:
    """A client without the elicitation capability is not asked: the run's question is cancelled."""
    with trio.fail_after(TIMEOUT):
        async with serving() as server, connected(server) as session:
            result = await session.call_tool(TOOL, {"task": "ask"})
    assert text_of(result) == "The tool said: cancel None"


async def test_mcp_http_a_run_that_fails_is_an_error_result() -> None:
    """A run that ends in error is an isError result saying why; a task that is not a string is one too."""
    with trio.fail_after(TIMEOUT):
        async with serving() as server, connected(server) as session:
            failed = await session.call_tool(TOOL, {"task": "fail"})
            no_task = await session.call_tool(TOOL, {"what": "no task"})
            with pytest.raises(MCPError, match="no tool 'nope'"):
                await session.call_tool("nope", {"task": "x"})
    assert failed.is_error
    assert text_of(failed) == "the run ended: error: the model is down"
    assert no_task.is_error
    assert "'task' must be a string" in text_of(no_task)


async def test_mcp_http_a_call_the_client_cancels_cancels_its_run() -> None:
    """A call the client gives up on (notifications/cancelled) cancels its run; the MCP session goes on."""
    asked = trio.Event()

    async def never_answer(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        asked.set()
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with serving() as server, connected(server, elicit=never_answer) as session:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.call_tool, TOOL, {"task": "ask"})
                await asked.wait()
                nursery.cancel_scope.cancel()
            after = await session.call_tool(TOOL, {"task": "after"})  # runs once the first run has ended
            (served,) = server.sessions.values()
            logs = [logged(log) for log in served.runs.values()]
    assert text_of(after) == "You said: after"
    assert [events[-1]["type"] for events in logs] == ["RunFinished", "RunFinished"]
    assert [events[-1]["reason"] for events in logs] == ["cancelled", "completed"]


async def test_mcp_http_a_call_past_max_queued_runs_is_an_error_result_and_the_session_goes_on() -> None:
    """With max_queued_runs=1, a run holding the session and one call waiting behind it, the next call is an
    isError result saying the session is busy, and starts no run: the two runs in the session finish as if it
    never came, and once they have, a call runs again (it used to queue, without bound)."""
    asked, release = trio.Event(), trio.Event()

    async def held(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.set()
        await release.wait()
        return accept({"answer": True})

    results: dict[str, types.CallToolResult] = {}

    async def call(session: ClientSession, task: str) -> None:
        results[task] = await session.call_tool(TOOL, {"task": task})

    async def running(feed: Subscriber[dict[str, Any]]) -> str:
        """The id of the next run the feed says has begun."""
        while True:
            message = await feed.get()
            assert isinstance(message, dict)
            if message["type"] == "SessionState" and message["state"] == "running":
                return str(message["run_id"])

    with trio.fail_after(TIMEOUT):
        async with serving(max_queued_runs=1) as server, connected(server, elicit=held) as session:
            (served,) = server.sessions.values()
            with served.feed.subscribe() as feed:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, session, "ask")
                    first = await running(feed)
                    await asked.wait()
                    nursery.start_soon(call, session, "two")
                    while len(served.live) < 2:  # it waits behind the first: the one run max_queued_runs lets wait
                        await trio.testing.wait_all_tasks_blocked()
                    second = list(served.live)[1]
                    refused = await session.call_tool(TOOL, {"task": "three"})
                    assert list(served.live) == list(served.runs) == [first, second], "the call was queued"
                    assert not served.session.closed
                    release.set()
                    assert await running(feed) == second  # named on the feed when its turn comes, not before
            after = await session.call_tool(TOOL, {"task": "after"})
            logs = [logged(log) for log in served.runs.values()]
            runs = served.run_count
    assert refused.is_error
    assert text_of(refused) == f"session {served.id!r} is busy: 1 runs already wait for their turn"
    assert text_of(results["ask"]) == "The tool said: accept True"
    assert text_of(results["two"]) == "You said: two"
    assert text_of(after) == "You said: after"
    assert [events[-1]["reason"] for events in logs] == ["completed"] * 3
    assert runs == 3


async def test_mcp_http_ending_the_mcp_session_closes_its_session() -> None:
    """The client's DELETE ends the MCP session and closes the session it ran in."""
    with trio.fail_after(TIMEOUT):
        async with serving() as server:
            async with connected(server) as session:
                await session.call_tool(TOOL, {"task": "hi"})
                (served,) = server.sessions.values()
                assert not served.session.closed
            await served.handle.wait_closed()
            assert server.sessions == {}


async def test_mcp_http_closing_the_session_ends_the_mcp_session() -> None:
    """A served session closed by the server (here DELETE /sessions/{id}) ends its MCP session: its id is 404."""
    with trio.fail_after(TIMEOUT):
        async with serving() as server, httpx.AsyncClient(base_url=server.url, headers=AUTH) as http:
            async with connected(server) as session:
                await session.call_tool(TOOL, {"task": "hi"})
                (sid,) = server.sessions
                assert (await http.delete(f"/sessions/{sid}")).status_code == 204
                with pytest.raises(MCPError, match="Session not found"):
                    await session.call_tool(TOOL, {"task": "again"})
            stale = await http.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "mcp-session-id": sid})
    assert stale.status_code == 404
    assert stale.json()["error"]["message"] == "Session not found"


async def test_mcp_http_an_idle_mcp_session_is_reaped_like_any_session() -> None:
    """An MCP session with nothing in flight is closed after idle_timeout, as any served session; its id is 404."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(idle_timeout=0.2) as server,
            httpx.AsyncClient(base_url=server.url, headers={**AUTH, **MCP_HEADERS}) as http,
        ):
            opened = await http.post("/mcp", json=INITIALIZE)
            (served,) = server.sessions.values()
            await served.handle.wait_closed()
            session = {"mcp-session-id": opened.headers["mcp-session-id"]}
            stale = await http.post("/mcp", json=INITIALIZE, headers=session)
    assert stale.status_code == 404


async def test_mcp_http_server_shutdown_ends_open_mcp_sessions() -> None:
    """Leaving open_server with an MCP session open (its GET stream too) ends it, and closes its session."""
    with trio.fail_after(TIMEOUT):
        async with (
            httpx.AsyncClient(headers={**AUTH, **MCP_HEADERS}, timeout=TIMEOUT) as http,
            trio.open_nursery() as nursery,
        ):
            async with serving() as server:
                opened = await http.post(f"{server.url}/mcp", json=INITIALIZE)
                sid = opened.headers["mcp-session-id"]
                (served,) = server.sessions.values()
                assert served.id == sid

                async def listen(*, task_status: trio.TaskStatus[None]) -> None:
                    headers = {"mcp-session-id": sid, "accept": "text/event-stream"}
                    async with http.stream("GET", f"{server.url}/mcp", headers=headers) as response:
                        assert response.status_code == 200
                        task_status.started()
                        async for _ in response.aiter_bytes():
                            pass  # until the server ends the stream

                await nursery.start(listen)
            assert served.session.closed
            assert server.sessions == {}


async def test_mcp_http_refuses_a_missing_or_wrong_token_and_foreign_origins_and_hosts() -> None:
    """/mcp checks what every route checks, answering in the served runtime's error shape; nothing opens."""
    with trio.fail_after(TIMEOUT):
        async with serving(max_body=4096) as server:
            async with httpx.AsyncClient(base_url=server.url, headers=MCP_HEADERS, timeout=TIMEOUT) as http:
                answers = {
                    "no token": await http.post("/mcp", json=INITIALIZE),
                    "wrong token": await http.post("/mcp", json=INITIALIZE, headers={"authorization": "Bearer x"}),
                    "foreign origin": await http.post(
                        "/mcp", json=INITIALIZE, headers={**AUTH, "origin": "http://evil.example"}
                    ),
                    "foreign host": await http.post("/mcp", json=INITIALIZE, headers={**AUTH, "host": "evil.example"}),
                    "too large": await http.post("/mcp", content=b" " * 5000, headers=AUTH),
                }
            with pytest.RaisesGroup(MCPError, flatten_subgroups=True):
                async with connected(server, token="wrong"):
                    pass
            assert server.sessions == {}
    kinds = {name: (answer.status_code, answer.json()["error"]["type"]) for name, answer in answers.items()}
    assert kinds == {
        "no token": (401, "unauthorized"),
        "wrong token": (401, "unauthorized"),
        "foreign origin": (403, "forbidden_origin"),
        "foreign host": (403, "forbidden_host"),
        "too large": (413, "too_large"),
    }


async def test_mcp_http_a_request_that_does_not_open_a_session_leaves_none() -> None:
    """Without Mcp-Session-Id only an initialize opens a session: a 2026-era probe is refused (the client then
    falls back to initialize) and nothing is left open; a session limit refuses an MCP session too."""
    probe = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}}
    with trio.fail_after(TIMEOUT):
        async with serving(max_sessions=1) as server:
            async with httpx.AsyncClient(base_url=server.url, headers={**AUTH, **MCP_HEADERS}) as http:
                refused = await http.post("/mcp", json=probe)
                for served in list(server.sessions.values()):  # closed just after it answered
                    await served.handle.wait_closed()
                assert server.sessions == {}
                assert (await http.post("/mcp", json=INITIALIZE)).status_code == 200
                full = await http.post("/mcp", json=INITIALIZE)
    assert refused.status_code == 400
    assert full.status_code == 503
    assert full.json()["error"]["type"] == "too_many_sessions"


async def test_mcp_http_a_request_without_a_session_id_that_is_not_initialize_is_400_even_when_full() -> None:
    """A GET, a DELETE or a message other than initialize without Mcp-Session-Id is answered 400 (-32600)
    before any session opens: at max_sessions too, where opening one first answered 503."""
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    with trio.fail_after(TIMEOUT):
        async with serving(max_sessions=1) as server:
            async with httpx.AsyncClient(base_url=server.url, headers={**AUTH, **MCP_HEADERS}) as http:
                assert (await http.post("/mcp", json=INITIALIZE)).status_code == 200
                (opened,) = server.sessions
                answers = {
                    "GET": await http.get("/mcp"),
                    "DELETE": await http.delete("/mcp"),
                    "tools/list": await http.post("/mcp", json=listing),
                }
                assert list(server.sessions) == [opened]
    shapes = {what: (answer.status_code, answer.json()["error"].get("code")) for what, answer in answers.items()}
    assert shapes == {"GET": (400, -32600), "DELETE": (400, -32600), "tools/list": (400, -32600)}


async def test_mcp_http_a_client_probing_the_2026_era_first_falls_back_to_the_handshake() -> None:
    """The SDK's high-level Client (mode "auto": server/discover first) ends up on the handshake era, and works."""
    timeout = httpx2.Timeout(TIMEOUT, read=300)
    with trio.fail_after(TIMEOUT):
        async with serving() as server, httpx2.AsyncClient(headers=AUTH, timeout=timeout) as http:
            async with Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client:
                result = await client.call_tool(TOOL, {"task": "auto"})
                version = client.protocol_version
    assert version == "2025-11-25"
    assert text_of(result) == "You said: auto"


async def open_raw_session(http: httpx.AsyncClient) -> str:
    """An MCP session opened over plain HTTP by a client that takes questions (``elicitation``); its id."""
    client = {"name": "raw", "version": "0"}
    params = {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}}, "clientInfo": client}
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
    opened = await http.post("/mcp", json=initialize)
    assert opened.status_code == 200
    session_id = opened.headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post("/mcp", json=initialized, headers={"mcp-session-id": session_id})).status_code == 202
    return session_id


async def call_until_asked(port: int, session_id: str, task: str, asked: trio.Event | None = None) -> None:
    """POST a call of the tool with ``task`` on a raw socket and read its stream until the server asks the client
    a question (``elicitation/create``); then either leave (close the connection), or with ``asked``, set it
    and read on until the server ends the connection."""
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": TOOL, "arguments": {"task": task}}}
    )
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Accept: {MCP_HEADERS['accept']}\r\nContent-Type: application/json\r\nMcp-Session-Id: {session_id}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all((head + body).encode())
        received = b""
        while b"elicitation/create" not in received:
            chunk = await stream.receive_some(65536)
            assert chunk, received
            received += chunk
        if asked is not None:
            asked.set()
            while await stream.receive_some(65536):
                pass


async def test_mcp_http_a_call_whose_stream_ends_is_cancelled_with_its_question() -> None:
    """A client that leaves (closes its POST) while its call waits for an answer can never see the question
    again: the call's run is cancelled, which frees the session for the next call and lets it be reaped when
    idle (it used to wait forever, holding the session and its max_sessions slot)."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(idle_timeout=0.5) as server,
            httpx.AsyncClient(base_url=server.url, headers={**AUTH, **MCP_HEADERS}, timeout=TIMEOUT) as http,
        ):
            session_id = await open_raw_session(http)
            await call_until_asked(server.port, session_id, "ask")
            served = server.sessions[session_id]
            (log,) = served.runs.values()
            events = log.follow()
            while (event := await events.next()) is not None:
                assert isinstance(event, dict)
                last = event
            assert (last["type"], last["reason"]) == ("RunFinished", "cancelled")
            call = {
                "jsonrpc": "2.0",
                "id": 8,
                "method": "tools/call",
                "params": {"name": TOOL, "arguments": {"task": "hi"}},
            }
            answered = await http.post("/mcp", json=call, headers={"mcp-session-id": session_id})
            (data,) = [line for line in answered.text.splitlines() if line.startswith("data: {")]
            assert json.loads(data.removeprefix("data: "))["result"]["content"][0]["text"] == "You said: hi"
            await served.handle.wait_closed()  # reaped when idle, as any session


async def test_mcp_http_shutdown_with_a_question_waiting_is_prompt() -> None:
    """Leaving open_server while a call waits for its client's answer (the client still there) is prompt: the
    SDK's courtesy cancel of the question used to wait 5 s for a transport cancelled with it."""
    asked = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with (
                serving() as server,
                httpx.AsyncClient(base_url=server.url, headers={**AUTH, **MCP_HEADERS}, timeout=TIMEOUT) as http,
            ):
                session_id = await open_raw_session(http)
                nursery.start_soon(call_until_asked, server.port, session_id, "ask", asked)
                await asked.wait()
                leaving = trio.current_time()
            took = trio.current_time() - leaving
    assert took < 4


async def test_mcp_http_a_lone_surrogate_in_what_is_sent_goes_as_its_escape() -> None:
    """A question and an answer holding a lone surrogate (a model's or a tool's text: the SDK's encoder refuses
    one) reach the client with it written as its escape, six characters, instead of the call never answering."""

    @tool
    async def odd(ctx: ToolContext[Any]) -> str:
        """Ask an odd question."""
        answer = await ctx.elicit("Go \ud800 on?", schema=bool, timeout=TIMEOUT)
        return f"{answer.content}"

    def turn(request: ModelRequest) -> Turn:
        last = request.messages[-1]
        return "odd \udfff answer" if isinstance(last, ToolResultMessage) else ToolCall("odd")

    agent = Agent(name="odd", model=ScriptedModel(itertools.repeat(turn)), tools=[odd])
    asked = Asked(accept({"answer": True}))
    progress = Progress()
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as server, connected(server, elicit=asked) as session:
            result = await session.call_tool("odd", {"task": "go"}, progress_callback=progress)
    (question,) = asked.questions
    assert question.message == "Go \\ud800 on?"
    assert text_of(result) == "odd \\udfff answer"
    assert progress.text == "odd \\udfff answer"


# -- stdio -------------------------------------------------------------------------------------


def serve_command(attribute: str) -> list[str]:
    return [sys.executable, "-m", "streams", "mcp", "--agent", f"tests.streams.mcp_agents:{attribute}"]


def server_parameters(attribute: str) -> StdioServerParameters:
    command, *args = serve_command(attribute)
    return StdioServerParameters(command=command, args=args, cwd=ROOT, env={"PYTHONWARNINGS": "error"})


async def test_mcp_stdio_serves_the_agent_to_the_sdk_client() -> None:
    """``python -m streams mcp``: tools/list, a call with progress, and an elicitation round trip, over stdio."""
    progress = Progress()
    asked = Asked(accept({"answer": True}))
    with tempfile.TemporaryFile("w+") as errlog, trio.fail_after(TIMEOUT):
        async with (
            stdio_client(server_parameters("agent"), errlog=errlog) as (read, write),
            ClientSession(read, write, elicitation_callback=asked) as session,
        ):
            await session.initialize()
            (tool,) = (await session.list_tools()).tools
            answer = await session.call_tool(TOOL, {"task": "hello"}, progress_callback=progress)
            answered = await session.call_tool(TOOL, {"task": "ask"})
        errlog.seek(0)
        stderr = errlog.read()
    assert tool.name == TOOL
    assert tool.description == tool_description(mcp_agents.agent)
    assert text_of(answer) == progress.text == "You said: hello"
    assert text_of(answered) == "The tool said: accept True"
    assert [question.message for question in asked.questions] == [mcp_agents.QUESTION]
    assert "Traceback" not in stderr, stderr


async def test_mcp_stdio_typed_output_is_structured_content() -> None:
    """Over stdio too, a typed output comes back as structuredContent."""
    with trio.fail_after(TIMEOUT):
        async with (
            stdio_client(server_parameters("typed_agent")) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            (tool,) = (await session.list_tools()).tools
            result = await session.call_tool("weather", {"task": "Oslo"})
    assert tool.output_schema is not None
    assert result.structured_content == {"city": "Oslo", "celsius": 21.5}


async def test_mcp_stdio_command_rejects_an_agent_it_cannot_find_with_exit_2() -> None:
    """``--agent nope:x`` is a usage error: exit 2 and a message naming the missing module, nothing on stdout."""
    with trio.fail_after(TIMEOUT):
        completed = await trio.run_process(
            [sys.executable, "-m", "streams", "mcp", "--agent", "nope:x"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    stderr = completed.stderr.decode()
    assert completed.returncode == 2, stderr
    assert "No module named 'nope'" in stderr
    assert "Traceback" not in stderr
    assert completed.stdout == b""


@pytest.mark.parametrize("ending", ["eof", "sigterm", "sigint"])
async def test_mcp_stdio_ends_with_its_input_or_a_signal_and_exits_0(ending: str) -> None:
    """The process serves until stdin ends (its client left), SIGTERM or Ctrl-C, and exits 0 without a traceback,
    a signal stopping it even while stdin stays open."""
    with trio.fail_after(TIMEOUT):
        process = await trio.lowlevel.open_process(
            serve_command("agent"),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            await process.stdin.send_all(b'{"jsonrpc": "2.0", "id": 7, "method": "ping"}\n')
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                assert chunk, "the server ended its output without answering"
                answer += chunk
            assert json.loads(answer) == {"jsonrpc": "2.0", "id": 7, "result": {}}
            if ending == "eof":
                await process.stdin.aclose()
            else:
                process.send_signal(signal.SIGTERM if ending == "sigterm" else signal.SIGINT)
            status = await process.wait()
            stderr = b""
            while chunk := await process.stderr.receive_some():
                stderr += chunk
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
                for pipe in (process.stdin, process.stdout, process.stderr):
                    await trio.aclose_forcefully(pipe)
    assert status == 0, stderr.decode()
    assert b"Traceback" not in stderr, stderr.decode()


async def test_mcp_stdio_frames_lines_and_stops_when_cancelled_with_its_input_open() -> None:
    """serve_stdio on in-memory streams: the SDK's client is served line by line, and cancelling it ends it at
    once, its input still open."""
    server_end, client_end = trio.testing.memory_stream_pair()
    read_send, read_receive = anyio.create_memory_object_stream[SessionMessage](0)
    write_send, write_receive = anyio.create_memory_object_stream[SessionMessage | bytes](0)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(serve_stdio, mcp_agents.agent, stdin=server_end, stdout=server_end))
            nursery.start_soon(_mcp._read_lines, client_end, read_send, write_send.clone(), trio.CancelScope())
            nursery.start_soon(_mcp._write_lines, client_end, write_receive)
            await client_end.send_all(b"\n\n")
            async with ClientSession(read_receive, write_send) as session:
                await session.initialize()
                result = await session.call_tool(TOOL, {"task": "in memory"})
            nursery.cancel_scope.cancel()
    assert text_of(result) == "You said: in memory"


def error_shape(answer: Any) -> Any:
    """An answer's id and error code (of each, for a batch's)."""
    if isinstance(answer, list):
        return [error_shape(each) for each in answer]
    assert answer["jsonrpc"] == "2.0"
    assert isinstance(answer["error"]["message"], str)
    return (answer["id"], answer["error"]["code"])


def request(**fields: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", **fields}


@pytest.mark.parametrize(
    ("line", "answers"),
    [
        pytest.param(b'{"jsonrpc": "2.0", "id": 2, "method": ', [(None, -32700)], id="not JSON"),
        pytest.param(b'{"hello": 1}', [(None, -32600)], id="not JSON-RPC"),
        pytest.param(b'"ping"', [(None, -32600)], id="not an object"),
        pytest.param({"jsonrpc": "1.0", "id": 3, "method": "ping"}, [(3, -32600)], id="wrong version, id readable"),
        pytest.param(request(id="s4", method="tools/list", params=[1]), [("s4", -32602)], id="params an array"),
        pytest.param(request(id=5, method="ping", params="x"), [(5, -32602)], id="params a string"),
        pytest.param(request(id=None, method="ping"), [(None, -32600)], id="id null"),
        pytest.param(request(id=1.5, method="ping"), [(None, -32600)], id="id a float"),
        pytest.param(b"[]", [(None, -32600)], id="empty batch"),
        pytest.param(
            [request(id=6, method="tools/list"), request(method="notifications/initialized"), 1],
            [[(6, -32600), (None, -32600)]],
            id="batch",
        ),
        pytest.param([request(method="notifications/initialized")], [], id="batch of notifications"),
        pytest.param(request(method="notifications/progress", params=[1]), [], id="invalid notification"),
        pytest.param(request(id=7, result=[1]), [], id="invalid response"),
    ],
)
async def test_mcp_stdio_answers_what_is_not_a_message_with_an_error_and_goes_on(
    line: Any, answers: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A line that is not a message is answered as JSON-RPC 2.0 says (a notification's not at all), with a
    warning, and the next request is served."""
    data = line if isinstance(line, bytes) else json.dumps(line).encode()
    server_end, client_end = trio.testing.memory_stream_pair()
    received = bytearray()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(serve_stdio, mcp_agents.agent, stdin=server_end, stdout=server_end))
            await client_end.send_all(data + b"\n" + b'{"jsonrpc": "2.0", "id": "after", "method": "ping"}\n')
            while b'"id":"after"' not in received:
                chunk = await client_end.receive_some()
                assert chunk, "the server ended its output without answering"
                received += chunk
            nursery.cancel_scope.cancel()
    *errors, pong = [json.loads(each) for each in received.splitlines()]
    assert pong == {"jsonrpc": "2.0", "id": "after", "result": {}}
    assert [error_shape(error) for error in errors] == answers
    warnings = [record for record in caplog.records if record.name == "streams.mcp" and record.levelname == "WARNING"]
    assert warnings, caplog.text


async def test_mcp_stdio_a_lone_surrogate_escape_in_a_request_is_read() -> None:
    """A request holding a lone surrogate escape (JSON all the same; pydantic's parser refuses it) is served
    with its id, not answered by a parse error with id null, which no client can match to its request."""
    server_end, client_end = trio.testing.memory_stream_pair()
    received = bytearray()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(serve_stdio, mcp_agents.agent, stdin=server_end, stdout=server_end))
            await client_end.send_all(b'{"jsonrpc": "2.0", "id": 9, "method": "ping", "params": {"note": "\\ud83d"}}\n')
            while not received.endswith(b"\n"):
                chunk = await client_end.receive_some()
                assert chunk, "the server ended its output without answering"
                received += chunk
            nursery.cancel_scope.cancel()
    assert json.loads(received) == {"jsonrpc": "2.0", "id": 9, "result": {}}


async def test_mcp_stdio_a_line_over_the_limit_ends_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Input that grows past MAX_LINE without a newline ends the connection: serve_stdio returns."""
    monkeypatch.setattr(_mcp, "MAX_LINE", 100)
    server_end, client_end = trio.testing.memory_stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(serve_stdio, mcp_agents.agent, stdin=server_end, stdout=server_end))
            await client_end.send_all(b"x" * 101)
    # The nursery ended: serve_stdio returned by itself, its input still open.
