"""Hypercorn's Trio worker, with every accepted connection where shutdown can reach it."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import trio
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

if TYPE_CHECKING:
    from hypercorn.config import Config
    from starlette.applications import Starlette


async def serve_app(
    app: Starlette,
    config: Config,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hypercorn's Trio worker, with the accepted connections kept where shutdown can reach them.

    Hypercorn sends inside a shielded scope, so a client that stopped
    reading (a full TCP window, no FIN) would hold its connection, and so
    the server, forever: nothing can cancel that send. Once
    ``graceful_timeout`` has passed after ``shutdown``, the sockets still
    open are closed, which ends those sends.

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
            server = TCPServer(wrapped, config, context, ConnectionState({}), stream)  # type: ignore[arg-type]  # Starlette's ASGI type is narrower; plain TCP is what TCPServer does without TLS
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
