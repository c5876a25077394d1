"""The SSE decoder every model reads its stream with, against the spec's cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

from agents import MalformedStreamError
from agents.models._sse import SSEStream, json_object

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
        async for event in SSEStream(response)
    ]


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
    "data",
    [
        '{"choices": [{"delta": {"content": " token"}}], "n": 12345678901234567890123, "x": 0.1}',
        '{"text": "\\ud83d"}',  # half of a surrogate pair (a split emoji): json takes it, so do we
        '{"text": "\ud83d"}',  # the same, decoded already: a str holding a lone surrogate
        '{"a": 1, "a": 2}',
        '{"nested": ' + "[" * 300 + "]" * 300 + "}",
    ],
    ids=["chunk", "lone-surrogate", "raw-lone-surrogate", "duplicate-key", "deep"],
)
def test_json_object_reads_what_json_reads(data: str) -> None:
    """A provider's event reads as ``json.loads`` reads it, the fast parser's refusals included."""
    assert json_object(data, "a chunk") == json.loads(data)


@pytest.mark.parametrize(
    ("data", "problem"),
    [("{not json", "is not JSON"), ("[1, 2]", "is not an object"), ("[" * 100_000, "is not JSON")],
    ids=["broken", "array", "too-deep"],
)
def test_json_object_refuses_what_is_not_an_object(data: str, problem: str) -> None:
    """Anything else is a MalformedStreamError naming what was read."""
    with pytest.raises(MalformedStreamError, match=f"a chunk {problem}"):
        json_object(data, "a chunk")
