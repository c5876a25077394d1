"""FallbackModel: from a first loopback server to a second when the first is unavailable, never mid-answer."""

from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
import trio

from agents import (
    Agent,
    AgentDefinitionError,
    AnthropicModel,
    AuthenticationError,
    BadRequestError,
    FallbackModel,
    MalformedStreamError,
    MissingAPIKeyError,
    ModelChunk,
    ModelConnectionError,
    ModelFallbackChunk,
    ModelRequest,
    OpenAIChatModel,
    OpenAIResponsesModel,
    RateLimitError,
    RetryPolicy,
    ScriptedModel,
    ServerError,
    TextChunk,
    UsageChunk,
    UserMessage,
)
from runtime import open_runtime
from runtime.events import ErrorEvent, Event, ModelFallback, RunFinished, TextDelta, Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from agents import Model
    from agents.models import Turn

SHARED_FIXTURES: Final = Path(__file__).resolve().parents[4] / "shared" / "fixtures"
"""The shared test data: ``../shared/fixtures`` beside the checkout, and nowhere else."""
STREAMS: Final = SHARED_FIXTURES / "llm_streams"
OPENAI_TEXT: Final = (STREAMS / "openai" / "chat_text_usage.sse").read_bytes()
OPENAI_ANSWER: Final = "The capital of Mexico is Mexico City."
ANTHROPIC_TEXT: Final = (STREAMS / "anthropic" / "text.sse").read_bytes()
RUN_LIMIT: Final = 10.0
"""Seconds any one run against the loopback servers may take before the test fails (real sockets: real clock)."""
TWO_TRIES: Final = RetryPolicy(0.001, maximum=0.001, max_attempts=2)


def _openai(server: Any, *, retry: RetryPolicy = TWO_TRIES) -> OpenAIChatModel:
    return OpenAIChatModel("gpt", base_url=server.base_url, api_key="k", retry=retry)


def _anthropic(server: Any) -> AnthropicModel:
    return AnthropicModel("claude", base_url=server.base_url, api_key="k", retry=RetryPolicy(max_attempts=1))


def _error_body(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "test_error"}}).encode()


async def _run(model: Model) -> list[Event]:
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
            async with session.run("hi") as stream:
                return [event async for event in stream]


