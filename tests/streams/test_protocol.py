"""PROTOCOL.md says what the server sends, and the server sends what it says.

The tables of PROTOCOL.md marked ``<!-- protocol: name -->`` are parsed here.
Each test drives real exchanges over loopback (Hypercorn on port 0; httpx, raw
sockets, a raw WebSocket client) that provoke every error, message type and
close code, collects what the server really sent, and compares that with the
table: nothing sent is missing from it, and every row was sent. Real sockets,
so the real clock, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx
import pydantic
import trio
import trio.testing

from agents import Agent, FallbackModel, ScriptedModel, ServerError, ToolCall, ToolContext, UserMessage, tool
from runtime import MessageBus
from runtime.events import FINISH_REASONS, STOP_REASONS, CustomEvent, ErrorEvent
from streams import LISTENERS, ServedSession, WebhookChannel, open_server
from streams._codec import _TYPES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

    from agents import ModelRequest
    from agents.models import Turn
    from streams import Server
    from tests.streams.conftest import OpenRawWebSocket, RawWebSocket

PROTOCOL: Final = Path(__file__).resolve().parents[2] / "PROTOCOL.md"
TIMEOUT: Final = 10
TOKEN: Final = "s3cret"
AUTH: Final = {"authorization": f"Bearer {TOKEN}"}

MCP_HEADERS: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INITIALIZE: Final = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
"""MCP's first request, as any MCP client sends it (tests/streams/test_mcp_server.py drives the SDK's own)."""

NOT_SENT_THROUGH_HYPERCORN: Final = {
    ("400", "bad_request"): "h11 refuses a Content-Length that is not digits before the app (tests/test_requests.py)",
    ("499", "client_closed"): "the client has gone: nobody reads it",
}
"""Documented errors no real exchange can receive, and why."""


def protocol_table(name: str) -> list[dict[str, str]]:
    """The rows of the table after ``<!-- protocol: name -->``, each cell without its backticks."""
    lines = PROTOCOL.read_text("utf-8").splitlines()
    start = lines.index(f"<!-- protocol: {name} -->") + 1
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    header, rows = _cells(table[0]), table[2:]
    return [dict(zip(header, (cell.strip("`") for cell in _cells(row)), strict=True)) for row in rows]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def test_the_protocol_tables_parse() -> None:
    """Every machine-readable table is there and has rows (a renamed marker would empty a check)."""
    for name in ["routes", "http-errors", "webhook-errors", "run-events", "feed-messages"]:
        assert protocol_table(name), name
    for name in ["workspace-messages", "workspace-errors", "close-codes", "error-kinds", "inspect-messages"]:
        assert protocol_table(name), name
    assert ("404", "unknown_session") in {(row["status"], row["type"]) for row in protocol_table("http-errors")}


# -- an agent that asks, holds on, and echoes -----------------------------------------


@tool
async def ask(ctx: ToolContext[Any]) -> str:
    """Ask whether to go on."""
    answer = await ctx.elicit("Go on?", schema=bool, timeout=TIMEOUT)
    return f"answered {answer.content}"


class Stubborn:
    """A tool that, once cancelled, holds on (shielded) until released: the server is then closing."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.closing = trio.Event()
        self.release = trio.Event()

        @tool
        async def stubborn() -> str:
            """Hold on."""
            self.started.set()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    self.closing.set()
                    await self.release.wait()
            return "never"

        self.tool = stubborn


def protocol_agent(stubborn: Stubborn) -> Agent:
    def turn(request: ModelRequest) -> Turn:
        last = request.messages[-1]
        if not isinstance(last, UserMessage):
            return "done"
        if last.content in ("ask", "stubborn"):
            return ToolCall(last.content)
        return f"echo: {last.content}"

    return Agent(name="bot", model=ScriptedModel(itertools.repeat(turn)), tools=[ask, stubborn.tool])


# -- HTTP errors ----------------------------------------------------------------------


