"""OpenAIResponsesModel against a real loopback server: recorded streams, errors, retries and cancellation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, TypeVar

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
    ErrorChunk,
    MalformedStreamError,
    ModelChunk,
    ModelConnectionError,
    ModelRequest,
    OpenAIResponsesModel,
    OutputSchema,
    ProviderError,
    RateLimitError,
    ReasoningChunk,
    RefusalChunk,
    RetryPolicy,
    ServerError,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolResultMessage,
    ToolSpec,
    UsageChunk,
    UserMessage,
    tool,
)
from agents.models._http import DEFAULT_RETRY, HTTPModel
from runtime import open_runtime
from runtime.events import (
    ErrorEvent,
    Event,
    FinalOutput,
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

FIXTURES: Final = Path(__file__).resolve().parents[2] / "fixtures" / "llm_streams" / "openai_responses"
"""The recorded Responses API streams (tests/fixtures/README.md)."""
CASES: Final[dict[str, dict[str, Any]]] = {
    path.stem: json.loads(path.read_text("utf-8")) for path in sorted(FIXTURES.glob("*.json"))
}
"""Every recorded case, by name (the file's stem)."""
RUN_LIMIT: Final = 10.0
"""Seconds any one run against the loopback server may take before the test fails."""
ONE_TRY: Final = RetryPolicy(max_attempts=1)
T = TypeVar("T")


def _body(name: str) -> bytes:
    """The recorded response body of a case, byte for byte."""
    return (FIXTURES / str(CASES[name]["body_file"])).read_bytes()


def _serve_case(server: Any, name: str, **options: Any) -> dict[str, Any]:
    case = CASES[name]
    server.serve(_body(name), status=case["http_status"], content_type=case["content_type"], **options)
    return case


def _model(server: Any, *, retry: RetryPolicy = ONE_TRY, **settings: Any) -> OpenAIResponsesModel:
    return OpenAIResponsesModel("m", base_url=server.base_url, api_key="k", retry=retry, **settings)


def _agent(server: Any, *, retry: RetryPolicy = ONE_TRY, **options: Any) -> Agent:
    return Agent(name="gpt", model=_model(server, retry=retry), **{"max_turns": 1, **options})


def _stream(*events: dict[str, Any]) -> bytes:
    """A Responses stream as OpenAI frames it: ``event: <type>`` and one JSON ``data:`` line per event."""
    return b"".join(
        f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': n})}\n\n".encode()
        for n, event in enumerate(events)
    )


def _result(status: str, *, usage: tuple[int, int] | None = (5, 7), **fields: Any) -> dict[str, Any]:
    """The ``response`` object of a terminal event."""
    counted = None if usage is None else {"input_tokens": usage[0], "output_tokens": usage[1]}
    return {"id": "resp_1", "object": "response", "status": status, "output": [], "usage": counted, **fields}


def _text_delta(text: str) -> dict[str, Any]:
    return {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
            "delta": text}  # fmt: skip


COMPLETED: Final = {"type": "response.completed", "response": _result("completed")}


def _error_body(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "test_error", "code": None}}).encode()


async def _run(agent: Agent, prompt: str = "hi", **runtime_options: Any) -> list[Event]:
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime(**runtime_options) as runtime, runtime.open_session(agent) as session:
            async with session.run(prompt) as stream:
                return [event async for event in stream]


async def _chunks(model: OpenAIResponsesModel, request: ModelRequest | None = None) -> list[ModelChunk]:
    """Drive the model alone (its own client), so its typed exceptions reach the test."""
    with trio.fail_after(RUN_LIMIT):
        async with model.stream(request or ModelRequest("", (UserMessage("hi"),))) as chunks:
            return [chunk async for chunk in chunks]


def _of(items: list[Any], kind: type[T]) -> list[T]:
    return [item for item in items if isinstance(item, kind)]


def _finished(events: list[Event]) -> RunFinished:
    finishes = _of(events, RunFinished)
    assert len(finishes) == 1
    assert events[-1] is finishes[0]
    return finishes[0]


def _the_error(events: list[Event]) -> ErrorEvent:
    """The run's one ErrorEvent, checking the run then finished with ``error``."""
    errors = _of(events, ErrorEvent)
    assert len(errors) == 1, events
    assert _finished(events).reason == "error"
    return errors[0]


