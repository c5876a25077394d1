"""GeminiModel against a real loopback server: recorded streams, request shape, errors, retries and cancellation."""

from __future__ import annotations

import json
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
    ErrorChunk,
    GeminiModel,
    MalformedStreamError,
    MissingAPIKeyError,
    ModelChunk,
    ModelConnectionError,
    ModelRequest,
    OutputSchema,
    RateLimitError,
    ReasoningChunk,
    RetryPolicy,
    ServerError,
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
from agents.models._gemini import SKIP_SIGNATURE
from agents.models._http import HTTPModel, error_chunk
from runtime import open_runtime
from runtime.events import (
    ErrorEvent,
    Event,
    ModelStopped,
    ReasoningDelta,
    RunFinished,
    TextDelta,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
)

FIXTURES: Final = Path(__file__).resolve().parents[2] / "fixtures" / "llm_streams" / "gemini"
CASES: Final[dict[str, dict[str, Any]]] = {
    path.stem: json.loads(path.read_text("utf-8")) for path in sorted(FIXTURES.glob("*.json"))
}
"""Every recorded case, by name (the file's stem)."""
RUN_LIMIT: Final = 10.0
"""Seconds any one run against the loopback server may take before the test fails."""
ONE_TRY: Final = RetryPolicy(max_attempts=1)
KEY: Final = "AIzaSy-test-key-7c1e"
PATH: Final = "/models/m:streamGenerateContent?alt=sse"


class CityLocation(pydantic.BaseModel):
    city: str
    country: str


def _body(name: str) -> bytes:
    """The recorded response body of a case, byte for byte."""
    return (FIXTURES / str(CASES[name]["body_file"])).read_bytes()


def _model(server: Any, *, retry: RetryPolicy = ONE_TRY, **settings: Any) -> GeminiModel:
    return GeminiModel("m", base_url=server.base_url, api_key=KEY, retry=retry, **settings)


def _sse(*chunks: dict[str, Any] | str) -> bytes:
    """A Gemini-style stream: one ``data:`` block per chunk, CRLF-separated like the live API."""
    return b"".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\r\n\r\n".encode() for c in chunks)


def _candidate(*parts: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, "index": index}
    if finish is not None:
        candidate["finishReason"] = finish
    return candidate


def _usage(prompt: int, candidates: int, thoughts: int | None = None) -> dict[str, Any]:
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    if thoughts is not None:
        usage["thoughtsTokenCount"] = thoughts
    return usage


_HI = ModelRequest("", (UserMessage("hi"),))


async def _chunks(model: GeminiModel, request: ModelRequest | None = None) -> list[ModelChunk]:
    """Drive the model alone (its own client), so its typed exceptions reach the test."""
    with trio.fail_after(RUN_LIMIT):
        async with model.stream(request or ModelRequest("", (UserMessage("hi"),))) as chunks:
            return [chunk async for chunk in chunks]


async def _run(agent: Agent, prompt: str = "hi") -> list[Event]:
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            async with session.run(prompt) as stream:
                return [event async for event in stream]


def _of(events: list[Any], kind: type[Any]) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


def _finished(events: list[Event]) -> RunFinished:
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert _of(events, RunFinished) == [finished]
    return finished


def _expected_usage(usage: dict[str, Any]) -> UsageChunk:
    """Input is the prompt; output is the answer and the thinking, which is the reasoning."""
    thoughts = usage.get("thoughtsTokenCount", 0)
    return UsageChunk(usage["promptTokenCount"], usage["candidatesTokenCount"] + thoughts, reasoning_tokens=thoughts)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("chunk_size", [None, 7], ids=["whole", "7-bytes"])
