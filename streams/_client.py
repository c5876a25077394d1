"""Clients of a served runtime: the ``updates`` and ``workspace`` WebSockets, and SSE listeners.

Each is an ``async with`` block that owns everything it starts: its read and
write loops run in the block's nursery and its socket is closed on the way
out, so leaving the block (even mid-dial, even mid-message) is the drain
barrier: nothing of the connection outlives it.
"""

from __future__ import annotations

import collections
import itertools
import json
import re
import ssl
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, cast
from urllib.parse import urlsplit

import attrs
import h11
import httpx
import trio
import wsproto.utilities
from httpx_sse._decoders import SSELineDecoder
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection, wrap_client_stream

from agents._exceptions import describe
from agents.models import http_client as open_http_client
from agents.models._http import error_message
from agents.models._sse import SSEStream
from runtime._tracing import inject as inject_trace

from ._broadcast import Subscriber
from ._codec import UnknownEvent, dumps, event_from_json, utf8
from ._exceptions import (
    InvalidRequestError,
    MalformedMessageError,
    PeerSilentError,
    RemoteError,
    StreamClosedError,
    StreamError,
    WorkspaceError,
)
from ._httpx import map_httpx_errors
from ._workspace import Source, WorkspaceChange

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from runtime.events import Event

_NORMAL_CLOSE: Final = frozenset({1000, 1001})
_MESSAGE_TOO_BIG: Final = 1009
"""The close code for a message over the size limit (RFC 6455 7.4.1)."""
_OPS: Final = frozenset({"write", "delete"})
_SOURCES: Final = frozenset({"agent", "client"})
MAX_MESSAGE: Final = 16 * 2**20
"""The largest WebSocket message, or server-sent event, a client accepts (bytes)."""
MAX_ERROR_BODY: Final = 64 * 2**10
"""The most of an HTTP error response's body a client reads, to quote it (bytes)."""
_CLOSE_GRACE: Final = 5.0
"""Seconds closing a response may take (it takes none: the socket is closed first)."""
_MAX_HANDSHAKE_REPLY: Final = 16 * 2**10 + MAX_ERROR_BODY
"""The most of the peer's reply to a WebSocket handshake kept, to read a rejection from (bytes): a head as
long as h11 takes, and an error body's quote."""


@attrs.frozen
class Update:
    """An event of one of the remote session's runs."""

    run_id: str | None
    event: Event | UnknownEvent
    """The event; an :class:`UnknownEvent` if this version does not know its type."""


def _run_id(data: dict[str, Any]) -> str | None:
    """The ``run_id`` of an event on the wire.

    Raises:
        MalformedMessageError: it is there but not a string.
    """
    run_id = data.get("run_id")
    if run_id is not None and not isinstance(run_id, str):
        raise MalformedMessageError(f"'run_id' must be a string, not {type(run_id).__name__}")
    return run_id


def _dropped(data: dict[str, Any]) -> int:
    """The ``count`` of an ``EventsDropped`` message.

    Raises:
        MalformedMessageError: it is not an integer >= 0.
    """
    count = data.get("count")
    if type(count) is not int or count < 0:
        shown = count if type(count) is int else type(count).__name__
        raise MalformedMessageError(f"EventsDropped 'count' must be an integer >= 0, not {shown}")
    return count


def _string(data: dict[str, Any], name: str, allowed: frozenset[str] | None = None) -> str:
    """The string field ``name`` of a message (one of ``allowed``, if given).

    Raises:
        MalformedMessageError: it is missing, not a string, or not one of ``allowed``.
    """
    value = data.get(name)
    if not isinstance(value, str):
        raise MalformedMessageError(f"{name!r} must be a string, not {type(value).__name__}")
    if allowed is not None and value not in allowed:
        raise MalformedMessageError(f"{name!r} must be one of {sorted(allowed)}, not {value[:40]!r}")
    return value


@attrs.frozen
class SSEMessage:
    """One server-sent event; ``data`` is JSON-decoded when it is JSON."""

    event: str
    data: Any
    id: str


def _leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions in ``error``, groups flattened, in order."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


