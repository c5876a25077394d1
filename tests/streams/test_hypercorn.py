"""serve_app's connections: the keep-alive timer and the writes the socket takes at once.

Real sockets, so the real clock: every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import trio
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from streams._hypercorn import serve_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

BOUND: Final = 10
KEEP_ALIVE: Final = 0.3


def _app(release: trio.Event) -> Starlette:
    async def quick(request: Request) -> Response:
        return PlainTextResponse("x" * 100)

    async def slow(request: Request) -> Response:
        await release.wait()
        return PlainTextResponse("slow")

    async def big(request: Request) -> Response:
        return PlainTextResponse("y" * 2**22)  # more than a socket buffer takes at once

    return Starlette(routes=[Route("/quick", quick), Route("/slow", slow), Route("/big", big)])


@asynccontextmanager
async def _serve(release: trio.Event) -> AsyncIterator[tuple[trio.Event, int]]:
    """serve_app on a free port until the block exits (bounded by ``BOUND``): its shutdown event and its port."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.keep_alive_timeout = KEEP_ALIVE
    config.graceful_timeout = 1.0
    config.accesslog = None
    shutdown = trio.Event()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(serve_app, _app(release), config, shutdown)
            try:
                yield shutdown, int(binds[0].rpartition(":")[2])
            finally:
                shutdown.set()  # serve_app is shielded: shutdown is how it ends


async def _get(stream: trio.SocketStream, path: str) -> bytes:
    """Send ``GET path`` and read until its body (Content-Length) is complete."""
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some()
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += await stream.receive_some()
    return body


async def _closed_by_server(stream: trio.SocketStream) -> None:
    while await stream.receive_some():
        pass


async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout() -> None:
    """A connection left idle after its requests is closed once ``keep_alive_timeout`` has passed, not before."""
    async with _serve(trio.Event()) as (_, port):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            for _ in range(3):
                assert await _get(stream, "/quick") == b"x" * 100
            idle_from = trio.current_time()
            await _closed_by_server(stream)
            assert trio.current_time() - idle_from >= KEEP_ALIVE * 0.9


async def test_a_connection_busy_longer_than_the_timeout_is_not_closed() -> None:
    """The keep-alive timer counts idle time only: a request that takes longer than it is answered."""
    release = trio.Event()
    async with _serve(release) as (_, port):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            assert await _get(stream, "/quick") == b"x" * 100
            async with trio.open_nursery() as inner:
                answer: list[bytes] = []

                async def get_slow() -> None:
                    answer.append(await _get(stream, "/slow"))

                inner.start_soon(get_slow)
                await trio.sleep(KEEP_ALIVE * 3)  # a real server: only real time can pass the timeout
                release.set()
            assert answer == [b"slow"]
            assert await _get(stream, "/quick") == b"x" * 100  # still open, its timer restarted


async def test_an_idle_connection_closes_at_once_on_shutdown() -> None:
    """Once the server shuts down, an idle keep-alive connection is closed without waiting for its timeout."""
    async with _serve(trio.Event()) as (shutdown, port):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            assert await _get(stream, "/quick") == b"x" * 100
            shutdown.set()
            started = trio.current_time()
            await _closed_by_server(stream)
            assert trio.current_time() - started < KEEP_ALIVE


async def test_a_response_larger_than_the_socket_takes_at_once_arrives_whole() -> None:
    """A write the socket takes only in part goes on Hypercorn's way: the client gets every byte, in order."""
    async with _serve(trio.Event()) as (_, port):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            assert await _get(stream, "/big") == b"y" * 2**22
            assert await _get(stream, "/quick") == b"x" * 100
