"""Fixtures for the streams tests.

Helpers the test files share, as fixtures (under importlib import mode a test
module cannot import this one): ``make_agent``, ``add``, ``serving``,
``create``, ``run_attached`` and ``new_recorder``.

``fault_proxy``: a TCP proxy on loopback that injects network faults between a
client and a server: it can forward, delay, stop forwarding without closing
anything (a peer that died without a FIN), reset every connection, and refuse
new ones. Its mode applies to live connections as well as new ones.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import socket
import struct
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias

import httpx
import pytest
import trio

from agents import Agent, ScriptedModel, ToolCall, UserMessage, tool
from streams import Server, open_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from agents import ModelRequest, Tool
    from agents.models import Turn
    from streams import RemoteEvent

Mode: TypeAlias = Literal["forward", "delay", "blackhole", "reset", "refuse"]
_CHUNK: Final = 65536
_RST_LINGER: Final = struct.pack("ii", 1, 0)


class _Reset(Exception):
    """Ends a link with an RST instead of a FIN."""


def _reset_and_close(stream: trio.SocketStream | None) -> None:
    if stream is None:
        return
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    except OSError:
        pass  # already closed
    stream.socket.close()


class _Link:
    """One proxied connection: the client's socket, the upstream socket, and the scope that ends both."""

    def __init__(self, client: trio.SocketStream) -> None:
        self.client = client
        self.upstream: trio.SocketStream | None = None
        self.scope = trio.CancelScope()
        self.reset = False


