"""AnthropicModel against recorded Messages API streams, served byte for byte by a loopback server."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any, Final, Literal

import httpx
import pydantic
import pytest
import trio

from agents import (
    Agent,
    AnthropicModel,
    AssistantMessage,
    AuthenticationError,
    ErrorChunk,
    MalformedStreamError,
    ModelChunk,
    ModelConnectionError,
    ModelRequest,
    ReasoningBlock,
    ReasoningChunk,
    RetryPolicy,
    ServerToolChunk,
    StopChunk,
    StopReason,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolResultMessage,
    ToolSpec,
    UsageChunk,
    UserMessage,
    tool,
)
from agents.models._anthropic import _output_schema
from runtime import open_runtime
from runtime.events import (
    ErrorEvent,
    Event,
    ModelStopped,
    ReasoningDelta,
    Refusal,
    RunFinished,
    ServerToolUse,
    TextDelta,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
)

SHARED_FIXTURES: Final = Path(__file__).resolve().parents[4] / "shared" / "fixtures"
"""The shared test data: ``../shared/fixtures`` beside the checkout, and nowhere else."""
FIXTURES: Final = SHARED_FIXTURES / "llm_streams" / "anthropic"
CASES: Final[dict[str, dict[str, Any]]] = {
    path.stem: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))
}
"""Every recorded case, by name (the file's stem)."""
NO_RETRY: Final = RetryPolicy(max_attempts=1)
STOP_REASONS: Final[dict[str, StopReason]] = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
}
"""What each ``stop_reason`` means as a stop reason (any other is ``"other"``)."""
BETA: Final = "structured-outputs-2025-11-13"


def _body(name: str) -> bytes:
    """The recorded response body of a case, byte for byte."""
    return (FIXTURES / str(CASES[name]["body_file"])).read_bytes()


def _model(server: Any, **settings: Any) -> AnthropicModel:
    return AnthropicModel("m", base_url=server.base_url, api_key="k", retry=NO_RETRY, **settings)


async def _run(agent: Agent, prompt: str = "hi") -> list[Event]:
    events: list[Event] = []
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            async with session.run(prompt) as stream:
                events.extend([event async for event in stream])
    return events


async def _chunks(model: AnthropicModel, request: ModelRequest) -> list[ModelChunk]:
    with trio.fail_after(10):
        async with model.stream(request) as chunks:
            return [chunk async for chunk in chunks]


def _of(events: list[Event], kind: type[Any]) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


def _stream(*events: tuple[str, str]) -> bytes:
    return "".join(f"event: {name}\ndata: {data}\n\n" for name, data in events).encode()


_START: Final = (
    "message_start",
    '{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":3,"output_tokens":1}}}',
)
_TEXT_START: Final = (
    "content_block_start",
    '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
)
_TEXT_HELLO: Final = (
    "content_block_delta",
    '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}',
)


@pytest.mark.parametrize("name", sorted(CASES))
async def test_anthropic_fixture_stream_rebuilds_the_expected_response(provider_server: Any, name: str) -> None:
    """Each recorded case, served byte for byte, yields the text, reasoning, tool calls, usage and error it expects."""
    case = CASES[name]
    expect = case["expect"]
    provider_server.serve(_body(name), status=case["http_status"], content_type=case["content_type"])
    agent = Agent(name="claude", model=_model(provider_server), max_turns=1)

    events = await _run(agent)

    assert len(provider_server.requests) == 1
    assert "".join(event.text for event in _of(events, TextDelta)) == (expect["text"] or "")
    calls = [(event.call_id, event.name, event.arguments) for event in _of(events, ToolCallStarted)]
    assert calls == [(call["id"], call["name"], call["arguments"]) for call in expect["tool_calls"]]
    thinking = "".join(block["thinking"] for block in expect.get("thinking", ()))
    assert "".join(event.text for event in _of(events, ReasoningDelta)) == (expect.get("reasoning") or thinking)
    usage = [(event.input_tokens, event.output_tokens) for event in _of(events, Usage)]
    expected_usage = expect["usage"]
    assert usage == (
        [] if expected_usage is None else [(expected_usage["input_tokens"], expected_usage["output_tokens"])]
    )
    server_calls = [(event.call_id, event.name, event.input) for event in _of(events, ServerToolUse)]
    assert server_calls == [
        (call["id"], call["name"], call["arguments"]) for call in expect.get("server_tool_calls", ())
    ]
    errors: list[ErrorEvent] = _of(events, ErrorEvent)
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    stop = expect["finish_reason"]
    assert _of(events, ModelStopped) == ([] if stop is None else [ModelStopped(STOP_REASONS[stop], stop)])
    if expect["error"] is None:
        assert errors == []
        assert finished.reason == ("max_turns" if expect["tool_calls"] else "completed")
    else:
        (error,) = errors
        assert error.kind == "model"
        assert expect["error"]["message"] in error.message
        assert finished.reason == "error"


