"""WebSocketChannel: a chat front end where each WebSocket connection is one chat."""

from __future__ import annotations

import errno
import json
import logging
import math
import secrets
import socket
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, wrap_server_stream

from runtime import ClosedBusError, InboundMessage, MessageBus, OutboundMessage

from .._requests import Exposure, RequestRejected, check_bind, check_positive

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger("streams")

_SLOW_CLIENT_REASON: Final = "client too slow"
_BEST_EFFORT: Final = frozenset({"reasoning", "progress"})
"""The kinds of outbound message a connection may miss (dropped, counted) rather than be closed for."""
_NORMAL: Final = 1000
_GOING_AWAY: Final = 1001
"""The close code a client gets when the channel stops (RFC 6455 7.4.1), as served mode's WebSockets send."""
_STOPPING_CLOSE_TIMEOUT: Final = 0.1
"""Seconds the close frame of a channel that stops may take to go out (no answer to it can be read then)."""


_PORT_0_ATTEMPTS: Final = 10


async def _open_listeners(port: int, host: str | None) -> list[trio.SocketListener]:
    """A listener for each address of ``host``, all on ``port`` (0: one free port for them all).

    ``trio.open_tcp_listeners(0, ...)`` gives each address (``localhost``: ``::1`` and
    ``127.0.0.1``) its own free port, and only one of them could be reported. The port picked
    for the first address may be taken on another by someone else: then a new port is tried.

    Raises:
        OSError: a listener could not be opened (none is left open).
    """
    for _ in range(_PORT_0_ATTEMPTS - 1):
        try:
            return await _open_listeners_once(port, host)
        except OSError as exc:
            if port != 0 or exc.errno != errno.EADDRINUSE:
                raise
    return await _open_listeners_once(port, host)


