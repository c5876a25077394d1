"""httpx's exceptions arrive as typed ``streams`` errors: the one mapping, and the one leak it had."""

from __future__ import annotations

import functools
import inspect
from typing import Final

import httpx
import pytest
import trio

from streams import (
    BrokenStreamError,
    InvalidRequestError,
    MalformedMessageError,
    PeerSilentError,
    RemoteError,
    StreamClosedError,
    StreamError,
    open_sse_listener,
)
from streams._httpx import _MAPPING, map_httpx_errors
from tests.raw_http import read_request_head

TIMEOUT: Final = 10
SLOW: Final = 0.3
"""The client's ``connect_timeout`` in the slow-body test: how long it waits for an error body."""


def _httpx_exception_classes() -> list[type[BaseException]]:
    """Every exception class httpx defines: its public ones and all their subclasses inside httpx."""
    found: set[type[BaseException]] = set()
    pending = [obj for obj in vars(httpx).values() if inspect.isclass(obj) and issubclass(obj, BaseException)]
    while pending:
        cls = pending.pop()
        if cls in found or not cls.__module__.startswith("httpx"):
            continue
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__qualname__)


HTTPX_EXCEPTIONS: Final = _httpx_exception_classes()


def _instance(cls: type[BaseException]) -> BaseException:
    """An instance of ``cls``, whatever its constructor wants."""
    request = httpx.Request("GET", "http://peer.test/x")
    if issubclass(cls, httpx.HTTPStatusError):
        return cls("boom", request=request, response=httpx.Response(418, request=request))
    for args, kwargs in [((), {}), (("boom",), {}), (("boom",), {"request": request})]:
        try:
            return cls(*args, **kwargs)
        except TypeError:
            continue
    raise AssertionError(f"cannot make a {cls.__qualname__}")  # pragma: no cover


def test_the_enumeration_finds_httpx_exceptions() -> None:
    """The enumeration sees httpx's tree, down to leaves that httpx does not export at the top."""
    assert {httpx.HTTPError, httpx.ReadTimeout, httpx.ResponseNotRead, httpx.InvalidURL} <= set(HTTPX_EXCEPTIONS)
    assert len(HTTPX_EXCEPTIONS) >= 25


@pytest.mark.parametrize("cls", HTTPX_EXCEPTIONS, ids=lambda cls: cls.__qualname__)
def test_every_httpx_exception_arrives_as_a_streams_error(cls: type[BaseException]) -> None:
    """Raised in map_httpx_errors, each httpx exception class comes out as a StreamError whose cause is it."""
    original = _instance(cls)
    with pytest.raises(StreamError) as raised:
        with map_httpx_errors("http://peer.test/x"):
            raise original
    assert not isinstance(raised.value, httpx.HTTPError | httpx.StreamError | httpx.InvalidURL)
    assert raised.value.__cause__ is original
    assert "http://peer.test/x" in str(raised.value)


_CASES: list[tuple[Exception, type[StreamError]]] = [
    (httpx.ReadTimeout("slow"), PeerSilentError),
    (httpx.ConnectTimeout("slow"), PeerSilentError),
    (httpx.ConnectError("refused"), StreamClosedError),
    (httpx.ReadError("reset"), StreamClosedError),
    (httpx.RemoteProtocolError("garbage"), StreamClosedError),
    (httpx.UnsupportedProtocol("ftp"), InvalidRequestError),
    (httpx.InvalidURL("bad"), InvalidRequestError),
    (httpx.ResponseNotRead(), InvalidRequestError),
    (httpx.TooManyRedirects("loop"), BrokenStreamError),
    (httpx.DecodingError("bad gzip"), MalformedMessageError),
    (httpx.ProxyError("proxy"), StreamClosedError),
    (httpx.LocalProtocolError("bad header"), InvalidRequestError),
    (httpx.CookieConflict("two"), InvalidRequestError),
    (httpx.HTTPError("other"), BrokenStreamError),
]


@pytest.mark.parametrize(
    ("original", "expected"),
    _CASES,
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value.__name__,
)
def test_httpx_exceptions_map_to_the_error_of_their_cause(original: Exception, expected: type[StreamError]) -> None:
    """A timeout is a silent peer, a broken connection is Broken, a request we could not make is Invalid."""
    with pytest.raises(StreamError) as raised:
        with map_httpx_errors("http://peer.test/x"):
            raise original
    assert type(raised.value) is expected  # exactly: pytest.raises accepts subclasses too


def test_every_entry_of_the_mapping_is_some_case_s_own() -> None:
    """Each entry of the table is the one that decides some case above (the most specific entry of the case's
    MRO, as the mapping looks it up): an entry changed or added is tested."""
    deciding = {next(cls for cls in type(original).__mro__ if cls in _MAPPING) for original, _ in _CASES}
    assert deciding == set(_MAPPING)


def test_an_http_status_error_is_a_remote_error_with_its_status() -> None:
    request = httpx.Request("GET", "http://peer.test/x")
    with pytest.raises(RemoteError) as raised:
        with map_httpx_errors("http://peer.test/x"):
            raise httpx.HTTPStatusError("no", request=request, response=httpx.Response(418, request=request))
    assert raised.value.status == 418


def test_other_exceptions_pass_through_unchanged() -> None:
    original = KeyError("x")
    with pytest.raises(KeyError) as raised:
        with map_httpx_errors("http://peer.test/x"):
            raise original
    assert raised.value is original


async def test_an_sse_listener_given_a_bad_url_raises_a_streams_error() -> None:
    """An unsupported scheme is an InvalidRequestError, not httpx's UnsupportedProtocol."""
    with trio.fail_after(TIMEOUT), pytest.raises(InvalidRequestError):
        async with open_sse_listener("ftp://127.0.0.1:1/feed"):
            pytest.fail("connected")  # pragma: no cover


async def test_an_error_body_that_arrives_slowly_is_a_remote_error(nursery: trio.Nursery) -> None:
    """A real peer sends a 404's head, then part of its body, then nothing: the listener raises RemoteError(404)
    quoting what arrived, after connect_timeout (it used to let httpx.ResponseNotRead escape)."""
    body = b'{"error": {"message": "no session s1"}}'
    release = trio.Event()

    async def dribble(stream: trio.SocketStream) -> None:
        async with stream:
            request = await read_request_head(stream)
            if request is None:
                return
            await stream.send_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:12]
            )
            await release.wait()  # the rest never comes while the client waits

    listeners = await nursery.start(functools.partial(trio.serve_tcp, dribble, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    try:
        with trio.fail_after(TIMEOUT), pytest.raises(RemoteError) as raised:
            async with open_sse_listener(f"http://127.0.0.1:{port}/sessions/s1/feed", connect_timeout=SLOW):
                pytest.fail("a 404 opened a listener")  # pragma: no cover
    finally:
        release.set()
    assert raised.value.status == 404
    assert body[:12].decode() in str(raised.value)