class Errors:
    """Every error answer seen, as ``(status, type)``; each must be in the one shape."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def note(self, response: httpx.Response, status: int, kind: str) -> None:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        compact = {json.dumps(body, separators=(",", ":"), ensure_ascii=ascii).encode() for ascii in (True, False)}
        assert response.content in compact, response.content  # PROTOCOL: "the server sends it compact"
        assert set(body) == {"error"}
        assert set(body["error"]) == {"type", "message"}
        assert isinstance(body["error"]["message"], str)
        assert body["error"]["message"]
        assert body["error"]["type"] == kind
        self.seen.add((str(response.status_code), body["error"]["type"]))


def documented_errors(table: str) -> set[tuple[str, str]]:
    return {(row["status"], row["type"]) for row in protocol_table(table)} - set(NOT_SENT_THROUGH_HYPERCORN)


async def next_sse(stream: trio.SocketStream, buffer: bytearray, kind: str) -> dict[str, Any]:
    """Read an SSE response on a raw socket until a message of type ``kind`` (any type if empty); its data."""
    while True:
        match = re.search(rb"event: (\w+)\nid: \d+\ndata: (.*)\n\n", buffer)
        if match is not None:
            found, data = match.group(1).decode(), bytes(match.group(2))
            del buffer[: match.end()]  # after reading the groups: the match reads the buffer itself
            if found == kind or not kind:
                message: dict[str, Any] = json.loads(data)
                assert message["type"] == found
                return message
            continue
        chunk = await stream.receive_some(65536)
        assert chunk, "the stream ended"
        buffer += chunk


@asynccontextmanager
async def raw_get(server: Server, path: str) -> AsyncIterator[tuple[trio.SocketStream, bytearray]]:
    """GET ``path`` on a raw socket (for SSE); the socket and what was read past the head."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        yield stream, bytearray()


async def dribbled_post(port: int, path: str) -> httpx.Response:
    """POST a JSON body that never arrives (its head says 10 bytes, one comes); the answer, read off a raw socket."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{"
        )
        await stream.send_all(head.encode())
        answer = bytearray()
        while chunk := await stream.receive_some(65536):  # the server closes once it has answered
            answer += chunk
    head_bytes, _, body = bytes(answer).partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode().split("\r\n")
    headers = [(name, value) for name, _, value in (line.partition(": ") for line in header_lines)]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


async def test_every_http_error_of_the_server_is_documented_and_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Provoking each error of PROTOCOL.md's http-errors table over real HTTP gets exactly that status and
    type, in the one shape; the set sent is the table (but for what never reaches a client)."""
    errors = Errors()
    stubborn = Stubborn()
    with trio.fail_after(TIMEOUT):
        async with (
            httpx.AsyncClient(timeout=TIMEOUT, headers=AUTH) as outside,
            trio.open_nursery() as nursery,
        ):
            async with open_server(
                protocol_agent(stubborn),
                token=TOKEN,
                max_body=4096,
                max_sessions=2,
                max_queued_runs=0,
                body_timeout=0.2,
            ) as server:
                async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                    assert (await client.post("/sessions", json={"id": "s1"})).status_code == 201
                    errors.note(await client.get("/sessions", headers={"authorization": ""}), 401, "unauthorized")
                    errors.note(await client.get("/nope"), 404, "not_found")
                    errors.note(await client.get("/sessions/nope"), 404, "unknown_session")
                    errors.note(await client.get("/sessions/s1/runs/nope/events"), 404, "unknown_run")
                    answer = {"action": "accept", "content": True}
                    errors.note(
                        await client.post("/sessions/s1/elicitations/e9", json=answer), 404, "unknown_elicitation"
                    )
                    errors.note(await client.put("/sessions"), 405, "method_not_allowed")
                    errors.note(await client.post("/sessions", json={"id": "s1"}), 409, "conflict")
                    errors.note(
                        await client.post(
                            "/sessions", content=b" " * 5000, headers={"content-type": "application/json"}
                        ),
                        413,
                        "too_large",
                    )
                    errors.note(
                        await client.post("/sessions", content=b"{", headers={"content-type": "application/json"}),
                        422,
                        "bad_json",
                    )
                    plain = {"content-type": "text/plain"}
                    errors.note(
                        await client.post("/sessions", content=b'{"id": "s9"}', headers=plain),
                        415,
                        "unsupported_media_type",
                    )
                    foreign = {"origin": "http://evil.example"}
                    errors.note(await client.get("/sessions", headers=foreign), 403, "forbidden_origin")
                    errors.note(await client.get("/sessions", headers={"host": "evil.example"}), 403, "forbidden_host")
                    errors.note(await dribbled_post(server.port, "/sessions"), 408, "timeout")
                    errors.note(await client.post("/sessions/s1/runs", json={"input": 5}), 422, "bad_request")
                    errors.note(await client.post("/sessions", json={"id": "a/b"}), 422, "bad_session_id")

                    # A question waiting for its answer: a wrong answer, then the right one.
                    detached = await client.post("/sessions/s1/runs", json={"input": "ask", "detach": True})
                    run_id = detached.json()["run_id"]
                    async with raw_get(server, f"/sessions/s1/runs/{run_id}/events") as (stream, buffer):
                        question = await next_sse(stream, buffer, "ElicitationRequest")
                        url = f"/sessions/s1/elicitations/{question['id']}"
                        wrong = {"action": "accept", "content": "maybe"}
                        errors.note(await client.post(url, json=wrong), 422, "invalid_answer")
                        assert (await client.post(url, json=answer)).status_code == 204
                        assert (await next_sse(stream, buffer, "RunFinished"))["reason"] == "completed"

                    with monkeypatch.context() as patch:

                        def broken(self: ServedSession) -> dict[str, Any]:
                            raise RuntimeError("a bug")

                        patch.setattr(ServedSession, "describe", broken)
                        errors.note(await client.get("/sessions/s1"), 500, "internal")

                    with monkeypatch.context() as patch:
                        patch.setitem(sys.modules, "streams._mcp", None)  # as if the mcp extra were not installed
                        errors.note(
                            await client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS), 501, "mcp_unavailable"
                        )

                    assert (await client.post("/sessions", json={"id": "s2"})).status_code == 201
                    errors.note(await client.post("/sessions", json={"id": "s3"}), 503, "too_many_sessions")
                    assert (
                        await client.post("/sessions/s2/runs", json={"input": "stubborn", "detach": True})
                    ).is_success
                    await stubborn.started.wait()
                    errors.note(
                        await client.post("/sessions/s2/runs", json={"input": "hi", "detach": True}),
                        503,
                        "too_many_runs",
                    )

                async def during_shutdown() -> None:
                    await stubborn.closing.wait()  # the server is closing its sessions, still serving
                    errors.note(await outside.post(f"{server.url}/sessions"), 503, "shutting_down")
                    stubborn.release.set()

                nursery.start_soon(during_shutdown)
    assert errors.seen == documented_errors("http-errors")


