"""OpenAIChatModel against a real loopback server: recorded streams, errors, retries and cancellation."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Final

import httpx
import pydantic
import pytest
import trio
import trio.testing

from agents import (
    Agent,
    AssistantMessage,
    AuthenticationError,
    BadRequestError,
    MalformedStreamError,
    ModelChunk,
    ModelConnectionError,
    ModelRequest,
    OpenAIChatModel,
    OutputSchema,
    ProviderError,
    RateLimitError,
    ReasoningBlock,
    ReasoningChunk,
    RefusalChunk,
    RetryPolicy,
    ServerError,
    StopChunk,
    StopReason,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolResultMessage,
    UsageChunk,
    UserMessage,
    tool,
)
from runtime import open_runtime
from runtime.events import (
    ErrorEvent,
    Event,
    ModelStopped,
    ReasoningDelta,
    Refusal,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
)

SHARED_FIXTURES: Final = Path(__file__).resolve().parents[4] / "shared" / "fixtures"
"""The shared test data: ``../shared/fixtures`` beside the checkout, and nowhere else."""
STREAMS = SHARED_FIXTURES / "llm_streams"
CASES = sorted(
    path
    for provider in ("openai", "deepseek", "groq", "openrouter", "vllm")
    for path in (STREAMS / provider).glob("*.json")
)
FINISH_REASONS: Final[dict[str, StopReason]] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "content_filter",
}
"""What each ``finish_reason`` means as a stop reason (any other is ``"other"``)."""
RUN_LIMIT = 10.0
"""Seconds any one run against the loopback server may take before the test fails."""
ONE_TRY = RetryPolicy(max_attempts=1)


def _case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return case


def _body(provider: str, name: str) -> bytes:
    return (STREAMS / provider / f"{name}.sse").read_bytes()


def _serve_case(server: Any, path: Path, **options: Any) -> dict[str, Any]:
    case = _case(path)
    server.serve(
        (path.parent / case["body_file"]).read_bytes(),
        status=case["http_status"],
        content_type=case["content_type"],
        **options,
    )
    return case


def _model(server: Any, *, retry: RetryPolicy = ONE_TRY, **settings: Any) -> OpenAIChatModel:
    return OpenAIChatModel("m", base_url=server.base_url, api_key="k", retry=retry, **settings)


def _agent(server: Any, *, retry: RetryPolicy = ONE_TRY) -> Agent:
    return Agent(name="gpt", model=_model(server, retry=retry), max_turns=1)


def _sse(*chunks: dict[str, Any] | str) -> bytes:
    """An OpenAI-style stream: one ``data:`` block per chunk (strings are sent as they are)."""
    return b"".join(f"data: {chunk if isinstance(chunk, str) else json.dumps(chunk)}\n\n".encode() for chunk in chunks)


def _error_body(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "test_error", "code": None}}).encode()


async def _run(agent: Agent, prompt: str = "hi", limit: float = RUN_LIMIT, **runtime_options: Any) -> list[Event]:
    with trio.fail_after(limit):
        async with open_runtime(**runtime_options) as runtime, runtime.open_session(agent) as session:
            async with session.run(prompt) as stream:
                return [event async for event in stream]


async def _chunks(model: OpenAIChatModel, prompt: str = "hi") -> list[ModelChunk]:
    """Drive the model alone (its own client), so its typed exceptions reach the test."""
    with trio.fail_after(RUN_LIMIT):
        async with model.stream(ModelRequest("", (UserMessage(prompt),))) as chunks:
            return [chunk async for chunk in chunks]


def _finished(events: list[Event]) -> RunFinished:
    finishes = [event for event in events if isinstance(event, RunFinished)]
    assert len(finishes) == 1
    assert events[-1] is finishes[0]
    return finishes[0]


def _errors(events: list[Event]) -> list[ErrorEvent]:
    return [event for event in events if isinstance(event, ErrorEvent)]


def _the_error(events: list[Event]) -> ErrorEvent:
    """The run's one ErrorEvent, checking the run then finished with ``error``."""
    errors = _errors(events)
    assert len(errors) == 1, events
    assert _finished(events).reason == "error"
    return errors[0]


def _text(events: list[Event]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def _reasoning(events: list[Event]) -> str:
    return "".join(event.text for event in events if isinstance(event, ReasoningDelta))


def _tool_calls(events: list[Event]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.call_id, e.name, e.arguments) for e in events if isinstance(e, ToolCallStarted)]


def _usage(events: list[Event]) -> list[tuple[int, int]]:
    return [(event.input_tokens, event.output_tokens) for event in events if isinstance(event, Usage)]


def _comparable(events: list[Event]) -> tuple[list[Event], list[ToolCallFinished]]:
    """The events but RunStarted (its run id names the session), parallel tool calls' ends in call-id order."""
    ends = sorted((e for e in events if isinstance(e, ToolCallFinished)), key=lambda e: e.call_id)
    return [e for e in events[1:] if not isinstance(e, ToolCallFinished)], ends


def _check_expect(events: list[Event], expect: dict[str, Any]) -> None:
    """What the consumer saw is what the fixture's ``expect`` says a correct client rebuilds."""
    assert _text(events) == (expect["text"] or "")
    assert _reasoning(events) == (expect.get("reasoning") or "")
    assert _tool_calls(events) == [(call["id"], call["name"], call["arguments"]) for call in expect["tool_calls"]]
    error = expect["error"]
    if error is None:
        assert _errors(events) == []
        assert _finished(events).reason == ("max_turns" if expect["tool_calls"] else "completed")
        usage = expect["usage"]
        assert _usage(events) == ([] if usage is None else [(usage["prompt_tokens"], usage["completion_tokens"])])
        finish = expect["finish_reason"]
        assert _stops(events) == ([] if finish is None else [ModelStopped(FINISH_REASONS[finish], finish)])
    else:
        event = _the_error(events)
        assert event.kind == "model"
        assert error["message"] in event.message
        assert _stops(events) == []  # an error ends the stream with no stop reason, even one sent before it


