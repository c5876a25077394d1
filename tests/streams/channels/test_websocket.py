"""WebSocketChannel: one chat per connection, bounded per-connection queues, prompt shutdown."""

from __future__ import annotations

import json
import socket
import struct
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal

import pytest
import trio
import trio.testing
import wsproto
from trio_websocket import ConnectionClosed, open_websocket_url, wrap_client_stream
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request, TextMessage

from agents import Agent, ModelChunk, ModelRequest, ReasoningChunk, ScriptedModel, TextChunk, UserMessage
from runtime import Channel, MessageBus, OutboundMessage, open_gateway, open_runtime
from streams import WebSocketChannel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager

    from trio_websocket import WebSocketConnection

CONNECT_TIMEOUT: Final = 5.0
DISCONNECT_TIMEOUT: Final = 2.0
"""Explicit client timeouts: trio-websocket's defaults are 60 s."""


def _open(port: int) -> AbstractAsyncContextManager[WebSocketConnection]:
    url = f"ws://127.0.0.1:{port}/"
    return open_websocket_url(url, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=DISCONNECT_TIMEOUT)


@asynccontextmanager
async def _connect_owning_socket(port: int) -> AsyncIterator[WebSocketConnection]:
    """A client for connections the server closes first, holding its own TCP stream.

    trio-websocket 0.12.2's client never closes its socket when the server
    ends the connection (``aclose`` returns early once a close reason is
    set), so ``open_websocket_url`` would leave it to the garbage collector.
    """
    async with trio.open_nursery() as nursery:
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            with trio.fail_after(CONNECT_TIMEOUT):
                ws = await wrap_client_stream(nursery, stream, "127.0.0.1", "/")
            try:
                yield ws
            finally:
                with trio.move_on_after(DISCONNECT_TIMEOUT):
                    await ws.aclose()


def _echo(request: ModelRequest) -> str:
    """Answer with the last user message and how many the session has seen."""
    said = [message.content for message in request.messages if isinstance(message, UserMessage)]
    return f"{said[-1]} #{len(said)}"


def _echo_agent(turns: int) -> Agent:
    return Agent(name="echo", model=ScriptedModel([_echo] * turns))


async def _receive(ws: WebSocketConnection) -> dict[str, Any]:
    frame = await ws.get_message()
    assert isinstance(frame, str)
    data = json.loads(frame)
    assert isinstance(data, dict)
    return data


async def _hello(ws: WebSocketConnection) -> str:
    hello = await _receive(ws)
    assert hello["type"] == "hello"
    chat_id = hello["chat_id"]
    assert isinstance(chat_id, str)
    return chat_id


async def test_websocket_channel_says_hello_and_pushes_the_reply() -> None:
    """A client gets a hello with its chat id, and the agent's reply to its message is pushed back."""
    channel = WebSocketChannel(port=0)
    with trio.fail_after(10):
        async with open_runtime() as runtime, open_gateway(runtime, _echo_agent(1), [channel]) as gateway:
            await gateway.wait_ready("websocket")
            assert channel.port != 0
            async with _open(channel.port) as ws:
                chat_id = await _hello(ws)
                assert chat_id
                await ws.send_message("good morning")
                reply = await _receive(ws)
                assert reply["type"] == "reply"
                assert reply["text"] == "good morning #1"
                assert isinstance(reply["reply_to"], str)