def _text(events: list[Event]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def _fallbacks(events: list[Event]) -> list[ModelFallback]:
    return [event for event in events if isinstance(event, ModelFallback)]


def _finished(events: list[Event]) -> str:
    assert isinstance(events[-1], RunFinished)
    return events[-1].reason


def _errors(events: list[Event]) -> list[ErrorEvent]:
    return [event for event in events if isinstance(event, ErrorEvent)]


async def _closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    listener.close()
    return port


@pytest.mark.parametrize(
    ("status", "headers", "said"),
    [(503, {}, "openai: HTTP 503: overloaded"), (429, {"retry-after": "0"}, "openai: HTTP 429: overloaded")],
    ids=["5xx", "429"],
)
async def test_fallback_after_the_retries_of_a_5xx_or_429(
    provider_server: Any, backup_server: Any, status: int, headers: dict[str, str], said: str
) -> None:
    """A first model still failing with 5xx or 429 after its retries hands over to the second, which answers;
    a ModelFallback naming both, and why, comes before any of the answer."""
    provider_server.serve(_error_body("overloaded"), status=status, content_type="application/json", headers=headers)
    backup_server.serve(ANTHROPIC_TEXT)
    events = await _run(FallbackModel(_openai(provider_server), _anthropic(backup_server)))
    assert _fallbacks(events) == [ModelFallback("openai:gpt", said, "anthropic:claude")]
    first_text = next(i for i, event in enumerate(events) if isinstance(event, TextDelta))
    assert events.index(_fallbacks(events)[0]) < first_text
    assert _text(events)
    assert _finished(events) == "completed"
    assert len(provider_server.requests) == 2  # both tries, then the fallback
    assert len(backup_server.requests) == 1


async def test_fallback_when_nothing_listens_at_the_first(backup_server: Any) -> None:
    """A first model whose local server is not running hands over at once, saying so."""
    backup_server.serve(OPENAI_TEXT)
    down = OpenAIChatModel("llama", base_url=f"http://127.0.0.1:{await _closed_port()}/v1", provider="ollama")
    events = await _run(FallbackModel(down, _openai(backup_server)))
    [fallback] = _fallbacks(events)
    assert (fallback.failed, fallback.next) == ("ollama:llama", "openai:gpt")
    assert "nothing is listening at http://127.0.0.1:" in fallback.error
    assert _text(events) == OPENAI_ANSWER
    assert _finished(events) == "completed"


async def test_fallback_when_the_first_has_no_key(backup_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first model with no API key hands over without sending anything; the event says which variable to set."""
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    backup_server.serve(OPENAI_TEXT)
    events = await _run(FallbackModel("mistral:mistral-small-latest", _openai(backup_server)))
    [fallback] = _fallbacks(events)
    assert fallback.failed == "mistral:mistral-small-latest"
    assert "set MISTRAL_API_KEY" in fallback.error
    assert _text(events) == OPENAI_ANSWER


async def test_fallback_when_the_stream_breaks_before_its_first_chunk(provider_server: Any, backup_server: Any) -> None:
    """A first model whose answer breaks before it sent a single chunk hands over: nothing of it was seen."""
    provider_server.serve(OPENAI_TEXT, drop_after=0)
    backup_server.serve(ANTHROPIC_TEXT)
    events = await _run(FallbackModel(_openai(provider_server), _anthropic(backup_server)))
    [fallback] = _fallbacks(events)
    assert "the stream broke" in fallback.error
    assert _finished(events) == "completed"


OUR_STREAMS: Final = Path(__file__).resolve().parents[2] / "fixtures" / "llm_streams"
RESPONSES_QUOTA_ERROR: Final = (OUR_STREAMS / "openai_responses" / "error_event_then_failed.sse").read_bytes()


def _anthropic_error_after_message_start(kind: str, message: str) -> bytes:
    """Anthropic's way to fail a stream already begun: ``message_start`` (the input tokens), then an error event."""
    start = ANTHROPIC_TEXT.split(b"\n\n")[0] + b"\n\n"
    error = {"type": "error", "error": {"type": kind, "message": message}}
    return start + f"event: error\ndata: {json.dumps(error)}\n\n".encode()


async def test_fallback_on_an_overloaded_error_after_anthropics_message_start(
    provider_server: Any, backup_server: Any
) -> None:
    """Anthropic reports the input tokens first and an overload after, in the stream: nothing of an answer was
    seen, so the next model answers; the tokens reported still count, before the ModelFallback. The run ended
    with "Overloaded" before: the usage had committed to the first model."""
    provider_server.serve(_anthropic_error_after_message_start("overloaded_error", "Overloaded"))
    backup_server.serve(OPENAI_TEXT)
    events = await _run(FallbackModel(_anthropic(provider_server), _openai(backup_server)))
    [fallback] = _fallbacks(events)
    assert (fallback.failed, fallback.error, fallback.next) == ("anthropic:claude", "Overloaded", "openai:gpt")
    usage = [event for event in events if isinstance(event, Usage)]
    assert (usage[0].input_tokens, usage[0].output_tokens) == (1007, 1)
    assert events.index(usage[0]) < events.index(fallback)
    assert _text(events) == OPENAI_ANSWER
    assert _finished(events) == "completed"


async def test_fallback_on_a_quota_error_inside_a_responses_stream(provider_server: Any, backup_server: Any) -> None:
    """The Responses API reports an exhausted quota inside a 200 stream (a recorded one): a 429 by its kind, so
    the next model answers, as it would after an HTTP 429."""
    provider_server.serve(RESPONSES_QUOTA_ERROR)
    backup_server.serve(ANTHROPIC_TEXT)
    first = OpenAIResponsesModel("gpt-5-nano", base_url=provider_server.base_url, api_key="k")
    events = await _run(FallbackModel(first, _anthropic(backup_server)))
    [fallback] = _fallbacks(events)
    assert "exceeded your current quota" in fallback.error
    assert _errors(events) == []
    assert _finished(events) == "completed"


async def test_no_fallback_on_an_in_stream_error_of_a_refused_request(provider_server: Any, backup_server: Any) -> None:
    """An error in the stream whose kind is a refused request (Anthropic's invalid_request_error, a 400) ends the
    run as a 400 would: the next model is never asked, and the tokens reported count."""
    provider_server.serve(_anthropic_error_after_message_start("invalid_request_error", "prompt is too long"))
    backup_server.serve(OPENAI_TEXT)
    events = await _run(FallbackModel(_anthropic(provider_server), _openai(backup_server)))
    assert _fallbacks(events) == []
    [error] = _errors(events)
    assert error.message == "prompt is too long"
    assert [(event.input_tokens, event.output_tokens) for event in events if isinstance(event, Usage)] == [(1007, 1)]
    assert _finished(events) == "error"
    assert backup_server.requests == []


class _UsageThenRaises:
    """A model that reports usage, then raises ``error`` (a stream that broke, a refusal): never an answer."""

    name = "usage-then-raises"

    def __init__(self, error: Exception) -> None:
        self.error = error

    @contextlib.asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[ModelChunk]]:
        async def chunks() -> AsyncIterator[ModelChunk]:
            yield UsageChunk(40, 0)
            raise self.error

        yield chunks()


@pytest.mark.parametrize("moves_on", [True, False], ids=["unavailable", "refused"])
async def test_usage_before_an_error_counts_whether_or_not_it_moves_on(moves_on: bool) -> None:
    """Usage a model reported before it failed is given either way: before the ModelFallback when its error
    moves on, before the run's error when it does not (it is not lost with the error)."""
    error = (
        ServerError("a: HTTP 503", status=503, provider="a")
        if moves_on
        else BadRequestError("a: HTTP 400", status=400, provider="a")
    )
    events = await _run(FallbackModel(_UsageThenRaises(error), ScriptedModel(["fine"], name="second")))
    usage = [event for event in events if isinstance(event, Usage)]
    assert usage[0] == Usage(40, 0)
    after = _fallbacks(events) if moves_on else _errors(events)
    assert len(after) == 1
    assert events.index(usage[0]) < events.index(after[0])
    assert _finished(events) == ("completed" if moves_on else "error")


async def test_no_fallback_once_output_reached_the_consumer(provider_server: Any, backup_server: Any) -> None:
    """A first model that breaks halfway through its answer ends the run: no silent switch, the second is
    never asked."""
    provider_server.serve(OPENAI_TEXT, drop_after=len(OPENAI_TEXT) // 2)
    backup_server.serve(ANTHROPIC_TEXT)
    events = await _run(FallbackModel(_openai(provider_server), _anthropic(backup_server)))
    assert _text(events)
    assert OPENAI_ANSWER.startswith(_text(events))
    [error] = _errors(events)
    assert "the stream broke" in error.message
    assert _finished(events) == "error"
    assert _fallbacks(events) == []
    assert backup_server.requests == []


async def test_no_fallback_on_a_bad_request(provider_server: Any, backup_server: Any) -> None:
    """A refused request (400) ends the run with its error: the next model would refuse it too."""
    provider_server.serve(_error_body("unknown parameter"), status=400, content_type="application/json")
    backup_server.serve(ANTHROPIC_TEXT)
    events = await _run(FallbackModel(_openai(provider_server), _anthropic(backup_server)))
    [error] = _errors(events)
    assert error.message == "openai: HTTP 400: unknown parameter"
    assert _fallbacks(events) == []
    assert len(provider_server.requests) == 1
    assert backup_server.requests == []


async def test_fallback_on_a_bad_request_when_asked(provider_server: Any, backup_server: Any) -> None:
    """``fallback_on`` widens what moves on: with BadRequestError in it, a 400 hands over too."""
    provider_server.serve(_error_body("context too long"), status=400, content_type="application/json")
    backup_server.serve(ANTHROPIC_TEXT)
    model = FallbackModel(
        _openai(provider_server), _anthropic(backup_server), fallback_on=(*FallbackModel.FALLBACK_ON, BadRequestError)
    )
    events = await _run(model)
    assert [event.error for event in _fallbacks(events)] == ["openai: HTTP 400: context too long"]
    assert _finished(events) == "completed"


async def test_every_model_failing_ends_the_run_with_the_last_error(provider_server: Any) -> None:
    """Each move is an event; when the last model fails too, its error ends the run."""
    provider_server.serve(_error_body("overloaded"), status=503, content_type="application/json")
    refused = OpenAIChatModel("b", base_url=f"http://127.0.0.1:{await _closed_port()}", api_key="k")
    last = AnthropicModel("c", base_url=provider_server.base_url, api_key="k", retry=RetryPolicy(max_attempts=1))
    events = await _run(FallbackModel(_openai(provider_server), refused, last))
    assert [(event.failed, event.next) for event in _fallbacks(events)] == [
        ("openai:gpt", "openai:b"),
        ("openai:b", "anthropic:c"),
    ]
    [error] = _errors(events)
    assert error.message == "anthropic: HTTP 503: overloaded"
    assert _finished(events) == "error"


async def test_leaving_the_run_while_the_next_model_starts_closes_its_response(
    provider_server: Any, backup_server: Any
) -> None:
    """A consumer that leaves after the ModelFallback, while the second model is silent, closes its connection."""
    provider_server.serve(_error_body("overloaded"), status=503, content_type="application/json")
    backup_server.serve(OPENAI_TEXT, hang_after=0)
    model = FallbackModel(_openai(provider_server, retry=RetryPolicy(max_attempts=1)), _openai(backup_server))
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
            async with session.run("hi") as stream:
                async for event in stream:
                    if isinstance(event, ModelFallback):
                        await backup_server.received.wait()  # the second model waits for its first chunk
                        break
        await backup_server.disconnected.wait()
    assert len(backup_server.requests) == 1


async def test_fallback_model_used_alone_streams_the_fallback_then_the_answer(
    provider_server: Any, backup_server: Any
) -> None:
    """Driven alone, its stream yields the ModelFallbackChunk and then the next model's chunks; abandoning it
    halfway closes everything without a warning."""
    provider_server.serve(_error_body("overloaded"), status=500, content_type="application/json")
    backup_server.serve(OPENAI_TEXT)
    model = FallbackModel(_openai(provider_server), _openai(backup_server))
    request = ModelRequest("", (UserMessage("hi"),))
    with trio.fail_after(RUN_LIMIT):
        async with model.stream(request) as chunks:
            first = await chunks.__anext__()
            second = await chunks.__anext__()
    assert first == ModelFallbackChunk("openai:gpt", "openai: HTTP 500: overloaded", "openai:gpt")
    assert isinstance(second, TextChunk)


def _raising(error: Exception) -> Turn:
    raise error


@pytest.mark.parametrize(
    ("error", "moves_on"),
    [
        (ModelConnectionError("a: cannot reach it"), True),
        (RateLimitError("a: HTTP 429", status=429, provider="a"), True),
        (ServerError("a: HTTP 502", status=502, provider="a"), True),
        (AuthenticationError("a: HTTP 401", status=401, provider="a"), True),
        (MissingAPIKeyError("a: no API key: set A_KEY", provider="a", variable="A_KEY"), True),
        (BadRequestError("a: HTTP 400", status=400, provider="a"), False),
        (MalformedStreamError("a: not its protocol"), False),
        (ValueError("a bug"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
async def test_what_moves_on_and_what_ends_the_run(error: Exception, moves_on: bool) -> None:
    """The unavailable kinds (connection, 429, 5xx, a wrong or missing key) move on; a refused request, a
    malformed stream or a bug end the run with that error."""
    first = ScriptedModel([lambda request: _raising(error)], name="first")
    events = await _run(FallbackModel(first, ScriptedModel(["fine"], name="second")))
    if moves_on:
        assert _fallbacks(events) == [ModelFallback("first", str(error), "second")]
        assert _text(events) == "fine"
    else:
        assert _fallbacks(events) == []
        [event] = _errors(events)
        assert str(error) in event.message
        assert _finished(events) == "error"


async def test_fallback_on_given_as_a_list_moves_on() -> None:
    """``fallback_on`` as a list is kept as a tuple, and an outage it names moves on to the next model."""
    first = ScriptedModel([lambda request: _raising(BadRequestError("a: HTTP 400", status=400, provider="a"))])
    model = FallbackModel(
        first, ScriptedModel(["fine"], name="second"), fallback_on=[*FallbackModel.FALLBACK_ON, BadRequestError]
    )
    assert model.fallback_on == (*FallbackModel.FALLBACK_ON, BadRequestError)
    events = await _run(model)
    assert _fallbacks(events) == [ModelFallback("scripted", "a: HTTP 400", "second")]
    assert _text(events) == "fine"
    assert _finished(events) == "completed"


@pytest.mark.parametrize(
    "fallback_on",
    [ServerError, "ServerError", [ServerError, "BadRequestError"], [ValueError("x")], [KeyboardInterrupt], 42],
    ids=["a-class", "a-string", "a-name", "an-instance", "a-base-exception", "an-int"],
)
def test_fallback_on_that_is_not_exception_classes_is_a_definition_error(fallback_on: Any) -> None:
    """Anything but an iterable of Exception subclasses is refused when the FallbackModel is made."""
    with pytest.raises(AgentDefinitionError, match="fallback_on must be exception classes"):
        FallbackModel(ScriptedModel([]), fallback_on=fallback_on)


async def test_a_run_with_a_first_model_that_answers_streams_nothing_extra() -> None:
    """When the first model answers, its chunks pass as they are: no ModelFallback, every turn from the first."""
    first = ScriptedModel(["one", "two"])
    second = ScriptedModel(itertools.repeat("never"))
    model = FallbackModel(first, second)
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
        for expected in ("one", "two"):
            async with session.run("hi") as stream:
                events = [event async for event in stream]
            assert _fallbacks(events) == []
            assert _text(events) == expected
    assert second.requests == []


def test_fallback_model_takes_model_strings_and_has_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strings are resolved like Agent(model=...); the name lists each model's; native output needs all of them."""
    monkeypatch.setenv("GROQ_API_KEY", "k")
    model = FallbackModel("groq:llama-3.3-70b-versatile", ScriptedModel([], name="local"))
    groq = model.models[0]
    assert isinstance(groq, OpenAIChatModel)
    assert groq.base_url == "https://api.groq.com/openai/v1"
    assert model.name == "fallback(groq:llama-3.3-70b-versatile, local)"
    assert model.native_output
    assert model.fallback_on == FallbackModel.FALLBACK_ON
    assert "FallbackModel(OpenAIChatModel('llama-3.3-70b-versatile'" in repr(model)

    class Plain:
        def stream(self, request: ModelRequest) -> Any:
            raise NotImplementedError

    plain = FallbackModel(Plain())
    assert plain.name == "fallback(Plain)"
    assert not plain.native_output


async def test_a_nested_fallback_model_moves_on_to_the_outer_next_model() -> None:
    """FallbackModel(FallbackModel(a, b), c) with a and b unavailable reaches c: the inner model's own
    ModelFallback passes through without committing the outer one to it, then the outer moves on."""
    a = ScriptedModel([lambda request: _raising(ServerError("a: HTTP 503", status=503, provider="a"))], name="a")
    b = ScriptedModel([lambda request: _raising(ServerError("b: HTTP 503", status=503, provider="b"))], name="b")
    c = ScriptedModel(["fine"], name="c")
    events = await _run(FallbackModel(FallbackModel(a, b), c))
    assert _fallbacks(events) == [
        ModelFallback("a", "a: HTTP 503", "b"),
        ModelFallback("fallback(a, b)", "b: HTTP 503", "c"),
    ]
    assert _text(events) == "fine"
    assert _finished(events) == "completed"


async def test_a_nested_fallback_model_that_answers_is_the_one(provider_server: Any) -> None:
    """When the inner FallbackModel's second model answers, the outer commits to it: the outer's next model is
    never asked, and the one move seen is the inner one."""
    provider_server.serve(OPENAI_TEXT)
    a = ScriptedModel([lambda request: _raising(ModelConnectionError("a: cannot reach it"))], name="a")
    c = ScriptedModel(itertools.repeat("never"), name="c")
    events = await _run(FallbackModel(FallbackModel(a, _openai(provider_server)), c))
    assert _fallbacks(events) == [ModelFallback("a", "a: cannot reach it", "openai:gpt")]
    assert _text(events) == OPENAI_ANSWER
    assert c.requests == []


async def test_fallback_when_the_first_sends_a_corrupt_gzip_stream(provider_server: Any, backup_server: Any) -> None:
    """A first model whose answer says gzip but is not hands over: the decoding error is a broken stream
    (a ModelConnectionError), not httpx's DecodingError ending the run."""
    provider_server.serve(b"\x1f\x8b\x08\x00garbagegarbage", headers={"content-encoding": "gzip"})
    backup_server.serve(OPENAI_TEXT)
    events = await _run(FallbackModel(_openai(provider_server), _openai(backup_server)))
    [fallback] = _fallbacks(events)
    assert fallback.error.startswith("openai: the stream broke: DecodingError: ")
    assert _text(events) == OPENAI_ANSWER
    assert _finished(events) == "completed"