def _sent(server: Any, index: int = -1) -> dict[str, Any]:
    """The JSON body of a request the loopback server received."""
    body: dict[str, Any] = json.loads(server.requests[index].body)
    return body


# Recorded streams


@pytest.mark.parametrize("name", sorted(CASES))
async def test_responses_fixture_stream_gives_the_expected_chunks(provider_server: Any, name: str) -> None:
    """Each recorded stream, served byte for byte, gives the text, reasoning, calls, stop, usage or error expected."""
    expect = _serve_case(provider_server, name)["expect"]
    chunks = await _chunks(_model(provider_server))
    assert "".join(c.text for c in _of(chunks, TextChunk)) == expect["text"]
    assert "".join(c.text for c in _of(chunks, ReasoningChunk)) == expect["reasoning"]
    assert "".join(c.text for c in _of(chunks, RefusalChunk)) == (expect["refusal"] or "")
    calls = _of(chunks, ToolCallChunk)
    assert all(isinstance(c.arguments, str) for c in calls)  # the raw JSON text, as the model wrote it
    assert [(c.call_id, c.name, json.loads(str(c.arguments))) for c in calls] == [
        (call["id"], call["name"], call["arguments"]) for call in expect["tool_calls"]
    ]
    if expect["error"] is not None:
        assert chunks[-1] == ErrorChunk("provider", expect["error"]["message"], 429)  # insufficient_quota
        assert _of(chunks, StopChunk) == []
    else:
        usage = expect["usage"]
        assert chunks[-2:] == [
            StopChunk(expect["stop"], expect["status"]),
            UsageChunk(
                usage["input_tokens"],
                usage["output_tokens"],
                cache_read_tokens=usage["input_tokens_details"]["cached_tokens"],
                reasoning_tokens=usage["output_tokens_details"]["reasoning_tokens"],
            ),
        ]
    assert [(r.method, r.path) for r in provider_server.requests] == [("POST", "/responses")]


@pytest.mark.parametrize("name", sorted(CASES))
async def test_responses_fixture_served_a_byte_at_a_time_gives_the_same_chunks(provider_server: Any, name: str) -> None:
    """A server that sends the stream one byte at a time (splitting every line and field) changes nothing."""
    _serve_case(provider_server, name)
    whole = await _chunks(_model(provider_server))
    _serve_case(provider_server, name, chunk_size=1)
    assert await _chunks(_model(provider_server)) == whole


@pytest.mark.parametrize("name", sorted(CASES))
async def test_responses_fixture_run_through_a_session(provider_server: Any, name: str) -> None:
    """Each recorded stream run by the runtime: the consumer sees the text, reasoning, calls, usage or error."""
    expect = _serve_case(provider_server, name)["expect"]
    events = await _run(_agent(provider_server))
    assert isinstance(events[0], RunStarted)
    assert "".join(e.text for e in _of(events, TextDelta)) == expect["text"]
    assert "".join(e.text for e in _of(events, ReasoningDelta)) == expect["reasoning"]
    assert [(e.call_id, e.name, e.arguments) for e in _of(events, ToolCallStarted)] == [
        (call["id"], call["name"], call["arguments"]) for call in expect["tool_calls"]
    ]
    if expect["error"] is not None:
        error = _the_error(events)
        assert error.kind == "model"
        assert expect["error"]["message"] in error.message
    else:
        assert _of(events, ErrorEvent) == []
        assert _of(events, ModelStopped) == [ModelStopped(expect["stop"], expect["status"])]
        usage = expect["usage"]
        assert _of(events, Usage) == [
            Usage(
                usage["input_tokens"],
                usage["output_tokens"],
                cache_read_tokens=usage["input_tokens_details"]["cached_tokens"],
                reasoning_tokens=usage["output_tokens_details"]["reasoning_tokens"],
            )
        ]
        assert _finished(events).reason == ("max_turns" if expect["tool_calls"] else "completed")


