"""Hypercorn's Trio worker, with every accepted connection where shutdown can reach it, and every send on a deadline."""

from __future__ import annotations

import functools
import math
import socket
from typing import TYPE_CHECKING, Any, Final

import trio
from hypercorn.events import RawData
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

if TYPE_CHECKING:
    from hypercorn.config import Config
    from hypercorn.events import Event
    from starlette.types import ASGIApp


class _DeadlineStream:
    """A connection's socket stream as Hypercorn sees it: every ``send_all`` must finish within ``write_timeout``.

    Hypercorn sends inside a shielded cancel scope, under the connection's
    send lock, so a cancel scope around the app's ASGI ``send`` never fires
    and a client that stops reading (a full TCP window, no FIN) would block
    that send, everything queued behind the lock (a WebSocket's pong, so
    its reader too) and the app's handler forever. The deadline is set
    here, inside the shield, where it does fire: past it the socket is
    closed, so Hypercorn sees the connection broken, tells the app
    (``http.disconnect``, ``websocket.disconnect``), and the app's handler
    ends, cancelling an attached run. Hypercorn takes a stream without
    ``do_handshake`` for plain TCP, and reads ``.socket``.
    """

    def __init__(self, stream: trio.SocketStream, write_timeout: float) -> None:
        self.socket = stream.socket
        self._stream = stream
        self._write_timeout = write_timeout

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with trio.move_on_after(self._write_timeout):
            await self._stream.send_all(data)
            return
        self.socket.close()  # a send cut short leaves the stream unusable; this also wakes its reader
        raise trio.BrokenResourceError(f"the client read nothing for {self._write_timeout} s")

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _Connection(TCPServer):
    """Hypercorn's connection, with what it does per request and per write made cheaper.

    - A write that the socket takes at once, with no other write under
      way, is made right away: no lock, no shielded cancel scope, no trip
      through trio's ``send_all`` (each ASGI ``send`` was all three and a
      syscall); it stays a schedule point. Anything else (a full socket
      buffer, an error) goes Hypercorn's way.
    - The keep-alive timer is one task per connection that looks at the time
      the connection went idle (:class:`_KeepAlive`), not a task started and
      cancelled per request.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._keep_alive = _KeepAlive(self)
        self.idle_task = self._keep_alive  # type: ignore[assignment]  # TrioSingleTask's two methods

    async def protocol_send(self, event: Event) -> None:
        if type(event) is RawData and not self.send_lock.locked():
            data = event.data
            try:
                sent = self.stream.socket._sock.send(data)  # the stdlib socket under trio's
            except OSError:
                sent = 0  # would block, or broken: Hypercorn's way reports it as it does
            if sent == len(data):
                # Still a schedule point, as Hypercorn's write is: its reader must get to
                # parse the rest of a request before a response that did not wait for it
                # ends (else Hypercorn closes the connection after that response).
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            event = RawData(data[sent:])
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            self._keep_alive.close()  # the connection is ending: so does its timer


class _KeepAlive:
    """Closes a connection that stayed idle ``keep_alive_timeout`` seconds, or is idle once the server terminates.

    What Hypercorn's ``TrioSingleTask`` running ``TCPServer._idle_timeout`` does,
    but the timer is one task that sleeps until the deadline and looks again;
    :meth:`restart` (the connection went idle) and :meth:`stop` (a request came)
    only note the time.
    """

    def __init__(self, server: _Connection) -> None:
        self._server = server
        self._idle_since: float | None = None  # None: a request is under way
        self._scope: trio.CancelScope | None = None  # the timer task's, once started
        self._became_idle: trio.Event | None = None  # set when the timer waits for that

    async def restart(self, task_group: Any, action: object) -> None:
        """The connection went idle (``action`` is Hypercorn's timer, which this replaces)."""
        self._idle_since = trio.current_time()
        if self._scope is None:
            self._scope = trio.CancelScope()
            task_group._nursery.start_soon(self._watch, self._scope)
        elif self._became_idle is not None:
            self._became_idle.set()
            self._became_idle = None

    async def stop(self) -> None:
        """A request came."""
        self._idle_since = None

    def close(self) -> None:
        """The connection is ending: the timer task ends too."""
        if self._scope is not None:
            self._scope.cancel()

    async def _watch(self, scope: trio.CancelScope) -> None:
        timeout = self._server.config.keep_alive_timeout
        terminated = self._server.context.terminated
        with scope:
            while True:
                since = self._idle_since
                if since is None:  # busy: look again once it is idle
                    self._became_idle = trio.Event()
                    await self._became_idle.wait()
                    continue
                if terminated.is_set() or trio.current_time() >= since + timeout:
                    break
                with trio.move_on_at(since + timeout):
                    await terminated.wait()
            with trio.CancelScope(shield=True):
                await self._server._initiate_server_close()


KEEPALIVE_IDLE: Final = 10
"""Seconds a connection may be silent both ways before TCP asks the client whether it is still there."""
KEEPALIVE_INTERVAL: Final = 5
KEEPALIVE_PROBES: Final = 3
"""Unanswered probes, ``KEEPALIVE_INTERVAL`` seconds apart, after which the connection is dropped."""


def _probe_when_idle(sock: trio.socket.SocketType) -> None:
    """TCP keepalive on an accepted connection: a client gone without a FIN (a NAT that forgot it, a phone out
    of range) is noticed within ``KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES`` seconds (25) even
    when nothing is sent, and the connection dropped, which ends what it held (an idle session's updates or
    workspace WebSocket keeps the session from being reaped). Options a platform lacks are left as they are."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE" if hasattr(socket, "TCP_KEEPIDLE") else "TCP_KEEPALIVE", KEEPALIVE_IDLE),  # (macOS)
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
            ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:  # the client already gone (reset as it was accepted): Hypercorn finds out as it reads
        pass


def _listening_sockets(config: Config) -> list[socket.socket]:
    """A listening socket for each ``host:port`` of ``config.bind``, as Hypercorn makes them (no delay,
    address reuse, non-blocking, ``config.backlog``).

    Not Hypercorn's ``create_sockets``: a bind that fails there (the port in use) drops the sockets made
    so far unclosed, and each warns when collected.

    Raises:
        OSError: a socket could not be made, bound (the port in use ...) or listen; none is left open.
    """
    sockets: list[socket.socket] = []
    try:
        for bind in config.bind:
            host, _, port = bind.replace("[", "").replace("]", "").rpartition(":")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
            sock.setblocking(False)
            sock.listen(config.backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def serve_app(
    app: ASGIApp,
    config: Config,
    shutdown: trio.Event,
    *,
    write_timeout: float = math.inf,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hypercorn's Trio worker, with the accepted connections kept where shutdown can reach them.

    Every send to a client must finish within ``write_timeout`` seconds, or
    its connection is closed (see :class:`_DeadlineStream`). The listen
    backlog is ``config.backlog``.

    Hypercorn sends inside a shielded scope, so at shutdown a client that
    stopped reading would also hold the server: once ``graceful_timeout``
    has passed after ``shutdown``, the sockets still open are closed, which
    ends those sends.

    The whole of it is shielded, so that cancelling the server's block
    cannot kill a handler before its session has ended it; the shutdown is
    bounded here instead.
    """
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]  # Starlette's ASGI type is narrower than Hypercorn's
    context = WorkerContext(None)
    listeners = []
    binds = []
    for sock in _listening_sockets(config):
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
    open_connections: set[trio.SocketStream] = set()
    none_open = trio.Event()

    async def serve_connection(stream: trio.SocketStream) -> None:
        open_connections.add(stream)
        _probe_when_idle(stream.socket)
        try:
            server = _Connection(wrapped, config, context, ConnectionState({}), _DeadlineStream(stream, write_timeout))
            await server.run()
        finally:
            open_connections.discard(stream)
            if not open_connections:
                none_open.set()

    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as handlers:
            async with trio.open_nursery() as accepting:
                serving = functools.partial(trio.serve_listeners, serve_connection, listeners, handler_nursery=handlers)
                accepting.start_soon(serving)
                task_status.started(binds)
                await shutdown.wait()
                accepting.cancel_scope.cancel()  # stop listening (serve_listeners closes the listeners)
            await context.terminated.set()  # idle keep-alive connections close now
            if open_connections:
                none_open = trio.Event()
                with trio.move_on_after(config.graceful_timeout):
                    await none_open.wait()
            handlers.cancel_scope.cancel()
            for stream in list(open_connections):
                stream.socket.close()  # ends a send stuck on a peer that stopped reading