def _stops(events: list[Event]) -> list[ModelStopped]:
    return [event for event in events if isinstance(event, ModelStopped)]


@pytest.mark.parametrize("path", CASES, ids=[f"{path.parent.name}/{path.stem}" for path in CASES])
async def test_openai_fixture_stream_rebuilds_the_expected_response(provider_server: Any, path: Path) -> None:
    """Each recorded stream, served byte for byte, gives the consumer the text, reasoning, calls, usage or error."""
    case = _serve_case(provider_server, path)
    events = await _run(_agent(provider_server))
    assert isinstance(events[0], RunStarted)
    _check_expect(events, case["expect"])
    assert [(r.method, r.path) for r in provider_server.requests] == [("POST", "/chat/completions")]


@pytest.mark.parametrize("path", CASES, ids=[f"{path.parent.name}/{path.stem}" for path in CASES])
async def test_openai_fixture_stream_served_slowly_gives_the_same_events(provider_server: Any, path: Path) -> None:
    """A server that sends the stream a byte or three at a time (splitting lines and UTF-8) changes nothing."""
    case = _serve_case(provider_server, path)
    whole = await _run(_agent(provider_server))
    # One byte at a time, except the large cases: 3 still splits every 4-byte character (deepseek's emoji).
    _serve_case(provider_server, path, chunk_size=1 if case["body_bytes"] < 5000 else 3)
    slow = await _run(_agent(provider_server), limit=3 * RUN_LIMIT)  # 22,000 sends for the largest: a busy CI is slow
    assert _comparable(slow) == _comparable(whole)
    _check_expect(slow, case["expect"])


async def test_openai_http_error_fixture_is_a_bad_request_error(provider_server: Any) -> None:
    """The recorded 400 raises BadRequestError carrying the status and the provider's own message, untried again."""
    case = _serve_case(provider_server, STREAMS / "openai" / "error_400_unsupported_value.json")
    with pytest.raises(BadRequestError) as caught:
        await _chunks(_model(provider_server, retry=RetryPolicy(0.01, max_attempts=3)))
    assert caught.value.status == 400
    assert caught.value.provider == "openai"
    assert caught.value.provider_message == case["expect"]["error"]["message"]
    assert case["expect"]["error"]["message"] in str(caught.value)
    assert len(provider_server.requests) == 1


async def test_openai_usage_in_an_error_chunk_is_still_reported(provider_server: Any) -> None:
    """OpenRouter's error chunk carries the tokens spent: a Usage event comes before the ErrorEvent."""
    case = _serve_case(provider_server, STREAMS / "openrouter" / "minimax_reasoning_comments_stream_error.json")
    events = await _run(_agent(provider_server))
    usage = case["expect"]["usage"]
    assert _usage(events) == [(usage["prompt_tokens"], usage["completion_tokens"])]
    assert [type(e) for e in events if isinstance(e, Usage | ErrorEvent)] == [Usage, ErrorEvent]


_USAGE_EVERY_CHUNK = {"prompt_tokens": 1200, "completion_tokens": 2, "total_tokens": 1202}


@pytest.mark.parametrize("ending", ["connection-broken", "cut-off"])
async def test_openai_usage_received_before_the_stream_failed_is_counted(provider_server: Any, ending: str) -> None:
    """Usage a server sent in its chunks (vLLM's continuous usage stats) counts when the stream then breaks, or
    ends before a finish_reason: those tokens were billed. Usage, then the error, from the model and in a run."""
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "Hello"}}], "usage": _USAGE_EVERY_CHUNK},
        {"choices": [{"index": 0, "delta": {"content": " world"}}], "usage": _USAGE_EVERY_CHUNK},
    ]
    if ending == "connection-broken":
        head = _sse(*chunks)
        provider_server.serve(head + _sse({"choices": [], "usage": _USAGE_EVERY_CHUNK}, "[DONE]"), drop_after=len(head))
        error: type[Exception] = ModelConnectionError
    else:
        provider_server.serve(_sse(*chunks))
        error = MalformedStreamError
    seen: list[ModelChunk] = []
    with trio.fail_after(RUN_LIMIT), pytest.raises(error):
        async with _model(provider_server).stream(ModelRequest("", (UserMessage("hi"),))) as stream:
            async for chunk in stream:
                seen.append(chunk)
    assert seen[-1] == UsageChunk(1200, 2)

    events = await _run(_agent(provider_server))
    assert _usage(events) == [(1200, 2)]
    assert [type(e) for e in events if isinstance(e, Usage | ErrorEvent)] == [Usage, ErrorEvent]
    assert _finished(events).reason == "error"


@pytest.mark.parametrize("text", ["", "The answer is"])
async def test_openai_llama_cpp_error_line_ends_the_run_with_an_error(provider_server: Any, text: str) -> None:
    """llama.cpp's server reports an error met mid-stream as an ``error: {...}`` line (not an SSE field), then
    ``data: [DONE]``: the run ends with the provider's message as an ErrorEvent and RunFinished("error"), not as
    a completed (empty or cut-off) answer."""
    error = {"code": 400, "message": "the request exceeds the available context size", "type": "exceed_context_size"}
    head = _sse(_delta(role="assistant", content=text)) if text else b""
    provider_server.serve(head + f"error: {json.dumps(error)}\n\n".encode() + _sse("[DONE]"))
    events = await _run(_agent(provider_server))
    assert [event.message for event in events if isinstance(event, ErrorEvent)] == [
        "the request exceeds the available context size"
    ]
    assert _finished(events).reason == "error"
    assert "".join(event.text for event in events if isinstance(event, TextDelta)) == text