async def test_gemini_fixture_stream_rebuilds_the_expected_response(
    provider_server: Any, name: str, chunk_size: int | None
) -> None:
    """Each recorded stream, served byte for byte (or 7 bytes at a time), yields what its ``expect`` says, in order."""
    case = CASES[name]
    expect = case["expect"]
    provider_server.serve(
        _body(name), status=case["http_status"], content_type=case["content_type"], chunk_size=chunk_size
    )

    chunks = await _chunks(_model(provider_server))

    assert "".join(chunk.text for chunk in _of(chunks, TextChunk)) == expect["text"]
    assert "".join(chunk.text for chunk in _of(chunks, ReasoningChunk)) == expect["reasoning"]
    calls = [
        (call["id"] or f"{call['name']}-{n}", call["name"], call["arguments"])
        for n, call in enumerate(expect["tool_calls"])
    ]
    assert [(c.call_id, c.name, c.arguments) for c in _of(chunks, ToolCallChunk)] == calls
    assert [(d.call_id, d.name, json.loads(d.arguments_delta)) for d in _of(chunks, ToolCallDeltaChunk)] == calls
    assert expect["finish_reason"] == "STOP"  # every recorded case; an answer of function calls is tool use
    stop = StopChunk("tool_use" if calls else "end_turn", "STOP")
    assert chunks[-2:] == [stop, _expected_usage(expect["usage"])]
    assert _of(chunks, ErrorChunk) == []


async def test_gemini_fixture_function_call_chunks(provider_server: Any) -> None:
    """A whole function call with no id gets ``<name>-0``, one delta with all its arguments, then STOP as tool use."""
    provider_server.serve(_body("function_call_thought_signature"))
    assert await _chunks(_model(provider_server)) == [
        ToolCallDeltaChunk("get_country-0", "get_country", "{}"),
        ToolCallChunk("get_country-0", "get_country", {}),
        StopChunk("tool_use", "STOP"),
        UsageChunk(29, 10 + 110, reasoning_tokens=110),
    ]


async def test_gemini_session_runs_a_tool_turn_then_answers(provider_server: Any) -> None:
    """Through a runtime session: the recorded function call runs the tool, and the recorded answer ends the run.

    The second request carries the call (with the documented stand-in signature) and its result.
    """

    @tool
    def get_country() -> str:
        """The user's country."""
        return "Mexico"

    provider_server.queue(_body("function_call_thought_signature"))
    provider_server.queue(_body("text_after_function_response"))
    agent = Agent(
        name="gemini",
        instructions="Answer briefly.",
        model=_model(provider_server, temperature=0.0),
        tools=[get_country],
        max_turns=2,
    )

    events = await _run(agent, "What is the capital of the user country? Call the tool")

    assert _finished(events) == RunFinished("completed")
    assert _of(events, ErrorEvent) == []
    assert [(e.call_id, e.name, e.arguments) for e in _of(events, ToolCallStarted)] == [
        ("get_country-0", "get_country", {})
    ]
    assert [(e.call_id, e.arguments_delta) for e in _of(events, ToolCallDelta)] == [("get_country-0", "{}")]
    (finished_call,) = _of(events, ToolCallFinished)
    assert (finished_call.call_id, finished_call.result) == ("get_country-0", "Mexico")
    assert "".join(e.text for e in _of(events, TextDelta)) == "The capital of Mexico is Mexico City."
    assert [(e.reason, e.raw) for e in _of(events, ModelStopped)] == [("tool_use", "STOP"), ("end_turn", "STOP")]
    assert [(e.input_tokens, e.output_tokens) for e in _of(events, Usage)] == [(29, 120), (165, 8)]

    assert len(provider_server.requests) == 2
    for received in provider_server.requests:
        assert (received.method, received.path) == ("POST", PATH)
        assert received.headers["x-goog-api-key"] == KEY
        assert received.headers["content-type"] == "application/json"
        assert received.headers["accept"] == "text/event-stream"
        assert "authorization" not in received.headers
    first = json.loads(provider_server.requests[0].body)
    assert first == {
        "contents": [{"role": "user", "parts": [{"text": "What is the capital of the user country? Call the tool"}]}],
        "systemInstruction": {"parts": [{"text": "Answer briefly."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_country",
                        "description": "The user's country.",
                        "parametersJsonSchema": first["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"],
                    }
                ]
            }
        ],
        "generationConfig": {"temperature": 0.0},
    }
    assert first["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["type"] == "object"
    second = json.loads(provider_server.requests[1].body)
    assert second["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"id": "get_country-0", "name": "get_country", "args": {}},
                    "thoughtSignature": SKIP_SIGNATURE,
                }
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"id": "get_country-0", "name": "get_country", "response": {"result": "Mexico"}}}
            ],
        },
    ]


