"""The HTTP layer every model shares: Retry-After and the SSE decoder against the spec's cases."""

from __future__ import annotations

import email.utils
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

from agents import AnthropicModel, ErrorChunk, ModelConnectionError, OpenAIChatModel
from agents._exceptions import describe
from agents.models._http import DEFAULT_RETRY, HTTPModel, _retry_after, error_chunk, error_message
from agents.models._sse import SSEStream, aiter_sse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SHARED_FIXTURES: Final = Path(__file__).resolve().parents[4] / "shared" / "fixtures"
"""The shared test data: ``../shared/fixtures`` beside the checkout, and nowhere else."""
SSE_CASES: list[dict[str, Any]] = json.loads((SHARED_FIXTURES / "sse_conformance.json").read_text("utf-8"))


def _response(body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(body))


class _OneByteAtATime(httpx.AsyncByteStream):
    """A response body that arrives one byte per read, splitting every line and character.

    Once closed, a read fails, as a closed socket's does.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._closed = False
        self.sent = 0
        """Bytes handed out so far."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(len(self._body)):
            if self._closed:
                raise httpx.ReadError("the connection is closed")
            self.sent = i + 1
            yield self._body[i : i + 1]

    async def aclose(self) -> None:
        self._closed = True


async def _events(response: httpx.Response) -> list[dict[str, Any]]:
    return [
        {"event": event.event or "message", "data": event.data, "id": event.id, "retry": event.retry}
        async for event in aiter_sse(response)
    ]


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


@pytest.mark.parametrize("case", SSE_CASES, ids=[case["name"] for case in SSE_CASES])
async def test_sse_conformance_case(case: dict[str, Any]) -> None:
    """Each case's bytes dispatch the events the spec's tests expect, whole or one byte per read."""
    body = case["input"].encode("utf-8")
    assert await _events(_response(body)) == case["events"]
    split = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_OneByteAtATime(body))
    assert await _events(split) == case["events"]


def test_sse_conformance_cases_are_all_there() -> None:
    """The fixture holds its 32 cases, BOM case included, so none is silently skipped."""
    names = {case["name"] for case in SSE_CASES}
    assert len(SSE_CASES) == 32
    assert "wpt/format-bom" in names


async def test_sse_block_without_data_dispatches_nothing() -> None:
    """A block of only ``id``/``event``/``retry`` fields, or a blank line after an id, is not an event."""
    body = b"id: 1\ndata: a\n\n\nevent: ping\n\nretry: 10\n\ndata: b\n\n"
    assert [event["data"] for event in await _events(_response(body))] == ["a", "b"]


async def test_sse_incomplete_last_block_is_dropped() -> None:
    """A block that the stream ends in the middle of (no blank line after it) is not dispatched."""
    assert [event["data"] for event in await _events(_response(b"data: 1\n\ndata: 2"))] == ["1"]


async def test_sse_stream_close_midway_leaves_nothing_behind() -> None:
    """Closing an ``SSEStream`` after one event closes the response and ends the generators under it."""
    body = b"data: 1\n\ndata: 2\n\n"
    served = _OneByteAtATime(body)
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=served)
    )
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", "http://provider.test/") as response,
    ):
        stream = SSEStream(response)
        first = await stream.__anext__()
        await stream.aclose()
        assert first.data == "1"
        assert response.is_closed
        assert served.sent == len(b"data: 1\n\n")  # closed, not read to the end
        await stream.aclose()  # idempotent


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
    ("error", "text"),
    [
        (ModelConnectionError("openai: cannot reach it"), "openai: cannot reach it"),
        (KeyError("x"), "KeyError: 'x'"),
        (httpx.ReadTimeout(""), "ReadTimeout"),
    ],
)
def test_describe_writes_ours_plainly_and_others_with_their_type(error: BaseException, text: str) -> None:
    """Our errors are their message; a foreign one gets its type name in front, or alone when it has no message."""
    assert describe(error) == text


def test_errors_have_one_describer() -> None:
    """The HTTP layer and the runtime's loop describe exceptions with the same function."""
    import agents.models._http as http
    import runtime._loop as loop

    assert vars(http)["describe"] is vars(loop)["describe"] is describe


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
    assert any(value.endswith("env-key") for value in model.headers().values())
    given = kind("m", base_url="http://given.invalid/", api_key="")
    assert given.base_url == "http://given.invalid"
    assert "env-key" not in str(given.headers())  # an empty key given is no key, not the environment's
    monkeypatch.delenv(base_env)
    assert kind("m").base_url == kind.DEFAULT_BASE_URL