async def test_anthropic_fixture_chunks_come_in_block_order(provider_server: Any) -> None:
    """Used alone, the model streams text, the server tool, text, the client tool call, its stop, and usage last."""
    provider_server.serve(_body("text_server_tool_then_tool_use"))
    chunks = await _chunks(_model(provider_server), ModelRequest("", (UserMessage("rate?"),)))
    kinds = [type(chunk).__name__ for chunk in chunks if not isinstance(chunk, ToolCallDeltaChunk)]
    first_server = kinds.index("ServerToolChunk")
    assert set(kinds[:first_server]) == {"TextChunk"}
    assert kinds[-3:] == ["ToolCallChunk", "StopChunk", "UsageChunk"]
    assert chunks[first_server] == ServerToolChunk(
        "srvtoolu_01S5swZdBmTzLDVzwcT5LbHp",
        "tool_search_tool_bm25",
        {"query": "USD EUR exchange rate currency conversion"},
    )
    assert chunks[-2] == StopChunk("tool_use", "tool_use")
    call = chunks[-3]
    assert isinstance(call, ToolCallChunk)
    assert (call.call_id, call.name) == ("toolu_01EFn5wTNBYA8Reni8rbmnHT", "get_exchange_rate")
    assert isinstance(call.arguments, str)
    assert json.loads(call.arguments) == {"from_currency": "USD", "to_currency": "EUR"}
    assert chunks[-1] == UsageChunk(1591, 175)


def _signature(name: str) -> str:
    """The signature a recorded stream's signature_delta events carry, joined."""
    parts = []
    for line in _body(name).decode().splitlines():
        if line.startswith("data:") and '"signature_delta"' in line:
            parts.append(json.loads(line[5:])["delta"]["signature"])
    return "".join(parts)


async def test_anthropic_thinking_is_reasoning_and_its_signed_block_is_kept(provider_server: Any) -> None:
    """Thinking deltas are reasoning chunks (the signature is never shown); when the block stops, the whole
    block and its signature come as one ReasoningBlock, before the tool call that follows it."""
    provider_server.serve(_body("thinking_then_tool_use"))
    chunks = await _chunks(_model(provider_server), ModelRequest("", (UserMessage("version?"),)))
    reasoning = [chunk for chunk in chunks if isinstance(chunk, ReasoningChunk)]
    assert len(reasoning) == 2
    signature = _signature("thinking_then_tool_use")
    assert signature.startswith("EoQDCm0")
    assert signature not in "".join(chunk.text for chunk in reasoning)
    assert chunks[-4:] == [
        ReasoningBlock("".join(chunk.text for chunk in reasoning), signature),
        ToolCallChunk("toolu_01825dXWLSoJwCst1qTsiWdb", "fixed_version", {}),
        StopChunk("tool_use", "tool_use"),
        UsageChunk(598, 92, reasoning_tokens=53),  # message_delta.usage.output_tokens_details.thinking_tokens
    ]


async def test_anthropic_sends_the_signed_thinking_back_before_the_tool_call_it_led_to(provider_server: Any) -> None:
    """With thinking on, the request after a tool's result holds the response's thinking block, with its
    signature, first in the assistant turn (the API answers 400 without it); a redacted block goes back as
    it came."""

    @tool
    def fixed_version() -> str:
        """The fixed version."""
        return "1.2.3"

    provider_server.queue(_body("thinking_then_tool_use"), content_type="text/event-stream; charset=utf-8")
    provider_server.queue(_body("text"), content_type="text/event-stream; charset=utf-8")
    thinking = {"type": "enabled", "budget_tokens": 1024}
    agent = Agent(name="claude", model=_model(provider_server, thinking=thinking), tools=[fixed_version])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        await session.ask("which version fixed it?")
        (response,) = [message for message in session.history if isinstance(message, AssistantMessage)][:1]
    second = json.loads(provider_server.requests[1].body)
    assert second["thinking"] == thinking
    assistant = second["messages"][1]
    assert assistant["role"] == "assistant"
    (block,) = response.reasoning
    assert assistant["content"] == [
        {"type": "thinking", "thinking": block.text, "signature": _signature("thinking_then_tool_use")},
        {"type": "tool_use", "id": "toolu_01825dXWLSoJwCst1qTsiWdb", "name": "fixed_version", "input": {}},
    ]
    redacted = AssistantMessage("", (), (ReasoningBlock("b64==", redacted=True),))
    body = _model(provider_server).body(ModelRequest("", (UserMessage("hi"), redacted, UserMessage("go on"))))
    assert body["messages"][1]["content"] == [{"type": "redacted_thinking", "data": "b64=="}]


def test_anthropic_leaves_out_unsigned_reasoning_from_another_provider() -> None:
    """An unsigned ReasoningBlock (DeepSeek's, kept in the history before a fallback) is not sent as a
    thinking block, which the API would refuse; the turn's signed thinking and tool call still go."""
    turn = AssistantMessage(
        "",
        (ToolCallChunk("c1", "now", "{}"),),
        (ReasoningBlock("deepseek's thoughts"), ReasoningBlock("claude's", "sig")),
    )
    model = AnthropicModel("m", base_url="http://unused", api_key="k")
    body = model.body(ModelRequest("", (UserMessage("hi"), turn, ToolResultMessage("c1", "now", "12:00"))))
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "claude's", "signature": "sig"},
        {"type": "tool_use", "id": "c1", "name": "now", "input": {}},
    ]