async def test_gemini_session_streams_thoughts_as_reasoning(provider_server: Any) -> None:
    """Thought-summary parts reach the consumer as ReasoningDelta, the answer as TextDelta, usage with the thinking."""
    expect = CASES["thoughts_then_text"]["expect"]
    provider_server.serve(_body("thoughts_then_text"))
    events = await _run(Agent(name="gemini", model=_model(provider_server), max_turns=1))
    assert _finished(events) == RunFinished("completed")
    assert "".join(e.text for e in _of(events, ReasoningDelta)) == expect["reasoning"]
    assert "".join(e.text for e in _of(events, TextDelta)) == expect["text"]
    assert [(e.input_tokens, e.output_tokens) for e in _of(events, Usage)] == [(34, 387 + 759)]


async def test_gemini_native_output_asks_for_json_with_the_schema(provider_server: Any) -> None:
    """``output_mode="native"`` sends responseMimeType and responseJsonSchema; the recorded JSON answer validates."""
    provider_server.serve(_body("native_json_output"))
    agent = Agent(
        name="gemini",
        model=_model(provider_server, maxOutputTokens=256),
        output_type=CityLocation,
        output_mode="native",
    )
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            result = await session.ask("What is the largest city in Mexico?")
    assert result.output == CityLocation(city="Mexico City", country="Mexico")
    config = json.loads(provider_server.requests[0].body)["generationConfig"]
    assert config["maxOutputTokens"] == 256
    assert config["responseMimeType"] == "application/json"
    schema = config["responseJsonSchema"]
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"city", "country"}
    assert GeminiModel.native_output is True


def test_gemini_body_groups_results_and_signs_each_turns_first_call() -> None:
    """Consecutive results share one user content, errors go as ``error``, string arguments become objects,
    empty model turns are left out, and only each model turn's first call carries the stand-in signature."""
    model = GeminiModel(
        "g",
        base_url="http://unused",
        api_key="k",
        topK=5,
        safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        toolConfig={"functionCallingConfig": {"mode": "ANY"}},
    )
    request = ModelRequest(
        "",
        (
            UserMessage("go"),
            AssistantMessage(
                "thinking aloud",
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
            AssistantMessage("", (ToolCallChunk("e", "f", {"y": [2]}),)),
            ToolResultMessage("e", "f", "5"),
            UserMessage("again"),
        ),
    )
    body = model.body(request)
    assert set(body) == {"contents", "generationConfig", "safetySettings", "toolConfig"}
    assert body["generationConfig"] == {"topK": 5}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    user, calls, results, later_call, later_result, again = body["contents"]
    assert user == {"role": "user", "parts": [{"text": "go"}]}
    assert calls["role"] == "model"
    assert calls["parts"][0] == {"text": "thinking aloud"}
    assert [part["functionCall"]["args"] for part in calls["parts"][1:]] == [{"x": 1}, {}, {}, {}]
    assert [part.get("thoughtSignature") for part in calls["parts"][1:]] == [SKIP_SIGNATURE, None, None, None]
    assert results["role"] == "user"
    assert [part["functionResponse"] for part in results["parts"]] == [
        {"id": "a", "name": "f", "response": {"result": "1"}},
        {"id": "b", "name": "f", "response": {"result": "2"}},
        {"id": "c", "name": "f", "response": {"error": "bad arguments"}},
        {"id": "d", "name": "f", "response": {"result": "4"}},
    ]
    assert later_call == {
        "role": "model",
        "parts": [{"functionCall": {"id": "e", "name": "f", "args": {"y": [2]}}, "thoughtSignature": SKIP_SIGNATURE}],
    }
    assert later_result["parts"] == [{"functionResponse": {"id": "e", "name": "f", "response": {"result": "5"}}}]
    assert again == {"role": "user", "parts": [{"text": "again"}]}


def test_gemini_body_tools_and_output_schema_pass_json_schema_as_it_is() -> None:
    """Tool parameters go as parametersJsonSchema and the output schema as responseJsonSchema, unchanged
    ($defs, additionalProperties and all), and a bare request has no optional field at all."""
    parameters = {
        "type": "object",
        "properties": {"item": {"$ref": "#/$defs/Item"}},
        "required": ["item"],
        "additionalProperties": False,
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    }
    model = GeminiModel("g", base_url="http://unused", api_key="k")
    assert model.body(ModelRequest("", (UserMessage("hi"),))) == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}]
    }
    body = model.body(
        ModelRequest(
            "Be brief.",
            (UserMessage("hi"),),
            (ToolSpec("pick", "Pick one.", parameters),),
            OutputSchema("Answer", {"type": "object", "properties": {"a": {"type": "string"}}}),
        )
    )
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["tools"] == [
        {"functionDeclarations": [{"name": "pick", "description": "Pick one.", "parametersJsonSchema": parameters}]}
    ]
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object", "properties": {"a": {"type": "string"}}},
    }