async def test_responses_recorded_tool_round_trip_runs_the_tool_and_sends_its_result(provider_server: Any) -> None:
    """The recorded call, the tool run, then the recorded answer; the second request carries the call and its output
    as the recording's own second request did."""

    @tool
    def get_capital(country: str) -> str:
        """The capital of a country."""
        return {"France": "Paris"}[country]

    provider_server.queue(_body("function_call"))
    provider_server.queue(_body("text_usage"))
    events = await _run(_agent(provider_server, tools=[get_capital], max_turns=2), "What is the capital of France?")
    assert _finished(events) == RunFinished("completed")
    assert [(e.call_id, e.result) for e in _of(events, ToolCallFinished)] == [
        ("call_HQHdUC4vy1PBrZTJ85nBHmeQ", "Paris")
    ]
    assert "".join(e.text for e in _of(events, TextDelta)) == "The capital of France is Paris."
    assert _of(events, Usage) == [Usage(39, 16), Usage(62, 9)]
    assert [e.reason for e in _of(events, ModelStopped)] == ["tool_use", "end_turn"]
    second = _sent(provider_server)
    # The input items of pydantic-ai's recorded second request (tests/fixtures/README.md).
    assert second["input"] == [
        {"role": "user", "content": "What is the capital of France?"},
        {
            "type": "function_call",
            "call_id": "call_HQHdUC4vy1PBrZTJ85nBHmeQ",
            "name": "get_capital",
            "arguments": '{"country":"France"}',
        },
        {"type": "function_call_output", "call_id": "call_HQHdUC4vy1PBrZTJ85nBHmeQ", "output": "Paris"},
    ]
    assert [t["name"] for t in second["tools"]] == ["get_capital"]


async def test_responses_argument_deltas_concatenate_to_the_final_arguments(provider_server: Any) -> None:
    """Each argument fragment streams as it comes (chunk and event), and they join to the whole call's arguments."""
    provider_server.serve(_body("function_call"))
    chunks = await _chunks(_model(provider_server))
    assert [type(c) for c in chunks] == [ToolCallDeltaChunk] * 5 + [ToolCallChunk, StopChunk, UsageChunk]
    deltas = _of(chunks, ToolCallDeltaChunk)
    assert [d.arguments_delta for d in deltas] == ['{"', "country", '":"', "France", '"}']
    assert {(d.call_id, d.name) for d in deltas} == {("call_HQHdUC4vy1PBrZTJ85nBHmeQ", "get_capital")}
    (call,) = _of(chunks, ToolCallChunk)
    assert "".join(d.arguments_delta for d in deltas) == call.arguments == '{"country":"France"}'
    events = await _run(_agent(provider_server))
    streamed = _of(events, ToolCallDelta)
    assert "".join(e.arguments_delta for e in streamed) == '{"country":"France"}'
    (started,) = _of(events, ToolCallStarted)
    assert json.loads("".join(e.arguments_delta for e in streamed)) == started.arguments


# Stream shapes the recordings do not show


async def test_responses_usage_counts_cached_and_reasoning_tokens(provider_server: Any) -> None:
    """``input_tokens_details.cached_tokens`` (part of ``input_tokens``) are the cache reads, and
    ``output_tokens_details.reasoning_tokens`` (part of ``output_tokens``) the reasoning, as in Chat Completions."""
    usage = {
        "input_tokens": 1200,
        "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 70,
        "output_tokens_details": {"reasoning_tokens": 64},
    }
    provider_server.serve(
        _stream(_text_delta("Hi"), {"type": "response.completed", "response": _result("completed") | {"usage": usage}})
    )
    assert (await _chunks(_model(provider_server)))[-1] == UsageChunk(
        1200, 70, cache_read_tokens=1024, reasoning_tokens=64
    )
    events = await _run(_agent(provider_server))
    assert _of(events, Usage) == [Usage(1200, 70, cache_read_tokens=1024, reasoning_tokens=64)]


async def test_responses_response_failed_is_a_model_error(provider_server: Any) -> None:
    """A ``response.failed`` event ends the run with the provider's message; the tokens it spent are still counted."""
    error = {"code": "server_error", "message": "The model failed to generate a response."}
    provider_server.serve(
        _stream(_text_delta("Half an"), {"type": "response.failed", "response": _result("failed", error=error)})
    )
    chunks = await _chunks(_model(provider_server))
    assert chunks == [TextChunk("Half an"), UsageChunk(5, 7), ErrorChunk("provider", error["message"], 500)]
    events = await _run(_agent(provider_server))
    assert _the_error(events).message.endswith(error["message"])
    assert _the_error(events).kind == "model"
    assert _of(events, Usage) == [Usage(5, 7)]