async def test_every_http_error_of_the_webhook_is_documented_and_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for the webhook channel's webhook-errors table."""
    errors = Errors()
    bus = MessageBus(inbound_size=1)  # nobody reads it: the first message fills it
    channel = WebhookChannel(secret=TOKEN, max_body=1024, publish_timeout=0.05, response_timeout=0.05, body_timeout=0.2)
    blocked = WebhookChannel(name="blocked", secret=TOKEN, publish_timeout=TIMEOUT)
    answered = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(timeout=TIMEOUT, headers=AUTH) as client, trio.open_nursery() as nursery:
            await nursery.start(channel.run, bus)
            url = f"http://127.0.0.1:{channel.port}/messages"
            message = {"chat_id": "c", "text": "hi"}
            errors.note(await client.post(url, json=message, headers={"authorization": ""}), 401, "unauthorized")
            errors.note(await client.post(f"{url}/nope", json=message), 404, "not_found")
            errors.note(await client.get(url), 405, "method_not_allowed")
            errors.note(
                await client.post(url, content=b" " * 2000, headers={"content-type": "application/json"}),
                413,
                "too_large",
            )
            errors.note(
                await client.post(url, content=b"[", headers={"content-type": "application/json"}), 422, "bad_json"
            )
            plain = {"content-type": "text/plain"}
            errors.note(await client.post(url, content=b"{}", headers=plain), 415, "unsupported_media_type")
            foreign = {"origin": "http://evil.example"}
            errors.note(await client.post(url, json=message, headers=foreign), 403, "forbidden_origin")
            errors.note(await client.post(url, json=message, headers={"host": "evil.example"}), 403, "forbidden_host")
            errors.note(await dribbled_post(channel.port, "/messages"), 408, "timeout")
            errors.note(await client.post(url, json={"chat_id": 5, "text": "hi"}), 422, "bad_request")
            with monkeypatch.context() as patch:

                def broken(body: bytes) -> tuple[str, str, bool]:
                    raise RuntimeError("a bug")

                patch.setattr(WebhookChannel, "_parse", staticmethod(broken))
                errors.note(await client.post(url, json=message), 500, "internal")
            waiting = {**message, "wait_for_response": True}
            errors.note(await client.post(url, json=waiting), 504, "no_reply")  # it fills the bus
            errors.note(await client.post(url, json=message), 503, "bus_full")

            # A request parked on the full bus when the channel stops is answered 503 shutting_down.
            async with trio.open_nursery() as serving:
                await serving.start(blocked.run, bus)

                async def post() -> None:
                    blocked_url = f"http://127.0.0.1:{blocked.port}/messages"
                    errors.note(await client.post(blocked_url, json=message), 503, "shutting_down")
                    answered.set()

                nursery.start_soon(post)
                await trio.testing.wait_all_tasks_blocked()  # the server task (this loop) parks on the bus
                assert blocked.statistics().publishing == 1
                serving.cancel_scope.cancel()
            await answered.wait()
            nursery.cancel_scope.cancel()
    bus.close()
    assert errors.seen == documented_errors("webhook-errors")