@asynccontextmanager
async def first_error() -> AsyncIterator[None]:
    """Around a nursery: its first error comes out alone, never in a group (trio-websocket's rule).

    An enclosing scope's ``Cancelled`` that comes with it (the owner closing while the connection drops)
    is left out: that scope is still cancelled, so its next checkpoint raises it again. A group of
    ``Cancelled`` alone goes on as it is, for that scope to absorb.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        error = next((leaf for leaf in _leaves(group) if not isinstance(leaf, trio.Cancelled)), None)
        if error is None:
            raise
        context = error.__context__
        try:
            raise error
        finally:
            error.__context__ = context


def auth_headers(token: str | None, headers: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    """``headers`` and ``Authorization: Bearer <token>`` (if a token is given), as bytes: the token as UTF-8.

    httpx encodes a ``str`` header value as ASCII, so a non-ASCII token (which the server takes, reading the
    UTF-8 bytes a client sends) raised ``UnicodeEncodeError`` before anything was sent.

    Raises:
        InvalidRequestError: the token has no UTF-8 bytes (a lone surrogate), or cannot be a header's value: a
            control character (a line end, as a token read from a file keeps) or white space at either end.
    """
    pairs = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    if token is not None:
        try:
            value = token.encode()
        except UnicodeEncodeError:
            raise InvalidRequestError("the token cannot be sent: it has no UTF-8 bytes (a lone surrogate)") from None
        if _NOT_IN_A_HEADER.search(value) or value != value.strip(b" \t"):
            # h11 would refuse the header (LocalProtocolError) at every request and retry, never reaching the peer.
            raise InvalidRequestError(
                "the token cannot be sent in a header: it has a control character (a line end?) "
                "or white space at either end"
            )
        pairs.append((b"authorization", b"Bearer " + value))
    return pairs


_NOT_IN_A_HEADER: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
"""What no header value may hold: control characters but the tab."""


def json_request_body(value: Any) -> bytes:
    """``value`` as the UTF-8 JSON body of a request, a lone surrogate in a string sent as its escape.

    httpx's ``json=`` encodes strict UTF-8, so a client's ``"\\ud800"`` (valid JSON, which the server
    takes) raised ``UnicodeEncodeError`` before anything was sent.

    Raises:
        ValueError: a float that JSON has no number for (NaN, infinity).
    """
    return utf8(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False))


JSON_TYPE: Final = {"content-type": "application/json"}


@asynccontextmanager
async def _open_websocket(
    url: str, *, token: str | None, connect_timeout: float, disconnect_timeout: float
) -> AsyncIterator[tuple[WebSocketConnection, trio.Nursery]]:
    """A client connection whose TCP stream we own.

    (trio-websocket 0.12.2's own client leaks its socket when the server closes first.)
    """
    host = None
    try:
        parts = urlsplit(url)  # the scheme comes lower-cased
        if parts.scheme in ("ws", "wss") and parts.port != 0:
            host = parts.hostname
    except ValueError:  # an unbalanced IPv6 bracket, a port that is not a number ...
        pass
    if not host:
        raise InvalidRequestError(f"not a ws:// or wss:// URL: {url!r}")
    auth_headers(token)  # a token no header can carry is refused before connecting
    default_port = 443 if parts.scheme == "wss" else 80
    port = parts.port or default_port
    # RFC 6455 4.1: Host is host:port unless the port is the default, an IPv6 address in brackets.
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header = f"{host_header}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.abc.Stream | None = None
    watched: _Watched | None = None
    try:
        # first_error: the block's own errors come out as they were, not in a group.
        async with first_error(), trio.open_nursery() as nursery:
            try:
                try:
                    with trio.fail_after(connect_timeout):
                        if parts.scheme == "wss":
                            stream = await trio.open_ssl_over_tcp_stream(
                                host, port, ssl_context=ssl.create_default_context()
                            )
                        else:
                            stream = await trio.open_tcp_stream(host, port)
                        watched = _Watched(stream)
                        ws = await _handshake(nursery, watched, host_header, resource, token)
                except trio.TooSlowError:
                    # A rejection whose body is still coming is a rejection: its status is the answer.
                    rejected = watched.rejection() if watched is not None else None
                    if rejected is not None:
                        raise rejected from None
                    raise PeerSilentError(f"connecting to {url} took over {connect_timeout} s") from None
                except (OSError, trio.BrokenResourceError) as exc:
                    raise StreamClosedError(f"could not connect to {url}: {exc}") from exc
                try:
                    yield ws, nursery
                except BaseException:
                    raise  # cancelled or failed: the socket is closed below at once, no handshake
                else:
                    # A normal exit: the closing handshake, for at most disconnect_timeout.
                    with trio.CancelScope(shield=True), trio.move_on_after(disconnect_timeout):
                        await ws.aclose()
            finally:
                nursery.cancel_scope.cancel()  # first: no loop of ours runs again
                if stream is not None:
                    # Shielded: a Cancelled raised here would replace the block's own exception.
                    with trio.CancelScope(shield=True):
                        await trio.aclose_forcefully(stream)
    # The handshake's failures are raised by trio-websocket's reader task, in the nursery.
    except ConnectionRejected as rejected:
        message = error_message(rejected.body or b"") or str(rejected.status_code)
        raise RemoteError(f"{url} rejected the connection: {message}", status=rejected.status_code) from None
    except HandshakeError as exc:
        raise StreamClosedError(f"{url}: the WebSocket handshake failed: {exc}") from exc
    except (h11.ProtocolError, wsproto.utilities.ProtocolError) as exc:
        fault = _peer_fault(exc)
        if fault is exc and isinstance(exc, h11.LocalProtocolError | wsproto.utilities.LocalProtocolError):
            # Ours alone, no reply of the peer's behind it: a request that cannot be written (a path with a space).
            raise InvalidRequestError(f"{url}: the WebSocket handshake cannot be sent: {exc}") from exc
        raise MalformedMessageError(f"{url} broke the WebSocket handshake: {fault}") from fault


def _peer_fault(error: BaseException) -> BaseException:
    """What the peer did wrong, behind a protocol error raised during the handshake: the innermost remote
    protocol error of its context chain (``error`` itself if there is none).

    A reply that is not HTTP, or a 101 with a wrong ``Sec-WebSocket-Accept``, is refused by wsproto (after
    h11, for the former); trio-websocket answers that refusal as a server would, and so trips h11 on our
    side: that last error is what comes out, the peer's fault in its context.
    """
    fault = error
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (h11.RemoteProtocolError, wsproto.utilities.RemoteProtocolError)):
            fault = seen
        seen = seen.__context__
    return fault


class _Watched(trio.abc.Stream):
    """A stream that tells when the peer has gone (reset or closed), and keeps the start of its reply until
    the handshake is done, for the handshake's sake."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner
        self.gone = trio.Event()
        self.error: BaseException | None = None
        """Why it broke, when a receive or a send failed (a TLS handshake fails in the first send)."""
        self._reply: bytearray | None = bytearray()
        """The first :data:`_MAX_HANDSHAKE_REPLY` bytes received; ``None`` once the handshake is done."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.error = exc
            self.gone.set()
            raise
        if not data:
            self.gone.set()
        if self._reply is not None and len(self._reply) < _MAX_HANDSHAKE_REPLY:
            self._reply += data[: _MAX_HANDSHAKE_REPLY - len(self._reply)]
        return data

    def handshake_done(self) -> None:
        """Keep nothing more: what follows is WebSocket frames."""
        self._reply = None

    def rejection(self) -> ConnectionRejected | None:
        """The rejection the peer's reply holds (its status, headers, and its body so far), if it holds one.

        trio-websocket raises a rejection only once its body is complete; one whose body ends at the
        connection's close (no ``content-length``), or is still coming, is read from here instead.
        """
        if self._reply is None:
            return None
        reply = h11.Connection(h11.CLIENT)
        reply.send(h11.Request(method="GET", target="/", headers=[("host", "peer")]))
        reply.send(h11.EndOfMessage())
        reply.receive_data(bytes(self._reply))
        if self.gone.is_set():
            reply.receive_data(b"")
        head: h11.Response | None = None
        body = bytearray()
        while True:
            try:
                event = reply.next_event()
            except h11.RemoteProtocolError:
                break  # not HTTP, or a body cut short: what was read stands
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif not isinstance(event, h11.InformationalResponse):
                break  # the end of the body, or of what arrived
        if head is None:
            return None
        return ConnectionRejected(head.status_code, tuple(head.headers.raw_items()), bytes(body[:MAX_ERROR_BODY]))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._inner.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # The reader task that sent it ends quietly: without this, the handshake waited out connect_timeout
            # (then "the peer is silent") on a TLS error.
            self.error = exc
            self.gone.set()
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _handshake(
    nursery: trio.Nursery, watched: _Watched, host: str, resource: str, token: str | None
) -> WebSocketConnection:
    """trio-websocket's client handshake (``host``: the ``Host`` header), ended at once if the peer goes away
    during it.

    (trio-websocket 0.12.2's reader task ends quietly on a reset, and the
    handshake would then wait for ``connect_timeout``.)

    Raises:
        ConnectionRejected: the peer went away after rejecting the handshake (a status other than 101), its
            body ending at the close: the rejection, not the close, is the answer.
        StreamClosedError: the peer went away before answering.
    """
    headers = auth_headers(token)
    with trio.CancelScope() as dial:

        async def watch() -> None:
            await watched.gone.wait()
            dial.cancel()

        async with trio.open_nursery() as watching:
            watching.start_soon(watch)
            ws = await wrap_client_stream(
                nursery,
                watched,  # type: ignore[arg-type]  # it uses only the Stream interface
                host,
                resource,
                extra_headers=headers,
                max_message_size=MAX_MESSAGE,
            )
            watching.cancel_scope.cancel()
        watched.handshake_done()
        return ws
    rejected = watched.rejection()
    if rejected is not None:
        raise rejected
    error = watched.error
    if error is None:
        raise StreamClosedError(f"{host}: the connection closed during the WebSocket handshake")
    why = error.__cause__ or error  # trio's SSLStream: a BrokenResourceError from the ssl module's error
    raise StreamClosedError(f"{host}: the connection failed during the WebSocket handshake: {describe(why)}") from error


def _abnormal(url: str, closed: ConnectionClosed) -> StreamError | None:
    """The error for a close that was not normal (1000 or 1001); ``None`` for one that was. A 1009 is a
    message over the size limit (over :data:`MAX_MESSAGE` from the peer: the client closes with it), which
    is the message's fault, not the connection's."""
    if closed.reason is not None and closed.reason.code in _NORMAL_CLOSE:
        return None
    if closed.reason is not None and closed.reason.code == _MESSAGE_TOO_BIG:
        return MalformedMessageError(f"{url}: a message over the size limit ({MAX_MESSAGE} bytes): {closed.reason}")
    return StreamClosedError(f"{url} closed: {closed.reason}")


class _Heartbeat:
    """Pings every ``interval``; a pong later than ``timeout`` means a silent peer (unless we are the slow side)."""

    def __init__(self, ws: WebSocketConnection, interval: float, timeout: float) -> None:
        self._ws = ws
        self._interval = interval
        self._timeout = timeout
        self.backlogged = False
        """Set by the owner while it waits for its consumer: pongs may be queued behind messages then."""

    async def run(self, on_silent: Callable[[StreamError], object]) -> None:
        while True:
            await trio.sleep(self._interval)
            with trio.move_on_after(self._timeout) as waited:
                try:
                    await self._ws.ping()
                except ConnectionClosed:
                    return  # the read loop reports how it closed
            if waited.cancelled_caught and not self.backlogged:
                on_silent(PeerSilentError(f"no pong within {self._timeout} s"))
                return


class UpdatesStream:
    """The remote session's run events, live: ``async for update in stream``."""

    def __init__(self, receive: trio.MemoryReceiveChannel[Update | int]) -> None:
        self._receive = receive
        self._error: StreamError | None = None
        self.dropped = 0
        """Events the server dropped for this client because it read too slowly: counted when the iteration
        reaches the gap, so a count that grew before an update was dropped just before it."""

    def __aiter__(self) -> UpdatesStream:
        return self

    async def __anext__(self) -> Update:
        try:
            while isinstance(item := await self._receive.receive(), int):
                self.dropped += item  # a gap, in its place among the updates
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None
        return item


@asynccontextmanager
async def open_updates_stream(
    url: str,
    *,
    token: str | None = None,
    connect_timeout: float = 10.0,
    disconnect_timeout: float = 2.0,
    heartbeat: float = 15.0,
    heartbeat_timeout: float = 10.0,
    buffer: int = 64,
) -> AsyncIterator[UpdatesStream]:
    """Watch a served session's ``updates`` WebSocket (``ws://host:port/sessions/<id>/updates``).

    Iteration ends when the server closes normally (the session closed, or
    the server shut down).

    Raises:
        RemoteError: the handshake was rejected (``status`` 401, 404, ...), even if the peer closed (or
            stalled) before the rejection's body was complete.
        PeerSilentError: connecting took over ``connect_timeout``, or a ping
            got no pong within ``heartbeat_timeout``.
        StreamClosedError: the connection dropped, or closed with an error code.
        MalformedMessageError: the handshake's reply is not HTTP, or a 101 with a wrong
            ``Sec-WebSocket-Accept``; (iterating) a message is not the protocol: not JSON, not an event, or an
            ``EventsDropped`` whose ``count`` is not an integer >= 0.
        InvalidRequestError: ``url`` is not a ws:// or wss:// URL, or ``token`` cannot be sent (no UTF-8
            bytes, a control character, white space at either end): before connecting.

    Each comes out alone, never in an exception group (even when the block's owner is cancelled meanwhile).
    """
    async with _open_websocket(
        url, token=token, connect_timeout=connect_timeout, disconnect_timeout=disconnect_timeout
    ) as (ws, nursery):
        send, receive = trio.open_memory_channel[Update | int](buffer)  # an int: EventsDropped's count
        stream = UpdatesStream(receive)
        beat = _Heartbeat(ws, heartbeat, heartbeat_timeout)

        # The first error is the one reported: a close that follows a
        # heartbeat's verdict must not turn a silent peer into a normal end.
        def fail(error: StreamError) -> None:
            stream._error = stream._error or error
            send.close()

        async def read() -> None:
            with send:
                while True:
                    try:
                        text = await ws.get_message()
                    except ConnectionClosed as closed:
                        stream._error = stream._error or _abnormal(url, closed)
                        return
                    try:
                        data = json.loads(text)
                        item: Update | int
                        if isinstance(data, dict) and data.get("type") == "EventsDropped":
                            item = _dropped(data)
                        else:
                            item = Update(_run_id(data), event_from_json(data))
                    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
                        stream._error = stream._error or MalformedMessageError(f"{url} sent a malformed update: {exc}")
                        return
                    beat.backlogged = True
                    try:
                        await send.send(item)
                    except (trio.ClosedResourceError, trio.BrokenResourceError):
                        return  # the heartbeat gave up on the peer, or the block is leaving
                    finally:
                        beat.backlogged = False

        nursery.start_soon(read)
        nursery.start_soon(beat.run, fail)
        with receive:
            yield stream


class WorkspaceStream:
    """A served session's workspace: :meth:`request` commands, ``async for change in stream``."""

    def __init__(self, url: str, outgoing: trio.MemorySendChannel[str], *, buffer: int, request_timeout: float) -> None:
        self._url = url
        self._outgoing = outgoing
        self._waiting: dict[str, _Reply] = {}
        self._changes: Subscriber[WorkspaceChange | _ServerGap] = Subscriber(buffer)  # drop-oldest, like a feed's
        self._server_dropped = 0  # counted as the client reaches each gap, so a gap is told where it was
        self._gaps: collections.deque[_ServerGap] = collections.deque()  # the server's gaps queued, not yet reached
        self._buffer = buffer
        self._request_timeout = request_timeout
        self._ids = itertools.count(1)
        self._ended = False
        self._error: StreamError | None = None

    @property
    def dropped(self) -> int:
        """Changes not kept because this client did not iterate fast enough, or that the server dropped (counted
        as iterating reaches the place where the server said so)."""
        return self._changes.dropped + self._server_dropped

    async def request(self, op: str, path: str | None = None, content: str | None = None) -> dict[str, Any]:
        """Run a command (``read``, ``write``, ``delete``, ``list``) and return the server's answer.

        Raises:
            WorkspaceError: the command failed (``ok`` is false); ``kind="too_large"`` without sending it if it
                is over :data:`MAX_MESSAGE` bytes as JSON (the connection stays open).
            PeerSilentError: no answer within ``request_timeout``.
            StreamClosedError: the connection ended first.
        """
        if self._ended:
            raise self._error or StreamClosedError(f"{self._url} is closed")
        command_id = f"c{next(self._ids)}"
        command: dict[str, Any] = {"id": command_id, "op": op}
        if path is not None:
            command["path"] = path
        if content is not None:
            command["content"] = content
        # Compact UTF-8, as the server measures it: ``json.dumps``'s ASCII escapes made a file the workspace
        # holds (6 bytes for an ``é``) a message over the server's limit, which closed the connection.
        text = dumps(command)
        if len(utf8(text)) > MAX_MESSAGE:
            raise WorkspaceError(
                f"the command is over {MAX_MESSAGE} bytes as JSON, more than the server takes", kind="too_large"
            )
        reply = self._waiting[command_id] = _Reply()
        try:
            with trio.move_on_after(self._request_timeout) as waited:
                await self._outgoing.send(text)
                await reply.done.wait()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._error or StreamClosedError(f"{self._url} is closed") from None
        finally:
            del self._waiting[command_id]
        if waited.cancelled_caught:
            raise PeerSilentError(f"no answer to {op} within {self._request_timeout} s")
        if reply.answer is None:
            raise self._error or StreamClosedError(f"{self._url} closed before answering")
        if not reply.answer.get("ok"):
            raise _workspace_error(reply.answer.get("error"))
        return reply.answer

    def __aiter__(self) -> WorkspaceStream:
        return self

    async def __anext__(self) -> WorkspaceChange:
        try:
            while not isinstance(change := await self._changes.get(), WorkspaceChange):
                if isinstance(change, _ServerGap):  # the server's: counted now, in its place
                    self._gaps.popleft()
                    self._server_dropped += change.count
                # else one of ours, counted in ``dropped`` already
        except trio.EndOfChannel:
            pass
        else:
            return change
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration

    def _received(self, data: Any) -> None:
        """Take one message from the server (one of a type this version does not know is ignored).

        Raises:
            MalformedMessageError: it is not a JSON object, or a field this client reads is missing or invalid.
        """
        if not isinstance(data, dict):
            raise MalformedMessageError(f"a message is a JSON object, not {type(data).__name__}")
        kind = data.get("type")
        if kind == "result":
            command_id = _result_id(data)
            reply = None if command_id is None else self._waiting.get(command_id)
            if reply is not None:
                reply.answer = data
                reply.done.set()
        elif kind == "WorkspaceChanged":
            change = WorkspaceChange(
                cast("Literal['write', 'delete']", _string(data, "op", _OPS)),
                _string(data, "path"),
                cast("Source", _string(data, "source", _SOURCES)),
            )
            self._changes.put(change)
            if self._gaps:
                self._gaps[-1].last = False
        elif kind == "EventsDropped":
            count = _dropped(data)
            if self._gaps and (self._gaps[-1].last or len(self._gaps) >= self._buffer):
                # Nothing since the last one, or as many queued as the buffer holds changes: one gap, so the
                # queue stays bounded whatever the server sends.
                self._gaps[-1].count += count
            elif count:
                gap = _ServerGap(count)
                self._changes.put(gap, keep=True)  # never dropped: what it counts would be lost
                self._gaps.append(gap)

    def _end(self, error: StreamError | None) -> None:
        if self._ended:
            return  # the first verdict (e.g. a silent peer) stands
        self._ended = True
        self._error = error
        self._changes.close()
        for reply in self._waiting.values():
            reply.done.set()


@attrs.define
class _ServerGap:
    """An ``EventsDropped`` from the server, queued in its place among the changes."""

    count: int
    last: bool = True
    """Nothing has been queued after it: another ``EventsDropped`` adds to it."""


def _result_id(data: dict[str, Any]) -> str | None:
    """The ``id`` of a ``result``, its ``ok`` and ``error`` checked.

    Raises:
        MalformedMessageError: ``id`` is not a string or null, ``ok`` not a boolean, or a failure's ``error``
            neither ``{"type", "message"}`` (strings) nor a string (an older server's).
    """
    command_id = data.get("id")
    if command_id is not None and not isinstance(command_id, str):
        raise MalformedMessageError(f"a result's 'id' must be a string or null, not {type(command_id).__name__}")
    ok = data.get("ok")
    if not isinstance(ok, bool):
        raise MalformedMessageError(f"a result's 'ok' must be true or false, not {type(ok).__name__}")
    if not ok:
        error = data.get("error")
        if not isinstance(error, str) and not (
            isinstance(error, dict) and isinstance(error.get("type"), str) and isinstance(error.get("message"), str)
        ):
            raise MalformedMessageError("a failed result's 'error' must be a string or an object of strings")
    return command_id


def _workspace_error(error: Any) -> WorkspaceError:
    """The error of a failed answer: ``{"type", "message"}`` (an older server sent a string)."""
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        return WorkspaceError(str(message), kind=kind if isinstance(kind, str) else "bad_command")
    return WorkspaceError(str(error))


@attrs.define
class _Reply:
    done: trio.Event = attrs.Factory(trio.Event)
    answer: dict[str, Any] | None = None


@asynccontextmanager
async def open_workspace_stream(
    url: str,
    *,
    token: str | None = None,
    connect_timeout: float = 10.0,
    disconnect_timeout: float = 2.0,
    heartbeat: float = 15.0,
    heartbeat_timeout: float = 10.0,
    request_timeout: float = 30.0,
    buffer: int = 256,
) -> AsyncIterator[WorkspaceStream]:
    """Work on a served session's workspace over its ``workspace`` WebSocket.

    The read loop and the write loop live in this block's nursery; leaving
    the block cancels both and closes the socket.

    Raises:
        RemoteError: the handshake was rejected (``status`` 401, 404, ...), even if the peer closed (or
            stalled) before the rejection's body was complete.
        PeerSilentError: connecting took over ``connect_timeout``.
        StreamClosedError: the connection could not be made.
        MalformedMessageError: the handshake's reply is not HTTP, or a 101 with a wrong
            ``Sec-WebSocket-Accept``; (iterating, or from :meth:`~WorkspaceStream.request`) a message is not the
            protocol: not a JSON object, or a field this client reads missing or of the wrong type or value.
        InvalidRequestError: ``url`` is not a ws:// or wss:// URL, or ``token`` cannot be sent (no UTF-8
            bytes, a control character, white space at either end): before connecting.

    Each comes out alone, never in an exception group (even when the block's owner is cancelled meanwhile).
    """
    async with _open_websocket(
        url, token=token, connect_timeout=connect_timeout, disconnect_timeout=disconnect_timeout
    ) as (ws, nursery):
        outgoing, to_send = trio.open_memory_channel[str](buffer)
        stream = WorkspaceStream(url, outgoing, buffer=buffer, request_timeout=request_timeout)
        beat = _Heartbeat(ws, heartbeat, heartbeat_timeout)

        async def read() -> None:
            error: StreamError | None = None
            try:
                while True:
                    try:
                        text = await ws.get_message()
                    except ConnectionClosed as closed:
                        error = _abnormal(url, closed)
                        return
                    try:
                        stream._received(json.loads(text))
                    except (ValueError, TypeError, KeyError, RecursionError) as exc:
                        error = MalformedMessageError(f"{url} sent a malformed message: {exc}")
                        return
            finally:
                stream._end(error)
                outgoing.close()

        async def write() -> None:
            with to_send:
                async for text in to_send:
                    try:
                        await ws.send_message(text)
                    except ConnectionClosed:
                        return  # the read loop reports how it closed

        nursery.start_soon(read)
        nursery.start_soon(write)
        nursery.start_soon(beat.run, stream._end)  # not a cancel: that would cancel the block's body too
        with outgoing:
            yield stream


class _BoundedLines(SSELineDecoder):
    """httpx-sse's line decoder, failing once what it holds of an event not yet complete passes
    :data:`MAX_MESSAGE` bytes (as the WebSocket clients refuse a longer message)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._held = 0
        """Bytes since the text with the last blank line began: at least what is held now."""

    def decode(self, text: str) -> list[str]:
        lines = super().decode(text)
        size = len(text) if text.isascii() else len(text.encode())
        # A blank line ends an event (or a heartbeat): whatever is held now came after it, in this text.
        self._held = size if "" in lines else self._held + size
        if self._held > MAX_MESSAGE:
            raise MalformedMessageError(f"{self._url} sent an event (or a line) over {MAX_MESSAGE} bytes")
        return lines


class _BoundedSSEStream(SSEStream):
    """An :class:`SSEStream` that refuses an event over :data:`MAX_MESSAGE` bytes (:class:`MalformedMessageError`)."""

    __slots__ = ()

    def __init__(self, response: httpx.Response, url: str) -> None:
        super().__init__(response)
        self._lines = _BoundedLines(url)


class SSEListener:
    """The events of an SSE endpoint: ``async for message in listener``."""

    def __init__(self, url: str, events: SSEStream, read_timeout: float) -> None:
        self._url = url
        self._events = events
        self._read_timeout = read_timeout

    def __aiter__(self) -> SSEListener:
        return self

    async def __anext__(self) -> SSEMessage:
        try:
            with map_httpx_errors(self._url):
                sse = await self._events.__anext__()
        except PeerSilentError as exc:
            raise PeerSilentError(f"{self._url} sent nothing for {self._read_timeout} s") from exc.__cause__
        try:
            data: Any = json.loads(sse.data)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python's parser goes: the text
            data = sse.data
        return SSEMessage(sse.event, data, sse.id)


@asynccontextmanager
async def open_sse_listener(
    url: str,
    *,
    token: str | None = None,
    client: httpx.AsyncClient | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 45.0,
    method: str = "GET",
    json_body: Any = None,
) -> AsyncIterator[SSEListener]:
    """Listen to a server-sent-events endpoint, e.g. a served session's between-run feed.

    The response is read in the iterating task and closed when the block
    exits, however it exits: a listener on a dead peer ends as soon as its
    owner is cancelled, and one that hears nothing (not even a heartbeat)
    for ``read_timeout`` raises :class:`PeerSilentError`.

    Args:
        url: The endpoint (``http://host:port/sessions/<id>/feed``).
        token: A bearer token, if the server needs one.
        client: Share this httpx client (default: one of its own).
        connect_timeout: Seconds to connect and get the response's head (in all).
        read_timeout: Seconds of silence after which the peer counts as gone.
        method: ``GET``, or ``POST`` for endpoints that stream their answer.
        json_body: The JSON body of a ``POST``.

    Raises:
        RemoteError: the server answered with an error status (however slowly its body arrives), or a redirect.
        MalformedMessageError: the answer is not ``text/event-stream``; (iterating) an event (or a line) over
            :data:`MAX_MESSAGE` bytes.
        PeerSilentError: connecting and the wait for the head took over ``connect_timeout``.
        StreamClosedError: the connection could not be made.
        InvalidRequestError: ``url`` is not an http(s) URL, or ``token`` cannot be sent (no UTF-8 bytes, a
            control character, white space at either end).
    """
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(open_http_client(client))
        timeout = httpx.Timeout(connect_timeout, read=read_timeout)
        headers = {"accept": "text/event-stream"}
        inject_trace(headers)  # the current span's W3C traceparent: a served run's trace continues it
        if json_body is not None:
            headers.update(JSON_TYPE)
        raw_headers = auth_headers(token, headers)
        try:
            with map_httpx_errors(url), trio.fail_after(connect_timeout):  # httpx's would be read_timeout
                body = None if json_body is None else json_request_body(json_body)
                request = http.build_request(method, url, headers=raw_headers, content=body, timeout=timeout)
                response = await http.send(request, stream=True)
        except trio.TooSlowError:
            raise PeerSilentError(f"{url} sent no response head within {connect_timeout} s") from None
        events = _BoundedSSEStream(response, url)
        stack.push_async_callback(events.aclose)
        status = response.status_code
        if not 200 <= status < 300:  # a redirect too (an auth proxy's to its login page): not the stream asked for
            body = await _error_body(response, connect_timeout)
            said = error_message(body) or response.reason_phrase
            if "location" in response.headers:
                said = f"{said} (to {response.headers['location'][:200]})"
            raise RemoteError(f"{url} answered {status}: {said}", status=status)
        media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "text/event-stream":  # an HTML page read as events would be an empty stream
            raise MalformedMessageError(
                f"{url} answered {status} with {media_type or 'no'} content, not an event stream"
            )
        yield SSEListener(url, events, read_timeout)


async def _error_body(response: httpx.Response, timeout: float) -> bytes:
    """What of an error response's body arrives within ``timeout`` (at most :data:`MAX_ERROR_BODY` bytes).

    Read chunk by chunk, never through ``response.content``: a body cut short
    by the timeout or a broken connection is still a body to quote, where
    ``aread()`` cancelled midway would leave ``content`` unread
    (``httpx.ResponseNotRead``). The status is the error; the body only says more.
    The response is closed on the way out (:func:`close_response`).
    """
    body = bytearray()
    chunks = response.aiter_raw()
    try:
        with trio.move_on_after(timeout):
            try:
                async for chunk in chunks:
                    body += chunk
                    if len(body) >= MAX_ERROR_BODY:
                        break
            except httpx.HTTPError:
                pass  # the connection broke mid-body: what arrived is all there is
    finally:
        await close_response(response, chunks)
    return bytes(body[:MAX_ERROR_BODY])


async def close_response(response: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """Close ``response``, and end ``chunks``, the iterator of its body that was read, however it was left.

    httpx's iterators are async generators nested several deep: leaving the
    outermost (a ``break``, an error of ours) would abandon the inner ones,
    and Trio warns about each. As :meth:`SSEStream.aclose` does, the response
    is closed first, then the chain runs once more: every layer ends by the
    closed stream's error, as a normal exception.
    """
    with trio.CancelScope(shield=True, deadline=trio.current_time() + _CLOSE_GRACE):
        await response.aclose()
        try:
            async for _ in chunks:
                pass
        except Exception:  # the closed stream's error, by design
            pass
