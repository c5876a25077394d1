"""serve_app: clients that stop reading are dropped on a write deadline; a burst of connections is queued;
the keep-alive timer; writes the socket takes at once.

Real sockets everywhere, so the real clock and a ``trio.fail_after`` around each test. A client that
"stops reading" is a raw trio socket with a small receive buffer that reads nothing after the
response starts; the server is made to send it one message larger than every buffer in between
(8 MiB), so that send cannot finish until the client reads. The deadlines are short (0.2 s) to keep
the suite fast.
"""

from __future__ import annotations

import json
import select
import socket
import struct
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
import trio
import trio.testing
import wsproto
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from wsproto.events import AcceptConnection, Ping, Request as WSRequest, TextMessage

from streams._hypercorn import KEEPALIVE_IDLE, serve_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from starlette.requests import Request

    from tests.streams.conftest import Create, MakeAgent, RunAttached, Serving

TIMEOUT: Final = 10
DEADLINE: Final = 0.2
"""The write deadline the servers here are given."""
BIG: Final = ("x" * 1023 + " ") * 8192
"""8 MiB: more than the server's send buffer and the client's receive buffer together (Linux: at most 4 MiB and
a little), in 8192 words, so a run saying it has more events than its channel holds and blocks on its client."""
_RST_LINGER: Final = struct.pack("ii", 1, 0)


async def _connect(port: int) -> trio.SocketStream:
    """A loopback connection whose receive buffer is as small as the kernel allows, so it fills at once."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


def _reset(stream: trio.SocketStream) -> None:
    """Close with an RST: no FIN handshake to wait for, no unread data to trip over."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    stream.socket.close()


async def _request(port: int, method: str, path: str, body: Any = None) -> trio.SocketStream:
    """Send one HTTP/1.1 request and read nothing back."""
    stream = await _connect(port)
    payload = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(payload)}\r\n"
    if payload:
        head += "Content-Type: application/json\r\n"
    await stream.send_all(head.encode() + b"\r\n" + payload)
    return stream


async def _websocket(port: int, path: str) -> tuple[trio.SocketStream, wsproto.WSConnection]:
    """A WebSocket opened by hand (wsproto), read up to the handshake's answer and never again."""
    stream = await _connect(port)
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(ws.send(WSRequest(host=f"127.0.0.1:{port}", target=path)))
    while True:
        data = await stream.receive_some(4096)
        assert data, "the server closed the handshake"
        ws.receive_data(data)
        if any(isinstance(event, AcceptConnection) for event in ws.events()):
            return stream, ws


async def _until(condition: Callable[[], bool]) -> None:
    """Until ``condition`` holds (the server's counters change in its own tasks, with nothing to wait on)."""
    while not condition():  # noqa: ASYNC110  # nothing to wait on: polled, bounded by the test's fail_after
        await trio.sleep(0.01)


async def test_an_sse_run_whose_client_stops_reading_is_dropped_on_the_deadline_and_frees_the_run_slot(
    serving: Serving, make_agent: MakeAgent, create: Create, run_attached: RunAttached
) -> None:
    """A run's client that reads nothing held the run, and the session's run slot, forever (Hypercorn's send is
    shielded). Past the write deadline its connection is closed: the run ends cancelled and the next run of
    the session streams at once."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(answer=BIG), write_timeout=DEADLINE) as (server, client):
            await create(client, "s1")
            stuck = await _request(server.port, "POST", "/sessions/s1/runs", {"input": "long"})
            try:
                await _until(lambda: server.statistics().sse_streams == 1)
                events = await run_attached(client, "s1", "hello")  # waits for the run slot
                assert (events[-1]["type"], events[-1]["reason"]) == ("RunFinished", "completed")
                served = server.sessions["s1"]
                assert served.run_count == 2
                assert [log.finished for log in served.runs.values()] == [True, True]
                assert server.statistics().sse_streams == 0
            finally:
                _reset(stuck)


async def test_a_feed_client_that_stops_reading_is_dropped_and_its_handler_ends_with_the_session(
    serving: Serving, make_agent: MakeAgent, create: Create
) -> None:
    """A between-run feed client that reads nothing: once its session is deleted, its handler (and its
    socket and tasks) stayed until the client left. Now the deadline closes it while the client is
    still connected."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), write_timeout=DEADLINE) as (server, client):
            await create(client, "s1")
            stuck = await _request(server.port, "GET", "/sessions/s1/feed")
            try:
                await _until(lambda: server.statistics().sse_streams == 1)
                server.sessions["s1"].notify(BIG)
                assert (await client.delete("/sessions/s1")).status_code == 204
                await _until(lambda: server.statistics().sse_streams == 0)
                assert server.statistics().sessions == 0
            finally:
                _reset(stuck)