# -- SSE and WebSocket messages, close codes ----------------------------------------------


def documented_types(table: str) -> set[str]:
    return {row["type"] for row in protocol_table(table)}


async def test_run_events_are_the_runtime_events_and_a_run_sends_only_documented_ones(
    open_raw_websocket: OpenRawWebSocket,
) -> None:
    """The run-events table lists every event type the codec knows, plus EventsDropped; a run that
    calls a tool and asks a question sends only those, over SSE and the updates WebSocket alike, each
    SSE message named by its type."""
    assert documented_types("run-events") == set(_TYPES) | {"EventsDropped"}
    with trio.fail_after(TIMEOUT):
        async with open_server(protocol_agent(Stubborn()), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                await client.post("/sessions", json={"id": "s1"})
                async with open_raw_websocket(server.port, "/sessions/s1/updates", headers=AUTH) as updates:
                    await trio.testing.wait_all_tasks_blocked()
                    run = await client.post("/sessions/s1/runs", json={"input": "ask", "detach": True})
                    async with raw_get(server, f"/sessions/s1/runs/{run.json()['run_id']}/events") as (stream, buffer):
                        question = await next_sse(stream, buffer, "ElicitationRequest")
                        answer = {"action": "accept", "content": True}
                        await client.post(f"/sessions/s1/elicitations/{question['id']}", json=answer)
                        await next_sse(stream, buffer, "RunFinished")
                    sent = [await updates.receive_json()]
                    while sent[-1]["type"] != "RunFinished":
                        sent.append(await updates.receive_json())
    assert {message["type"] for message in sent} <= documented_types("run-events")
    assert {"RunStarted", "ToolCallStarted", "ElicitationRequest", "ToolCallFinished", "RunFinished"} <= {
        message["type"] for message in sent
    }


def documented_fields(event_type: str) -> set[str]:
    """The field names of a run-events row: its backticked words outside parentheses."""
    (row,) = [row for row in protocol_table("run-events") if row["type"] == event_type]
    outside = re.sub(r"\([^)]*\)", "", row["fields"])
    return set(re.findall(r"`(\w+)`", f"`{outside}`"))


def documented_values(event_type: str, field: str) -> set[str]:
    """The values a run-events row lists in parentheses after ``field``."""
    (row,) = [row for row in protocol_table("run-events") if row["type"] == event_type]
    match = re.search(rf"{field}`? \(([^)]*)\)", row["fields"])
    assert match is not None, row
    return set(re.findall(r"`(\w+)`", match.group(1)))


def test_the_documented_reasons_and_error_kinds_are_the_runtimes() -> None:
    """RunFinished's reasons and ModelStopped's are exactly the runtime's; the error-kinds table is
    ErrorEvent's list, each with the RunFinished reason that follows it."""
    assert documented_values("RunFinished", "reason") == FINISH_REASONS
    assert documented_values("ModelStopped", "reason") == STOP_REASONS
    kinds = {row["kind"] for row in protocol_table("error-kinds")}
    assert kinds == set(re.findall(r'``"(\w+)"``', ErrorEvent.__doc__ or ""))
    assert {row["finish reason"] for row in protocol_table("error-kinds")} <= FINISH_REASONS


class Forecast(pydantic.BaseModel):
    """A typed output."""

    city: str
    days: list[str]


@attrs.frozen
class Measured(CustomEvent):
    """A user's event."""

    value: float


def unavailable(request: ModelRequest) -> Turn:
    """A scripted turn whose model is down."""
    raise ServerError("down: HTTP 503", status=503, provider="down")


@tool
async def measure(ctx: ToolContext[Any]) -> str:
    """Measure, reporting progress and a custom event."""
    await ctx.report_progress(1, total=2, message="half")
    await ctx.emit(Measured(0.5))
    return "measured"


async def test_a_typed_run_with_progress_and_custom_events_sends_the_documented_fields() -> None:
    """A served run with a fallback, streamed arguments, progress, a custom event and a typed output
    sends each event with exactly the fields its run-events row lists (a custom event: its name and its own)."""
    final = ToolCall("final_result", {"city": "Paris", "days": ["sun", "rain"]})
    model = ScriptedModel([ToolCall("measure"), final], stream_arguments=True)
    down = ScriptedModel(itertools.repeat(unavailable), name="down")
    agent = Agent(name="bot", model=FallbackModel(down, model), tools=[measure], output_type=Forecast)
    sent: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT):
        async with open_server(agent, token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                await client.post("/sessions", json={"id": "s1"})
                run = await client.post("/sessions/s1/runs", json={"input": "go", "detach": True})
                async with raw_get(server, f"/sessions/s1/runs/{run.json()['run_id']}/events") as (stream, buffer):
                    while not sent or sent[-1]["type"] != "RunFinished":
                        sent.append(await next_sse(stream, buffer, ""))
    types = [message["type"] for message in sent]
    expected = {"ModelFallback", "ToolCallDelta", "ToolProgress", "CustomEvent", "ModelStopped", "OutputDelta"}
    assert expected | {"FinalOutput"} <= set(types)
    assert set(types) <= documented_types("run-events")
    for message in sent:
        if message["type"] == "CustomEvent":
            assert message == {"type": "CustomEvent", "name": "Measured", "value": 0.5, "run_id": "s1-r1"}
        else:  # every message has the wire's run_id
            assert set(message) - {"type"} == documented_fields(message["type"]) | {"run_id"}, message
    assert sent[-1]["reason"] == "completed"


async def test_the_feed_sends_exactly_the_documented_messages() -> None:
    """A feed that sees a state change, a workspace change, a notice, falls behind, and then its
    session's close, sends exactly the feed-messages types, each SSE event named by its type."""
    seen: list[tuple[str, str]] = []
    with trio.fail_after(TIMEOUT):
        async with open_server(protocol_agent(Stubborn()), token=TOKEN, subscriber_buffer=2) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                await client.post("/sessions", json={"id": "s1"})
                served = server.sessions["s1"]
                async with raw_get(server, "/sessions/s1/feed") as (stream, buffer):
                    await next_sse(stream, buffer, "SessionState")  # subscribed
                    received = bytearray(buffer)
                    served.workspace.write("a.txt", "A")
                    await trio.testing.wait_all_tasks_blocked()  # sent: the burst cannot drop it
                    for n in range(5):  # at once: more than the buffer of 2
                        served.notify(f"notice {n}")
                    await client.delete("/sessions/s1")
                    while not received.endswith(b"\r\n0\r\n\r\n"):  # the chunked response's end
                        chunk = await stream.receive_some(65536)
                        assert chunk, received
                        received += chunk
    for kind, data in re.findall(rb"event: (\w+)\nid: \d+\ndata: (.*)\n\n", received):
        seen.append((kind.decode(), json.loads(data)["type"]))
    assert all(kind == data_type for kind, data_type in seen)
    assert {kind for kind, _ in seen} == documented_types("feed-messages")


async def test_the_workspace_sends_the_documented_messages_and_error_types(
    open_raw_websocket: OpenRawWebSocket,
) -> None:
    """Commands that fail in each documented way get exactly the workspace-errors types; with changes
    and a burst past the buffer, the connection sends exactly the workspace-messages types."""
    with trio.fail_after(TIMEOUT):
        async with open_server(protocol_agent(Stubborn()), token=TOKEN, subscriber_buffer=2) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                await client.post("/sessions", json={"id": "s1"})
                served = server.sessions["s1"]
                served.workspace.write("huge", "\n" * (8 * 2**20 + 1))  # over 16 MiB as JSON
                served.workspace.max_bytes = 10
                async with open_raw_websocket(server.port, "/sessions/s1/workspace", headers=AUTH) as ws:
                    failing = [
                        "{",
                        json.dumps({"id": 1, "op": "explode", "path": "a"}),
                        json.dumps({"id": 2, "op": "read", "path": ""}),
                        json.dumps({"id": 3, "op": "read", "path": "missing"}),
                        json.dumps({"id": 4, "op": "write", "path": "big", "content": "x" * 11}),
                        json.dumps({"id": 5, "op": "read", "path": "huge"}),
                    ]
                    answers = []
                    for command in failing:
                        await ws.send_text(command)
                        answers.append(await ws.receive_json())
                    served.workspace.delete("huge")
                    await trio.testing.wait_all_tasks_blocked()
                    for n in range(5):  # at once: more than the buffer of 2
                        served.workspace.write(f"{n}", "x")
                    await ws.send_text(json.dumps({"id": 6, "op": "list"}))
                    messages = [await ws.receive_json()]
                    while messages[-1]["type"] != "result":
                        messages.append(await ws.receive_json())
    assert all(answer["type"] == "result" and answer["ok"] is False for answer in answers)
    assert [answer["error"]["type"] for answer in answers] == [
        "bad_json",
        "bad_command",
        "bad_path",
        "no_such_file",
        "workspace_full",
        "too_large",
    ]
    assert {answer["error"]["type"] for answer in answers} == documented_types("workspace-errors")
    assert {message["type"] for message in [*answers, *messages]} == documented_types("workspace-messages")


async def _close_code_after(ws: RawWebSocket, opcode: int, payload: bytes, **frame: Any) -> int | None:
    await ws.send_frame(opcode, payload, **frame)
    return await ws.close_code()


async def test_every_close_code_is_documented_and_sent(open_raw_websocket: OpenRawWebSocket) -> None:
    """Deleting the session, shutting down, and each frame that breaks the protocol close a WebSocket
    with exactly the close-codes table's codes."""
    codes: set[int | None] = set()
    path = "/sessions/s1/workspace"
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with open_server(protocol_agent(Stubborn()), token=TOKEN) as server:
                async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                    await client.post("/sessions", json={"id": "s1"})
                    async with open_raw_websocket(server.port, path, headers=AUTH) as ws:
                        await trio.testing.wait_all_tasks_blocked()
                        await client.delete("/sessions/s1")
                        codes.add(await ws.close_code())
                    await client.post("/sessions", json={"id": "s1"})
                    for opcode, payload, frame in [
                        (1, b'{"op": "list"}', {"mask": False}),
                        (2, b'{"op": "list"}', {}),
                        (1, b"\xff", {}),
                        (1, b" " * (16 * 2**20 + 1), {}),
                    ]:
                        async with open_raw_websocket(server.port, path, headers=AUTH) as ws:
                            codes.add(await _close_code_after(ws, opcode, payload, **frame))
                connected = trio.Event()
                shut: list[int | None] = []

                async def until_shutdown() -> None:
                    async with open_raw_websocket(server.port, path, headers=AUTH) as ws:
                        connected.set()
                        shut.append(await ws.close_code())

                nursery.start_soon(until_shutdown)
                await connected.wait()
                await trio.testing.wait_all_tasks_blocked()
            codes.update(shut)
    assert codes == {int(row["code"]) for row in protocol_table("close-codes")}


# -- routes ---------------------------------------------------------------------------------


async def mcp_request(client: httpx.AsyncClient, method: str) -> int:
    """The status of ``method`` on ``/mcp``: an initialize (POST), or in the MCP session it opened (GET, DELETE)."""
    opened = await client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    if method == "POST":
        return opened.status_code
    session = {"mcp-session-id": opened.headers["mcp-session-id"]}
    if method == "GET":
        async with client.stream("GET", "/mcp", headers={**session, "accept": "text/event-stream"}) as response:
            return response.status_code
    return (await client.delete("/mcp", headers=session)).status_code


async def test_every_documented_route_answers_as_documented(open_raw_websocket: OpenRawWebSocket) -> None:
    """Each row of the routes table, requested as it says, answers its success status; the server has
    no route the table does not list."""
    rows = protocol_table("routes")
    statuses: dict[tuple[str, str, str], int] = {}
    with trio.fail_after(TIMEOUT):
        async with open_server(protocol_agent(Stubborn()), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                for row in rows:
                    method, path, body = row["method"], row["path"], row["body"]
                    concrete = path.replace("{id}", "s1").replace("{run_id}", "s1-r1")
                    if method == "WS":
                        async with open_raw_websocket(server.port, concrete, headers=AUTH):
                            status = 101
                    elif "{eid}" in path:
                        run = await client.post("/sessions/s1/runs", json={"input": "ask", "detach": True})
                        async with raw_get(server, f"/sessions/s1/runs/{run.json()['run_id']}/events") as sse:
                            question = await next_sse(*sse, "ElicitationRequest")
                            answer = {"action": "decline"}
                            url = concrete.replace("{eid}", question["id"])
                            status = (await client.post(url, json=answer)).status_code
                    elif path == "/mcp":
                        status = await mcp_request(client, method)
                    elif path.endswith("/cancel"):
                        run = await client.post("/sessions/s1/runs", json={"input": "ask", "detach": True})
                        url = concrete.replace("s1-r1", run.json()["run_id"])
                        status = (await client.post(url)).status_code
                    elif method == "DELETE":
                        status = (await client.delete(concrete)).status_code
                        await client.post("/sessions", json={"id": "s1"})
                    elif method == "POST":
                        json_body: dict[str, Any] = {}
                        if path == "/sessions":
                            json_body = {"id": "s1"}
                        elif path == "/inspect/login":
                            json_body = {"token": TOKEN}
                        elif "input" in body:
                            json_body = {"input": "hello", **({"detach": True} if "detach" in body else {})}
                        status = (await client.post(concrete, json=json_body)).status_code
                    elif path.endswith(("/events", "/feed")):
                        async with client.stream("GET", concrete) as response:
                            status = response.status_code
                    else:
                        status = (await client.get(concrete.replace("{file}", "inspect.js"))).status_code
                    statuses[(method, path, body)] = status
            served_paths = {route.path for route in server.app.routes}  # type: ignore[attr-defined]
    expected = {(row["method"], row["path"], row["body"]): int(row["success"][:3]) for row in rows}
    assert statuses == expected
    assert served_paths == {row["path"].replace("{id}", "{sid}").replace("{run_id}", "{rid}") for row in rows}


def documented_inspect_fields(message_type: str) -> set[str]:
    """The field names of an inspect-messages row: its backticked words outside parentheses."""
    (row,) = [row for row in protocol_table("inspect-messages") if row["type"] == message_type]
    outside = re.sub(r"\([^)]*\)", "", row["fields"])
    return set(re.findall(r"`(\w+)`", f"`{outside}`"))


async def test_the_inspector_sends_exactly_the_documented_messages() -> None:
    """The inspector's stream, while sessions open, run, close and a remote listener comes and goes, sends
    exactly the inspect-messages types, each with the fields its row lists (``listeners`` when they changed)."""
    seen: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT):
        async with open_server(protocol_agent(Stubborn()), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                await client.post("/sessions", json={"id": "s1"})
                async with raw_get(server, "/inspect/events") as (stream, buffer):
                    seen.append(await next_sse(stream, buffer, "Snapshot"))
                    await client.post("/sessions/s1/runs", json={"input": "hello"})
                    await client.delete("/sessions/s1")
                    with LISTENERS.claim(("http://elsewhere", "s9")):
                        while not any("s1" in message.get("closed", ()) for message in seen):
                            seen.append(await next_sse(stream, buffer, "Changed"))
                        while not any(message.get("listeners") for message in seen[1:]):
                            seen.append(await next_sse(stream, buffer, "Changed"))
    assert {message["type"] for message in seen} == documented_types("inspect-messages")
    for message in seen:
        fields = set(message) - {"type"}
        assert fields <= documented_inspect_fields(message["type"]) | {"listeners"}, message
        assert fields >= documented_inspect_fields(message["type"]) - {"listeners"}, message
