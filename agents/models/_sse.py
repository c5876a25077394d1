"""Server-sent events from an httpx response, via httpx-sse's decoder, and their JSON data."""

from __future__ import annotations

import codecs
import json
from typing import TYPE_CHECKING, Any, Final

import httpx
import trio

# The decoders are httpx-sse's own (its EventSource is built on them); we use
# them directly for one fix at the edge: httpx-sse keeps a leading byte-order
# mark, which would hide the first field (the WHATWG parser drops it).
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from pydantic_core import from_json

from .._exceptions import MalformedStreamError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from httpx_sse import ServerSentEvent

BROKEN_STREAM: Final = (httpx.HTTPError, httpx.StreamError)
"""What reading a streamed answer raises when it breaks (the connection, a corrupt gzip's ``DecodingError``).
A parser that has counted usage by then reports it before letting this rise: those tokens were billed."""

_BOM = "\ufeff"
_CLOSE_GRACE = 5.0
"""Seconds closing a stream may take (it takes none: the socket is closed first)."""


def _dispatch(events: SSEDecoder, lines: Iterable[str]) -> list[ServerSentEvent]:
    """The events that ``lines`` (without their line ends) complete."""
    dispatched = []
    for line in lines:
        if not line and not events._data:
            # The spec dispatches nothing for a block without data (httpx-sse
            # would dispatch an event-only or retry-only block): reset it.
            events._event = ""
            events._retry = None
            continue
        if line.startswith("error:"):
            # Not an SSE field (the spec ignores it), but llama.cpp's server reports an error met
            # mid-stream as an `error: {...}` line, then `data: [DONE]`: read it as an "error" event.
            events._event = "error"
            events._data.append(line[6:].removeprefix(" "))
            continue
        event = events.decode(line)
        if event is not None:
            dispatched.append(event)
    return dispatched


def json_object(data: str, what: str) -> dict[str, Any]:
    """An event's data read as the JSON object a provider's protocol sends.

    Raises:
        MalformedStreamError: it is not JSON, or not an object; ``what`` names it
            (``"openai: a chunk"``).
    """
    try:
        value = from_json(data)  # pydantic-core's parser: a provider's chunk in 40 % of json.loads' time
    except (ValueError, TypeError):  # TypeError: a str holding a lone surrogate, which it cannot encode
        # What it refuses that json takes (a lone surrogate, nesting past its limit) reads as before.
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            raise MalformedStreamError(f"{what} is not JSON", data[:200]) from None
    if not isinstance(value, dict):
        raise MalformedStreamError(f"{what} is not an object", data[:200])
    return value


def text_field(where: dict[str, Any], key: str) -> str:
    """A text field of a provider's event: ``where[key]`` if a string, "" if absent or null.

    Raises:
        TypeError: any other value (a number, an object ...), whose Python repr would pass for text. The
            model's stream maps it to :class:`MalformedStreamError`, as any event of the wrong shape.
    """
    value = where.get(key)
    if value is None:
        return ""
    if value.__class__ is not str:
        raise TypeError(f"{key!r} of a {where.get('type', 'chunk')!s:.40} is a {type(value).__name__}, not a string")
    return value


class SSEStream:
    """The events of a streamed response, read a network read at a time, closable at any point.

    ``await stream.read()`` gives the events the next bytes complete, so a
    provider's parser pays one await per read, not one per event;
    ``async for event in stream`` gives them one by one.

    httpx's streaming iterators are async generators nested several deep;
    closing the outermost abandons the inner ones, and Trio warns about each.
    ``aclose`` closes the response first and then lets the chain run once
    more: every layer ends by the read error from the closed stream, as a
    normal exception, and nothing is abandoned.
    """

    __slots__ = (
        "_bytes",
        "_content",
        "_decoder",
        "_ended",
        "_first",
        "_lines",
        "_pending",
        "_response",
        "_utf8",
        "broken",
    )

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        # The raw bytes, decoded here (gzip ...) rather than by aiter_bytes: one generator layer less per
        # network read, and a corrupt body's DecodingError leaves no generator under it abandoned.
        encoding = response.headers.get("content-encoding", "").strip().lower()
        read = response.is_stream_consumed  # a read body: from memory, decoded already
        self._bytes = response.aiter_bytes() if read else response.aiter_raw()
        self._content = None if read or encoding in ("", "identity") else response._get_content_decoder()
        self._lines = SSELineDecoder()
        self._decoder = SSEDecoder()
        # Always UTF-8, whatever charset the Content-Type names (the SSE spec's rule;
        # httpx's aiter_text would follow the header).
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._first = True
        self._ended = False
        self._pending: list[ServerSentEvent] = []  # read, not yet given by __anext__ (reversed)
        self.broken: Exception | None = None
        """What broke the connection, once :meth:`read_or_end` met it."""

    async def read(self) -> list[ServerSentEvent]:
        """The next events, in order: never empty until the stream has ended, then ``[]``."""
        while not self._ended:
            try:
                chunk = await self._bytes.__anext__()
            except StopAsyncIteration:
                self._ended = True
                tail = self._content.flush() if self._content is not None else b""
                rest = [*self._lines.decode(self._utf8.decode(tail, final=True)), *self._lines.flush()]
                return _dispatch(self._decoder, rest)
            if self._content is not None:
                chunk = self._content.decode(chunk)  # httpx.DecodingError: the model maps it
            text = self._utf8.decode(chunk)
            if self._first and text:
                text = text.removeprefix(_BOM)
                self._first = False
            if text:
                events = _dispatch(self._decoder, self._lines.decode(text))
                if events:
                    return events
        return []

    async def read_or_end(self) -> list[ServerSentEvent]:
        """:meth:`read`, a broken connection (an ``httpx`` error) ending the stream as its close does (``[]``),
        the error kept in :attr:`broken`: a provider's parser reports the usage it counted, then raises it."""
        try:
            return await self.read()
        except BROKEN_STREAM as exc:
            self.broken = exc
            self._ended = True
            return []

    def __aiter__(self) -> SSEStream:
        return self

    async def __anext__(self) -> ServerSentEvent:
        if not self._pending:
            self._pending = await self.read()
            if not self._pending:
                raise StopAsyncIteration
            self._pending.reverse()
        return self._pending.pop()

    async def aclose(self) -> None:
        """Close the response and end the generators under it (prompt: the socket is closed)."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _CLOSE_GRACE):
            await self._response.aclose()
            try:
                while True:
                    await self._bytes.__anext__()
            except (StopAsyncIteration, Exception):  # the closed stream's error, by design
                pass