@pytest.mark.parametrize("signed", [False, True], ids=["another-providers-turn", "claudes-turn"])
def test_anthropic_thinking_is_left_out_of_a_request_going_on_from_an_unsigned_tool_turn(signed: bool) -> None:
    """With thinking on, the API refuses a request whose last assistant turn asked for tools without starting
    with a thinking block (another provider's turn, before a fallback): that request goes without thinking.
    Going on from Claude's own signed turn, thinking stays."""
    reasoning = (ReasoningBlock("claude's", "sig"),) if signed else (ReasoningBlock("gpt's thoughts"),)
    turn = AssistantMessage("", (ToolCallChunk("c1", "now", "{}"),), reasoning)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    model = AnthropicModel("m", base_url="http://unused", api_key="k", thinking=thinking)
    body = model.body(ModelRequest("", (UserMessage("hi"), turn, ToolResultMessage("c1", "now", "12:00"))))
    assert ("thinking" in body) is signed
    assert "thinking" in model.body(ModelRequest("", (UserMessage("hi"),)))  # a turn of its own: thinking on
    # Claude's own loop of two steps: it thought at the loop's start only; the API checks that turn.
    second = AssistantMessage("", (ToolCallChunk("c2", "now", "{}"),))
    results = ToolResultMessage("c1", "now", "12:00"), ToolResultMessage("c2", "now", "12:01")
    loop = (UserMessage("hi"), turn, results[0], second, results[1])
    assert ("thinking" in model.body(ModelRequest("", loop))) is signed


async def test_anthropic_request_body_and_headers_over_three_turns(provider_server: Any) -> None:
    """The requests carry the key and version headers, the system prompt, tools, tool_use inputs and grouped results."""

    @tool
    def pelican_name_generator() -> str:
        """Make up a pelican name."""
        return "Percy"

    @tool
    def get_exchange_rate(from_currency: str, to_currency: str) -> str:
        """Look up an exchange rate."""
        return f"1 {from_currency} = 0.92 {to_currency}"

    provider_server.queue(_body("parallel_tool_use_empty_input"), content_type="text/event-stream; charset=utf-8")
    provider_server.queue(_body("text_server_tool_then_tool_use"), content_type="text/event-stream; charset=utf-8")
    provider_server.queue(_body("text"), content_type="text/event-stream; charset=utf-8")
    agent = Agent(
        name="claude",
        instructions="Be brief.",
        model=_model(provider_server, temperature=0.5),
        tools=[pelican_name_generator, get_exchange_rate],
        max_turns=3,
    )

    events = await _run(agent, "name a pelican, then the rate")

    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.reason == "completed"
    assert len(provider_server.requests) == 3
    for received in provider_server.requests:
        assert (received.method, received.path) == ("POST", "/v1/messages")
        assert received.headers["x-api-key"] == "k"
        assert received.headers["anthropic-version"] == "2023-06-01"
        assert received.headers["accept"] == "text/event-stream"
        assert received.headers["content-type"] == "application/json"
        assert "authorization" not in received.headers
        assert "anthropic-beta" not in received.headers  # only a native structured output needs one
    first = json.loads(provider_server.requests[0].body)
    assert first["model"] == "m"
    assert first["max_tokens"] == 4096
    assert first["system"] == "Be brief."
    assert first["stream"] is True
    assert first["temperature"] == 0.5
    assert first["messages"] == [{"role": "user", "content": "name a pelican, then the rate"}]
    tools = {spec["name"]: spec for spec in first["tools"]}
    assert set(tools) == {"pelican_name_generator", "get_exchange_rate"}
    assert tools["get_exchange_rate"]["description"] == "Look up an exchange rate."
    assert tools["get_exchange_rate"]["input_schema"]["type"] == "object"
    assert set(tools["get_exchange_rate"]["input_schema"]["properties"]) == {"from_currency", "to_currency"}
    assert set(tools["pelican_name_generator"]) == {"name", "description", "input_schema"}

    last = json.loads(provider_server.requests[2].body)
    user, pelicans, pelican_results, rate, rate_results = last["messages"]
    assert user == {"role": "user", "content": "name a pelican, then the rate"}
    assert pelicans == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_01LtHJmixrs9NcWQkK8hu8hj", "name": "pelican_name_generator", "input": {}},
            {"type": "tool_use", "id": "toolu_01N8a4jWyf116qKTMqKKmjyt", "name": "pelican_name_generator", "input": {}},
        ],
    }
    assert pelican_results == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01LtHJmixrs9NcWQkK8hu8hj",
                "content": "Percy",
                "is_error": False,
            },
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01N8a4jWyf116qKTMqKKmjyt",
                "content": "Percy",
                "is_error": False,
            },
        ],
    }
    assert rate["role"] == "assistant"
    text_block, tool_use = rate["content"]
    assert text_block == {"type": "text", "text": CASES["text_server_tool_then_tool_use"]["expect"]["text"]}
    assert tool_use == {
        "type": "tool_use",
        "id": "toolu_01EFn5wTNBYA8Reni8rbmnHT",
        "name": "get_exchange_rate",
        "input": {"from_currency": "USD", "to_currency": "EUR"},
    }
    assert rate_results == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01EFn5wTNBYA8Reni8rbmnHT",
                "content": "1 USD = 0.92 EUR",
                "is_error": False,
            }
        ],
    }