async def test_websocket_channel_publishes_text_and_json_frames() -> None:
    """Plain text and JSON {"text": ...} frames are published to the bus; a malformed one gets an error back."""
    bus = MessageBus()
    channel = WebSocketChannel(port=0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(channel.run, bus)
            async with _open(port) as ws:
                chat_id = await _hello(ws)
                await ws.send_message("plain words")
                await ws.send_message(json.dumps({"text": "json words"}))
                await ws.send_message(json.dumps({"words": "no text field"}))
                inbound = bus.inbound()
                first, second = await inbound.receive(), await inbound.receive()
                assert (first.channel, first.chat_id, first.text) == ("websocket", chat_id, "plain words")
                assert (second.channel, second.chat_id, second.text) == ("websocket", chat_id, "json words")
                error = await _receive(ws)
                assert error["type"] == "error"
                assert "text" in error["text"]
                assert channel.statistics().rejected == 1
            nursery.cancel_scope.cancel()


async def test_websocket_channel_two_connections_are_two_chats() -> None:
    """Two connections get two chat ids, two sessions, and only their own replies."""
    channel = WebSocketChannel(port=0)
    with trio.fail_after(10):
        async with open_runtime() as runtime, open_gateway(runtime, _echo_agent(3), [channel]) as gateway:
            await gateway.wait_ready("websocket")
            async with _open(channel.port) as alice, _open(channel.port) as bob:
                alice_chat, bob_chat = await _hello(alice), await _hello(bob)
                assert alice_chat != bob_chat
                await alice.send_message("alpha")
                assert (await _receive(alice))["text"] == "alpha #1"
                await bob.send_message("beta")
                assert (await _receive(bob))["text"] == "beta #1"
                await alice.send_message("gamma")
                assert (await _receive(alice))["text"] == "gamma #2"
                assert gateway.statistics().sessions == 2
                assert channel.statistics().connections == 2


async def test_websocket_channel_drops_messages_for_unknown_chats() -> None:
    """An outbound message for a chat with no connection is dropped and counted."""
    bus = MessageBus()
    channel = WebSocketChannel(port=0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run, bus)
            await bus.publish_outbound(OutboundMessage("websocket", "ws-nobody", "lost"), policy="drop")
            await trio.testing.wait_all_tasks_blocked()
            assert channel.statistics().dropped == 1
            nursery.cancel_scope.cancel()


async def test_websocket_channel_closes_a_client_that_stops_reading() -> None:
    """A client that stops reading is closed with 1008 "client too slow"; its queue stays bounded; others go on."""
    bus = MessageBus(outbound_size=8)
    channel = WebSocketChannel(port=0, queue_size=4, disconnect_timeout=5.0)
    big = "x" * 16_384
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(channel.run, bus)
            async with _connect_owning_socket(port) as slow, _open(port) as fast:
                slow_chat, fast_chat = await _hello(slow), await _hello(fast)
                # The slow client reads nothing more: its socket buffers fill, then its queue.
                pushed = 0
                while channel.statistics().closed_too_slow == 0:
                    await bus.publish_outbound(OutboundMessage("websocket", slow_chat, big), policy="drop")
                    pushed += 1
                    await trio.testing.wait_all_tasks_blocked()
                    assert channel.statistics().queue_high_water <= 4
                stats = channel.statistics()
                assert stats.queue_high_water == 4
                assert stats.connections == 1
                assert stats.queued == 0

                # Nothing more is queued for the closed chat.
                await bus.publish_outbound(OutboundMessage("websocket", slow_chat, "late"), policy="drop")
                await trio.testing.wait_all_tasks_blocked()
                assert channel.statistics().dropped > stats.dropped

                # The other connection is unaffected.
                await bus.publish_outbound(OutboundMessage("websocket", fast_chat, "still here"), policy="drop")
                assert (await _receive(fast))["text"] == "still here"

                # Reading again, the slow client gets what was already in flight, then the close frame.
                received = 0
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        message = await _receive(slow)
                        assert message["type"] == "reply"
                        received += 1
                assert closed.value.reason is not None
                assert closed.value.reason.code == WebSocketChannel.SLOW_CLIENT_CODE
                assert closed.value.reason.reason == "client too slow"
                assert received < pushed
            nursery.cancel_scope.cancel()


async def test_websocket_channel_drops_a_burst_of_reasoning_rather_than_the_client_that_reads() -> None:
    """A model streaming reasoning faster than any client reads: past half the connection's queue the reasoning
    is dropped (counted), never the client: it gets its reply. The burst filled the queue, and the reading
    client was closed as too slow, its reply lost."""
    turn: list[ModelChunk] = [ReasoningChunk(f"thought {i} ") for i in range(300)]
    agent = Agent(name="a", model=ScriptedModel([[*turn, TextChunk("the answer")]]))
    channel = WebSocketChannel(port=0, queue_size=8)
    with trio.fail_after(10):
        async with open_runtime() as runtime, open_gateway(runtime, agent, [channel]) as gateway:
            await gateway.wait_ready("websocket")
            async with _open(channel.port) as ws:
                await _hello(ws)
                await ws.send_message("think hard")
                kinds: list[str] = []
                while not kinds or kinds[-1] != "reply":
                    kinds.append((await _receive(ws))["type"])
    assert set(kinds[:-1]) == {"reasoning"}
    stats = channel.statistics()
    assert stats.closed_too_slow == 0
    assert stats.dropped + len(kinds) - 1 == 300
    assert stats.queue_high_water <= 8 // 2 + 1  # reasoning stops at half; the reply may take one more


async def test_websocket_channel_gateway_closes_promptly_with_clients_connected() -> None:
    """Leaving the gateway with clients connected closes their connections and the listener promptly, each with
    a close frame saying so (1001, going away); the socket was dropped under them (1006), as after a crash."""
    channel = WebSocketChannel(port=0)
    closed: list[ConnectionClosed] = []

    async def client(port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with _connect_owning_socket(port) as ws:
            await _hello(ws)
            task_status.started()
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed as exc:
                closed.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as clients:
            async with open_runtime() as runtime, open_gateway(runtime, _echo_agent(0), [channel]) as gateway:
                await gateway.wait_ready("websocket")
                await clients.start(client, channel.port)
                await clients.start(client, channel.port)
                assert channel.statistics().connections == 2
    reasons = [exc.reason for exc in closed]
    assert [(reason.code, reason.reason) for reason in reasons if reason] == [(1001, "the server is shutting down")] * 2
    assert channel.statistics().connections == 0


def test_websocket_channel_rejects_a_bad_queue_size() -> None:
    """A queue size below 1 is a clear error, not a channel that can never deliver."""
    with pytest.raises(ValueError, match="queue_size"):
        WebSocketChannel(queue_size=0)


def _handshake_then_reset(port: int, extra_header: bytes) -> None:
    """Send an opening handshake and reset the connection (RST) before any answer can come back.

    A blocking socket: no Trio checkpoint between the send and the reset, so the server always answers a
    peer that is gone already.
    """
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n" % (port, extra_header)
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize(
    ("extra_header", "rejected"), [(b"", 0), (b"Origin: http://elsewhere.example\r\n", 3)], ids=["accepted", "refused"]
)
async def test_websocket_channel_survives_a_client_resetting_during_the_handshake(
    extra_header: bytes, rejected: int
) -> None:
    """A client that resets its connection before the handshake's answer (accept, or a 403 refusal) ends that
    connection only: the channel and the gateway go on serving other clients."""
    channel = WebSocketChannel(port=0)
    with trio.fail_after(10):
        async with open_runtime() as runtime, open_gateway(runtime, _echo_agent(1), [channel]) as gateway:
            await gateway.wait_ready("websocket")
            for _ in range(3):
                _handshake_then_reset(channel.port, extra_header)
                await trio.testing.wait_all_tasks_blocked()
            assert channel.statistics().connections == 0
            assert channel.statistics().rejected == rejected
            async with _open(channel.port) as ws:
                await _hello(ws)
                await ws.send_message("still there?")
                reply = await _receive(ws)
                assert reply["text"] == "still there? #1"


async def _handshake_status(port: int, host: str, origin: str | None) -> int:
    """Open a WebSocket handshake with this ``Host`` (and ``Origin``): 101 if accepted, else the refusal's status."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        extra = [] if origin is None else [(b"origin", origin.encode())]
        await stream.send_all(client.send(Request(host=host, target="/", extra_headers=extra)))
        while True:
            client.receive_data(await stream.receive_some(4096))
            for event in client.events():
                if isinstance(event, AcceptConnection):
                    return 101
                if isinstance(event, RejectConnection):
                    return event.status_code


@pytest.mark.parametrize(
    ("options", "host", "origin", "status"),
    [
        ({}, "evil.example:{port}", None, 403),
        ({}, "127.0.0.1:{port}", "http://127.0.0.1:{port}", 101),
        ({"allowed_origins": ["*"]}, "evil.example:{port}", "http://evil.example:{port}", 403),
        ({"allowed_hosts": ["api.example"]}, "127.0.0.1:{port}", None, 403),
        ({"allowed_hosts": ["api.example"]}, "api.example", "http://api.example", 101),
    ],
    ids=["foreign-host", "same-origin-page", "any-origin-foreign-host", "host-not-allowed", "allowed-host-same-origin"],
)
async def test_websocket_channel_checks_the_handshakes_host(
    options: dict[str, Any], host: str, origin: str | None, status: int
) -> None:
    """The handshake's Host is checked as a served runtime's is (DNS rebinding: a page whose name points at the
    channel), and a page served from the channel's own origin may connect. wsproto keeps Host out of the
    headers trio-websocket shows: before, no host was ever refused and every same-origin page was."""
    channel = WebSocketChannel(port=0, **options)
    with trio.fail_after(10):
        async with open_runtime() as runtime, open_gateway(runtime, _echo_agent(1), [channel]) as gateway:
            await gateway.wait_ready("websocket")
            port = channel.port
            got = await _handshake_status(port, host.format(port=port), origin and origin.format(port=port))
    assert got == status
    assert channel.statistics().rejected == (status != 101)


@pytest.mark.parametrize("option", ["connect_timeout", "disconnect_timeout", "publish_timeout", "write_timeout"])
@pytest.mark.parametrize("value", [0, -1])
def test_websocket_channel_refuses_a_timeout_not_above_zero(option: str, value: int) -> None:
    """A timeout that is not above zero is a ValueError naming it when the channel is made, not a gateway
    killed by the first client message."""
    with pytest.raises(ValueError, match=f"{option} must be above zero"):
        WebSocketChannel(**{option: value})  # type: ignore[arg-type]


def test_websocket_channel_is_a_channel() -> None:
    """WebSocketChannel implements the runtime's Channel protocol."""
    assert isinstance(WebSocketChannel(), Channel)


async def test_websocket_channel_drops_a_client_that_takes_no_reply_within_the_write_deadline() -> None:
    """A client that stops reading and is sent one reply larger than the buffers in between: the write
    waited forever (the queue never overflows with one message). Past ``write_timeout`` it is closed as too
    slow, while it is still connected."""
    big = ("x" * 1023 + " ") * 8192  # 8 MiB: more than the server's send and the client's receive buffers
    channel = WebSocketChannel(write_timeout=0.2)
    with trio.fail_after(10):
        async with (
            open_runtime() as runtime,
            open_gateway(runtime, Agent(name="big", model=ScriptedModel([big])), [channel]) as gateway,
        ):
            await gateway.wait_ready("websocket")
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
            await sock.connect(("127.0.0.1", channel.port))
            async with trio.SocketStream(sock) as stream:
                ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
                await stream.send_all(ws.send(Request(host="127.0.0.1", target="/")))
                accepted = False
                while not accepted:
                    ws.receive_data(await stream.receive_some(4096))
                    accepted = any(isinstance(event, AcceptConnection) for event in ws.events())
                await stream.send_all(ws.send(TextMessage("say something long")))
                while channel.statistics().connections:  # noqa: ASYNC110  # nothing to wait on: polled, under fail_after
                    await trio.sleep(0.01)
                assert channel.statistics().closed_too_slow == 1
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_websocket_channel_sends_nothing_after_a_message_cut_short_by_the_write_deadline() -> None:
    """A client too slow to take in one message within ``write_timeout`` is disconnected right after the
    part of that message it got: no close frame follows the unfinished frame (a client would read its bytes
    as the message's payload, and fail with 1007 or worse), the TCP connection just ends (1006 on its side)."""
    big = ("x" * 1023 + " ") * 8192  # 8 MiB: more than the server's send and the client's receive buffers
    channel = WebSocketChannel(write_timeout=0.2, disconnect_timeout=0.5)
    with trio.fail_after(10):
        async with (
            open_runtime() as runtime,
            open_gateway(runtime, Agent(name="big", model=ScriptedModel([big])), [channel]) as gateway,
        ):
            await gateway.wait_ready("websocket")
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
            await sock.connect(("127.0.0.1", channel.port))
            async with trio.SocketStream(sock) as stream:
                ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
                await stream.send_all(ws.send(Request(host="127.0.0.1", target="/")))
                accepted = False
                while not accepted:
                    ws.receive_data(await stream.receive_some(4096))
                    accepted = any(isinstance(event, AcceptConnection) for event in ws.events())
                await stream.send_all(ws.send(TextMessage("say something long")))
                while channel.statistics().closed_too_slow == 0:  # noqa: ASYNC110  # polled, under fail_after
                    await trio.sleep(0.01)
                # Now the client reads again, everything until the server's end of the connection.
                received = bytearray()
                while chunk := await stream.receive_some(65536):
                    received += chunk
                assert len(received) > 4096
                assert set(received[-64:]) <= set(b"x "), bytes(received[-64:])
                ws.receive_data(bytes(received))
                ws.receive_data(None)  # the end of the TCP stream
                events = list(ws.events())
                assert not [event for event in events if isinstance(event, CloseConnection) and event.code != 1006]
                parts = [event for event in events if isinstance(event, TextMessage)]
                assert not parts[-1].frame_finished  # the reply, cut short
            assert channel.statistics().connections == 0


class _LocalhostOnBothFamilies(trio.abc.HostnameResolver):
    """``localhost`` as most distributions' /etc/hosts has it: ``::1`` and ``127.0.0.1``."""

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[
        tuple[Literal[socket.AddressFamily.AF_INET], socket.SocketKind, int, str, tuple[str, int]]
        | tuple[
            Literal[socket.AddressFamily.AF_INET6],
            socket.SocketKind,
            int,
            str,
            tuple[str, int, int, int] | tuple[int, bytes],
        ]
    ]:
        assert host == b"localhost"
        assert isinstance(port, (bytes, int))
        number = int(port)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", number, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", number)),
        ]

    async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int) -> tuple[str, str]:
        raise NotImplementedError


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
async def test_websocket_channel_on_port_0_listens_on_one_port_for_every_address_of_its_host() -> None:
    """``host="localhost", port=0`` with localhost on ``::1`` and ``127.0.0.1``: both listeners are on the
    reported port (each had its own random port, and a client of the other address was refused)."""
    channel = WebSocketChannel(host="localhost", port=0)
    trio.socket.set_custom_hostname_resolver(_LocalhostOnBothFamilies())
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(channel.run, MessageBus())
                trio.socket.set_custom_hostname_resolver(None)
                assert port == channel.port
                for address in ("[::1]", "127.0.0.1"):
                    url = f"ws://{address}:{port}/"
                    async with open_websocket_url(
                        url, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=DISCONNECT_TIMEOUT
                    ) as ws:
                        assert await _hello(ws)
                nursery.cancel_scope.cancel()
    finally:
        trio.socket.set_custom_hostname_resolver(None)