async def test_openai_tool_calls_split_across_chunks_are_assembled(provider_server: Any) -> None:
    """Two calls whose id, name and argument fragments arrive interleaved across chunks are rebuilt in index order,
    each fragment streamed first as a delta with the call's id and name so far."""

    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": index, **fields}]}}]}

    provider_server.serve(
        _sse(
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
            call(0, id="call_a", type="function", function={"name": "get_"}),
            call(1, id="call_b", type="function", function={"name": "lookup", "arguments": '{"q"'}),
            call(0, function={"name": "weather", "arguments": '{"city": '}),
            call(1, function={"arguments": ': "x"}'}),
            call(0, function={"arguments": '"Oslo"}'}),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            "[DONE]",
        )
    )
    chunks = await _chunks(_model(provider_server))
    assert chunks == [
        ToolCallDeltaChunk("call_b", "lookup", '{"q"'),
        ToolCallDeltaChunk("call_a", "get_weather", '{"city": '),
        ToolCallDeltaChunk("call_b", "lookup", ': "x"}'),
        ToolCallDeltaChunk("call_a", "get_weather", '"Oslo"}'),
        ToolCallChunk("call_a", "get_weather", '{"city": "Oslo"}'),
        ToolCallChunk("call_b", "lookup", '{"q": "x"}'),
        StopChunk("tool_use", "tool_calls"),
    ]


async def test_openai_text_reasoning_and_usage_chunks(provider_server: Any) -> None:
    """Text and reasoning deltas stream in order, and a usage-only chunk becomes one UsageChunk at the end."""
    provider_server.serve(
        _sse(
            {"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]},
            {"choices": [{"index": 0, "delta": {"reasoning": "ing"}}]},
            {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
            {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}},
            "[DONE]",
        )
    )
    events = await _run(_agent(provider_server))
    assert [e for e in events if isinstance(e, TextDelta | ReasoningDelta | Usage)] == [
        ReasoningDelta("think"),
        ReasoningDelta("ing"),
        TextDelta("Hel"),
        TextDelta("lo"),
        Usage(7, 3),
    ]
    assert _finished(events) == RunFinished("completed")


async def test_openai_request_body_and_headers(provider_server: Any) -> None:
    """The first request carries the model, system-first messages, function tools, streaming with usage and the key."""

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    provider_server.queue(_body("openai", "chat_tool_call"))
    provider_server.queue(_body("openai", "chat_text_usage"))
    model = OpenAIChatModel(
        "gpt-test", base_url=f"{provider_server.base_url}/v1/", api_key="sk-test", retry=ONE_TRY, temperature=0.25
    )
    agent = Agent(name="gpt", model=model, instructions="Be brief.", tools=[get_weather], max_turns=2)
    events = await _run(agent, "weather in Mexico City?")
    assert _finished(events) == RunFinished("completed")
    assert _text(events) == "The capital of Mexico is Mexico City."

    first, second = provider_server.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["accept"] == "text/event-stream"
    body = json.loads(first.body)
    assert body["model"] == "gpt-test"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.25
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather in Mexico City?"},
    ]
    [spec] = body["tools"]
    assert spec["type"] == "function"
    assert spec["function"]["name"] == "get_weather"
    assert spec["function"]["description"] == "The weather in a city."
    assert spec["function"]["parameters"]["type"] == "object"
    assert "city" in spec["function"]["parameters"]["properties"]

    messages = json.loads(second.body)["messages"]
    assert messages[:2] == body["messages"]
    assistant, tool_result = messages[2:]
    call_id = "call_LwxJUB9KppVyogRRLQsamRJv"
    assert assistant["role"] == "assistant"
    assert assistant["content"] is None
    [call] = assistant["tool_calls"]
    assert (call["id"], call["type"], call["function"]["name"]) == (call_id, "function", "get_weather")
    assert json.loads(call["function"]["arguments"]) == {"city": "Mexico City"}
    assert tool_result == {"role": "tool", "tool_call_id": call_id, "content": "sunny in Mexico City"}


async def test_openai_base_url_and_api_key_default_to_the_environment(
    provider_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without arguments the model posts to ``$OPENAI_BASE_URL/chat/completions`` with ``$OPENAI_API_KEY``."""
    monkeypatch.setenv("OPENAI_BASE_URL", f"{provider_server.base_url}/env/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    provider_server.serve(_body("openai", "chat_text_usage"))
    chunks = await _chunks(OpenAIChatModel("m", retry=ONE_TRY))
    assert "".join(chunk.text for chunk in chunks if isinstance(chunk, TextChunk)).startswith("The capital")
    [request] = provider_server.requests
    assert request.path == "/env/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-from-env"


async def test_openai_without_any_key_sends_no_authorization(
    provider_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no key given and none in the environment (a local server), no Authorization header is sent."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert OpenAIChatModel("m").base_url == "https://api.openai.com/v1"
    provider_server.serve(_body("vllm", "crusoe_llama_text_usage"))
    await _chunks(OpenAIChatModel("m", base_url=provider_server.base_url, retry=ONE_TRY))
    [request] = provider_server.requests
    assert "authorization" not in request.headers


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"data: {not json\n\n", "not JSON"),
        (b"data: [1, 2]\n\n", "not an object"),
    ],
    ids=["not-json", "not-an-object"],
)
async def test_openai_malformed_chunk_ends_the_run(provider_server: Any, body: bytes, expected: str) -> None:
    """A chunk that is not a JSON object, after some text, ends the run with a model ErrorEvent."""
    provider_server.serve(_sse({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}) + body)
    events = await _run(_agent(provider_server))
    assert _text(events) == "Hel"
    error = _the_error(events)
    assert error.kind == "model"
    assert expected in error.message
    with pytest.raises(MalformedStreamError, match=expected):
        await _chunks(_model(provider_server))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"event: error\ndata: overloaded, try later\n\n", "overloaded, try later"),
        (b'event: error\ndata: {"error": {"message": "model melted"}}\n\n', "model melted"),
        (_sse({"error": "quota exceeded"}), "quota exceeded"),
        (_sse({"error": {"message": "context too long", "code": 400}, "choices": []}), "context too long"),
    ],
    ids=["event-text", "event-json", "chunk-string", "chunk-object"],
)
async def test_openai_error_inside_a_200_stream_ends_the_run(provider_server: Any, body: bytes, message: str) -> None:
    """An ``event: error`` block or an ``error`` in a chunk ends the run with the provider's message."""
    provider_server.serve(_sse({"choices": [{"index": 0, "delta": {"content": "partial"}}]}) + body + _sse("[DONE]"))
    events = await _run(_agent(provider_server))
    assert _text(events) == "partial"
    error = _the_error(events)
    assert error.kind == "model"
    assert message in error.message


async def test_openai_200_that_is_not_an_event_stream_is_an_error(provider_server: Any) -> None:
    """A 200 answer that is not ``text/event-stream`` (a proxy ignoring ``stream``) is an error, not an empty answer."""
    completion = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}]}
    provider_server.serve(json.dumps(completion).encode(), content_type="application/json")
    events = await _run(_agent(provider_server))
    assert _the_error(events).kind == "model"


