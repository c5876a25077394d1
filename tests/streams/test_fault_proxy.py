"""The fault-injecting proxy itself, against a plain Trio echo server: each fault does what it claims."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Final

import pytest
import trio

if TYPE_CHECKING:
    from tests.streams.conftest import FaultProxy

BOUND: Final = 10.0
"""A generous bound on anything that should happen (real sockets, real clock)."""
ABSENCE: Final = 0.2
"""How long a test watches for something that must not happen."""


class EchoServer:
    """Echoes every byte back; counts connections and notes each one's EOF."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.received = 0
        self.eofs = 0
        self._changed = trio.Event()

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, *, connections: int = 0, received: int = 0, eofs: int = 0) -> None:
        while self.connections < connections or self.received < received or self.eofs < eofs:
            await self._changed.wait()

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self._note()
        async with stream:
            try:
                while data := await stream.receive_some(65536):
                    self.received += len(data)
                    self._note()
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass  # reset by the proxy
            self.eofs += 1
            self._note()


async def _echo_server(nursery: trio.Nursery) -> EchoServer:
    server = EchoServer()
    listeners = await nursery.start(functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]
    return server


@pytest.fixture
async def echo(nursery: trio.Nursery, fault_proxy: FaultProxy) -> EchoServer:
    """An echo server on an ephemeral loopback port, set as ``fault_proxy``'s upstream."""
    server = await _echo_server(nursery)
    fault_proxy.upstream = ("127.0.0.1", server.port)
    return server


async def _receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


async def _connect(proxy: FaultProxy) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", proxy.port)


async def _echoed(stream: trio.SocketStream, data: bytes) -> None:
    """Send ``data`` and check that it comes back whole."""
    await stream.send_all(data)
    assert await _receive_exactly(stream, len(data)) == data


async def test_forward_copies_both_ways_and_counts(fault_proxy: FaultProxy, echo: EchoServer) -> None:
    """In forward mode bytes go through both ways, are counted, and a closed client closes its link."""
    with trio.fail_after(BOUND):
        async with await _connect(fault_proxy) as client:
            await fault_proxy.wait_connections(1)
            await client.send_all(b"hello")
            await fault_proxy.wait_bytes(up=5)
            assert await _receive_exactly(client, 5) == b"hello"
            await fault_proxy.wait_bytes(up=5, down=5)
        await fault_proxy.wait_connections(0)
        await echo.wait_for(eofs=1)
    assert (fault_proxy.bytes_up, fault_proxy.bytes_down) == (5, 5)
    assert fault_proxy.accepted == 1


async def test_delay_holds_each_chunk(fault_proxy: FaultProxy, echo: EchoServer) -> None:
    """With ``delay(d)`` a round trip takes at least ``2 d`` (one delay each way), and still arrives whole."""
    with trio.fail_after(BOUND):
        async with await _connect(fault_proxy) as client:
            await _echoed(client, b"warm")
            fault_proxy.delay(0.25)
            start = trio.current_time()
            await client.send_all(b"slow")
            assert await _receive_exactly(client, 4) == b"slow"
            assert trio.current_time() - start >= 0.5
            fault_proxy.forward()


async def test_blackhole_forwards_nothing_and_closes_nothing(fault_proxy: FaultProxy, echo: EchoServer) -> None:
    """A blackholed live connection stays open with no bytes through; ``forward()`` then delivers what was held."""
    with trio.fail_after(BOUND):
        async with await _connect(fault_proxy) as client:
            await _echoed(client, b"one")
            fault_proxy.blackhole()
            await client.send_all(b"two")
            with trio.move_on_after(ABSENCE) as quiet:
                await client.receive_some(65536)
            assert quiet.cancelled_caught, "a byte came through the blackhole"
            assert echo.received == 3
            assert fault_proxy.connections == 1
            assert echo.eofs == 0
            fault_proxy.forward()
            assert await _receive_exactly(client, 3) == b"two"