def test_gemini_url_names_the_model_and_never_the_key() -> None:
    """The model is part of the path (a name with a slash is a resource path as it is); the key is in no URL."""
    assert GeminiModel("gemini-2.5-flash", api_key=KEY).url() == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    tuned = GeminiModel("tunedModels/my model", base_url="http://proxy.example/v1beta/", api_key=KEY)
    assert tuned.url() == "http://proxy.example/v1beta/tunedModels/my%20model:streamGenerateContent?alt=sse"
    assert KEY not in repr(tuned)
    assert tuned.headers(_HI) == {"accept": "text/event-stream", "x-goog-api-key": KEY}


def test_gemini_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """GEMINI_BASE_URL moves the base; the key is GOOGLE_API_KEY, else GEMINI_API_KEY; an empty key given is none."""
    monkeypatch.setenv("GEMINI_BASE_URL", "http://proxy.example/v1beta/")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    model = GeminiModel("g", temperature=0.5)
    assert model.base_url == "http://proxy.example/v1beta"
    assert model.headers(_HI)["x-goog-api-key"] == "gemini-key"
    assert model.settings == {"temperature": 0.5}
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    assert GeminiModel("g").headers(_HI)["x-goog-api-key"] == "google-key"
    assert GeminiModel("g", api_key="given").headers(_HI)["x-goog-api-key"] == "given"
    assert "x-goog-api-key" not in GeminiModel("g", api_key="").headers(_HI)
    for name in ("GEMINI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name)
    model = GeminiModel("g")
    assert model.base_url == "https://generativelanguage.googleapis.com/v1beta"
    assert "x-goog-api-key" not in model.headers(_HI)


async def test_gemini_missing_key_error_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither GOOGLE_API_KEY nor GEMINI_API_KEY set, entering the stream raises MissingAPIKeyError
    naming both, as either serves; a server on this machine needs none, and a key that cannot be sent is
    still refused as such."""
    for name in ("GEMINI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with trio.fail_after(5), pytest.raises(MissingAPIKeyError) as caught:
        async with GeminiModel("g").stream(_HI):
            pass  # pragma: no cover
    assert str(caught.value) == "google: no API key: set GEMINI_API_KEY or GOOGLE_API_KEY (or pass api_key=...)"
    assert (caught.value.variable, caught.value.provider) == ("GEMINI_API_KEY", "google")
    with trio.fail_after(5), pytest.raises(ModelConnectionError, match="nothing is listening"):
        async with GeminiModel("g", base_url="http://127.0.0.1:1").stream(_HI):
            pass  # pragma: no cover
    monkeypatch.setenv("GOOGLE_API_KEY", "bad key")
    with trio.fail_after(5), pytest.raises(AuthenticationError, match="holds whitespace") as refused:
        async with GeminiModel("g").stream(_HI):
            pass  # pragma: no cover
    assert not isinstance(refused.value, MissingAPIKeyError)


def test_gemini_shares_the_http_model_base() -> None:
    """Gemini takes ``stream`` and its error reading from HTTPModel, like the other providers."""
    import agents.models._gemini as gemini

    assert issubclass(GeminiModel, HTTPModel)
    assert "stream" not in vars(GeminiModel)
    assert vars(gemini)["error_chunk"] is error_chunk


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("MAX_TOKENS", "max_tokens"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "other"),
        ("OTHER", "other"),
        ("FINISH_REASON_UNSPECIFIED", "other"),
    ],
)
async def test_gemini_finish_reason_maps_to_a_stop_reason(
    provider_server: Any, finish: str, reason: StopReason
) -> None:
    """Each finishReason becomes its normalised stop reason, with Gemini's own value kept as ``raw``."""
    provider_server.serve(
        _sse(
            {"candidates": [_candidate({"text": "Once upon"})], "usageMetadata": _usage(3, 2)},
            {"candidates": [_candidate({"text": ""}, finish=finish)], "usageMetadata": _usage(3, 4, 1)},
        )
    )
    assert await _chunks(_model(provider_server)) == [
        TextChunk("Once upon"),
        StopChunk(reason, finish),
        UsageChunk(3, 5, reasoning_tokens=1),
    ]


async def test_gemini_usage_counts_cached_and_thinking_tokens(provider_server: Any) -> None:
    """``cachedContentTokenCount`` (part of the prompt's count) is the cache reads; the thinking tokens are
    output and reasoning both, as the other providers count them."""
    usage = {"promptTokenCount": 1200, "cachedContentTokenCount": 1024, "candidatesTokenCount": 7}
    provider_server.serve(
        _sse(
            {
                "candidates": [_candidate({"text": "Hi"}, finish="STOP")],
                "usageMetadata": usage | {"thoughtsTokenCount": 40},
            }
        )
    )
    assert (await _chunks(_model(provider_server)))[-1] == UsageChunk(
        1200, 47, cache_read_tokens=1024, reasoning_tokens=40
    )


async def test_gemini_blocked_prompt_is_a_content_filter_stop(provider_server: Any) -> None:
    """A promptFeedback.blockReason with no candidates ends the response as content_filter, its reason kept."""
    provider_server.serve(
        _sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 7}})
    )
    assert await _chunks(_model(provider_server)) == [
        StopChunk("content_filter", "PROHIBITED_CONTENT"),
        UsageChunk(7, 0),
    ]
    events = await _run(Agent(name="gemini", model=_model(provider_server), max_turns=1))
    assert [(e.reason, e.raw) for e in _of(events, ModelStopped)] == [("content_filter", "PROHIBITED_CONTENT")]