async def test_openai_dropped_connection_mid_stream_ends_the_run(provider_server: Any) -> None:
    """A server that closes the connection halfway ends the run with a model connection error, without hanging."""
    body = _body("openai", "chat_text_usage")
    provider_server.serve(body, drop_after=len(body) // 2)
    events = await _run(_agent(provider_server))
    assert "The capital of Mexico is Mexico City.".startswith(_text(events))
    error = _the_error(events)
    assert error.kind == "model"
    assert "stream broke" in error.message
    with pytest.raises(ModelConnectionError, match="stream broke") as caught:
        await _chunks(_model(provider_server))
    assert isinstance(caught.value.__cause__, httpx.TransportError)


async def test_openai_unreachable_server_is_a_connection_error_after_the_retries(nursery: trio.Nursery) -> None:
    """A server that hangs up before answering: every attempt is made, then a ModelConnectionError ends the run.

    (Nothing listening at all, on this machine, fails at once: tests/agents/models/test_http.py.)
    """
    connections = 0

    async def hang_up(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        async with stream:  # the whole request is read (httpx warns if its body is cut off), then no answer
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(65536)
            head, _, body = head.partition(b"\r\n\r\n")
            length = next(int(line[15:]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))
            while len(body) < length:
                body += await stream.receive_some(65536)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    model = OpenAIChatModel(
        "m", base_url=f"http://127.0.0.1:{port}", api_key="k", retry=RetryPolicy(0.01, max_attempts=2)
    )
    events = await _run(Agent(name="gpt", model=model, max_turns=1))
    error = _the_error(events)
    assert error.kind == "model"
    assert "cannot reach" in error.message
    assert connections == 2
    with pytest.raises(ModelConnectionError, match="cannot reach"):
        await _chunks(model)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, BadRequestError),
        (422, BadRequestError),
        (418, ProviderError),
        (500, ServerError),
        (503, ServerError),
    ],
)
async def test_openai_http_status_maps_to_a_typed_error(
    provider_server: Any, status: int, kind: type[ProviderError]
) -> None:
    """Each HTTP error status raises its own ProviderError subclass with the status and the provider's message."""
    provider_server.serve(_error_body(f"went wrong ({status})"), status=status, content_type="application/json")
    with pytest.raises(ProviderError) as caught:
        await _chunks(_model(provider_server))
    assert type(caught.value) is kind
    assert caught.value.status == status
    assert caught.value.provider == "openai"
    assert caught.value.provider_message == f"went wrong ({status})"
    assert f"HTTP {status}" in str(caught.value)


async def test_openai_error_body_that_is_not_json_is_the_message(provider_server: Any) -> None:
    """A plain-text error body becomes the provider's message."""
    provider_server.serve(b"upstream exploded\n", status=502, content_type="text/plain")
    with pytest.raises(ServerError) as caught:
        await _chunks(_model(provider_server))
    assert caught.value.provider_message == "upstream exploded"


async def test_openai_401_is_reported_and_not_retried(provider_server: Any) -> None:
    """A 401 ends the run with the provider's message after one request, even with retries allowed."""
    provider_server.serve(_error_body("Incorrect API key provided: k."), status=401, content_type="application/json")
    events = await _run(_agent(provider_server, retry=RetryPolicy(0.01, max_attempts=3)))
    error = _the_error(events)
    assert error.kind == "model"
    assert "Incorrect API key provided: k." in error.message
    assert "401" in error.message
    assert len(provider_server.requests) == 1


async def test_openai_429_retry_after_is_honoured_then_succeeds(provider_server: Any) -> None:
    """A 429 with ``Retry-After: 1`` is retried after about a second, and the second answer is the run's."""
    provider_server.queue(
        _error_body("Rate limit reached"), status=429, content_type="application/json", headers={"Retry-After": "1"}
    )
    provider_server.queue(_body("openai", "chat_text_usage"))
    start = time.monotonic()
    events = await _run(_agent(provider_server, retry=RetryPolicy(0.01, max_attempts=2)))
    elapsed = time.monotonic() - start
    assert _finished(events) == RunFinished("completed")
    assert _text(events) == "The capital of Mexico is Mexico City."
    assert len(provider_server.requests) == 2
    assert elapsed >= 0.95