class FaultProxy:
    """A TCP proxy from ``127.0.0.1:port`` to :attr:`upstream`, with switchable faults.

    Modes (one at a time, switched at any moment, applying to live connections too):

    - :meth:`forward` (the default): copy bytes both ways;
    - :meth:`delay`: wait ``seconds`` before forwarding each chunk (order is kept);
    - :meth:`blackhole`: forward nothing, in either direction, and close nothing;
      a chunk read meanwhile (or a peer's FIN) is held, and delivered on
      :meth:`forward`, as TCP's retransmission would. New connections are
      accepted but not connected upstream;
    - :meth:`reset`: close every live connection with an RST (``SO_LINGER`` (1, 0)),
      and each new one at once, until the mode changes;
    - :meth:`refuse`: new connections are reset at once (the client's dial
      fails); live ones keep forwarding.
    """

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 1)) -> None:
        self.upstream = upstream
        """Where new connections go; change it at any time (live connections keep theirs)."""
        self.port = 0
        """The port the proxy listens on (127.0.0.1)."""
        self.bytes_up = 0
        """Bytes forwarded from clients to the upstream."""
        self.bytes_down = 0
        """Bytes forwarded from the upstream to clients."""
        self.accepted = 0
        """Connections accepted so far."""
        self._mode: Mode = "forward"
        self._delay = 0.0
        self._links: set[_Link] = set()
        self._mode_changed = trio.Event()
        self._links_changed = trio.Event()
        self._traffic = trio.Event()
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    @property
    def connections(self) -> int:
        """Connections open now (accepted and not yet closed)."""
        return len(self._links)

    @property
    def address(self) -> tuple[str, int]:
        """``("127.0.0.1", port)``."""
        return ("127.0.0.1", self.port)

    def forward(self) -> None:
        """Copy bytes both ways (releasing anything held by a blackhole)."""
        self._set_mode("forward")

    def delay(self, seconds: float) -> None:
        """Wait ``seconds`` before forwarding each chunk, both ways."""
        self._delay = seconds
        self._set_mode("delay")

    def blackhole(self) -> None:
        """Stop forwarding both ways without closing anything."""
        self._set_mode("blackhole")

    def reset(self) -> None:
        """Reset every live connection (RST), and every new one until the mode changes."""
        self._set_mode("reset")
        for link in list(self._links):
            link.reset = True
            link.scope.cancel()

    def refuse(self) -> None:
        """Reset new connections as soon as they are accepted; live ones carry on."""
        self._set_mode("refuse")

    def _set_mode(self, mode: Mode) -> None:
        self._mode = mode
        self._mode_changed.set()
        self._mode_changed = trio.Event()

    def _links_did_change(self) -> None:
        self._links_changed.set()
        self._links_changed = trio.Event()

    async def wait_connections(self, count: int) -> None:
        """Wait until exactly ``count`` connections are open."""
        while len(self._links) != count:
            await self._links_changed.wait()

    async def wait_accepted(self, count: int) -> None:
        """Wait until at least ``count`` connections have been accepted in all."""
        while self.accepted < count:
            await self._links_changed.wait()

    async def wait_bytes(self, *, up: int = 0, down: int = 0) -> None:
        """Wait until at least ``up`` bytes went upstream and ``down`` bytes came back, in all."""
        while self.bytes_up < up or self.bytes_down < down:
            await self._traffic.wait()

    async def _gate(self) -> None:
        """Return when a chunk may go on (after the delay); wait while blackholed."""
        while True:
            if self._mode == "blackhole":
                await self._mode_changed.wait()
            elif self._mode == "reset":
                raise _Reset
            else:
                if self._mode == "delay" and self._delay > 0:
                    await trio.sleep(self._delay)
                return

    async def serve(self, *, task_status: trio.TaskStatus[FaultProxy] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and proxy until :meth:`aclose` (or cancellation)."""
        try:
            with self._scope:
                listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                async with listeners[0] as listener, trio.open_nursery() as nursery:
                    self.port = listener.socket.getsockname()[1]
                    task_status.started(self)
                    while True:
                        client = await listener.accept()
                        nursery.start_soon(self._handle, client)
        finally:
            self._stopped.set()

    async def aclose(self) -> None:
        """Stop listening and close every connection; returns when all are closed."""
        self._scope.cancel()
        await self._stopped.wait()

    async def _handle(self, client: trio.SocketStream) -> None:
        link = _Link(client)
        self._links.add(link)
        self.accepted += 1
        self._links_did_change()
        try:
            with link.scope:
                if self._mode in ("reset", "refuse"):
                    raise _Reset
                await self._gate()  # blackholed: accepted, never connected upstream
                try:
                    link.upstream = await trio.open_tcp_stream(*self.upstream)
                except OSError:
                    raise _Reset from None  # the upstream is down: the client sees its dial fail
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, link, link.client, link.upstream, "up", nursery.cancel_scope)
                    nursery.start_soon(self._pump, link, link.upstream, link.client, "down", nursery.cancel_scope)
        except _Reset:
            link.reset = True
        finally:
            if link.reset:
                _reset_and_close(link.client)
                _reset_and_close(link.upstream)
            else:
                link.client.socket.close()
                if link.upstream is not None:
                    link.upstream.socket.close()
            self._links.discard(link)
            self._links_did_change()

    async def _pump(
        self,
        link: _Link,
        source: trio.SocketStream,
        target: trio.SocketStream,
        direction: Literal["up", "down"],
        done: trio.CancelScope,
    ) -> None:
        """Copy one direction; its end (EOF or a broken socket) closes the whole link."""
        try:
            while True:
                try:
                    data = await source.receive_some(_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                await self._gate()  # a held FIN is a FIN not yet seen
                if not data:
                    return
                try:
                    await target.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if direction == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                self._traffic.set()
                self._traffic = trio.Event()
        except _Reset:
            link.reset = True
            link.scope.cancel()
        finally:
            done.cancel()


WATCHDOG: Final = 30.0
"""Seconds after which ``fault_proxy`` resets every connection, and fails the test, if it is still running."""


@pytest.fixture
async def fault_proxy(nursery: trio.Nursery) -> AsyncIterator[FaultProxy]:
    """A :class:`FaultProxy` on an ephemeral loopback port (set ``upstream`` before connecting through it).

    Code stuck on a fault (a shielded wait on a blackholed socket, which no
    ``fail_after`` can interrupt) would hang the suite: after
    :data:`WATCHDOG` seconds the proxy resets every connection, which
    unsticks it, and the test fails.
    """
    proxy = FaultProxy()
    await nursery.start(proxy.serve)
    fired = False

    async def watchdog() -> None:
        nonlocal fired
        with trio.move_on_after(WATCHDOG):
            await trio.sleep_forever()  # a deadline, not a wait for something to happen
        fired = True
        proxy.reset()

    nursery.start_soon(watchdog)
    try:
        yield proxy
    finally:
        await proxy.aclose()
    if fired:
        pytest.fail(f"the test was still running after {WATCHDOG} s: fault_proxy reset every connection to unstick it")


# -- agents, servers and clients shared by the test files ----------------------------

TIMEOUT: Final = 10
"""The httpx client's timeout in ``serving``."""


class MakeAgent(Protocol):
    def __call__(self, *tools: Tool, call: ToolCall | None = None, answer: str = "All done.") -> Agent: ...


def _make_agent(*tools: Tool, call: ToolCall | None = None, answer: str = "All done.") -> Agent:
    """An agent whose model needs no script position, so every session (and a local runtime) can share it.

    Input starting with "tool" makes ``call`` and then says ``answer``; "long" says ``answer``;
    "boom" raises; anything else is echoed.
    """

    def turn(request: ModelRequest) -> Turn:
        last = request.messages[-1]
        if not isinstance(last, UserMessage):
            return answer
        if last.text.startswith("boom"):
            raise RuntimeError("the model blew up")
        if call is not None and last.text.startswith("tool"):
            return call
        if last.text.startswith("long"):
            return answer
        return f"echo: {last.content}"

    return Agent(name="bot", model=ScriptedModel(itertools.repeat(turn)), tools=list(tools))


@pytest.fixture
def make_agent() -> MakeAgent:
    """Makes the stateless scripted agent the served-runtime tests share (see ``_make_agent``)."""
    return _make_agent


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


@pytest.fixture(name="add")
def add_fixture() -> Tool:
    """The tool ``add(a, b)``."""
    return add


class Serving(Protocol):
    def __call__(
        self, agent: Agent[Any, Any], **options: Any
    ) -> AbstractAsyncContextManager[tuple[Server, httpx.AsyncClient]]: ...


@asynccontextmanager
async def _serving(agent: Agent[Any, Any], **options: Any) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    """A server for ``agent`` and an httpx client pointed at it (closed before the server)."""
    async with open_server(agent, **options) as server:
        # As bytes: httpx sends a str header as ASCII, and a test's token may not be.
        headers = {b"authorization": f"Bearer {options['token']}".encode()} if options.get("token") else {}
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=headers) as client:
            yield server, client


