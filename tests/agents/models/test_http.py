"""The HTTP layer every model shares: Retry-After, error bodies, and the one base class of both providers."""

from __future__ import annotations

import email.utils
import time

import pytest

from agents import AnthropicModel, ErrorChunk, ModelRequest, OpenAIChatModel
from agents.models._http import DEFAULT_RETRY, HTTPModel, _retry_after, error_chunk, error_message


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
    ("error", "text"),
    [
        ('{"error": {"message": "model melted"}}', "model melted"),
        ("overloaded, try later", "overloaded, try later"),
        ({"code": 500}, "{'code': 500}"),
        ("", "the provider reported an error"),
    ],
)
def test_error_chunk_carries_the_message_or_what_the_provider_sent(error: object, text: str) -> None:
    """An error inside a stream becomes a provider ErrorChunk with its message, else its text, never an empty one."""
    assert error_chunk(error) == ErrorChunk("provider", text)


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