async def test_openai_429_every_time_is_a_rate_limit_error(provider_server: Any) -> None:
    """A 429 on every attempt ends the run with the RateLimitError's message after all the attempts."""
    provider_server.serve(_error_body("Rate limit reached"), status=429, content_type="application/json")
    model = _model(provider_server, retry=RetryPolicy(0.01, max_attempts=2))
    events = await _run(Agent(name="gpt", model=model, max_turns=1))
    error = _the_error(events)
    assert error.kind == "model"
    assert "HTTP 429" in error.message
    assert "Rate limit reached" in error.message
    assert len(provider_server.requests) == 2
    with pytest.raises(RateLimitError) as caught:
        await _chunks(model)
    assert error.message == str(caught.value)
    assert caught.value.retry_after is None
    assert len(provider_server.requests) == 4


async def test_openai_429_asking_too_long_a_wait_fails_at_once(provider_server: Any) -> None:
    """A Retry-After beyond the longest wait allowed is not waited for: RateLimitError at once, with retry_after."""
    provider_server.serve(
        _error_body("come back later"), status=429, content_type="application/json", headers={"Retry-After": "120"}
    )
    with trio.fail_after(5), pytest.raises(RateLimitError) as caught:
        await _chunks(_model(provider_server, retry=RetryPolicy(0.01, max_attempts=3)))
    assert caught.value.retry_after == 120.0
    assert len(provider_server.requests) == 1


async def test_openai_500_then_200_succeeds(provider_server: Any) -> None:
    """A server error is retried with backoff, and the run succeeds on the next answer."""
    provider_server.queue(_error_body("The server had an error"), status=500, content_type="application/json")
    provider_server.queue(_body("openai", "chat_text_usage"))
    events = await _run(_agent(provider_server, retry=RetryPolicy(0.01, max_attempts=3)))
    assert _finished(events) == RunFinished("completed")
    assert _errors(events) == []
    assert _text(events) == "The capital of Mexico is Mexico City."
    assert _usage(events) == [(14, 8)]
    assert len(provider_server.requests) == 2


async def test_openai_503_retry_after_is_honoured(provider_server: Any) -> None:
    """A 503 with ``Retry-After: 1`` is retried after about a second, not after the (tiny) backoff."""
    provider_server.queue(
        _error_body("overloaded"), status=503, content_type="application/json", headers={"Retry-After": "1"}
    )
    provider_server.queue(_body("openai", "chat_text_usage"))
    start = time.monotonic()
    events = await _run(_agent(provider_server, retry=RetryPolicy(0.01, max_attempts=2)))
    assert _finished(events) == RunFinished("completed")
    assert time.monotonic() - start >= 0.95


async def test_openai_closing_the_session_ends_a_retry_after_wait_at_once(provider_server: Any) -> None:
    """Closing a session whose run sleeps on ``Retry-After: 30`` returns at once: the backoff sleep is cancellable."""
    provider_server.serve(
        _error_body("slow down"), status=429, content_type="application/json", headers={"Retry-After": "30"}
    )
    limited = trio.Event()

    async def on_response(response: httpx.Response) -> None:
        if response.status_code == 429:
            limited.set()

    events: list[Event] = []
    with trio.fail_after(RUN_LIMIT):
        async with (
            httpx.AsyncClient(event_hooks={"response": [on_response]}) as client,
            open_runtime(http_client=client) as runtime,
        ):
            handle = await runtime.start_session(_agent(provider_server, retry=RetryPolicy(max_attempts=2)))

            async def consume() -> None:
                async with handle.session.run("hi") as stream:
                    events.extend([event async for event in stream])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await limited.wait()
                await trio.testing.wait_all_tasks_blocked()  # the run is in its 30 s sleep now
                start = time.monotonic()
                await handle.aclose()
                elapsed = time.monotonic() - start
    assert elapsed < 5.0
    assert len(provider_server.requests) == 1
    assert _finished(events) == RunFinished("cancelled")