class _TakeFirstPortOnIPv4(trio.abc.SocketFactory):
    """Sockets as usual, but when the third is made (re-binding ``127.0.0.1`` to the port ``::1`` got),
    another program takes that port on ``127.0.0.1`` first."""

    def __init__(self) -> None:
        self.made: list[trio.socket.SocketType] = []
        self.blocker: socket.socket | None = None

    def socket(
        self,
        family: socket.AddressFamily | int = socket.AF_INET,
        type: socket.SocketKind | int = socket.SOCK_STREAM,
        proto: int = 0,
    ) -> trio.socket.SocketType:
        if len(self.made) == 2:
            self.blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.blocker.bind(("127.0.0.1", self.made[0].getsockname()[1]))
            self.blocker.listen()
        sock = trio.socket.from_stdlib_socket(socket.socket(family, type, proto))
        self.made.append(sock)
        return sock


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
async def test_websocket_channel_on_port_0_tries_another_port_when_its_port_is_taken_on_another_address() -> None:
    """``host="localhost", port=0``: the port picked for ``::1`` being taken on ``127.0.0.1`` by someone
    else, the channel starts on another port for both addresses (it failed with ``EADDRINUSE``)."""
    channel = WebSocketChannel(host="localhost", port=0)
    factory = _TakeFirstPortOnIPv4()
    trio.socket.set_custom_hostname_resolver(_LocalhostOnBothFamilies())
    trio.socket.set_custom_socket_factory(factory)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(channel.run, MessageBus())
                trio.socket.set_custom_hostname_resolver(None)
                trio.socket.set_custom_socket_factory(None)
                assert factory.blocker is not None
                assert port != factory.blocker.getsockname()[1]
                for address in ("[::1]", "127.0.0.1"):
                    url = f"ws://{address}:{port}/"
                    async with open_websocket_url(
                        url, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=DISCONNECT_TIMEOUT
                    ) as ws:
                        assert await _hello(ws)
                nursery.cancel_scope.cancel()
    finally:
        trio.socket.set_custom_hostname_resolver(None)
        trio.socket.set_custom_socket_factory(None)
        if factory.blocker is not None:
            factory.blocker.close()
