"""Bad input never reaches a traceback: what a hostile client (or model) sends gets a typed answer.

Deeply nested JSON (which makes ``json.loads`` raise ``RecursionError``, not
``ValueError``), binary and non-UTF-8 WebSocket frames, a tool called with
100,000 unexpected arguments, and lone surrogates (valid JSON that UTF-8
cannot encode), each from the other side of a real socket:
Hypercorn serving on port 0, driven by httpx or a raw WebSocket client; the
model is OpenAI-compatible, streamed from a loopback server. Real sockets,
so the real clock, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import trio

from agents import Agent, OpenAIChatModel, RetryPolicy, ScriptedModel, ToolCall, UserMessage, tool
from runtime import open_gateway, open_runtime
from streams import WebhookChannel

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from agents import ModelRequest, Tool
    from agents.models import Turn
    from tests.streams.conftest import Create, OpenRawWebSocket, RunAttached, Serving

TIMEOUT: Final = 10
DEEP_ARRAY: Final = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT: Final = '{"a":' * 50_000 + "1" + "}" * 50_000
JSON: Final = {"content-type": "application/json"}


@pytest.fixture
def no_error_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The test fails if anything was logged at ERROR or above (Hypercorn logs a handler's traceback so)."""
    with caplog.at_level(logging.ERROR):
        yield
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]