def test_anthropic_body_groups_results_and_repairs_arguments() -> None:
    """Only consecutive results share a user message, string arguments become objects, and empty turns are left out."""
    model = AnthropicModel("claude", base_url="http://unused", api_key="k", max_tokens=64, top_k=5)
    request = ModelRequest(
        "",
        (
            UserMessage("go"),
            AssistantMessage(
                "",
                (
                    ToolCallChunk("a", "f", '{"x": 1}'),
                    ToolCallChunk("b", "f", ""),
                    ToolCallChunk("c", "f", "{not json"),
                    ToolCallChunk("d", "f", "[1, 2]"),
                ),
            ),
            ToolResultMessage("a", "f", "1"),
            ToolResultMessage("b", "f", "2"),
            ToolResultMessage("c", "f", "bad arguments", is_error=True),
            ToolResultMessage("d", "f", "4"),
            AssistantMessage(""),
            UserMessage("again"),
        ),
        (ToolSpec("f", "Does f.", {"type": "object", "properties": {}}),),
    )
    body = model.body(request)
    assert "system" not in body
    assert (body["model"], body["max_tokens"], body["top_k"], body["stream"]) == ("claude", 64, 5, True)
    assert body["tools"] == [
        {"name": "f", "description": "Does f.", "input_schema": {"type": "object", "properties": {}}}
    ]
    user, assistant, results, again = body["messages"]
    assert user == {"role": "user", "content": "go"}
    assert [block["input"] for block in assistant["content"]] == [{"x": 1}, {}, {}, {}]
    assert results["role"] == "user"
    assert [(block["tool_use_id"], block["is_error"]) for block in results["content"]] == [
        ("a", False),
        ("b", False),
        ("c", True),
        ("d", False),
    ]
    assert again == {"role": "user", "content": "again"}


def test_anthropic_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The base URL and key default to ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY, else Anthropic's URL and no key."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://proxy.example/")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-env")
    model = AnthropicModel("claude")
    assert model.base_url == "http://proxy.example"
    assert model._api_key == "from-env"
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    model = AnthropicModel("claude")
    assert model.base_url == "https://api.anthropic.com"
    assert model._api_key is None


async def test_anthropic_401_is_an_authentication_error_event(provider_server: Any) -> None:
    """A 401 JSON error body ends the run with a model ErrorEvent carrying the provider's message."""
    body = b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}'
    provider_server.serve(body, status=401, content_type="application/json")
    agent = Agent(name="claude", model=_model(provider_server), max_turns=1)

    events = await _run(agent)

    (error,) = _of(events, ErrorEvent)
    assert error.kind == "model"
    assert "invalid x-api-key" in error.message
    assert "401" in error.message
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.reason == "error"
    with pytest.raises(AuthenticationError) as caught:
        await _chunks(_model(provider_server), ModelRequest("", (UserMessage("hi"),)))
    assert (caught.value.status, caught.value.provider) == (401, "anthropic")
    assert caught.value.provider_message == "invalid x-api-key"


async def test_anthropic_error_event_mid_stream_stops_with_the_provider_message(provider_server: Any) -> None:
    """An `event: error` after some text yields the text, the usage so far, then an error chunk, and nothing after."""
    error = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    provider_server.serve(_stream(_START, _TEXT_START, _TEXT_HELLO, ("error", error), _TEXT_HELLO))
    agent = Agent(name="claude", model=_model(provider_server), max_turns=1)

    events = await _run(agent)

    assert [event.text for event in _of(events, TextDelta)] == ["Hello"]
    assert _of(events, Usage) == [Usage(3, 1)]
    (event,) = _of(events, ErrorEvent)
    assert event.kind == "model"
    assert "Overloaded" in event.message
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.reason == "error"


def _events(body: bytes) -> list[bytes]:
    """A recorded stream's events, each with its blank line."""
    return [event + b"\n\n" for event in body.split(b"\n\n") if event.strip()]


_OVERLOADED: Final = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'


@pytest.mark.parametrize(
    "error",
    [f"event: error\ndata: {_OVERLOADED}\n\n", f"data: {_OVERLOADED}\n\n"],
    ids=["error-event", "error-data"],
)
@pytest.mark.parametrize(("kept", "output_tokens"), [(4, 1), (9, 59)], ids=["after-text", "after-message-delta"])
async def test_anthropic_error_mid_stream_yields_the_usage_so_far_first(
    provider_server: Any, error: str, kept: int, output_tokens: int
) -> None:
    """An error mid-stream (its own event, or an error object's data) yields the usage seen so far, then the error:
    tokens spent before the error still count, as with the other providers."""
    events = _events(_body("text"))
    provider_server.serve(b"".join(events[:kept]) + error.encode())
    chunks = await _chunks(_model(provider_server), ModelRequest("", (UserMessage("hi"),)))
    *texts, usage, failed = chunks
    assert texts
    assert all(isinstance(text, TextChunk) for text in texts)
    assert CASES["text"]["expect"]["text"].startswith(
        "".join(text.text for text in texts if isinstance(text, TextChunk))
    )
    assert usage == UsageChunk(1007, output_tokens)
    assert failed == ErrorChunk("provider", "Overloaded", 529)  # overloaded_error