async def _open_listeners_once(port: int, host: str | None) -> list[trio.SocketListener]:
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port != 0 or len(listeners) == 1:
        return listeners
    port = listeners[0].socket.getsockname()[1]
    sockets = [listener.socket for listener in listeners]
    try:
        for i, old in enumerate(sockets[1:], 1):
            address = (old.getsockname()[0], port, *old.getsockname()[2:])
            old.close()
            sockets[i] = sock = trio.socket.socket(old.family, old.type, old.proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind(address)
            sock.listen(socket.SOMAXCONN)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return [trio.SocketListener(sock) for sock in sockets]


@attrs.frozen
class WebSocketChannelStatistics:
    """What :meth:`WebSocketChannel.statistics` returns."""

    connections: int
    """Connections (chats) being served now."""
    queued: int
    """Messages waiting in the per-connection queues now, all connections together."""
    queue_high_water: int
    """The most messages any one connection's queue has held; never more than ``queue_size``."""
    closed_too_slow: int
    """Connections closed because their client did not read fast enough."""
    dropped: int
    """Outbound messages dropped: unknown or closed chat, or their connection's queue was dropped."""
    rejected: int
    """Client messages not accepted (bad frames, or no room on the bus within ``publish_timeout``), and handshakes
    refused (an ``Origin`` or ``Host`` not allowed)."""


class _DeadlineStream(trio.abc.Stream):
    """A client's socket stream on which every ``send_all`` must finish within ``write_timeout``.

    A send cut short may have put part of a frame on the wire, and nothing
    sent after it (a close frame least of all) would be framed right: past
    the deadline, or when a send is cancelled or fails, the socket is closed
    (which also wakes its reader), as the server's WebSockets do
    (``streams._hypercorn._DeadlineStream``).
    """

    def __init__(self, stream: trio.SocketStream, write_timeout: float) -> None:
        self._stream = stream
        self._write_timeout = write_timeout
        self.timed_out = False
        """Whether a send missed the deadline (and the socket was closed for it)."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            with trio.move_on_after(self._write_timeout):
                await self._stream.send_all(data)
                return
        except BaseException:  # cancelled or broken part way: nothing may follow on this stream
            self._stream.socket.close()
            raise
        self.timed_out = True
        self._stream.socket.close()
        raise trio.BrokenResourceError(f"the client read nothing for {self._write_timeout} s")

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


@attrs.define(eq=False)
class _Connection:
    """One accepted WebSocket: its chat, its bounded outbound queue, and how to end it."""

    chat_id: str
    websocket: WebSocketConnection
    stream: _DeadlineStream
    send: trio.MemorySendChannel[dict[str, Any]]
    receive: trio.MemoryReceiveChannel[dict[str, Any]]
    too_slow: trio.Event = attrs.field(factory=trio.Event)


class WebSocketChannel:
    """A WebSocket server for :func:`runtime.open_gateway`: one chat per connection.

    On connect the client gets ``{"type": "hello", "chat_id": ...}``; each text
    frame it sends (plain text, or JSON ``{"text": ...}``) is one message of
    its chat. Replies, reasoning and progress come back as JSON
    ``{"type": kind, "text": ..., "reply_to": ...}``.

    Every connection has a queue of at most ``queue_size`` messages, drained
    by that connection's writer task. Reasoning and progress take at most
    half of it: past that they are dropped (``dropped`` counts them), so a
    burst of them never costs a client its answer. A client that stops
    reading fills its queue with answers; it is then closed with code
    :attr:`SLOW_CLIENT_CODE` (1008, policy
    violation, reason ``"client too slow"``) and its queue dropped, so memory
    never grows with a slow client and other chats are not held up. The
    close frame follows the message being sent when the queue overflowed.
    A client that takes more than ``write_timeout`` seconds to take in any
    one send (its TCP window stayed full) is disconnected instead: part of
    a message is on the wire, so no close frame can follow it; the TCP
    connection is closed (the client sees 1006, abnormal closure).

    A handshake whose ``Origin`` is not allowed (a web page of another site)
    or whose ``Host`` is not a name the channel answers to (DNS rebinding)
    is refused with 403, as by ``streams.open_server``.

    Args:
        name: The channel's name on the bus.
        host: The interface to listen on.
        port: The port to listen on; 0 picks a free one, the same for every address of ``host`` (see :attr:`port`).
        queue_size: The most messages buffered for one connection.
        connect_timeout: Seconds a client has to finish the opening handshake.
        disconnect_timeout: Seconds a closing handshake may take before the socket is dropped.
        publish_timeout: Seconds a client's message may wait for room on the bus before it is rejected.
        write_timeout: Seconds one send to a client may take before its connection is dropped as too slow.
        allowed_origins: Origins whose web pages may connect, besides the same
            origin (none by default: non-browser clients only); ``"*"``: any.
        allowed_hosts: Host names (any port) the channel answers to; default:
            the loopback names when ``host`` is loopback, else any.
        allow_unauthenticated_remote: Listen on a non-loopback ``host``
            (the channel has no token: anyone who reaches it can chat). Without
            it, that raises :class:`~streams.UnsafeBindError`.

    Raises:
        ValueError: ``queue_size`` is below 1, or a timeout is not above zero.

    Example::

        channel = WebSocketChannel(port=8765)
        async with open_runtime() as runtime, open_gateway(runtime, agent, [channel]) as gateway:
            await gateway.wait_ready("websocket")
            await trio.sleep_forever()
    """

    SLOW_CLIENT_CODE: ClassVar[int] = 1008
    """The close code sent to a client whose queue overflowed."""

    def __init__(
        self,
        *,
        name: str = "websocket",
        host: str = "127.0.0.1",
        port: int = 0,
        queue_size: int = 32,
        connect_timeout: float = 10.0,
        disconnect_timeout: float = 2.0,
        publish_timeout: float = 2.0,
        write_timeout: float = 10.0,
        allowed_origins: Iterable[str] = (),
        allowed_hosts: Iterable[str] | None = None,
        allow_unauthenticated_remote: bool = False,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        check_positive(
            connect_timeout=connect_timeout,
            disconnect_timeout=disconnect_timeout,
            publish_timeout=publish_timeout,
            write_timeout=write_timeout,
        )
        check_bind(
            host,
            authenticated=False,
            allow_unauthenticated_remote=allow_unauthenticated_remote,
            what="a token (this channel has none)",
        )
        self.name = name
        self.host = host
        self.port = port
        """The port being listened on (the real one once :meth:`run` has started)."""
        self._queue_size = queue_size
        self._connect_timeout = connect_timeout
        self._disconnect_timeout = disconnect_timeout
        self._publish_timeout = publish_timeout
        self._write_timeout = write_timeout
        self._exposure = Exposure(host, allowed_origins=allowed_origins, allowed_hosts=allowed_hosts)
        self._connections: dict[str, _Connection] = {}
        self._high_water = 0
        self._closed_too_slow = 0
        self._dropped = 0
        self._rejected = 0

    def statistics(self) -> WebSocketChannelStatistics:
        """The counters, at any time."""
        queued = sum(c.receive.statistics().current_buffer_used for c in self._connections.values())
        return WebSocketChannelStatistics(
            connections=len(self._connections),
            queued=queued,
            queue_high_water=self._high_water,
            closed_too_slow=self._closed_too_slow,
            dropped=self._dropped,
            rejected=self._rejected,
        )

    async def run(self, bus: MessageBus, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started(port)`` once listening.

        Cancelling it closes the listener and every connection.
        """
        # Claim our outbound queue before reporting ready, so no reply published after that is dropped.
        outbound = bus.outbound(self.name)
        async with trio.open_nursery() as nursery:
            listeners = await _open_listeners(self.port, self.host)
            self.port = listeners[0].socket.getsockname()[1]
            await nursery.start(trio.serve_listeners, partial(self._serve, bus), listeners)
            nursery.start_soon(self._route, outbound, name=f"{self.name} router")
            logger.info("websocket channel %r listening on %s:%d", self.name, self.host, self.port)
            task_status.started(self.port)

    async def _route(self, outbound: trio.MemoryReceiveChannel[OutboundMessage]) -> None:
        """Hand each outbound message to its connection's queue, never waiting on a client."""
        # The bus owns its outbound channel: iterate without closing it; closing the bus ends the loop.
        async for message in outbound:
            connection = self._connections.get(message.chat_id)
            if connection is None:
                self._dropped += 1
                continue
            payload = {"type": message.kind, "text": message.text, "reply_to": message.reply_to}
            if message.kind in _BEST_EFFORT and self._queued(connection) * 2 >= self._queue_size:
                # Reasoning and progress come in bursts faster than any client reads: past half the queue
                # they are dropped (counted), so they never fill it and get a reading client closed as slow,
                # its answer lost; the other half is the answers'.
                self._dropped += 1
                continue
            self._enqueue(connection, payload)

    @staticmethod
    def _queued(connection: _Connection) -> int:
        return connection.receive.statistics().current_buffer_used

    def _enqueue(self, connection: _Connection, payload: dict[str, Any]) -> None:
        try:
            connection.send.send_nowait(payload)
        except trio.WouldBlock:
            self._dropped += 1
            self._drop_slow(connection)
        except trio.ClosedResourceError:
            self._dropped += 1
        else:
            self._high_water = max(self._high_water, self._queued(connection))

    def _drop_slow(self, connection: _Connection) -> None:
        """Stop routing to a client that does not read, drop its queue, and have it closed."""
        if connection.too_slow.is_set():
            return
        logger.warning("websocket chat %s: client too slow, closing", connection.chat_id)
        self._closed_too_slow += 1
        if self._connections.get(connection.chat_id) is connection:
            del self._connections[connection.chat_id]
        connection.send.close()
        while True:
            try:
                connection.receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            self._dropped += 1
        connection.too_slow.set()

    async def _serve(self, bus: MessageBus, socket_stream: trio.SocketStream) -> None:
        """Serve one TCP connection as trio-websocket's ``serve_websocket`` does, every send on the write deadline."""
        stream = _DeadlineStream(socket_stream, self._write_timeout)
        async with stream, trio.open_nursery() as nursery:  # the nursery runs trio-websocket's reader task
            request: WebSocketRequest | None = None
            with trio.move_on_after(self._connect_timeout):
                request = await wrap_server_stream(nursery, stream)
            if request is not None:
                await self._handle(bus, request, stream)
            nursery.cancel_scope.cancel()

    async def _handle(self, bus: MessageBus, request: WebSocketRequest, stream: _DeadlineStream) -> None:
        """Serve one connection: its reader, writer and closer live in this nursery."""
        try:
            self._exposure.check(_handshake_headers(request))
        except RequestRejected as rejected:
            self._rejected += 1
            body = json.dumps({"type": "error", "text": str(rejected)}).encode()
            headers = [(b"content-type", b"application/json")]
            with suppress(ConnectionClosed):  # the client is gone already: nothing to tell it
                await request.reject(rejected.status, extra_headers=headers, body=body)
            return
        try:
            websocket = await request.accept()
        except ConnectionClosed:
            # It reset or closed before our answer went out: that ends this connection, not the channel.
            return
        chat_id = f"ws-{secrets.token_hex(8)}"
        send, receive = trio.open_memory_channel[dict[str, Any]](self._queue_size)
        connection = _Connection(chat_id, websocket, stream, send, receive)
        # The hello goes first into the empty queue, before the chat can be routed to.
        send.send_nowait({"type": "hello", "chat_id": chat_id})
        try:
            async with send, receive, trio.open_nursery() as nursery:
                self._connections[chat_id] = connection
                nursery.start_soon(self._read, bus, connection, nursery.cancel_scope, name=f"{chat_id} reader")
                nursery.start_soon(self._write, connection, name=f"{chat_id} writer")
                nursery.start_soon(self._close_if_slow, connection, nursery.cancel_scope, name=f"{chat_id} closer")
        finally:
            if self._connections.get(chat_id) is connection:
                del self._connections[chat_id]
            # Cancelled (the channel stopping): a 1001 all the same, or the client sees the socket drop (1006),
            # as after a crash. Its answer cannot be read then (trio-websocket's reader is cancelled with the
            # channel): the frame is given a moment to go out, not the whole closing handshake.
            stopping = trio.current_effective_deadline() == -math.inf
            code, reason = (_GOING_AWAY, "the server is shutting down") if stopping else (_NORMAL, None)
            timeout = min(self._disconnect_timeout, _STOPPING_CLOSE_TIMEOUT) if stopping else self._disconnect_timeout
            with trio.CancelScope(shield=True), trio.move_on_after(timeout):
                await websocket.aclose(code, reason)

    async def _read(self, bus: MessageBus, connection: _Connection, scope: trio.CancelScope) -> None:
        while True:
            try:
                frame = await connection.websocket.get_message()
            except ConnectionClosed:
                break
            text, error = _parse(frame)
            if text is None:
                self._rejected += 1
                self._enqueue(connection, {"type": "error", "text": error, "reply_to": None})
                continue
            message = InboundMessage(self.name, connection.chat_id, text)
            try:
                accepted = await bus.publish_inbound(message, policy=self._publish_timeout, on_timeout="drop")
            except ClosedBusError:
                break
            if not accepted:
                self._rejected += 1
                busy = f"server busy: message not accepted within {self._publish_timeout}s, send it again later"
                self._enqueue(connection, {"type": "error", "text": busy, "reply_to": message.message_id})
        if connection.stream.timed_out:
            self._drop_slow(connection)
        # The peer closed (or the bus did): end the writer too, unless a slow-client close is under way.
        if not connection.too_slow.is_set():
            scope.cancel()

    async def _write(self, connection: _Connection) -> None:
        # No cancel scope around a send: one cut short would leave part of a frame on the wire. The stream's
        # write deadline closes the socket instead, and the send raises ConnectionClosed.
        try:
            async for payload in connection.receive:
                await connection.websocket.send_message(json.dumps(payload))
        except ConnectionClosed:
            if connection.stream.timed_out:
                self._drop_slow(connection)  # its TCP window stayed full: it reads nothing
        except trio.ClosedResourceError:
            return  # our queue was dropped

    async def _close_if_slow(self, connection: _Connection, scope: trio.CancelScope) -> None:
        await connection.too_slow.wait()
        # The close frame waits behind the write in progress (trio-websocket's FIFO lock); if the client
        # never reads again, the write deadline or this timeout drops the socket instead.
        with trio.move_on_after(self._disconnect_timeout):
            await connection.websocket.aclose(self.SLOW_CLIENT_CODE, _SLOW_CLIENT_REASON)
        scope.cancel()


def _parse(frame: str | bytes) -> tuple[str, None] | tuple[None, str]:
    """A client's frame as message text, or an error to send back."""
    if isinstance(frame, bytes):
        return None, 'binary frames are not supported: send text or JSON {"text": ...}'
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse: plain text
        return frame, None
    if not isinstance(data, dict):
        return frame, None
    text = data.get("text")
    if not isinstance(text, str):
        return None, 'a JSON message needs a string "text" field'
    return text, None


def _handshake_headers(request: WebSocketRequest) -> list[tuple[bytes, bytes]]:
    """The handshake's headers with its ``Host``, which wsproto keeps apart from ``extra_headers`` (the only
    ones trio-websocket shows): without it the host check and the same-origin comparison see no host."""
    # trio-websocket has no public accessor for the handshake's host: its wsproto Request event has it.
    host = getattr(getattr(request, "_event", None), "host", None)
    headers = list(request.headers)
    if isinstance(host, str):
        headers.append((b"host", host.encode("latin-1", "replace")))
    return headers