def assert_typed_error(response: httpx.Response, status: int, kind: str) -> str:
    """``status`` with the body ``{"error": {"type": kind, "message": ...}}``; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind
    message = body["error"]["message"]
    assert isinstance(message, str)
    assert message
    return message


def echo_agent(*tools: Tool) -> Agent:
    def turn(request: ModelRequest) -> Turn:
        last = request.messages[-1]
        return f"echo: {last.content}" if isinstance(last, UserMessage) else "done"

    return Agent(name="bot", model=ScriptedModel(itertools.repeat(turn)), tools=list(tools))


# -- deeply nested JSON --------------------------------------------------------------


@pytest.mark.usefixtures("no_error_logged")
async def test_deeply_nested_bodies_are_422_bad_json_on_every_served_route(serving: Serving, create: Create) -> None:
    """An array 100,000 deep and an object 50,000 deep, as the body of each route that reads JSON, are
    422 bad_json in the one error shape, never a 500 and a traceback; the server serves on."""
    with trio.fail_after(TIMEOUT):
        async with serving(echo_agent()) as (server, client):
            await create(client, "s1")
            for path in ["/sessions", "/sessions/s1/runs", "/sessions/s1/elicitations/e1"]:
                for body in [DEEP_ARRAY, DEEP_OBJECT]:
                    response = await client.post(path, content=body, headers={"content-type": "application/json"})
                    assert "nested deeper than" in assert_typed_error(response, 422, "bad_json")
            assert (await client.get("/sessions/s1")).status_code == 200
            assert set(server.sessions) == {"s1"}


@pytest.mark.usefixtures("no_error_logged")
async def test_deeply_nested_webhook_bodies_are_422_bad_json() -> None:
    """The webhook channel answers an array 30,000 deep and an object 10,000 deep (under its 64 KiB
    limit) with 422 bad_json in the one error shape, and then still takes messages."""
    channel = WebhookChannel()
    async with open_runtime() as runtime, open_gateway(runtime, echo_agent(), [channel]) as gateway:
        with trio.fail_after(TIMEOUT):
            await gateway.wait_ready(channel.name)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{channel.port}", timeout=TIMEOUT) as client:
                for body in ["[" * 30_000 + "]" * 30_000, '{"a":' * 10_000 + "1" + "}" * 10_000]:
                    response = await client.post(
                        "/messages", content=body, headers={"content-type": "application/json"}
                    )
                    assert "nested deeper than" in assert_typed_error(response, 422, "bad_json")
                accepted = await client.post("/messages", json={"chat_id": "c", "text": "hi"})
                assert accepted.status_code == 202
    assert channel.statistics().rejected == 2


@pytest.mark.usefixtures("no_error_logged")
async def test_a_deeply_nested_workspace_command_gets_a_bad_json_answer(
    serving: Serving, create: Create, open_raw_websocket: OpenRawWebSocket
) -> None:
    """A workspace command nested 100,000 deep is answered ok:false with error type bad_json, and the
    connection goes on (the next command is answered), instead of closing with 1011."""
    with trio.fail_after(TIMEOUT):
        async with serving(echo_agent()) as (server, client):
            await create(client, "s1")
            async with open_raw_websocket(server.port, "/sessions/s1/workspace") as ws:
                await ws.send_text(DEEP_ARRAY)
                answer = await ws.receive_json()
                await ws.send_text(json.dumps({"id": "c2", "op": "list"}))
                after = await ws.receive_json()
    assert answer["type"] == "result"
    assert answer["ok"] is False
    assert answer["id"] is None
    assert answer["error"]["type"] == "bad_json"
    assert "nested deeper than" in answer["error"]["message"]
    assert after == {"type": "result", "id": "c2", "ok": True, "paths": []}


# -- frames that are not the protocol ------------------------------------------------


@pytest.mark.usefixtures("no_error_logged")
@pytest.mark.parametrize("path", ["/sessions/s1/workspace", "/sessions/s1/updates"])
async def test_a_binary_frame_closes_the_websocket_with_1003(
    path: str, serving: Serving, create: Create, open_raw_websocket: OpenRawWebSocket
) -> None:
    """A binary frame (the protocol is JSON text) gets close code 1003, unsupported data, not 1011."""
    with trio.fail_after(TIMEOUT):
        async with serving(echo_agent()) as (server, client):
            await create(client, "s1")
            async with open_raw_websocket(server.port, path) as ws:
                await ws.send_frame(2, b'{"id": "c1", "op": "list"}')
                code = await ws.close_code()
            assert server.statistics().websockets == 0
    assert code == 1003


@pytest.mark.usefixtures("no_error_logged")
@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        pytest.param({"opcode": 1, "payload": b'{"op": "list", "path": "\xff\xfe"}'}, 1007, id="text-not-utf8"),
        pytest.param({"opcode": 1, "payload": b'{"op": "list"}', "mask": False}, 1002, id="unmasked"),
        pytest.param({"opcode": 1, "payload": b'{"op": "list"}', "rsv": 0b100}, 1002, id="reserved-bit"),
    ],
)
async def test_a_frame_that_breaks_the_protocol_gets_a_close_frame_with_its_code(
    frame: dict[str, Any], expected: int, serving: Serving, create: Create, open_raw_websocket: OpenRawWebSocket
) -> None:
    """A text frame that is not UTF-8 gets close code 1007, a frame that breaks RFC 6455 (unmasked, a
    reserved bit set) 1002: a close frame saying why, not a dropped TCP connection."""
    with trio.fail_after(TIMEOUT):
        async with serving(echo_agent()) as (server, client):
            await create(client, "s1")
            async with open_raw_websocket(server.port, "/sessions/s1/workspace") as ws:
                await ws.send_frame(**frame)
                code = await ws.close_code()
    assert code == expected


# -- a model's tool calls ------------------------------------------------------------


def _openai_stream(*chunks: dict[str, Any] | str) -> bytes:
    return b"".join(f"data: {chunk if isinstance(chunk, str) else json.dumps(chunk)}\n\n".encode() for chunk in chunks)


def _tool_calls(*calls: tuple[str, str, str]) -> bytes:
    """A streamed turn asking for ``(call_id, name, arguments)`` calls, in one chunk each."""
    return _openai_stream(
        *(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "id": call_id,
                                    "type": "function",
                                    "function": {"name": name, "arguments": arguments},
                                }
                            ]
                        },
                    }
                ]
            }
            for index, (call_id, name, arguments) in enumerate(calls)
        ),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        "[DONE]",
    )


def _finished(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["call_id"]: event for event in events if event["type"] == "ToolCallFinished"}


def _tool_results(request_body: bytes) -> dict[str, str]:
    """The tool results a request to the model carried, by call id."""
    messages = json.loads(request_body)["messages"]
    return {message["tool_call_id"]: message["content"] for message in messages if message["role"] == "tool"}


def _model_agent(provider_server: Any, *tools: Tool) -> Agent:
    model = OpenAIChatModel("m", base_url=provider_server.base_url, api_key="k", retry=RetryPolicy(max_attempts=1))
    return Agent(name="gpt", model=model, tools=list(tools))


@pytest.mark.usefixtures("no_error_logged")
async def test_deeply_nested_tool_arguments_are_an_error_result_and_the_turn_goes_on(
    provider_server: Any, add: Tool, serving: Serving, create: Create, run_attached: RunAttached
) -> None:
    """A model's tool call whose arguments nest 100,000 deep (or 50,000) is that call's error result:
    the turn's other call runs, the model gets all three results, and the run completes (it used to
    end with an ``internal`` error, losing the other call)."""
    provider_server.queue(
        _tool_calls(
            ("call_array", "add", DEEP_ARRAY),
            ("call_object", "add", DEEP_OBJECT),
            ("call_add", "add", '{"a": 2, "b": 3}'),
        )
    )
    provider_server.queue(_openai_stream({"choices": [{"index": 0, "delta": {"content": "5"}}]}, "[DONE]"))
    with trio.fail_after(TIMEOUT):
        async with serving(_model_agent(provider_server, add)) as (_, client):
            await create(client, "s1")
            events = await run_attached(client, "s1", "add 2 and 3")
    finished = _finished(events)
    assert finished["call_add"]["result"] == 5
    assert finished["call_add"]["error"] is None
    for call_id in ["call_array", "call_object"]:
        assert finished[call_id]["error"] == (
            "the arguments for tool 'add' are not valid JSON: JSON nested deeper than 64 levels"
        )
    assert events[-1]["type"] == "RunFinished"
    assert events[-1]["reason"] == "completed"
    results = _tool_results(provider_server.requests[1].body)
    assert results["call_add"] == "5"
    assert "nested deeper than 64" in results["call_array"]
    assert "nested deeper than 64" in results["call_object"]


@pytest.mark.usefixtures("no_error_logged")
async def test_deeply_nested_tool_arguments_given_as_an_object_are_an_error_result(
    add: Tool, serving: Serving, create: Create, run_attached: RunAttached
) -> None:
    """Arguments a model hands over already parsed (a dict 100,000 deep) are refused the same way."""
    deep: dict[str, Any] = {}
    for _ in range(100_000):
        deep = {"a": deep}
    script: list[Turn] = [[ToolCall("add", deep), ToolCall("add", {"a": 1, "b": 2})], "ok"]
    agent = Agent(name="bot", model=ScriptedModel(script), tools=[add])
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (_, client):
            await create(client, "s1")
            events = await run_attached(client, "s1", "go")
    results = [(event["result"], event["error"]) for event in events if event["type"] == "ToolCallFinished"]
    assert sorted(results, key=str) == sorted(
        [(None, "the arguments for tool 'add' are nested deeper than 64 levels"), (3, None)], key=str
    )
    assert events[-1]["reason"] == "completed"


@pytest.mark.usefixtures("no_error_logged")
async def test_a_tool_called_with_100000_unexpected_arguments_gets_a_short_error(
    provider_server: Any, add: Tool, serving: Serving, create: Create, run_attached: RunAttached
) -> None:
    """The error for 100,000 unexpected arguments names a few and counts the rest: what goes back to the
    model is a few hundred characters, not every key (4 MB)."""
    arguments = {"a": 1, "b": 2, **{f"extra_{n}": n for n in range(100_000)}}
    provider_server.queue(_tool_calls(("call_1", "add", json.dumps(arguments))))
    provider_server.queue(_openai_stream({"choices": [{"index": 0, "delta": {"content": "sorry"}}]}, "[DONE]"))
    with trio.fail_after(TIMEOUT):
        async with serving(_model_agent(provider_server, add)) as (_, client):
            await create(client, "s1")
            events = await run_attached(client, "s1", "add")
    error = _finished(events)["call_1"]["error"]
    assert error.startswith("invalid arguments for tool 'add': extra_0: Extra inputs are not permitted; ")
    assert error.endswith("; and 99990 more")
    assert error.count("Extra inputs are not permitted") == 10
    assert len(error) < 1000
    assert len(_tool_results(provider_server.requests[1].body)["call_1"]) < 1000
    assert events[-1]["reason"] == "completed"


async def test_a_tool_result_nested_too_deep_for_json_is_sent_as_a_placeholder(
    serving: Serving, create: Create, run_attached: RunAttached
) -> None:
    """A tool's result nested deeper than the encoder goes still reaches the client as a ToolCallFinished (its
    result a short placeholder), the run completes, and the session goes on (it used to fail the session)."""

    @tool
    async def deep() -> list[Any]:
        """Returns a list nested 5,000 deep."""
        value: list[Any] = []
        for _ in range(5000):
            value = [value]
        return value

    agent = Agent(name="a", model=ScriptedModel([ToolCall("deep"), "done", "again"]), tools=[deep])
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (_, client):
            await create(client, "s1")
            events = await run_attached(client, "s1", "go")
            (finished,) = [event for event in events if event["type"] == "ToolCallFinished"]
            assert finished["result"] == "<list nested too deep to send as JSON>"
            assert finished["error"] is None
            assert events[-1]["type"] == "RunFinished"
            assert events[-1]["reason"] == "completed"
            again = await run_attached(client, "s1", "again")
            assert again[-1]["reason"] == "completed"
            assert (await client.get("/sessions/s1")).status_code == 200


async def test_an_unknown_tool_name_is_clipped_in_its_error() -> None:
    """A model calling a tool with a 100,000-character name gets a short error result, not the name back."""
    name = "x" * 100_000
    model = ScriptedModel([ToolCall(name), "done"])
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
        result = await session.ask("go")
    (call,) = result.tool_calls
    assert call.error is not None
    assert call.error.startswith("unknown tool 'xxxx")
    assert len(call.error) < 300


# -- lone surrogates -----------------------------------------------------------------

SURROGATE: Final = "\ud800"
"""A lone surrogate: ``"\\ud800"`` is valid JSON (``json.loads`` gives this), and UTF-8 has no bytes for it."""


def holds(value: Any, wanted: str) -> bool:
    """Whether ``value`` (JSON data) has a string holding ``wanted``, at any depth."""
    if isinstance(value, str):
        return wanted in value
    if isinstance(value, dict):
        return any(holds(item, wanted) for item in value.values())
    if isinstance(value, list):
        return any(holds(item, wanted) for item in value)
    return False


async def sse_until(
    port: int, path: str, done: Callable[[dict[str, Any]], bool], *, task_status: trio.TaskStatus[list[dict[str, Any]]]
) -> None:
    """GET the SSE stream ``path`` on a raw socket, keeping each message's data (the list given to ``started``
    once the first message came), until one satisfies ``done``; fails if the stream ends first."""
    messages: list[dict[str, Any]] = []
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
            *complete, received = received.split(b"\n\n")
            for message in complete:
                _, _, data = message.partition(b"\ndata: ")
                if data:
                    messages.append(json.loads(data))
                    if len(messages) == 1:
                        task_status.started(messages)
                    if done(messages[-1]):
                        return
    raise AssertionError(f"{path} ended: {messages}")


@pytest.mark.usefixtures("no_error_logged")
async def test_a_lone_surrogate_reaches_every_client_as_its_escape(
    serving: Serving, create: Create, open_raw_websocket: OpenRawWebSocket
) -> None:
    """A workspace file named "\\ud800" and a run whose input (echoed by the model) is "\\ud800" reach the
    workspace client, the session's feed, its updates, the run's own stream and the inspector's as that JSON
    escape, which decodes back to the same string; no connection is dropped (they were, with a
    UnicodeEncodeError: one client's input broke everyone's streams)."""
    echoed = f"echo: {SURROGATE}"
    with trio.fail_after(TIMEOUT):
        async with serving(echo_agent()) as (server, client), trio.open_nursery() as nursery:
            await create(client, "s1")
            feed = await nursery.start(sse_until, server.port, "/sessions/s1/feed", lambda m: "path" in m)
            inspector = await nursery.start(sse_until, server.port, "/inspect/events", lambda m: holds(m, echoed))
            async with (
                open_raw_websocket(server.port, "/sessions/s1/updates") as updates,
                open_raw_websocket(server.port, "/sessions/s1/workspace") as workspace,
            ):
                await workspace.send_text('{"id": 1, "op": "write", "path": "\\ud800", "content": "\\udfff"}')
                changed, written = await workspace.receive_json(), await workspace.receive_json()
                await workspace.send_text('{"id": 2, "op": "read", "path": "\\ud800"}')
                read = await workspace.receive_json()
                await workspace.send_text('{"id": 3, "op": "list"}')
                listed = await workspace.receive_json()
                run: list[dict[str, Any]] = []
                body = b'{"input": "\\ud800"}'
                async with client.stream("POST", "/sessions/s1/runs", content=body, headers=JSON) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            run.append(json.loads(line.removeprefix("data: ")))
                updated = [await updates.receive_json()]
                while updated[-1]["type"] != "RunFinished":
                    updated.append(await updates.receive_json())
    assert changed == {"type": "WorkspaceChanged", "op": "write", "path": SURROGATE, "source": "client"}
    assert written == {"type": "result", "id": 1, "ok": True}
    assert read == {"type": "result", "id": 2, "ok": True, "content": "\udfff"}
    assert listed == {"type": "result", "id": 3, "ok": True, "paths": [SURROGATE]}
    assert feed[-1] == changed
    for events in [run, updated]:
        assert "".join(event["text"] for event in events if event["type"] == "TextDelta") == echoed
        assert events[-1]["reason"] == "completed"
    assert holds(inspector[-1], echoed)


@pytest.mark.usefixtures("no_error_logged")
async def test_a_lone_surrogate_in_a_webhook_reply_is_sent_as_its_escape() -> None:
    """The webhook channel answers a reply holding a lone surrogate (the agent echoes "\\ud800") with 200 and
    that JSON escape, not a 500."""
    channel = WebhookChannel()
    async with open_runtime() as runtime, open_gateway(runtime, echo_agent(), [channel]) as gateway:
        with trio.fail_after(TIMEOUT):
            await gateway.wait_ready(channel.name)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{channel.port}", timeout=TIMEOUT) as client:
                body = b'{"chat_id": "c", "text": "\\ud800", "wait_for_response": true}'
                response = await client.post("/messages", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    assert b"\\ud800" in response.content
    assert response.json()["reply"] == f"echo: {SURROGATE}"