async def test_responses_response_failed_without_an_error_object_still_fails(provider_server: Any) -> None:
    """A ``response.failed`` with ``error: null`` is still an error, never an empty answer."""
    provider_server.serve(_stream({"type": "response.failed", "response": _result("failed", usage=None, error=None)}))
    chunks = await _chunks(_model(provider_server))
    assert chunks == [ErrorChunk("provider", "openai: the response failed")]


async def test_responses_error_event_ends_the_stream_with_its_message(provider_server: Any) -> None:
    """An ``error`` event (code and message at its top level) ends the stream as a provider error."""
    provider_server.serve(
        _stream(
            _text_delta("partial"),
            {"type": "error", "code": "rate_limit_exceeded", "message": "Slow down.", "param": None},
            COMPLETED,  # never read: the error ended the stream
        )
    )
    assert await _chunks(_model(provider_server)) == [TextChunk("partial"), ErrorChunk("provider", "Slow down.", 429)]


@pytest.mark.parametrize(
    ("reason", "stop"),
    [("max_output_tokens", "max_tokens"), ("content_filter", "content_filter"), ("something_new", "other")],
)
async def test_responses_incomplete_response_reports_why_it_stopped(
    provider_server: Any, reason: str, stop: str
) -> None:
    """``response.incomplete`` gives a StopChunk from ``incomplete_details.reason`` (kept raw), then its usage."""
    incomplete = _result("incomplete", incomplete_details={"reason": reason})
    provider_server.serve(
        _stream(_text_delta("The capital of"), {"type": "response.incomplete", "response": incomplete})
    )
    chunks = await _chunks(_model(provider_server))
    assert chunks == [TextChunk("The capital of"), StopChunk(stop, reason), UsageChunk(5, 7)]  # type: ignore[arg-type]
    events = await _run(_agent(provider_server))
    assert _of(events, ModelStopped) == [ModelStopped(stop, reason)]  # type: ignore[arg-type]


async def test_responses_refusal_ends_the_run_as_a_refusal(provider_server: Any) -> None:
    """Refusal deltas stream as RefusalChunks, and the runtime ends the run with the refusal's text."""
    refusal = {"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0}
    provider_server.serve(
        _stream({**refusal, "delta": "I'm sorry, "}, {**refusal, "delta": "I can't help with that."}, COMPLETED)
    )
    chunks = await _chunks(_model(provider_server))
    assert chunks == [
        RefusalChunk("I'm sorry, "),
        RefusalChunk("I can't help with that."),
        StopChunk("end_turn", "completed"),
        UsageChunk(5, 7),
    ]
    events = await _run(_agent(provider_server))
    assert _of(events, Refusal) == [Refusal("I'm sorry, I can't help with that.")]
    assert _finished(events).reason == "refusal"


async def test_responses_function_call_sent_whole_in_output_item_done(provider_server: Any) -> None:
    """A server that streams no argument deltas and sends the call only in ``output_item.done`` gives it once."""
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "lookup", "arguments": '{"q": 1}'}
    provider_server.serve(_stream({"type": "response.output_item.done", "output_index": 0, "item": item}, COMPLETED))
    chunks = await _chunks(_model(provider_server))
    assert chunks == [
        ToolCallChunk("call_1", "lookup", '{"q": 1}'),
        StopChunk("tool_use", "completed"),
        UsageChunk(5, 7),
    ]


async def test_responses_unfinished_call_is_completed_from_its_deltas(provider_server: Any) -> None:
    """A call whose arguments never got a ``done`` event is whole at ``response.completed``, from its fragments."""
    added = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "lookup", "arguments": ""}
    delta = {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0}
    provider_server.serve(
        _stream(
            {"type": "response.output_item.added", "output_index": 0, "item": added},
            {**delta, "delta": '{"q":'},
            {**delta, "delta": " 1}"},
            COMPLETED,
        )
    )
    chunks = await _chunks(_model(provider_server))
    assert chunks[-3:] == [
        ToolCallChunk("call_1", "lookup", '{"q": 1}'),
        StopChunk("tool_use", "completed"),
        UsageChunk(5, 7),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_stream(_text_delta("cut")), "ended before response.completed"),
        (b"event: response.output_text.delta\ndata: {not json\n\n", "is not JSON"),
        (
            _stream({"type": "response.function_call_arguments.delta", "item_id": "fc_9", "delta": "{}"}),
            "not a function call",
        ),
        (_stream({"type": "response.completed"}), "has no response"),
    ],
    ids=["no-terminal-event", "not-json", "delta-of-unknown-item", "completed-without-response"],
)
async def test_responses_malformed_stream_is_a_malformed_stream_error(
    provider_server: Any, body: bytes, message: str
) -> None:
    """A stream that breaks the protocol raises MalformedStreamError from the model, and ends the run with it."""
    provider_server.serve(body)
    with pytest.raises(MalformedStreamError, match=message):
        await _chunks(_model(provider_server))
    assert message in _the_error(await _run(_agent(provider_server))).message