async def test_openai_leaving_a_run_mid_stream_closes_the_response(provider_server: Any) -> None:
    """Breaking out of a run while the model waits for more of the stream closes the HTTP connection at once."""
    body = _body("openai", "chat_text_usage")
    provider_server.serve(body, hang_after=len(body) // 2)
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime, runtime.open_session(_agent(provider_server)) as session:
            async with session.run("hi") as stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        await trio.testing.wait_all_tasks_blocked()  # the run now waits on the socket
                        assert not provider_server.disconnected.is_set()
                        break
            with trio.fail_after(1):
                await provider_server.disconnected.wait()
            assert not session.closed


async def test_openai_leaving_a_run_while_it_waits_on_the_consumer_closes_the_response(provider_server: Any) -> None:
    """Breaking out while the run is blocked on a full event buffer (the stream mid-chunk) closes the connection."""
    body = _body("openai", "chat_text_usage")
    provider_server.serve(body, hang_after=len(body) - 30)
    with trio.fail_after(RUN_LIMIT):
        async with (
            open_runtime(event_buffer=1) as runtime,
            runtime.open_session(_agent(provider_server)) as session,
        ):
            async with session.run("hi") as stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        await trio.testing.wait_all_tasks_blocked()  # the run now waits to send the next event
                        break
            with trio.fail_after(1):
                await provider_server.disconnected.wait()


async def test_openai_closing_the_session_mid_stream_closes_the_response(provider_server: Any) -> None:
    """Closing the session while its run streams ends the run as cancelled and closes the HTTP connection."""
    body = _body("openai", "chat_text_usage")
    provider_server.serve(body, hang_after=len(body) // 2)
    events: list[Event] = []
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime:
            handle = await runtime.start_session(_agent(provider_server))
            async with handle.session.run("hi") as stream:
                async for event in stream:
                    events.append(event)
                    if isinstance(event, TextDelta):
                        await handle.aclose()
            with trio.fail_after(1):
                await provider_server.disconnected.wait()
    assert _finished(events) == RunFinished("cancelled")


async def test_openai_failing_provider_does_not_disturb_another_session(
    provider_server: Any, nursery: trio.Nursery
) -> None:
    """One session's provider answering 500 forever fails only its own run; a concurrent session completes."""
    failing = type(provider_server)()  # a second loopback server of the fixture's kind
    listeners = await nursery.start(functools.partial(trio.serve_tcp, failing.handle, 0, host="127.0.0.1"))
    failing.port = listeners[0].socket.getsockname()[1]
    failing.serve(_error_body("upstream on fire"), status=500, content_type="application/json")
    provider_server.serve(_body("deepseek", "reasoner_reasoning_content"), chunk_size=512)
    bad = Agent(name="bad", model=_model(failing, retry=RetryPolicy(0.05, max_attempts=3)), max_turns=1)
    good = Agent(name="good", model=_model(provider_server), max_turns=1)
    results: dict[str, list[Event]] = {}
    with trio.fail_after(RUN_LIMIT):
        async with (
            open_runtime() as runtime,
            runtime.open_session(bad) as bad_session,
            runtime.open_session(good) as good_session,
        ):

            async def collect(name: str, session: Any) -> None:
                async with session.run("hello") as stream:
                    results[name] = [event async for event in stream]

            async with trio.open_nursery() as runs:
                runs.start_soon(collect, "bad", bad_session)
                runs.start_soon(collect, "good", good_session)
            assert not bad_session.closed
            assert not good_session.closed
            # The failed session still works once its provider does.
            failing.serve(_body("openai", "chat_text_usage"))
            await collect("bad again", bad_session)
    error = _the_error(results["bad"])
    assert "upstream on fire" in error.message
    assert len(failing.requests) == 4
    assert _finished(results["good"]) == RunFinished("completed")
    assert _text(results["good"]) == "Hello there! 😊 How can I help you today?"
    assert _text(results["bad again"]) == "The capital of Mexico is Mexico City."


async def test_openai_usage_chunk_counts(provider_server: Any) -> None:
    """Usage is read from the last chunk that carries it, after the tool calls and the stop, as one UsageChunk."""
    provider_server.serve(_body("openai", "chat_parallel_tool_calls"))
    chunks = await _chunks(_model(provider_server))
    whole = [type(chunk) for chunk in chunks if not isinstance(chunk, ToolCallDeltaChunk)]
    assert whole == [ToolCallChunk, ToolCallChunk, StopChunk, UsageChunk]
    assert chunks[-1] == UsageChunk(417, 44)


# -- stop reasons, refusals, argument deltas, native structured output -------------------------------

EXPECT = {path: _case(path)["expect"] for path in CASES}
TOOL_CASES = [path for path in CASES if EXPECT[path]["tool_calls"]]
FINISHED_CASES = [path for path in CASES if EXPECT[path]["finish_reason"] and not EXPECT[path]["error"]]


def _delta(**delta: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta}]}


def _finish(reason: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


_USAGE: Final = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


class City(pydantic.BaseModel):
    """A city and its country."""

    name: str
    country: str


@pytest.mark.parametrize(
    ("raw", "reason"), [*FINISH_REASONS.items(), ("tool_budget_exhausted", "other")], ids=lambda value: str(value)
)
async def test_openai_finish_reason_is_one_stop_chunk(provider_server: Any, raw: str, reason: StopReason) -> None:
    """Each ``finish_reason`` (an unknown one as ``other``) is one StopChunk after the content, before the usage."""
    provider_server.serve(_sse(_delta(role="assistant", content="Hi"), _finish(raw), _USAGE, "[DONE]"))
    chunks = await _chunks(_model(provider_server))
    assert chunks == [TextChunk("Hi"), StopChunk(reason, raw), UsageChunk(5, 2)]


async def test_openai_no_stop_chunk_without_a_finish_reason(provider_server: Any) -> None:
    """A stream that never names a finish_reason (null everywhere), ended by [DONE], yields no StopChunk."""
    provider_server.serve(
        _sse({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}, "[DONE]")
    )
    assert await _chunks(_model(provider_server)) == [TextChunk("Hi")]


@pytest.mark.parametrize(
    "chunk",
    [
        {"choices": [{"index": 0, "delta": {"content": "The answer is"}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c1", "function": {"name": "weather", "arguments": '{"city": "Par'}}
                        ]
                    },
                }
            ]
        },
    ],
    ids=["text", "tool-call"],
)
async def test_openai_stream_cut_off_before_its_end_ends_the_run(provider_server: Any, chunk: dict[str, Any]) -> None:
    """A stream the server closes with neither a finish_reason nor [DONE] was cut off: MalformedStreamError,
    and the run ends with a model error; a half-sent tool call is not run."""
    provider_server.serve(_sse(chunk))
    with pytest.raises(MalformedStreamError, match=r"ended before a finish_reason or \[DONE\]"):
        await _chunks(_model(provider_server))
    events = await _run(_agent(provider_server))
    assert _the_error(events).kind == "model"
    assert _tool_calls(events) == []


@pytest.mark.parametrize("path", FINISHED_CASES, ids=[f"{path.parent.name}/{path.stem}" for path in FINISHED_CASES])
async def test_openai_fixture_finish_reason_is_the_stop_chunk(provider_server: Any, path: Path) -> None:
    """A recorded stream's finish_reason is its one StopChunk, just before the usage (a later null changes nothing)."""
    case = _serve_case(provider_server, path)
    chunks = await _chunks(_model(provider_server))
    finish = case["expect"]["finish_reason"]
    assert [chunk for chunk in chunks if isinstance(chunk, StopChunk)] == [StopChunk(FINISH_REASONS[finish], finish)]
    assert [type(chunk) for chunk in chunks[-2:]] == [StopChunk, UsageChunk]


async def test_openai_error_after_a_finish_reason_gives_no_stop_chunk(provider_server: Any) -> None:
    """OpenRouter's stream names finish_reason "length" and then reports an error: usage, the error, no stop."""
    _serve_case(provider_server, STREAMS / "openrouter" / "minimax_reasoning_comments_stream_error.json")
    chunks = await _chunks(_model(provider_server))
    assert not [chunk for chunk in chunks if isinstance(chunk, StopChunk)]
    assert [type(chunk).__name__ for chunk in chunks[-2:]] == ["UsageChunk", "ErrorChunk"]