async def test_anthropic_stream_cut_off_counts_the_usage_it_sent_before_the_error(provider_server: Any) -> None:
    """A stream that ends after message_start's usage but before message_stop still counts those input tokens
    (billed all the same, as before an error event): Usage, then the MalformedStreamError, in a run too."""
    events = _events(_body("text"))
    provider_server.serve(b"".join(events[:4]))  # message_start (usage), a block start, deltas: no message_stop
    model = _model(provider_server)
    seen: list[ModelChunk] = []
    with trio.fail_after(10), pytest.raises(MalformedStreamError, match="ended before message_stop"):
        async with model.stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            async for chunk in chunks:  # what came before the error, kept
                seen.append(chunk)
    assert seen[-1] == UsageChunk(1007, 1)

    run = await _run(Agent(name="claude", model=model, max_turns=1))
    assert _of(run, Usage) == [Usage(1007, 1)]
    assert run.index(_of(run, Usage)[0]) < run.index(_of(run, ErrorEvent)[0])
    assert run[-1].reason == "error"  # type: ignore[union-attr]


async def test_anthropic_broken_connection_counts_the_usage_it_sent_before_the_error(provider_server: Any) -> None:
    """A connection that breaks after message_start's usage (the server promised more bytes and closed) still
    counts those tokens: Usage, then the ModelConnectionError, in a run too."""
    events = _events(_body("text"))
    body = b"".join(events)
    provider_server.serve(body, drop_after=len(b"".join(events[:4])))  # cut where message_stop never came
    model = _model(provider_server)
    seen: list[ModelChunk] = []
    with trio.fail_after(10), pytest.raises(ModelConnectionError, match="the stream broke"):
        async with model.stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            async for chunk in chunks:  # what came before the error, kept
                seen.append(chunk)
    assert seen[-1] == UsageChunk(1007, 1)

    run = await _run(Agent(name="claude", model=model, max_turns=1))
    assert _of(run, Usage) == [Usage(1007, 1)]
    assert run.index(_of(run, Usage)[0]) < run.index(_of(run, ErrorEvent)[0])
    assert "stream broke" in _of(run, ErrorEvent)[0].message


@pytest.mark.parametrize("broken", ["left-open", "started-again"])
async def test_anthropic_block_left_open_or_started_again_is_malformed(provider_server: Any, broken: str) -> None:
    """A content block still open at message_stop, or started again at its index before it stopped, raises
    MalformedStreamError: its tool call is never dropped or replaced in silence, nor run."""
    events = _events(_body("parallel_tool_use_empty_input"))
    stops = [event for event in events if event.startswith(b"event: content_block_stop")]
    assert len(stops) == 2  # one for each tool_use block, index 0 and 1
    if broken == "left-open":  # the second call's block never stops
        events.remove(stops[1])
        expected = "message_stop came before content_block_stop of block 1"
    else:  # the first block never stops, and the second starts at its index
        events.remove(stops[0])
        events = [event.replace(b'"index":1', b'"index":0') for event in events]
        expected = "content block 0 started again before it stopped"
    provider_server.serve(b"".join(events))
    with pytest.raises(MalformedStreamError, match=expected):
        await _chunks(_model(provider_server), ModelRequest("", (UserMessage("hi"),)))

    @tool
    def pelican_name_generator() -> str:
        """Name a pelican."""
        raise AssertionError("a call from a broken stream must not run")  # pragma: no cover

    agent = Agent(name="claude", model=_model(provider_server), tools=[pelican_name_generator], max_turns=2)
    run = await _run(agent)
    assert _of(run, ToolCallStarted) == []
    (failed,) = _of(run, ErrorEvent)
    assert expected in failed.message
    assert run[-1] == RunFinished("error", failed.message)


async def test_anthropic_non_json_data_is_a_malformed_stream(provider_server: Any) -> None:
    """A data line that is not JSON raises MalformedStreamError, and the run ends with an error event."""
    provider_server.serve(_stream(_START, _TEXT_START, ("content_block_delta", "{not json")))
    with pytest.raises(MalformedStreamError, match="not JSON"):
        await _chunks(_model(provider_server), ModelRequest("", (UserMessage("hi"),)))

    events = await _run(Agent(name="claude", model=_model(provider_server), max_turns=1))

    (error,) = _of(events, ErrorEvent)
    assert "not JSON" in error.message
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.reason == "error"