# Requests


async def test_responses_request_body_carries_the_history_tools_and_settings(provider_server: Any) -> None:
    """What the server receives: model, instructions, every kind of history item, tools, stream, store, settings."""
    provider_server.serve(_body("text_usage"))
    model = OpenAIResponsesModel(
        "gpt-4.1-mini", base_url=provider_server.base_url, api_key="sk-test", retry=ONE_TRY, temperature=0.2
    )
    request = ModelRequest(
        "Answer briefly.",
        (
            UserMessage("What is the capital of France?"),
            AssistantMessage(
                "Let me look.",
                (
                    ToolCallChunk("call_1", "get_capital", {"country": "France"}),
                    ToolCallChunk("call_2", "get_time", ""),
                ),
            ),
            ToolResultMessage("call_1", "get_capital", "Paris"),
            ToolResultMessage("call_2", "get_time", "error: no clock", is_error=True),
            AssistantMessage("", (ToolCallChunk("call_3", "get_capital", '{"country":"Peru"}'),)),
            ToolResultMessage("call_3", "get_capital", "Lima"),
            AssistantMessage("Paris, and Lima."),
            UserMessage("Thanks!"),
        ),
        tools=(ToolSpec("get_capital", "The capital of a country.", {"type": "object", "properties": {}}),),
    )
    await _chunks(model, request)
    (received,) = provider_server.requests
    assert (received.method, received.path) == ("POST", "/responses")
    assert received.headers["authorization"] == "Bearer sk-test"
    assert received.headers["accept"] == "text/event-stream"
    assert received.headers["content-type"] == "application/json"
    assert json.loads(received.body) == {
        "model": "gpt-4.1-mini",
        "instructions": "Answer briefly.",
        "input": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Let me look."},
            {"type": "function_call", "call_id": "call_1", "name": "get_capital", "arguments": '{"country": "France"}'},
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Paris"},
            {"type": "function_call_output", "call_id": "call_2", "output": "error: no clock"},
            {"type": "function_call", "call_id": "call_3", "name": "get_capital", "arguments": '{"country":"Peru"}'},
            {"type": "function_call_output", "call_id": "call_3", "output": "Lima"},
            {"role": "assistant", "content": "Paris, and Lima."},
            {"role": "user", "content": "Thanks!"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "get_capital",
                "description": "The capital of a country.",
                "parameters": {"type": "object", "properties": {}},
                "strict": False,
            }
        ],
        "stream": True,
        "store": False,
        "temperature": 0.2,
    }


async def test_responses_request_without_instructions_tools_or_key_leaves_them_out(provider_server: Any) -> None:
    """No instructions, no tools and no API key: no ``instructions``, ``tools``, ``text`` or authorization is sent."""
    provider_server.serve(_body("text_usage"))
    await _chunks(OpenAIResponsesModel("m", base_url=provider_server.base_url, api_key="", retry=ONE_TRY))
    (received,) = provider_server.requests
    assert "authorization" not in received.headers
    assert json.loads(received.body) == {
        "model": "m",
        "input": [{"role": "user", "content": "hi"}],
        "stream": True,
        "store": False,
    }