async def test_gemini_function_calls_keep_given_ids_and_number_the_others(provider_server: Any) -> None:
    """A call's own id is kept; calls without one are ``<name>-<n>`` by their place in the response; arguments
    that are not an object go on as JSON text; only the first candidate counts."""
    provider_server.serve(
        _sse(
            {
                "candidates": [
                    _candidate(
                        {"functionCall": {"name": "a", "args": {"q": "x"}}},
                        {"functionCall": {"id": "call-7", "name": "b"}},
                    ),
                    _candidate({"text": "another candidate"}, index=1),
                ]
            },
            {"candidates": [_candidate({"functionCall": {"name": "a", "args": [1]}}, finish="STOP")]},
        )
    )
    chunks = await _chunks(_model(provider_server))
    assert _of(chunks, ToolCallChunk) == [
        ToolCallChunk("a-0", "a", {"q": "x"}),
        ToolCallChunk("call-7", "b", {}),
        ToolCallChunk("a-2", "a", "[1]"),
    ]
    assert [d.arguments_delta for d in _of(chunks, ToolCallDeltaChunk)] == ['{"q": "x"}', "{}", "[1]"]
    assert _of(chunks, TextChunk) == []
    assert chunks[-1] == StopChunk("tool_use", "STOP")


@pytest.mark.parametrize(
    "error",
    [
        {"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}},
        "event: error\ndata: An internal error has occurred.",
    ],
    ids=["error-object", "error-event"],
)
async def test_gemini_error_in_a_200_stream_ends_the_run(provider_server: Any, error: dict[str, Any] | str) -> None:
    """An error inside the stream yields the text so far, the usage so far, then an ErrorChunk with its message."""
    head = _sse({"candidates": [_candidate({"text": "Hel"})], "usageMetadata": _usage(5, 1)})
    tail = f"{error}\r\n\r\n".encode() if isinstance(error, str) else _sse(error)
    provider_server.serve(head + tail + _sse({"candidates": [_candidate({"text": "lo"})]}))
    status = None if isinstance(error, str) else 500  # an error event's plain text names no kind
    assert await _chunks(_model(provider_server)) == [
        TextChunk("Hel"),
        UsageChunk(5, 1),
        ErrorChunk("provider", "An internal error has occurred.", status),
    ]
    events = await _run(Agent(name="gemini", model=_model(provider_server), max_turns=1))
    (event,) = _of(events, ErrorEvent)
    assert event.kind == "model"
    assert "An internal error has occurred." in event.message
    assert _finished(events).reason == "error"


async def test_gemini_malformed_chunk_is_a_malformed_stream(provider_server: Any) -> None:
    """A data line that is not a JSON object raises MalformedStreamError naming the provider."""
    provider_server.serve(_sse({"candidates": [_candidate({"text": "a"})]}, "{not json"))
    with pytest.raises(MalformedStreamError, match="google: a chunk is not JSON"):
        await _chunks(_model(provider_server))


@pytest.mark.parametrize("name", sorted(CASES))
async def test_gemini_stream_cut_before_the_finish_reason_is_malformed(provider_server: Any, name: str) -> None:
    """A recorded stream closed cleanly at any event boundary before its finishReason raises MalformedStreamError,
    and a run on it ends with that error, not as a complete answer."""
    body = _body(name)
    separator = b"\r\n\r\n" if b"\r\n\r\n" in body else b"\n\n"
    cuts = [
        at + len(separator)
        for at in range(len(body))
        if body.startswith(separator, at) and body[at + len(separator) :].strip()
    ]
    assert cuts  # every recorded case has more than one event
    for cut in cuts:
        assert b"finishReason" not in body[:cut]  # the recordings send it in their last event only
        provider_server.serve(body[:cut])
        with pytest.raises(MalformedStreamError, match="google: the stream ended before a finishReason"):
            await _chunks(_model(provider_server))

    events = await _run(Agent(name="gemini", model=_model(provider_server), max_turns=1))
    assert _of(events, ModelStopped) == []
    (error,) = _of(events, ErrorEvent)
    assert error.message == "google: the stream ended before a finishReason"
    assert _finished(events).reason == "error"


async def test_gemini_stream_cut_off_counts_the_usage_it_sent_before_the_error(provider_server: Any) -> None:
    """A stream cut before its finishReason after a chunk with usageMetadata still counts those tokens (billed all
    the same): the last usage seen, then the MalformedStreamError, in a run too."""
    body = _body("text_usage")
    separator = b"\r\n\r\n" if b"\r\n\r\n" in body else b"\n\n"
    first = body.split(separator)[0] + separator
    usage = json.loads(first.decode().partition("data:")[2])["usageMetadata"]
    provider_server.serve(first)
    model = _model(provider_server)
    seen: list[ModelChunk] = []
    with trio.fail_after(10), pytest.raises(MalformedStreamError, match="ended before a finishReason"):
        async with model.stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            async for chunk in chunks:  # what came before the error, kept
                seen.append(chunk)
    assert seen[-1] == _expected_usage(usage)

    run = await _run(Agent(name="gemini", model=model, max_turns=1))
    (counted,) = _of(run, Usage)
    assert (counted.input_tokens, counted.output_tokens) == (seen[-1].input_tokens, seen[-1].output_tokens)
    assert _finished(run).reason == "error"


async def test_gemini_broken_connection_counts_the_usage_it_sent_before_the_error(provider_server: Any) -> None:
    """A connection that breaks after a chunk with usageMetadata (the server promised more bytes and closed)
    still counts those tokens: the last usage seen, then the ModelConnectionError, in a run too."""
    body = _body("text_usage")
    separator = b"\r\n\r\n" if b"\r\n\r\n" in body else b"\n\n"
    first = body.split(separator)[0] + separator
    usage = json.loads(first.decode().partition("data:")[2])["usageMetadata"]
    provider_server.serve(body, drop_after=len(first))
    model = _model(provider_server)
    seen: list[ModelChunk] = []
    with trio.fail_after(10), pytest.raises(ModelConnectionError, match="google: the stream broke"):
        async with model.stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            async for chunk in chunks:  # what came before the error, kept
                seen.append(chunk)
    assert seen[-1] == _expected_usage(usage)

    run = await _run(Agent(name="gemini", model=model, max_turns=1))
    (counted,) = _of(run, Usage)
    assert (counted.input_tokens, counted.output_tokens) == (seen[-1].input_tokens, seen[-1].output_tokens)
    assert "stream broke" in _of(run, ErrorEvent)[0].message


async def test_gemini_dropped_connection_mid_stream_ends_the_run(provider_server: Any) -> None:
    """A server that closes the connection halfway is a ModelConnectionError, and ends a run with an error."""
    body = _body("text_usage")
    provider_server.serve(body, drop_after=len(body) // 2)
    with pytest.raises(ModelConnectionError, match="google: the stream broke") as caught:
        await _chunks(_model(provider_server))
    assert isinstance(caught.value.__cause__, httpx.TransportError)
    events = await _run(Agent(name="gemini", model=_model(provider_server), max_turns=1))
    assert CASES["text_usage"]["expect"]["text"].startswith("".join(e.text for e in _of(events, TextDelta)))
    (error,) = _of(events, ErrorEvent)
    assert "stream broke" in error.message
    assert _finished(events).reason == "error"


async def test_gemini_429_retry_after_is_waited_then_succeeds(
    provider_server: Any, mock_clock: trio.testing.MockClock
) -> None:
    """A 429 with ``Retry-After: 30`` is retried after exactly 30 s of (mock) time, and the next answer is used."""
    error = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
        }
    }
    provider_server.queue(
        json.dumps(error).encode(), status=429, content_type="application/json", headers={"Retry-After": "30"}
    )
    provider_server.queue(_body("text_usage"))
    chunks: list[ModelChunk] = []

    async def consume() -> None:
        async with _model(provider_server, retry=RetryPolicy(0.01, max_attempts=2)).stream(
            ModelRequest("", (UserMessage("count"),))
        ) as stream:
            chunks.extend([chunk async for chunk in stream])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()  # the 429 is read; the model sleeps on Retry-After
        assert len(provider_server.requests) == 1
        mock_clock.jump(29.9)
        await trio.testing.wait_all_tasks_blocked()
        assert len(provider_server.requests) == 1
        mock_clock.jump(0.2)
    assert len(provider_server.requests) == 2
    assert "".join(c.text for c in _of(chunks, TextChunk)) == CASES["text_usage"]["expect"]["text"]