def _refusal_stream() -> bytes:
    return _sse(
        _delta(role="assistant", content=None, refusal=None),
        _delta(refusal=""),
        _delta(refusal="I'm sorry, "),
        _delta(content=None, refusal="I can't help with that."),
        _finish("stop"),
        _USAGE,
        "[DONE]",
    )


async def test_openai_refusal_deltas_are_refusal_chunks(provider_server: Any) -> None:
    """Each non-empty ``delta.refusal`` piece is a RefusalChunk (null and empty ones yield nothing)."""
    provider_server.serve(_refusal_stream())
    assert await _chunks(_model(provider_server)) == [
        RefusalChunk("I'm sorry, "),
        RefusalChunk("I can't help with that."),
        StopChunk("end_turn", "stop"),
        UsageChunk(5, 2),
    ]


async def test_openai_refusal_ends_the_run_and_leaves_history_valid(provider_server: Any) -> None:
    """A refusal ends the run with ``refusal`` and its text in the result; the next run sends a valid history."""
    provider_server.queue(_refusal_stream())
    provider_server.queue(_body("openai", "chat_text_usage"))
    agent = Agent(name="gpt", model=_model(provider_server), max_turns=1)
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            async with session.run("how do I pick a lock?") as stream:
                events = [event async for event in stream]
            result = stream.result
            async with session.run("the capital of Mexico?") as stream:
                again = [event async for event in stream]
    assert [event for event in events if isinstance(event, Refusal)] == [Refusal("I'm sorry, I can't help with that.")]
    assert _finished(events).reason == "refusal"
    assert (result.reason, result.refusal, result.stop_reason) == (
        "refusal",
        "I'm sorry, I can't help with that.",
        "end_turn",
    )
    assert _finished(again) == RunFinished("completed")
    user, assistant, next_user = json.loads(provider_server.requests[1].body)["messages"]
    assert user == {"role": "user", "content": "how do I pick a lock?"}
    assert assistant == {"role": "assistant", "content": "I'm sorry, I can't help with that."}  # its own refusal
    assert next_user == {"role": "user", "content": "the capital of Mexico?"}


async def test_openai_tool_call_cut_off_at_length_is_an_error_result(provider_server: Any) -> None:
    """Arguments cut mid-JSON by finish_reason "length" are the call's error result, never an internal error,
    and go back in the history as the JSON object {}."""
    ran: list[str] = []

    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return "sunny"

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    provider_server.queue(
        _sse(
            _delta(role="assistant", content=None, tool_calls=[call]),
            _delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": "Mex'}}]),
            _finish("length"),
            _USAGE,
            "[DONE]",
        )
    )
    provider_server.queue(_body("openai", "chat_text_usage"))
    agent = Agent(name="gpt", model=_model(provider_server), tools=[get_weather], max_turns=2)
    events = await _run(agent)
    assert _errors(events) == []
    assert _finished(events) == RunFinished("completed")
    assert _stops(events) == [ModelStopped("max_tokens", "length"), ModelStopped("end_turn", "stop")]
    [finished] = [event for event in events if isinstance(event, ToolCallFinished)]
    assert finished.error is not None
    assert "cut off" in finished.error
    assert ran == []
    *_, assistant, result = json.loads(provider_server.requests[1].body)["messages"]
    # Sent back as {}: a server that parses past calls' arguments (vLLM, Moonshot, MiniMax) refused the whole
    # request, and every later one of the session; the error result says what was wrong.
    assert assistant["tool_calls"][0]["function"]["arguments"] == "{}"
    assert result["role"] == "tool"
    assert result["tool_call_id"] == "call_1"
    assert "were cut off" in result["content"]
    assert "max_tokens" in result["content"]


@pytest.mark.parametrize("path", TOOL_CASES, ids=[f"{path.parent.name}/{path.stem}" for path in TOOL_CASES])
async def test_openai_argument_deltas_join_to_each_calls_arguments(provider_server: Any, path: Path) -> None:
    """A recorded tool-call stream's argument deltas, joined per call, are the call's arguments text, all before it."""
    _serve_case(provider_server, path)
    chunks = await _chunks(_model(provider_server))
    calls = [(i, chunk) for i, chunk in enumerate(chunks) if isinstance(chunk, ToolCallChunk)]
    assert calls
    for position, call in calls:
        deltas = [c for c in chunks[:position] if isinstance(c, ToolCallDeltaChunk) and c.call_id == call.call_id]
        assert {delta.name for delta in deltas} <= {call.name}
        assert "".join(delta.arguments_delta for delta in deltas) == call.arguments
    assert not [c for c in chunks[calls[0][0] :] if isinstance(c, ToolCallDeltaChunk)]


async def test_openai_argument_deltas_reach_the_consumer_before_the_call(provider_server: Any) -> None:
    """Through a run, the ToolCallDelta events of the recorded call come before its ToolCallStarted and add up to it."""
    case = _serve_case(provider_server, STREAMS / "openai" / "chat_tool_call.json")
    events = await _run(_agent(provider_server))
    deltas = [event for event in events if isinstance(event, ToolCallDelta)]
    [started] = [event for event in events if isinstance(event, ToolCallStarted)]
    assert len(deltas) > 1
    assert {(delta.call_id, delta.name) for delta in deltas} == {(started.call_id, started.name)}
    assert events.index(deltas[-1]) < events.index(started)
    arguments = "".join(delta.arguments_delta for delta in deltas)
    assert json.loads(arguments) == case["expect"]["tool_calls"][0]["arguments"]