async def test_an_updates_websocket_that_stops_reading_is_dropped_on_the_deadline(
    serving: Serving, make_agent: MakeAgent, create: Create
) -> None:
    """An ``updates`` client that reads nothing is closed once a send to it has taken the deadline."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(answer=BIG), write_timeout=DEADLINE) as (server, client):
            await create(client, "s1")
            stream, _ = await _websocket(server.port, "/sessions/s1/updates")
            try:
                await _until(lambda: server.statistics().websockets == 1)
                response = await client.post("/sessions/s1/runs", json={"input": "long", "detach": True})
                assert response.status_code == 202
                await _until(lambda: server.statistics().websockets == 0)
            finally:
                _reset(stream)


async def test_a_workspace_client_that_stops_reading_and_pings_is_dropped_not_left_unread(
    serving: Serving, make_agent: MakeAgent, create: Create
) -> None:
    """Why the workspace server stopped reading a non-reading client's commands: Hypercorn answers a ping
    from its read loop, and the pong waits for the connection's send lock, held by the send stuck on the
    client's full window, so the read loop (and every command after the ping) waited forever
    (``websockets`` clients ping every 20 s). Now that stuck send ends on the deadline: the connection is
    closed, and nothing is left waiting."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), write_timeout=DEADLINE) as (server, client):
            await create(client, "s1")
            server.sessions["s1"].workspace.write("big", BIG)
            stream, ws = await _websocket(server.port, "/sessions/s1/workspace")
            try:
                await _until(lambda: server.statistics().websockets == 1)
                read = ws.send(TextMessage(json.dumps({"op": "read", "path": "big", "id": 1})))
                await stream.send_all(read + ws.send(Ping(b"are you there")))
                await _until(lambda: server.statistics().websockets == 0)
            finally:
                _reset(stream)


def _burst(port: int, count: int) -> int:
    """Open ``count`` connections at once, without letting the server run, and count those the kernel completed.

    Synchronous on purpose: the server accepts nothing meanwhile, so every connection must wait in the
    listen backlog; one that does not fit has its SYN dropped and is not established.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        poller = select.poll()
        for sock in sockets:
            poller.register(sock, select.POLLOUT)
        ready: set[int] = set()
        for _ in range(50):  # a loopback handshake takes microseconds; a dropped SYN waits 1 s to be sent again
            ready.update(fd for fd, _ in poller.poll(10))
            if len(ready) == count:
                break
        return sum(
            1 for sock in sockets if sock.fileno() in ready and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        )
    finally:
        for sock in sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
            sock.close()


BURST: Final = 400


async def test_a_port_in_use_is_an_os_error_and_leaves_no_socket_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bind that fails (the port in use) raises OSError from serve_app, and every socket made for the other
    binds is closed: Hypercorn's own create_sockets dropped them open, each a ResourceWarning when collected."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = Config()
        config.bind = ["127.0.0.1:0", f"127.0.0.1:{port}"]  # the first binds, the second cannot
        config.accesslog = None
        made: list[socket.socket] = []
        real_socket = socket.socket

        def recording(*args: Any, **kwargs: Any) -> socket.socket:
            sock = real_socket(*args, **kwargs)
            made.append(sock)
            return sock

        monkeypatch.setattr(socket, "socket", recording)  # the sockets serve_app makes, to see they are closed
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                with pytest.raises(OSError, match="in use"):
                    await nursery.start(serve_app, _app(trio.Event()), config, trio.Event())
        monkeypatch.undo()
    assert len(made) == 2
    assert [sock.fileno() for sock in made] == [-1, -1]  # closed


async def test_a_burst_of_connections_is_all_accepted(serving: Serving, make_agent: MakeAgent) -> None:
    """400 connections at once all fit in the listen backlog (Hypercorn's own default, 100, dropped 22 % of a
    burst of 500); the server then serves on."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            assert _burst(server.port, BURST) == BURST
            assert (await client.get("/health")).status_code == 200


async def test_the_backlog_is_an_option(serving: Serving, make_agent: MakeAgent) -> None:
    """A small backlog is taken as given: the same burst then overflows it (what the test above guards)."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), backlog=16) as (server, client):
            assert _burst(server.port, BURST) < BURST // 2
            assert (await client.get("/health")).status_code == 200


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


def _server_side_timer(server_port: int, client_port: int) -> tuple[int, int]:
    """The kernel's timer on the server's end of a loopback connection (``/proc/net/tcp``): its kind (2 is the
    keepalive timer) and the clock ticks (1/100 s) before it fires."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(address.rpartition(":")[2], 16) for address in fields[1:3])
            if (local, remote) == (server_port, client_port):
                kind, ticks = fields[5].split(":")
                return int(kind, 16), int(ticks, 16)
    raise AssertionError(f"no connection from port {client_port} to port {server_port}")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the kernel's connection table (Linux)")
async def test_a_connection_is_probed_by_tcp_keepalive_when_idle(make_agent: MakeAgent, serving: Serving) -> None:
    """Every accepted connection has TCP keepalive: an idle one (here, nothing sent at all) has the kernel's
    keepalive timer armed within KEEPALIVE_IDLE seconds, so a client gone without a FIN is dropped within
    ~25 s. Nothing probed it: an idle updates or workspace WebSocket whose client vanished kept its session
    from being reaped, for ever."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, _):
            stream = await _connect(server.port)
            try:
                client_port = stream.socket.getsockname()[1]
                await trio.testing.wait_all_tasks_blocked()  # accepted, its options set
                kind, ticks = _server_side_timer(server.port, client_port)
                assert kind == 2
                assert 0 < ticks <= KEEPALIVE_IDLE * 100
            finally:
                _reset(stream)