async def test_blackhole_holds_a_fin(fault_proxy: FaultProxy, echo: EchoServer) -> None:
    """A client closing during a blackhole is not seen upstream (no FIN) until forwarding resumes."""
    with trio.fail_after(BOUND):
        async with await _connect(fault_proxy):
            await echo.wait_for(connections=1)
            fault_proxy.blackhole()
        with trio.move_on_after(ABSENCE) as quiet:
            await echo.wait_for(eofs=1)
        assert quiet.cancelled_caught, "the upstream saw the FIN through the blackhole"
        assert fault_proxy.connections == 1
        fault_proxy.forward()
        await echo.wait_for(eofs=1)
        await fault_proxy.wait_connections(0)


async def test_blackhole_accepts_new_connections_without_dialling_upstream(
    fault_proxy: FaultProxy, echo: EchoServer
) -> None:
    """A new connection to a blackholed proxy is accepted, but the upstream never hears of it until ``forward()``."""
    fault_proxy.blackhole()
    with trio.fail_after(BOUND):
        async with await _connect(fault_proxy) as client:
            await fault_proxy.wait_connections(1)
            await client.send_all(b"ping")
            with trio.move_on_after(ABSENCE) as quiet:
                await client.receive_some(65536)
            assert quiet.cancelled_caught
            assert echo.connections == 0
            fault_proxy.forward()
            assert await _receive_exactly(client, 4) == b"ping"
            assert echo.connections == 1


async def test_reset_breaks_live_and_new_connections(fault_proxy: FaultProxy, echo: EchoServer) -> None:
    """``reset()`` gives a live client a connection reset, resets new ones too, until ``forward()``."""
    with trio.fail_after(BOUND):
        async with await _connect(fault_proxy) as client:
            await _echoed(client, b"x")
            fault_proxy.reset()
            with pytest.raises(trio.BrokenResourceError) as broken:
                await client.receive_some(65536)
            assert isinstance(broken.value.__cause__, ConnectionResetError)
        await echo.wait_for(eofs=1)
        await fault_proxy.wait_connections(0)
        async with await _connect(fault_proxy) as late:
            with pytest.raises(trio.BrokenResourceError):
                await late.receive_some(65536)
        await fault_proxy.wait_connections(0)
        fault_proxy.forward()
        async with await _connect(fault_proxy) as again:
            await _echoed(again, b"ok")


async def test_refuse_resets_new_connections_only(fault_proxy: FaultProxy, echo: EchoServer) -> None:
    """``refuse()`` makes new dials fail while a live connection keeps forwarding."""
    with trio.fail_after(BOUND):
        async with await _connect(fault_proxy) as live:
            await _echoed(live, b"a")
            fault_proxy.refuse()
            async with await _connect(fault_proxy) as refused:
                with pytest.raises(trio.BrokenResourceError):
                    await refused.receive_some(65536)
            await _echoed(live, b"b")
    assert echo.connections == 1


async def test_upstream_down_resets_the_client(fault_proxy: FaultProxy) -> None:
    """A connection the proxy cannot carry upstream (nothing listening) is reset, not left hanging."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    dead_port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # the port is free: dialling it is refused
    fault_proxy.upstream = ("127.0.0.1", dead_port)
    with trio.fail_after(BOUND):
        async with await _connect(fault_proxy) as client:
            with pytest.raises(trio.BrokenResourceError):
                await client.receive_some(65536)
        await fault_proxy.wait_connections(0)


async def test_retarget_sends_new_connections_to_the_new_upstream(
    fault_proxy: FaultProxy, echo: EchoServer, nursery: trio.Nursery
) -> None:
    """Changing ``upstream`` moves new connections to the new server; a live connection stays where it was."""
    other = await _echo_server(nursery)
    with trio.fail_after(BOUND):
        async with await _connect(fault_proxy) as first:
            await _echoed(first, b"1")
            fault_proxy.upstream = ("127.0.0.1", other.port)
            async with await _connect(fault_proxy) as second:
                await _echoed(second, b"22")
            await _echoed(first, b"3")
    assert (echo.connections, echo.received) == (1, 2)
    assert (other.connections, other.received) == (1, 2)