async def test_responses_native_output_is_a_json_schema_text_format(provider_server: Any) -> None:
    """``request.output`` asks for a non-strict ``json_schema`` text format, beside a ``text`` setting, not over it."""
    provider_server.serve(_body("text_usage"))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    model = _model(provider_server, text={"verbosity": "low"}, store=True)
    output = OutputSchema("Capital", schema, "The capital city.")
    await _chunks(model, ModelRequest("", (UserMessage("hi"),), output=output))
    sent = _sent(provider_server)
    assert sent["text"] == {
        "verbosity": "low",
        "format": {
            "type": "json_schema",
            "name": "Capital",
            "description": "The capital city.",
            "schema": schema,
            "strict": False,
        },
    }
    assert sent["store"] is True  # a setting overrides the default
    await _chunks(_model(provider_server), ModelRequest("", (UserMessage("hi"),), output=OutputSchema("C", schema)))
    assert _sent(provider_server)["text"] == {
        "format": {"type": "json_schema", "name": "C", "schema": schema, "strict": False}
    }


class Capital(pydantic.BaseModel):
    """A country's capital."""

    city: str


async def test_responses_native_output_run_gives_the_validated_value(provider_server: Any) -> None:
    """An agent with ``output_mode="native"`` runs on this model: the schema is sent, the JSON answer validated."""
    provider_server.serve(_stream(_text_delta('{"city": '), _text_delta('"Paris"}'), COMPLETED))
    agent = _agent(provider_server, output_type=Capital, output_mode="native")
    events = await _run(agent)
    assert _of(events, FinalOutput) == [FinalOutput(Capital(city="Paris"))]
    assert _finished(events) == RunFinished("completed")
    text_format = _sent(provider_server)["text"]["format"]
    assert text_format["type"] == "json_schema"
    assert text_format["schema"]["properties"] == {"city": {"title": "City", "type": "string"}}
    assert "tools" not in _sent(provider_server)


# HTTP: errors, retries, broken connections


async def test_responses_dropped_connection_mid_stream_ends_the_run(provider_server: Any) -> None:
    """A server that closes the connection halfway ends the run with a connection error, without hanging."""
    body = _body("text_usage")
    provider_server.serve(body, drop_after=body.index(b'"delta":" is"'))
    events = await _run(_agent(provider_server))
    assert "".join(e.text for e in _of(events, TextDelta)) == "The capital of France"
    error = _the_error(events)
    assert error.kind == "model"
    assert "stream broke" in error.message
    with pytest.raises(ModelConnectionError, match="stream broke") as caught:
        await _chunks(_model(provider_server))
    assert isinstance(caught.value.__cause__, httpx.TransportError)


async def test_responses_429_retry_after_is_honoured_then_succeeds(
    provider_server: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """A 429 with ``Retry-After: 5`` is retried 5 (virtual) seconds later, not after the tiny backoff, and succeeds."""
    provider_server.queue(
        _error_body("Rate limit reached"), status=429, content_type="application/json", headers={"Retry-After": "5"}
    )
    provider_server.queue(_body("text_usage"))
    start = trio.current_time()
    chunks = await _chunks(_model(provider_server, retry=RetryPolicy(0.01, max_attempts=2)))
    assert 5.0 <= trio.current_time() - start < 6.0
    assert "".join(c.text for c in _of(chunks, TextChunk)) == "The capital of France is Paris."
    assert len(provider_server.requests) == 2


async def test_responses_429_every_time_is_a_rate_limit_error(provider_server: Any) -> None:
    """A 429 on every attempt raises RateLimitError after all the attempts, and ends a run with its message."""
    provider_server.serve(_error_body("Rate limit reached"), status=429, content_type="application/json")
    model = _model(provider_server, retry=RetryPolicy(0.01, max_attempts=2))
    with pytest.raises(RateLimitError) as caught:
        await _chunks(model)
    assert caught.value.provider == "openai-responses"
    assert caught.value.provider_message == "Rate limit reached"
    assert len(provider_server.requests) == 2
    error = _the_error(await _run(Agent(name="gpt", model=model, max_turns=1)))
    assert error.message == str(caught.value)


async def test_responses_500_then_200_succeeds(provider_server: Any) -> None:
    """A server error is retried with backoff, and the run succeeds on the next answer."""
    provider_server.queue(_error_body("The server had an error"), status=500, content_type="application/json")
    provider_server.queue(_body("text_usage"))
    events = await _run(_agent(provider_server, retry=RetryPolicy(0.01, max_attempts=3)))
    assert _finished(events) == RunFinished("completed")
    assert _of(events, ErrorEvent) == []
    assert "".join(e.text for e in _of(events, TextDelta)) == "The capital of France is Paris."
    assert len(provider_server.requests) == 2


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (404, BadRequestError),
        (500, ServerError),
        (503, ServerError),
    ],
)
async def test_responses_http_status_maps_to_a_typed_error(
    provider_server: Any, status: int, kind: type[ProviderError]
) -> None:
    """Each HTTP error status (5xx once retries are spent) raises its own ProviderError, with the provider's message."""
    provider_server.serve(_error_body(f"went wrong ({status})"), status=status, content_type="application/json")
    with pytest.raises(ProviderError) as caught:
        await _chunks(_model(provider_server, retry=RetryPolicy(0.01, max_attempts=2)))
    assert type(caught.value) is kind
    assert caught.value.status == status
    assert caught.value.provider_message == f"went wrong ({status})"
    assert len(provider_server.requests) == (2 if status >= 500 else 1)