@pytest.fixture
def serving() -> Serving:
    """``serving(agent, **options)``: an async context manager giving a server and an httpx client for it."""
    return _serving


class Create(Protocol):
    async def __call__(self, client: httpx.AsyncClient, session_id: str) -> None: ...


async def _create(client: httpx.AsyncClient, session_id: str) -> None:
    response = await client.post("/sessions", json={"id": session_id})
    assert response.status_code == 201, response.text
    assert response.json()["id"] == session_id


@pytest.fixture
def create() -> Create:
    """``await create(client, session_id)``: POST /sessions with that id, which must be 201 and take it."""
    return _create


class RunAttached(Protocol):
    async def __call__(self, client: httpx.AsyncClient, session_id: str, user_input: str) -> list[dict[str, Any]]: ...


async def _run_attached(client: httpx.AsyncClient, session_id: str, user_input: str) -> list[dict[str, Any]]:
    """An attached run over plain httpx, read to its end; the data of its SSE messages."""
    data: list[dict[str, Any]] = []
    async with client.stream("POST", f"/sessions/{session_id}/runs", json={"input": user_input}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data.append(json.loads(line.removeprefix("data: ")))
    return data


@pytest.fixture
def run_attached() -> RunAttached:
    """``await run_attached(client, session_id, user_input)``: an attached run's events' JSON, over plain httpx."""
    return _run_attached


class Recorder:
    """A ``RemoteSession`` handler keeping every message; tests wait for the one, or the state, they expect."""

    def __init__(self) -> None:
        self.events: list[RemoteEvent] = []
        self._changed = trio.Event()

    async def __call__(self, event: RemoteEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    def of(self, stream: str) -> list[dict[str, Any]]:
        """The data of every message kept from ``stream``."""
        return [event.data for event in self.events if event.stream == stream]

    async def wait_for(self, predicate: Callable[[RemoteEvent], bool]) -> RemoteEvent:
        """The first message (already kept or still to come) that satisfies ``predicate``."""
        seen = 0
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            await self._changed.wait()

    async def wait_until(self, predicate: Callable[[Recorder], bool]) -> None:
        """Until ``predicate`` holds of this recorder."""
        while not predicate(self):
            await self._changed.wait()


@pytest.fixture
def new_recorder() -> Callable[[], Recorder]:
    """Makes a fresh :class:`Recorder`."""
    return Recorder


# -- a WebSocket client that sends exactly the bytes it is told -----------------------


class RawWebSocket:
    """A WebSocket client over a raw trio socket: frames are built by hand, so it can break the protocol.

    Frames from the server are read as they come (unmasked, unfragmented: what Hypercorn sends).
    """

    def __init__(self, stream: trio.SocketStream, buffered: bytes) -> None:
        self.stream = stream
        self._buffer = bytearray(buffered)

    async def send_frame(self, opcode: int, payload: bytes, *, mask: bool = True, rsv: int = 0) -> None:
        """One final frame: ``opcode`` (1 text, 2 binary, 8 close), masked unless told not to (a protocol error)."""
        size = len(payload)
        head = bytearray([0x80 | rsv << 4 | opcode])
        mask_bit = 0x80 if mask else 0
        if size < 126:
            head.append(mask_bit | size)
        elif size < 2**16:
            head += bytes([mask_bit | 126]) + size.to_bytes(2, "big")
        else:
            head += bytes([mask_bit | 127]) + size.to_bytes(8, "big")
        if mask:
            key = secrets.token_bytes(4)
            head += key
            keystream = (key * (size // 4 + 1))[:size]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(size, "big")
        await self.stream.send_all(bytes(head) + payload)

    async def send_text(self, text: str) -> None:
        await self.send_frame(1, text.encode())

    async def _read(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            chunk = await self.stream.receive_some(_CHUNK)
            if not chunk:
                return None
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def receive_frame(self) -> tuple[int, bytes] | None:
        """The next frame's ``(opcode, payload)``; ``None`` if the server closed the TCP connection first."""
        head = await self._read(2)
        if head is None:
            return None
        size = head[1] & 0x7F
        if size >= 126:
            extended = await self._read(2 if size == 126 else 8)
            if extended is None:
                return None
            size = int.from_bytes(extended, "big")
        payload = await self._read(size)
        return None if payload is None else (head[0] & 0x0F, payload)

    async def receive_json(self) -> dict[str, Any]:
        """The next text frame, as a JSON object."""
        frame = await self.receive_frame()
        assert frame is not None, "the server closed the connection"
        assert frame[0] == 1, frame
        data = json.loads(frame[1])
        assert isinstance(data, dict)
        return data

    async def close_code(self) -> int | None:
        """Read until the server's close frame: its code (1005 if it has none); ``None`` if the TCP
        connection ended without one."""
        while True:
            frame = await self.receive_frame()
            if frame is None:
                return None
            opcode, payload = frame
            if opcode == 8:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005


class OpenRawWebSocket(Protocol):
    def __call__(
        self, port: int, path: str, *, headers: dict[str, str] | None = None
    ) -> AbstractAsyncContextManager[RawWebSocket]: ...


@asynccontextmanager
async def _open_raw_websocket(
    port: int, path: str, *, headers: dict[str, str] | None = None
) -> AsyncIterator[RawWebSocket]:
    """Connect to ``127.0.0.1:port``, complete the opening handshake for ``path`` (it must be 101)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(_CHUNK)
            assert chunk, f"the server closed during the handshake: {received!r}"
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        yield RawWebSocket(stream, rest)


@pytest.fixture
def open_raw_websocket() -> OpenRawWebSocket:
    """``async with open_raw_websocket(port, path) as ws``: a :class:`RawWebSocket`, handshake done."""
    return _open_raw_websocket


class WaitingTool(Protocol):
    def __call__(self, started: trio.Event, release: trio.Event, cancelled: trio.Event) -> Tool: ...


def _waiting_tool(started: trio.Event, release: trio.Event, cancelled: trio.Event) -> Tool:
    """A tool (``wait_here``) that waits for ``release``, noting when it started and whether it was cancelled."""

    @tool
    async def wait_here() -> str:
        """Wait until released."""
        started.set()
        try:
            await release.wait()
        except trio.Cancelled:
            cancelled.set()
            raise
        return "released"

    return wait_here


@pytest.fixture
def waiting_tool() -> WaitingTool:
    """``waiting_tool(started, release, cancelled)``: a tool that holds its run until released."""
    return _waiting_tool


class PostScope(Protocol):
    def __call__(self, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]: ...


def _post_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The ASGI scope of a JSON ``POST path`` with these extra headers, for driving an app with no HTTP parser."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


@pytest.fixture
def post_scope() -> PostScope:
    """``post_scope(path, headers)``: the ASGI scope of a JSON POST, to call ``app(scope, receive, send)`` directly."""
    return _post_scope