async def test_openai_native_output_sends_a_json_schema_response_format(provider_server: Any) -> None:
    """``output_mode="native"`` sends the output's schema as a non-strict ``json_schema`` response_format."""
    answer = json.dumps({"name": "Oslo", "country": "Norway"})
    provider_server.serve(_sse(_delta(content=answer[:9]), _delta(content=answer[9:]), _finish("stop"), "[DONE]"))
    agent = Agent(name="gpt", model=_model(provider_server), output_type=City, output_mode="native", max_turns=1)
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            result = await session.ask("where?")
    assert result.output == City(name="Oslo", country="Norway")
    [request] = provider_server.requests
    body = json.loads(request.body)
    output = agent.output.request_output()
    assert output is not None
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "City",
            "schema": dict(output.schema),
            "description": "A city and its country.",
            "strict": False,
        },
    }
    assert set(body["response_format"]["json_schema"]["schema"]["properties"]) == {"name", "country"}
    assert "tools" not in body


def test_openai_body_without_an_output_or_its_description_leaves_them_out() -> None:
    """No ``request.output``: no response_format; an output with no description: no ``description`` key."""
    model = OpenAIChatModel("m", base_url="http://unused", api_key="k")
    request = ModelRequest("", (UserMessage("hi"),))
    assert "response_format" not in model.body(request)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    body = model.body(ModelRequest("", (UserMessage("hi"),), output=OutputSchema("count", schema)))
    assert body["response_format"]["json_schema"] == {"name": "count", "schema": schema, "strict": False}
    assert OpenAIChatModel.native_output is True


async def test_openai_done_ends_the_stream_though_the_connection_stays_open(provider_server: Any) -> None:
    """``[DONE]`` ends the answer: what follows is not read, even when the server holds the response open."""
    answer = _sse(_delta(content="Hi"), "[DONE]")
    provider_server.serve(answer + _sse(_delta(content=" and more")), hang_after=len(answer))
    chunks = await _chunks(_model(provider_server))
    assert [chunk.text for chunk in chunks if isinstance(chunk, TextChunk)] == ["Hi"]


async def test_deepseek_sends_the_reasoning_back_with_the_turn_that_called_a_tool(provider_server: Any) -> None:
    """deepseek-reasoner: the response's reasoning is kept as one ReasoningBlock, and the request after the
    tool's result carries it as the assistant turn's ``reasoning_content`` (DeepSeek answers 400 without it)."""

    @tool
    def now() -> str:
        """The time."""
        return "12:00"

    provider_server.queue(
        _sse(
            _delta(reasoning_content="I should call "),
            _delta(reasoning_content="the clock."),
            _delta(
                tool_calls=[
                    {"index": 0, "id": "call_0", "type": "function", "function": {"name": "now", "arguments": "{}"}}
                ]
            ),
            _finish("tool_calls"),
            "[DONE]",
        )
    )
    provider_server.queue(_sse(_delta(content="It is noon."), _finish("stop"), "[DONE]"))
    model = OpenAIChatModel(
        "deepseek-reasoner", base_url=provider_server.base_url, api_key="k", retry=ONE_TRY, provider="deepseek"
    )
    agent = Agent(name="ds", model=model, tools=[now])
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            result = await session.ask("what time is it?")
            history = list(session.history)
    assert result.text == "It is noon."
    first = next(message for message in history if isinstance(message, AssistantMessage))
    assert first.reasoning == (ReasoningBlock("I should call the clock."),)
    assistant = json.loads(provider_server.requests[1].body)["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"][0]["id"] == "call_0"
    assert assistant["reasoning_content"] == "I should call the clock."


def test_reasoning_content_goes_only_to_servers_that_want_it() -> None:
    """Moonshot's host gets ``reasoning_content`` on every assistant turn (``""`` when it has none, so an old
    tool-calling turn is not a 400); OpenAI's gets no such field, as it may refuse an unknown one."""
    messages = (
        UserMessage("hi"),
        AssistantMessage("", (ToolCallChunk("c1", "now", "{}"),)),
        ToolResultMessage("c1", "now", "12:00"),
        AssistantMessage("noon", (), (ReasoningBlock("so "), ReasoningBlock("b64==", redacted=True))),
    )
    request = ModelRequest("", messages)
    kimi = OpenAIChatModel("kimi-k2-thinking", base_url="https://api.moonshot.ai/v1", api_key="k")
    sent = [m for m in kimi.body(request)["messages"] if m["role"] == "assistant"]
    assert [m["reasoning_content"] for m in sent] == ["", "so "]
    openai = OpenAIChatModel("gpt-4o-mini", api_key="k")
    assert all("reasoning_content" not in m for m in openai.body(request)["messages"])


async def test_openai_keeps_no_reasoning_block_for_a_server_that_wants_none(provider_server: Any) -> None:
    """A server not known to want its reasoning back gets reasoning chunks only: no ReasoningBlock to keep."""
    provider_server.serve(_sse(_delta(reasoning_content="hm"), _delta(content="ok"), _finish("stop"), "[DONE]"))
    chunks = await _chunks(_model(provider_server))
    assert [type(chunk) for chunk in chunks] == [ReasoningChunk, TextChunk, StopChunk]


def test_openai_stream_options_setting_keeps_usage_asked_for() -> None:
    """A ``stream_options`` setting is merged into ``{"include_usage": True}``, not put in its place: usage
    is still asked for (an explicit ``include_usage`` of the setting's wins)."""
    model = OpenAIChatModel("m", base_url="http://unused", api_key="k", stream_options={"include_obfuscation": False})
    body = model.body(ModelRequest("", (UserMessage("hi"),)))
    assert body["stream_options"] == {"include_usage": True, "include_obfuscation": False}
    off = OpenAIChatModel("m", base_url="http://unused", api_key="k", stream_options={"include_usage": False})
    assert off.body(ModelRequest("", (UserMessage("hi"),)))["stream_options"] == {"include_usage": False}