async def test_anthropic_stream_without_message_stop_is_malformed(provider_server: Any) -> None:
    """A stream that ends cleanly but before message_stop is a truncated response, not an answer (its usage so far
    still counts)."""
    provider_server.serve(_stream(_START, _TEXT_START, _TEXT_HELLO))
    chunks: list[ModelChunk] = []
    with pytest.raises(MalformedStreamError, match="message_stop"), trio.fail_after(10):
        async with _model(provider_server).stream(ModelRequest("", (UserMessage("hi"),))) as stream:
            async for chunk in stream:
                chunks.append(chunk)
    assert chunks == [TextChunk("Hello"), UsageChunk(3, 1)]


async def test_anthropic_leaving_early_closes_the_connection(provider_server: Any) -> None:
    """Leaving the stream block after the first chunk of a hanging stream closes the response promptly."""
    body = _stream(_START, _TEXT_START, _TEXT_HELLO, _TEXT_HELLO)
    provider_server.serve(body, hang_after=len(_stream(_START, _TEXT_START, _TEXT_HELLO)))
    with trio.fail_after(10):
        async with _model(provider_server).stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            async for chunk in chunks:
                assert chunk == TextChunk("Hello")
                break
        await provider_server.disconnected.wait()


# -- stop reasons, refusals, argument deltas, native structured output -------------------------------