async def test_gemini_429_every_time_is_a_rate_limit_error(provider_server: Any) -> None:
    """A 429 on every attempt raises RateLimitError with Gemini's message after all the attempts."""
    error = {"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}}
    provider_server.serve(json.dumps(error).encode(), status=429, content_type="application/json")
    with pytest.raises(RateLimitError) as caught:
        await _chunks(_model(provider_server, retry=RetryPolicy(0.01, max_attempts=2)))
    assert (caught.value.status, caught.value.provider) == (429, "google")
    assert caught.value.provider_message == "Quota exceeded."
    assert len(provider_server.requests) == 2


@pytest.mark.parametrize("status", [500, 503])
async def test_gemini_5xx_is_retried_then_succeeds(provider_server: Any, status: int) -> None:
    """A server error is retried with backoff, and the run completes on the next answer."""
    error = {"error": {"code": status, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    provider_server.queue(json.dumps(error).encode(), status=status, content_type="application/json")
    provider_server.queue(_body("text_usage"))
    model = _model(provider_server, retry=RetryPolicy(0.01, max_attempts=3))
    events = await _run(Agent(name="gemini", model=model, max_turns=1))
    assert _finished(events) == RunFinished("completed")
    assert "".join(e.text for e in _of(events, TextDelta)) == CASES["text_usage"]["expect"]["text"]
    assert [(e.input_tokens, e.output_tokens) for e in _of(events, Usage)] == [(18, 80 + 35)]
    assert len(provider_server.requests) == 2


async def test_gemini_5xx_every_time_is_a_server_error(provider_server: Any) -> None:
    """A 500 on every attempt raises ServerError carrying the status and Gemini's message."""
    error = {"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}
    provider_server.serve(json.dumps(error).encode(), status=500, content_type="application/json")
    with pytest.raises(ServerError) as caught:
        await _chunks(_model(provider_server, retry=RetryPolicy(0.01, max_attempts=2)))
    assert (caught.value.status, caught.value.provider_message) == (500, "Internal error encountered.")
    assert "google: HTTP 500" in str(caught.value)


async def test_gemini_key_is_in_no_url_and_no_error(provider_server: Any) -> None:
    """The key goes only in x-goog-api-key: the URL the server received, the errors and the run's error event
    never contain it (Gemini answers a bad key with 400 INVALID_ARGUMENT)."""
    error = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
        }
    }
    provider_server.serve(json.dumps(error).encode(), status=400, content_type="application/json")
    with pytest.raises(BadRequestError) as caught:
        await _chunks(_model(provider_server))
    events = await _run(Agent(name="gemini", model=_model(provider_server), max_turns=1))
    (event,) = _of(events, ErrorEvent)
    assert "API key not valid" in event.message
    assert caught.value.provider_message == "API key not valid. Please pass a valid API key."
    for received in provider_server.requests:
        assert received.headers["x-goog-api-key"] == KEY
        assert KEY not in received.path
        assert "key=" not in received.path
        assert KEY not in received.body.decode()
    for text in (str(caught.value), repr(caught.value), event.message):
        assert KEY not in text

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there any more: connections are refused
    unreachable = GeminiModel("m", base_url=f"http://127.0.0.1:{port}", api_key=KEY, retry=ONE_TRY)
    with pytest.raises(ModelConnectionError, match="nothing is listening at") as refused:
        await _chunks(unreachable)
    assert KEY not in str(refused.value)
    assert KEY not in str(refused.value.__cause__)


async def test_gemini_leaving_the_stream_early_closes_the_connection(provider_server: Any) -> None:
    """Leaving the stream block after the first chunk of a hanging stream closes the response at once."""
    first = _sse({"candidates": [_candidate({"text": "Hello"})]})
    provider_server.serve(
        first + _sse({"candidates": [_candidate({"text": " there"}, finish="STOP")]}), hang_after=len(first)
    )
    with trio.fail_after(RUN_LIMIT):
        async with _model(provider_server).stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            async for chunk in chunks:
                assert chunk == TextChunk("Hello")
                break
        with trio.fail_after(1):
            await provider_server.disconnected.wait()


async def test_gemini_closing_the_session_mid_stream_closes_the_response(provider_server: Any) -> None:
    """Closing the session while its run streams cancels the run and closes the HTTP connection."""
    body = _body("thoughts_then_text")
    provider_server.serve(body, hang_after=len(body) - 100)  # all but the end of the last event
    events: list[Event] = []
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime:
            handle = await runtime.start_session(Agent(name="gemini", model=_model(provider_server), max_turns=1))
            async with handle.session.run("How do I cross the street?") as stream:
                async for event in stream:
                    events.append(event)
                    if isinstance(event, TextDelta):
                        await handle.aclose()
            with trio.fail_after(1):
                await provider_server.disconnected.wait()
    assert _of(events, ReasoningDelta)
    assert _finished(events) == RunFinished("cancelled")
