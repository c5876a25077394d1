"""The HTTP layer every model shares: Retry-After, error bodies, and the one base class of both providers."""

from __future__ import annotations

import email.utils
import gc
import time
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import trio

from agents import (
    Agent,
    AnthropicModel,
    AuthenticationError,
    BadRequestError,
    ErrorChunk,
    GeminiModel,
    MalformedStreamError,
    MissingAPIKeyError,
    ModelConnectionError,
    ModelRequest,
    OpenAIChatModel,
    OpenAIResponsesModel,
    RateLimitError,
    RetryPolicy,
    TextChunk,
    UserMessage,
    resolve_model,
)
from agents.models._http import (
    DEFAULT_RETRY,
    MAX_RETRY_AFTER,
    HTTPModel,
    _retry_after,
    arguments_text,
    error_chunk,
    error_message,
    is_loopback,
)
from runtime import RunFailedError, open_runtime
from runtime.events import ErrorEvent, RunFinished


def test_retry_after_seconds() -> None:
    """A number of seconds is read as such, fractions included, and never negative."""
    assert _retry_after("120") == 120.0
    assert _retry_after("0") == 0.0
    assert _retry_after("1.5") == 1.5
    assert _retry_after("-3") == 0.0


def test_retry_after_http_date() -> None:
    """An HTTP date is the seconds from now until then, and a past date is zero."""
    soon = _retry_after(email.utils.formatdate(time.time() + 30, usegmt=True))
    assert soon is not None
    assert 27.0 <= soon <= 31.0
    assert _retry_after(email.utils.formatdate(time.time() - 3600, usegmt=True)) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "tomorrow at noon", "30s", "Mon, 99 Foo 2025 25:61:00 GMT"])
def test_retry_after_garbage_is_none(value: str | None) -> None:
    """A missing header, or one that is neither seconds nor an HTTP date, gives None."""
    assert _retry_after(value) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": {"message": "invalid x-api-key", "type": "authentication_error"}}', "invalid x-api-key"),
        ('{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}', "Overloaded"),
        ({"error": {"type": "unknown_session", "message": "no session 's1'"}}, "no session 's1'"),
        ({"message": "context too long", "code": 400}, "context too long"),
        (b'{"error": "quota exceeded"}', "quota exceeded"),
        (b"  upstream timed out\n", "upstream timed out"),
        (b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8"),
        (b"[" * 100_000, "[" * 500),
        (b'{"error": {"code": 500}}', None),
        (b'{"error": {"message": ""}}', None),
        (b"[1, 2]", None),
        (b"", None),
        (None, None),
    ],
    ids=[
        "openai",
        "anthropic-event",
        "our-server",
        "bare-error-object",
        "error-string",
        "plain-text",
        "bad-utf8",
        "deeply-nested",
        "no-message",
        "empty-message",
        "not-an-object",
        "empty",
        "none",
    ],
)
def test_error_message_reads_every_error_body_shape(body: object, message: str | None) -> None:
    """The one reader of ``{"error": {"message": ...}}`` bodies finds the message in every shape, or says None."""
    assert error_message(body) == message


@pytest.mark.parametrize(
    ("error", "text", "status"),
    [
        ('{"error": {"message": "model melted"}}', "model melted", None),
        ("overloaded, try later", "overloaded, try later", None),
        ({"code": 500}, "{'code': 500}", 500),
        ("", "the provider reported an error", None),
        ('{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}', "Overloaded", 529),
        ({"code": 503, "message": "try later", "status": "UNAVAILABLE"}, "try later", 503),
        ({"message": "busy", "status": "RESOURCE_EXHAUSTED"}, "busy", 429),
        ({"code": "insufficient_quota", "message": "quota"}, "quota", 429),
        ({"type": "error", "code": "invented_code", "message": "odd"}, "odd", None),
        ({"code": 200, "message": "not an error status"}, "not an error status", None),
        ({"code": True, "type": "api_error", "message": "a bool is no code"}, "a bool is no code", 500),
    ],
)
def test_error_chunk_carries_the_message_or_what_the_provider_sent(
    error: object, text: str, status: int | None
) -> None:
    """An error inside a stream becomes a provider ErrorChunk with its message, else its text, never an empty one;
    with the HTTP status its kind stands for, when it names one this knows (a numeric code, a status or type)."""
    assert error_chunk(error) == ErrorChunk("provider", text, status)