def _message(*events: tuple[str, str], stop_reason: str | None, output_tokens: int = 9) -> bytes:
    """A whole Messages stream: message_start, ``events``, message_delta (with ``stop_reason``), message_stop."""
    delta = json.dumps(
        {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": output_tokens}}
    )
    return _stream(_START, *events, ("message_delta", delta), ("message_stop", '{"type":"message_stop"}'))


def _block(index: int, block: dict[str, Any]) -> tuple[str, str]:
    return "content_block_start", json.dumps({"type": "content_block_start", "index": index, "content_block": block})


def _delta(index: int, delta: dict[str, Any]) -> tuple[str, str]:
    return "content_block_delta", json.dumps({"type": "content_block_delta", "index": index, "delta": delta})


def _block_stop(index: int) -> tuple[str, str]:
    return "content_block_stop", json.dumps({"type": "content_block_stop", "index": index})


def _text_block(text: str) -> tuple[tuple[str, str], ...]:
    return _block(0, {"type": "text", "text": ""}), _delta(0, {"type": "text_delta", "text": text}), _block_stop(0)


class City(pydantic.BaseModel):
    """A city and its country."""

    name: str
    country: str


@pytest.mark.parametrize(
    ("raw", "reason"), [*STOP_REASONS.items(), ("brand_new_reason", "other")], ids=lambda value: str(value)
)
async def test_anthropic_stop_reason_is_one_stop_chunk(provider_server: Any, raw: str, reason: StopReason) -> None:
    """Each ``stop_reason`` (an unknown one as ``other``) is one StopChunk after the content, before the usage."""
    provider_server.serve(_message(*_text_block("Hi"), stop_reason=raw))
    chunks = await _chunks(_model(provider_server), ModelRequest("", (UserMessage("hi"),)))
    assert chunks == [TextChunk("Hi"), StopChunk(reason, raw), UsageChunk(3, 9)]


async def test_anthropic_no_stop_chunk_without_a_stop_reason(provider_server: Any) -> None:
    """A message_delta with a null stop_reason yields no StopChunk; an error event ends the stream without one."""
    provider_server.serve(_message(*_text_block("Hi"), stop_reason=None))
    chunks = await _chunks(_model(provider_server), ModelRequest("", (UserMessage("hi"),)))
    assert chunks == [TextChunk("Hi"), UsageChunk(3, 9)]
    error = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    stopped = json.dumps({"type": "message_delta", "delta": {"stop_reason": "end_turn"}})
    provider_server.serve(_stream(_START, *_text_block("Hi"), ("message_delta", stopped), ("error", error)))
    chunks = await _chunks(_model(provider_server), ModelRequest("", (UserMessage("hi"),)))
    assert [type(chunk).__name__ for chunk in chunks] == ["TextChunk", "UsageChunk", "ErrorChunk"]


async def test_anthropic_refusal_ends_the_run_and_leaves_history_valid(provider_server: Any) -> None:
    """stop_reason "refusal" ends the run with ``refusal``, the text written so far the refusal; the next run works."""
    provider_server.queue(_message(*_text_block("I can't help with that."), stop_reason="refusal"))
    provider_server.queue(_body("text"))
    agent = Agent(name="claude", model=_model(provider_server), max_turns=1)
    with trio.fail_after(10):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            async with session.run("how do I pick a lock?") as stream:
                events = [event async for event in stream]
            result = stream.result
            async with session.run("the rate?") as stream:
                again = [event async for event in stream]
    assert _of(events, ModelStopped) == [ModelStopped("refusal", "refusal")]
    assert _of(events, Refusal) == [Refusal("I can't help with that.")]
    assert events[-1] == RunFinished("refusal", "I can't help with that.")
    assert (result.reason, result.refusal, result.stop_reason) == ("refusal", "I can't help with that.", "refusal")
    assert again[-1] == RunFinished("completed")
    messages = json.loads(provider_server.requests[1].body)["messages"]
    # The model sees its own refusal next turn.
    assert messages == [
        {"role": "user", "content": "how do I pick a lock?"},
        {"role": "assistant", "content": [{"type": "text", "text": "I can't help with that."}]},
        {"role": "user", "content": "the rate?"},
    ]


async def test_anthropic_tool_call_cut_off_at_max_tokens_is_an_error_result(provider_server: Any) -> None:
    """Arguments cut mid-JSON by stop_reason "max_tokens" are the call's is_error result, never an internal error."""
    ran: list[str] = []

    @tool
    def get_exchange_rate(from_currency: str, to_currency: str) -> str:
        """Look up an exchange rate."""
        ran.append(from_currency)
        return "0.92"

    use = {"type": "tool_use", "id": "toolu_1", "name": "get_exchange_rate", "input": {}}
    provider_server.queue(
        _message(
            _block(0, use),
            _delta(0, {"type": "input_json_delta", "partial_json": '{"from_currency": "USD", "to_cur'}),
            _block_stop(0),
            stop_reason="max_tokens",
        )
    )
    provider_server.queue(_body("text"))
    agent = Agent(name="claude", model=_model(provider_server), tools=[get_exchange_rate], max_turns=2)
    events = await _run(agent)
    assert _of(events, ErrorEvent) == []
    assert events[-1] == RunFinished("completed")
    assert _of(events, ModelStopped) == [ModelStopped("max_tokens", "max_tokens"), ModelStopped("end_turn", "end_turn")]
    [finished] = _of(events, ToolCallFinished)
    assert finished.error is not None
    assert "cut off" in finished.error
    assert ran == []
    *_, assistant, results = json.loads(provider_server.requests[1].body)["messages"]
    assert assistant["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "get_exchange_rate", "input": {}}]
    [result] = results["content"]
    assert (result["type"], result["tool_use_id"], result["is_error"]) == ("tool_result", "toolu_1", True)
    assert "were cut off" in result["content"]
    assert "max_tokens" in result["content"]


async def test_anthropic_argument_deltas_join_to_the_tool_call(provider_server: Any) -> None:
    """A tool_use block's input_json_delta pieces stream as deltas that join to its arguments; a server tool's don't."""
    provider_server.serve(_body("text_server_tool_then_tool_use"))
    chunks = await _chunks(_model(provider_server), ModelRequest("", (UserMessage("rate?"),)))
    deltas = [chunk for chunk in chunks if isinstance(chunk, ToolCallDeltaChunk)]
    [call] = [chunk for chunk in chunks if isinstance(chunk, ToolCallChunk)]
    assert len(deltas) > 1
    assert {(delta.call_id, delta.name) for delta in deltas} == {(call.call_id, call.name)}
    assert "".join(delta.arguments_delta for delta in deltas) == call.arguments
    assert chunks.index(deltas[-1]) < chunks.index(call)

    events = await _run(Agent(name="claude", model=_model(provider_server), max_turns=1))
    assert [(e.call_id, e.name, e.arguments_delta) for e in _of(events, ToolCallDelta)] == [
        (delta.call_id, delta.name, delta.arguments_delta) for delta in deltas
    ]


async def test_anthropic_native_output_sends_output_format_and_the_beta(provider_server: Any) -> None:
    """``output_mode="native"`` sends the schema as ``output_format`` with the structured-outputs beta header."""
    answer = json.dumps({"name": "Oslo", "country": "Norway"})
    provider_server.serve(_message(*_text_block(answer), stop_reason="end_turn"))
    agent = Agent(name="claude", model=_model(provider_server), output_type=City, output_mode="native", max_turns=1)
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            result = await session.ask("where?")
    assert result.output == City(name="Oslo", country="Norway")
    [request] = provider_server.requests
    assert request.headers["anthropic-beta"] == BETA
    output = agent.output.request_output()
    assert output is not None
    body = json.loads(request.body)
    # The schema as structured outputs require it: every object closed to other properties.
    expected = {**output.schema, "additionalProperties": False}
    assert body["output_format"] == {"type": "json_schema", "schema": expected}
    assert set(body["output_format"]["schema"]["properties"]) == {"name", "country"}
    assert "tools" not in body
    assert AnthropicModel.native_output is True


class Day(pydantic.BaseModel):
    minimum: int = pydantic.Field(description="The coldest hour.")
    high_c: float = pydantic.Field(ge=-90, le=60)
    tags: list[str] = pydantic.Field(min_length=2, max_length=5)
    when: datetime.date


class Forecast(pydantic.BaseModel):
    """A forecast."""

    city: str = pydantic.Field(min_length=1, pattern="^[A-Z]")
    days: list[Day] = pydantic.Field(min_length=1)
    sky: Literal["sun", "rain"] | None = None


async def test_anthropic_native_output_schema_is_made_what_structured_outputs_take(provider_server: Any) -> None:
    """Every object, in $defs too, gets additionalProperties: false; the constraints Anthropic refuses are
    moved into descriptions (the supported ones, and a property named like one, stay); the answer is still
    held to all of them: one breaking a moved constraint is retried."""
    day = {"minimum": 3, "high_c": 100, "tags": ["a", "b"], "when": "2024-05-01"}
    bad = json.dumps({"city": "Oslo", "days": [day]})
    good = json.dumps({"city": "Oslo", "days": [{**day, "high_c": 20}]})
    provider_server.queue(_message(*_text_block(bad), stop_reason="end_turn"))
    provider_server.queue(_message(*_text_block(good), stop_reason="end_turn"))
    agent = Agent(name="claude", model=_model(provider_server), output_type=Forecast, output_mode="native")
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            result = await session.ask("weather?")
    assert result.output is not None
    assert (result.output.days[0].high_c, result.output.days[0].when) == (20, datetime.date(2024, 5, 1))
    first, second = (json.loads(request.body)["output_format"]["schema"] for request in provider_server.requests)
    assert first == second
    assert first == {
        "$defs": {
            "Day": {
                "properties": {
                    "minimum": {"description": "The coldest hour.", "title": "Minimum", "type": "integer"},
                    "high_c": {"description": "{maximum: 60, minimum: -90}", "title": "High C", "type": "number"},
                    "tags": {
                        "items": {"type": "string"},
                        "description": "{maxItems: 5, minItems: 2}",
                        "title": "Tags",
                        "type": "array",
                    },
                    "when": {"format": "date", "title": "When", "type": "string"},
                },
                "required": ["minimum", "high_c", "tags", "when"],
                "title": "Day",
                "type": "object",
                "additionalProperties": False,
            }
        },
        "properties": {
            "city": {"description": '{minLength: 1, pattern: "^[A-Z]"}', "title": "City", "type": "string"},
            "days": {"items": {"$ref": "#/$defs/Day"}, "minItems": 1, "title": "Days", "type": "array"},
            "sky": {
                "anyOf": [{"enum": ["sun", "rain"], "type": "string"}, {"type": "null"}],
                "default": None,
                "title": "Sky",
            },
        },
        "required": ["city", "days"],
        "title": "Forecast",
        "type": "object",
        "additionalProperties": False,
    }
    output = agent.output.request_output()
    assert output is not None
    assert "minLength" in json.dumps(output.schema)  # the agent's own schema is untouched


def test_anthropic_output_schema_leaves_a_map_to_the_api_and_makes_one_of_any_of() -> None:
    """A map's value schema is kept (closing it would make every answer {}: better the API's 400), its own
    constraints moved; a discriminated oneOf becomes anyOf, the discriminator moved into the description."""
    schema = {
        "type": "object",
        "properties": {
            "counts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
            "pet": {"oneOf": [{"$ref": "#/$defs/Cat"}], "discriminator": {"propertyName": "kind"}},
            "attributes": {"type": "object", "additionalProperties": True},  # dict[str, Any]
            "extra": {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True},
        },
    }
    assert _output_schema(schema) == {
        "type": "object",
        "properties": {
            "counts": {"type": "object", "additionalProperties": {"type": "integer", "description": "{minimum: 0}"}},
            "pet": {"anyOf": [{"$ref": "#/$defs/Cat"}], "description": '{discriminator: {"propertyName": "kind"}}'},
            "attributes": {"type": "object", "additionalProperties": True},  # was closed: only {} could answer
            # A model with extra="allow": its declared fields are the answer (open, the API refuses it).
            "extra": {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
        },
        "additionalProperties": False,
    }


async def test_anthropic_beta_header_keeps_the_clients_own_betas(provider_server: Any) -> None:
    """A shared client that sends its own ``anthropic-beta`` keeps it: the structured-outputs beta is added, once."""
    answer = json.dumps({"name": "Oslo", "country": "Norway"})
    provider_server.serve(_message(*_text_block(answer), stop_reason="end_turn"))
    agent = Agent(name="claude", model=_model(provider_server), output_type=City, output_mode="native", max_turns=1)
    for sent, expected in [
        ("fine-grained-tool-streaming-2025-05-14", f"fine-grained-tool-streaming-2025-05-14,{BETA}"),
        (f"a-beta, {BETA}", f"a-beta,{BETA}"),
    ]:
        async with (
            httpx.AsyncClient(headers={"anthropic-beta": sent}) as client,
            open_runtime(http_client=client) as runtime,
            runtime.open_session(agent) as session,
        ):
            with trio.fail_after(10):
                await session.ask("where?")
        assert provider_server.requests[-1].headers["anthropic-beta"] == expected


async def test_anthropic_message_stop_ends_the_stream_though_the_connection_stays_open(provider_server: Any) -> None:
    """message_stop ends the answer: what follows is not read, even when the server holds the response open."""
    answer = _message(*_text_block("Hello"), stop_reason="end_turn")
    provider_server.serve(answer + _stream(_TEXT_HELLO), hang_after=len(answer))
    chunks = await _chunks(_model(provider_server), ModelRequest("", (UserMessage("hi"),)))
    assert [chunk for chunk in chunks if isinstance(chunk, TextChunk)] == [TextChunk("Hello")]
