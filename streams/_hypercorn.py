"""Hypercorn's Trio worker, with every accepted connection where shutdown can reach it, and every send on a deadline."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import trio
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

if TYPE_CHECKING:
    from hypercorn.config import Config
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
    for sock in config.create_sockets().insecure_sockets:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
    open_connections: set[trio.SocketStream] = set()
    none_open = trio.Event()

    async def serve_connection(stream: trio.SocketStream) -> None:
        open_connections.add(stream)
        try:
            deadlined = _DeadlineStream(stream, write_timeout)
            server = TCPServer(wrapped, config, context, ConnectionState({}), deadlined)  # type: ignore[arg-type]  # Starlette's ASGI type is narrower; plain TCP is what TCPServer does without TLS
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