def test_error_bodies_have_one_reader() -> None:
    """The providers, the HTTP layer and the streams clients all read error bodies with the same function."""
    import agents.models._anthropic as anthropic
    import agents.models._openai as openai
    import streams._client as client
    import streams._remote as remote

    assert vars(openai)["error_chunk"] is vars(anthropic)["error_chunk"] is error_chunk
    assert vars(client)["error_message"] is vars(remote)["error_message"] is error_message


@pytest.mark.parametrize(
    ("kind", "base_env", "key_env"),
    [
        (OpenAIChatModel, "OPENAI_BASE_URL", "OPENAI_API_KEY"),
        (AnthropicModel, "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"),
    ],
)
def test_both_http_models_share_one_base(
    kind: type[HTTPModel], base_env: str, key_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both providers take their constructor, repr and stream set-up from HTTPModel, and behave alike in them."""
    assert issubclass(kind, HTTPModel)
    for shared in ("__init__", "__repr__", "stream"):
        assert shared not in vars(kind) or (shared == "__init__" and kind is AnthropicModel), (
            f"{kind.__name__}.{shared}"
        )
    monkeypatch.setenv(base_env, "http://from-env.invalid/v9/")
    monkeypatch.setenv(key_env, "env-key")
    model = kind("m", temperature=0.5)
    assert model.base_url == "http://from-env.invalid/v9"  # the trailing slash goes
    assert model.retry == DEFAULT_RETRY
    assert model.retry.max_attempts == 4
    assert model.settings == {"temperature": 0.5}
    assert repr(model) == f"{kind.__name__}('m', base_url='http://from-env.invalid/v9')"
    request = ModelRequest("", ())
    assert any(value.endswith("env-key") for value in model.headers(request).values())
    given = kind("m", base_url="http://given.invalid/", api_key="")
    assert given.base_url == "http://given.invalid"
    assert "env-key" not in str(given.headers(request))  # an empty key given is no key, not the environment's
    monkeypatch.delenv(base_env)
    assert kind("m").base_url == kind.DEFAULT_BASE_URL


# -- first contact: a missing key, a provider named as the user named it, a local server not running --------

KEYED: Final = ["openai", "anthropic", "mistral", "groq", "deepseek", "openrouter", "together"]
"""The model-string providers that need an API key."""


class _Sent(Exception):
    """Raised by a request hook: the model was about to send a request."""


def _recording_client(sent: list[httpx.Request]) -> httpx.AsyncClient:
    """A real client whose request hook records each request and stops it before it reaches the network."""

    async def record(request: httpx.Request) -> None:
        sent.append(request)
        raise _Sent(str(request.url))

    return httpx.AsyncClient(event_hooks={"request": [record]})


@pytest.mark.parametrize("prefix", KEYED)
async def test_a_provider_with_no_key_fails_on_entering_naming_the_variable(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key given and its variable unset: entering the stream raises MissingAPIKeyError naming the variable,
    and no request is made."""
    variable = f"{prefix.upper()}_API_KEY"
    monkeypatch.delenv(variable, raising=False)
    model = resolve_model(f"{prefix}:m")
    assert isinstance(model, HTTPModel)
    sent: list[httpx.Request] = []
    async with _recording_client(sent) as client:
        stream = model.stream(ModelRequest("", (UserMessage("hi"),), http_client=client))  # not yet
        with pytest.raises(MissingAPIKeyError) as caught:
            async with stream:
                pass  # pragma: no cover
    assert sent == []
    error = caught.value
    assert isinstance(error, AuthenticationError)
    assert error.variable == model.api_key_env == variable
    assert (error.provider, error.status) == (prefix, 401)
    assert str(error) == f"{prefix}: no API key: set {variable} (or pass api_key=...)"


async def test_a_run_with_no_key_ends_with_the_error_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a new user meets it: Agent(model="groq:...") with no GROQ_API_KEY ends its run with a model error
    saying what to set, and ``ask`` raises it."""
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    agent = Agent(name="a", model="groq:llama-3.3-70b-versatile")
    with trio.fail_after(5):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            async with session.run("hi") as stream:
                events = [event async for event in stream]
            with pytest.raises(RunFailedError, match="set GROQ_API_KEY"):
                await session.ask("hi")
    assert ErrorEvent("model", "groq: no API key: set GROQ_API_KEY (or pass api_key=...)") in events
    assert events[-1] == RunFinished("error", "groq: no API key: set GROQ_API_KEY (or pass api_key=...)")


@pytest.mark.parametrize(
    ("base_url", "api_key"),
    [
        ("http://localhost:8000/v1", None),
        ("http://127.0.0.1:8000/v1", None),
        ("http://[::1]:8000/v1", None),
        ("https://llm.example.com/v1", ""),
        ("https://llm.example.com/v1", "k"),
    ],
)
async def test_no_key_is_needed_on_this_machine_or_when_an_empty_one_is_given(
    base_url: str, api_key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server on this machine needs no key, nor one given ``api_key=""``: the request is made."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = OpenAIChatModel("m", base_url=base_url, api_key=api_key)
    sent: list[httpx.Request] = []
    async with _recording_client(sent) as client:
        with pytest.raises(_Sent):
            async with model.stream(ModelRequest("", (UserMessage("hi"),), http_client=client)):
                pass  # pragma: no cover
    assert [str(request.url) for request in sent] == [f"{base_url}/chat/completions"]


def test_is_loopback() -> None:
    """This machine is localhost, 127.0.0.0/8 and ::1, by name or address; nothing else is."""
    for url in (
        "http://localhost:11434/v1",
        "http://127.0.0.1",
        "http://127.1.2.3:80",
        "http://[::1]:8000",
        "http://a.localhost",
    ):
        assert is_loopback(url), url
    for url in ("https://api.openai.com/v1", "http://10.0.0.1", "http://[::2]", "http://localhost.example.com"):
        assert not is_loopback(url), url


async def test_ollama_names_itself_ollama(provider_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An "ollama:" model is named so, and its errors say "ollama", not "openai"."""
    monkeypatch.setenv("OLLAMA_BASE_URL", provider_server.base_url)
    body = b'{"error": {"message": "model \\"nope\\" not found, try pulling it first"}}'
    provider_server.serve(body, status=404, content_type="application/json")
    model = resolve_model("ollama:nope")
    assert isinstance(model, HTTPModel)
    assert model.name == "ollama:nope"
    with trio.fail_after(5), pytest.raises(BadRequestError) as caught:
        async with model.stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            async for _ in chunks:
                pass  # pragma: no cover
    assert caught.value.provider == "ollama"
    assert str(caught.value) == 'ollama: HTTP 404: model "nope" not found, try pulling it first'


@pytest.mark.parametrize(
    ("spec", "hint"), [("ollama:llama3.2", " (start it with `ollama serve`)"), ("openai:local", "")]
)
async def test_a_local_server_not_running_fails_at_once_saying_so(
    spec: str, hint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connection refused on a loopback URL: a ModelConnectionError with the URL and a hint, with no retry.

    Its retries would wait at least 50 s each, so any retry fails the test's 5 s bound (real socket: real clock).
    """
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens on the port any more: connections are refused
    base_url = f"http://127.0.0.1:{port}/v1"
    monkeypatch.setenv("OLLAMA_BASE_URL", base_url)
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    model = resolve_model(spec)
    assert isinstance(model, HTTPModel)
    model.retry = RetryPolicy(100, maximum=100, max_attempts=4)
    with trio.fail_after(5), pytest.raises(ModelConnectionError) as caught:
        async with model.stream(ModelRequest("", (UserMessage("hi"),))):
            pass  # pragma: no cover
    provider = spec.partition(":")[0]
    message = f"{provider}: nothing is listening at {base_url}/chat/completions; is the server running?{hint}"
    assert str(caught.value) == message
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


# -- a chunk of valid JSON but the wrong shape: the provider's malformed stream, never a bare TypeError ------

_CHAT: Final = '{"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}], "usage": %s}'
_MESSAGE_STOP: Final = '{"type": "message_stop"}'


@pytest.mark.parametrize(
    ("kind", "events", "error"),
    [
        (OpenAIChatModel, ['{"choices": [{"index": 0, "delta": "oops"}]}'], AttributeError),
        (OpenAIChatModel, ['{"choices": [1]}'], AttributeError),
        (
            OpenAIChatModel,
            ['{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": {"x": 1}}}]}}]}'],
            TypeError,
        ),
        (OpenAIChatModel, [_CHAT % '{"prompt_tokens": "many"}'], ValueError),
        (OpenAIChatModel, [_CHAT % '{"prompt_tokens": 1e999}'], OverflowError),
        (
            AnthropicModel,
            ['{"type": "message_start", "message": {"usage": {"input_tokens": {"n": 1}}}}', _MESSAGE_STOP],
            TypeError,
        ),
        (
            GeminiModel,
            [
                '{"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0}],'
                ' "usageMetadata": {"promptTokenCount": [1]}}'
            ],
            TypeError,
        ),
        (
            OpenAIResponsesModel,
            ['{"type": "response.completed", "response": {"usage": {"input_tokens": "x"}}}'],
            ValueError,
        ),
        # Text that is not a string: its Python repr must not pass for what the model wrote.
        (OpenAIChatModel, ['{"choices": [{"index": 0, "delta": {"reasoning_content": {"t": "x"}}}]}'], TypeError),
        (OpenAIChatModel, ['{"choices": [{"index": 0, "delta": {"refusal": ["no"]}}]}'], TypeError),
        (
            AnthropicModel,
            ['{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": {"a": 1}}}'],
            TypeError,
        ),
        (
            AnthropicModel,
            ['{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": 7}}'],
            TypeError,
        ),
        (
            AnthropicModel,
            [
                '{"type": "content_block_start", "index": 0,'
                ' "content_block": {"type": "tool_use", "id": 1, "name": "f"}}'
            ],
            TypeError,
        ),
        (
            GeminiModel,
            ['{"candidates": [{"content": {"parts": [{"text": {"a": 1}}]}, "finishReason": "STOP", "index": 0}]}'],
            TypeError,
        ),
        (OpenAIResponsesModel, ['{"type": "response.output_text.delta", "delta": 42}'], TypeError),
    ],
    ids=[
        "chat-delta",
        "chat-choice",
        "chat-arguments",
        "chat-usage",
        "chat-usage-inf",
        "anthropic",
        "gemini",
        "responses",
        "chat-reasoning-not-text",
        "chat-refusal-not-text",
        "anthropic-delta-not-text",
        "anthropic-block-not-text",
        "anthropic-call-id-not-text",
        "gemini-not-text",
        "responses-not-text",
    ],
)
async def test_a_chunk_of_the_wrong_shape_is_a_malformed_stream_naming_the_provider(
    provider_server: Any, kind: type[HTTPModel], events: list[str], error: type[Exception]
) -> None:
    """What a parser raises on valid JSON of the wrong shape is MalformedStreamError naming the provider, with
    the original error as its cause and its message as the sample; a run ends with that error."""
    provider_server.serve("".join(f"data: {data}\n\n" for data in events).encode())
    model = kind("m", base_url=provider_server.base_url, api_key="k", retry=RetryPolicy(max_attempts=1))
    with trio.fail_after(5), pytest.raises(MalformedStreamError) as caught:
        async with model.stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            async for _ in chunks:
                pass
    cause = caught.value.__cause__
    assert isinstance(cause, error)
    assert caught.value.summary == f"{model.provider}: an event of an unexpected shape ({error.__name__})"
    assert caught.value.sample == str(cause)

    with trio.fail_after(5):
        async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
            async with session.run("hi") as stream:
                run = [event async for event in stream]
    (event,) = [event for event in run if isinstance(event, ErrorEvent)]
    assert event.message == str(caught.value)
    assert run[-1] == RunFinished("error", str(caught.value))


async def test_the_consumers_own_error_between_chunks_is_not_mapped(provider_server: Any) -> None:
    """An error raised by the code reading the chunks is its own, not the provider's malformed stream."""
    provider_server.serve(b'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n')
    model = OpenAIChatModel("m", base_url=provider_server.base_url, api_key="k", retry=RetryPolicy(max_attempts=1))
    with trio.fail_after(5), pytest.raises(TypeError, match="the consumer's"):
        async with model.stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            async for chunk in chunks:
                assert chunk == TextChunk("a")
                raise TypeError("the consumer's")


# -- what cannot be sent: a key or a header that is not valid HTTP, a URL that is not http(s) -----------------

_UNSENDABLE_KEYS: Final = ["sk-SECRET\n", "sk-SECRET\r", "sk-SECRET\r\nx-evil: 1", "sk-SECRET\u2026", "sk SECRET"]


@pytest.mark.parametrize("kind", [OpenAIChatModel, AnthropicModel, GeminiModel, OpenAIResponsesModel])
@pytest.mark.parametrize("key", _UNSENDABLE_KEYS, ids=["lf", "cr", "crlf-header", "non-ascii", "space"])
async def test_a_key_that_cannot_be_sent_in_a_header_is_refused_unquoted(kind: type[HTTPModel], key: str) -> None:
    """A key with a line end (a CRLF .env file), a space or a non-ASCII character: entering the stream raises
    AuthenticationError at once, nothing is sent, and the message never quotes the key."""
    model = kind("m", base_url="https://llm.example.com/v1", api_key=key)
    sent: list[httpx.Request] = []
    async with _recording_client(sent) as client:
        with pytest.raises(AuthenticationError) as caught:
            async with model.stream(ModelRequest("", (UserMessage("hi"),), http_client=client)):
                pass  # pragma: no cover
    assert sent == []
    assert "SECRET" not in str(caught.value)
    assert str(caught.value).startswith(f"{model.provider}: the API key holds whitespace")
    assert caught.value.provider == model.provider


async def test_a_run_whose_key_has_a_stray_carriage_return_ends_at_once_without_leaking_it(
    provider_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OPENAI_API_KEY read from a CRLF .env file: the run ends with an error naming the variable, at once (no
    retries: its waits would take 100 s), with no request made and the key in no event."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-SECRET\r")
    model = OpenAIChatModel("m", base_url=provider_server.base_url, retry=RetryPolicy(100, maximum=100))
    with trio.fail_after(5):
        async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
            async with session.run("hi") as stream:
                events = [event async for event in stream]
    assert provider_server.requests == []
    assert "SECRET" not in repr(events)
    assert isinstance(events[-1], RunFinished)
    assert events[-1].reason == "error"
    assert events[-1].message is not None
    assert events[-1].message.startswith("openai: the API key in OPENAI_API_KEY holds whitespace")


@pytest.mark.parametrize(
    ("base_url", "said"),
    [
        ("localhost:8000/v1", "UnsupportedProtocol: Request URL is missing an 'http://' or 'https://' protocol."),
        ("ftp://127.0.0.1/v1", "UnsupportedProtocol: Request URL has an unsupported protocol 'ftp://'."),
        ("http://[::1/v1", "InvalidURL: Invalid port: ':1'"),
    ],
    ids=["no-scheme", "ftp", "broken-bracket"],
)
async def test_a_base_url_that_is_not_http_fails_at_once(base_url: str, said: str) -> None:
    """A base URL with no scheme, another scheme, or that is no URL: ModelConnectionError at once, no retry
    (each would wait at least 50 s, past the test's 5 s bound; real clock)."""
    model = OpenAIChatModel("m", base_url=base_url, api_key="k", retry=RetryPolicy(100, maximum=100))
    with trio.fail_after(5), pytest.raises(ModelConnectionError) as caught:
        async with model.stream(ModelRequest("", (UserMessage("hi"),))):
            pass  # pragma: no cover
    assert str(caught.value) == f"openai: cannot send to {base_url}/chat/completions: {said}"


class _HeaderModel(OpenAIChatModel):
    """An OpenAI model with one more header, as a subclass might add one."""

    def __init__(self, value: str, **options: Any) -> None:
        super().__init__("m", **options)
        self.value = value

    def headers(self, request: ModelRequest) -> dict[str, str]:
        return {**super().headers(request), "x-extra": self.value}


@pytest.mark.parametrize(
    ("value", "said"),
    [("SECRET\r\nx-evil: 1", "the request is not valid HTTP"), ("SECRET\u2026", "a header is not ASCII")],
    ids=["line-break", "non-ascii"],
)
async def test_a_header_that_is_not_valid_http_fails_at_once_unquoted(
    provider_server: Any, value: str, said: str
) -> None:
    """Whatever header cannot be sent (not only the key's): ModelConnectionError at once, no retry, nothing
    sent, and the header's value in no message."""
    model = _HeaderModel(value, base_url=provider_server.base_url, api_key="k", retry=RetryPolicy(100, maximum=100))
    with trio.fail_after(5), pytest.raises(ModelConnectionError) as caught:
        async with model.stream(ModelRequest("", (UserMessage("hi"),))):
            pass  # pragma: no cover
    assert str(caught.value) == f"openai: cannot send to {provider_server.base_url}/chat/completions: {said}"
    assert provider_server.requests == []


# -- a body that cannot be read: a corrupt gzip, a connection that breaks ------------------------------------

_CORRUPT_GZIP: Final = b"\x1f\x8b\x08\x00garbagegarbage"


async def test_a_corrupt_gzip_stream_is_a_broken_stream(provider_server: Any) -> None:
    """An event stream that says gzip but is not: ModelConnectionError with httpx's DecodingError as its cause,
    and no generator left unclosed (each would warn, an error here)."""
    provider_server.serve(_CORRUPT_GZIP, headers={"content-encoding": "gzip"})
    model = OpenAIChatModel("m", base_url=provider_server.base_url, api_key="k", retry=RetryPolicy(max_attempts=1))
    with trio.fail_after(5), pytest.raises(ModelConnectionError) as caught:
        async with model.stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            async for _ in chunks:
                pass  # pragma: no cover
    assert isinstance(caught.value.__cause__, httpx.DecodingError)
    assert str(caught.value).startswith("openai: the stream broke: DecodingError: ")
    gc.collect()  # an abandoned generator warns when collected


@pytest.mark.parametrize(
    "options",
    [{"drop_after": 6}, {"headers": {"content-encoding": "gzip"}}],
    ids=["connection-breaks", "corrupt-gzip"],
)
async def test_a_non_stream_answer_whose_body_cannot_be_read_is_malformed(
    provider_server: Any, options: dict[str, Any]
) -> None:
    """A 200 that is not an event stream and whose body breaks off or does not decode: MalformedStreamError
    naming the content type, with no sample, and no httpx error let through or generator left unclosed."""
    body = _CORRUPT_GZIP if "headers" in options else b'{"id": "chatcmpl-1", "choices": []}'
    provider_server.serve(body, content_type="application/json", **options)
    model = OpenAIChatModel("m", base_url=provider_server.base_url, api_key="k", retry=RetryPolicy(max_attempts=1))
    with trio.fail_after(5), pytest.raises(MalformedStreamError) as caught:
        async with model.stream(ModelRequest("", (UserMessage("hi"),))):
            pass  # pragma: no cover
    assert str(caught.value) == "openai: expected text/event-stream, got 'application/json'"
    assert caught.value.sample is None
    gc.collect()


async def test_an_error_answer_with_a_corrupt_gzip_body_is_still_retried(provider_server: Any) -> None:
    """A 500 whose body does not decode is a ServerError without a message, retried as any 500: the next
    answer is used, and no generator is left unclosed."""
    provider_server.queue(_CORRUPT_GZIP, status=500, content_type="application/json",
                          headers={"content-encoding": "gzip"})  # fmt: skip
    provider_server.queue(b'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\ndata: [DONE]\n\n')
    model = OpenAIChatModel("m", base_url=provider_server.base_url, api_key="k", retry=RetryPolicy(0.001))
    with trio.fail_after(5):
        async with model.stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            assert TextChunk("a") in [chunk async for chunk in chunks]
    assert len(provider_server.requests) == 2
    gc.collect()


# -- a Retry-After longer than MAX_RETRY_AFTER -----------------------------------------------------------------


async def test_a_retry_after_over_the_limit_fails_at_once_whatever_the_policy(provider_server: Any) -> None:
    """A 429 asking for more than MAX_RETRY_AFTER seconds is raised at once, even with ``max_attempts=None``."""
    provider_server.serve(b'{"error": {"message": "slow down"}}', status=429, content_type="application/json",
                          headers={"retry-after": str(int(MAX_RETRY_AFTER) + 1)})  # fmt: skip
    model = OpenAIChatModel("m", base_url=provider_server.base_url, api_key="k", retry=RetryPolicy(max_attempts=None))
    with trio.fail_after(5), pytest.raises(RateLimitError) as caught:
        async with model.stream(ModelRequest("", (UserMessage("hi"),))):
            pass  # pragma: no cover
    assert caught.value.retry_after == MAX_RETRY_AFTER + 1
    assert len(provider_server.requests) == 1


def test_the_readme_states_the_retry_after_limit() -> None:
    """The README's retry paragraph, which promises ``max_attempts=None`` retries until cancelled, states the
    exception: a Retry-After over MAX_RETRY_AFTER (its value) is not waited for."""
    readme = " ".join((Path(__file__).resolve().parents[3] / "README.md").read_text().split())
    assert (
        f"`max_attempts=None` retries until the run is cancelled, except that a `Retry-After` over"
        f" {MAX_RETRY_AFTER:g} s is not waited for" in readme
    )


@pytest.mark.parametrize(
    ("arguments", "sent"),
    [
        ('{"city": "Oslo"}', '{"city": "Oslo"}'),  # as the model wrote it
        ({"city": "Oslo"}, '{"city": "Oslo"}'),
        ('{"city": "Osl', "{}"),  # cut off at max_tokens
        ("", "{}"),
        ("[1, 2]", "{}"),  # JSON, but no object
        ("[" * 100_000, "{}"),  # deeper than json goes
        ('{"x": NaN}', "{}"),  # json.loads takes it; no strict server does
        ('{"x": 1e400}', "{}"),
        ({"x": float("nan")}, "{}"),  # a mapping (Gemini's) is written as JSON, or as {} when it cannot be
    ],
)
def test_past_tool_call_arguments_go_back_as_a_json_object(arguments: Any, sent: str) -> None:
    """The OpenAI-style adapters send a past call's arguments back as JSON object text: anything else (its call
    got an error result for it) as {}, since servers that parse them (vLLM, Moonshot, MiniMax) refuse the
    whole request, and every later request of the session."""
    assert arguments_text(arguments) == sent