# Cancellation


async def test_responses_leaving_a_run_mid_stream_closes_the_response(provider_server: Any) -> None:
    """Breaking out of a run while the model waits for more of the stream closes the HTTP connection at once."""
    body = _body("text_usage")
    provider_server.serve(body, hang_after=body.index(b'"delta":" is"'))
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


async def test_responses_cancelling_the_model_mid_stream_closes_the_response(provider_server: Any) -> None:
    """Cancelling the scope that reads the model's stream, blocked mid-stream, closes its response at once."""
    body = _body("function_call")
    provider_server.serve(body, hang_after=body.index(b'"delta":"France"'))
    chunks: list[ModelChunk] = []

    async def consume() -> None:
        async with _model(provider_server).stream(ModelRequest("", (UserMessage("hi"),))) as stream:
            async for chunk in stream:
                chunks.append(chunk)

    with trio.fail_after(RUN_LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()  # the model now waits on the socket, mid-call
            assert not provider_server.disconnected.is_set()
            nursery.cancel_scope.cancel()
        with trio.fail_after(1):
            await provider_server.disconnected.wait()
    call = ("call_HQHdUC4vy1PBrZTJ85nBHmeQ", "get_capital")
    assert chunks == [
        ToolCallDeltaChunk(*call, '{"'),
        ToolCallDeltaChunk(*call, "country"),
        ToolCallDeltaChunk(*call, '":"'),
    ]


async def test_responses_closing_the_session_mid_stream_cancels_the_run(provider_server: Any) -> None:
    """Closing the session while its run streams ends the run as cancelled and closes the HTTP connection."""
    body = _body("reasoning_summary_text")
    provider_server.serve(body, hang_after=body.index(b"response.output_text.delta"))
    events: list[Event] = []
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime:
            handle = await runtime.start_session(_agent(provider_server))
            async with handle.session.run("hi") as stream:
                async for event in stream:
                    events.append(event)
                    if isinstance(event, ReasoningDelta) and event.text == " sum":
                        await handle.aclose()
            with trio.fail_after(1):
                await provider_server.disconnected.wait()
    assert _finished(events) == RunFinished("cancelled")
    assert "".join(e.text for e in _of(events, ReasoningDelta)) == "**Calculating a simple sum"


# The model object


def test_responses_model_takes_its_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Base URL and key from OPENAI_BASE_URL and OPENAI_API_KEY (as OpenAIChatModel), the rest from HTTPModel."""
    assert issubclass(OpenAIResponsesModel, HTTPModel)
    for shared in ("__init__", "__repr__", "stream"):
        assert shared not in vars(OpenAIResponsesModel), shared
    assert OpenAIResponsesModel.native_output is True
    monkeypatch.setenv("OPENAI_BASE_URL", "http://from-env.invalid/v9/")
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    model = OpenAIResponsesModel("o4-mini", reasoning={"summary": "auto"})
    assert model.base_url == "http://from-env.invalid/v9"
    assert model.retry == DEFAULT_RETRY
    assert model.settings == {"reasoning": {"summary": "auto"}}
    assert repr(model) == "OpenAIResponsesModel('o4-mini', base_url='http://from-env.invalid/v9')"
    assert model.headers(ModelRequest("", ()))["authorization"] == "Bearer env-key"
    assert "authorization" not in OpenAIResponsesModel("m", api_key="").headers(ModelRequest("", ()))
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert OpenAIResponsesModel("m").base_url == "https://api.openai.com/v1"
