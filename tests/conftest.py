"""Shared fixtures. The leak checker (runtime.testing) is on for the whole suite via pyproject's addopts.

``provider_server``: a loopback HTTP server that serves recorded bytes exactly as stored
(``backup_server``: a second one).
``load_example``: imports an example script as a module.
``run_example``: runs an example as a script, offline.
``postgres_cluster``: a throwaway PostgreSQL cluster, one per test session (``tests/pg.py``).
``postgres_dsn``: a fresh empty database in it, one per test.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.lowlevel

from tests.pg import PostgresCluster, PostgresMissingError, find_bindir, postgres_cluster as _postgres_cluster
from tests.raw_http import read_request_head

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import ModuleType


@attrs.define
class Reply:
    """One scripted HTTP reply."""

    body: bytes
    status: int = 200
    content_type: str = "text/event-stream"
    headers: dict[str, str] = attrs.field(factory=dict)
    chunk_size: int | None = None
    """Send the body this many bytes at a time (with a scheduling point between)."""
    drop_after: int | None = None
    """Close the connection after this many body bytes (no clean end)."""
    hang_after: int | None = None
    """Stop sending after this many body bytes, keeping the connection open."""


@attrs.define
class Received:
    """One request the server got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@attrs.define(eq=False)
class ProviderServer:
    """Serves queued replies in order (the last one again once the queue is down to it)."""

    port: int = 0
    replies: list[Reply] = attrs.field(factory=list)
    requests: list[Received] = attrs.field(factory=list)
    disconnected: trio.Event = attrs.field(factory=trio.Event)
    """Set when a client closes its connection before the reply was fully sent."""
    received: trio.Event = attrs.field(factory=trio.Event)
    """Set when the first request has been read."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, body: bytes, **options: object) -> None:
        """Queue a reply (options as in :class:`Reply`); test modules can't import conftest."""
        self.replies.append(Reply(body, **options))  # type: ignore[arg-type]

    def serve(self, body: bytes, **options: object) -> None:
        """Serve this reply to every request from now on."""
        self.replies = [Reply(body, **options)]  # type: ignore[arg-type]

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            request = await _read_request(stream)
            if request is None:
                return
            self.requests.append(request)
            self.received.set()
            reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
            reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 429: "Too Many Requests"}.get(
                reply.status, "Error"
            )
            head = [f"HTTP/1.1 {reply.status} {reason}", f"content-type: {reply.content_type}", "connection: close"]
            cut = reply.drop_after if reply.drop_after is not None else reply.hang_after
            # The whole length is promised even when the body is cut short: that is the fault.
            head.append(f"content-length: {len(reply.body)}")
            head += [f"{name}: {value}" for name, value in reply.headers.items()]
            try:
                await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode())
                body = reply.body if cut is None else reply.body[:cut]
                size = reply.chunk_size or len(body) or 1
                for start in range(0, len(body), size):
                    await stream.send_all(body[start : start + size])
                    if reply.chunk_size:
                        await trio.lowlevel.checkpoint()
                if reply.hang_after is not None:
                    await _wait_for_close(stream)
                    self.disconnected.set()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.disconnected.set()


async def _read_request(stream: trio.SocketStream) -> Received | None:
    data = await read_request_head(stream)
    if data is None:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        body += chunk
    return Received(method, path, headers, body)


async def _wait_for_close(stream: trio.SocketStream) -> None:
    while await stream.receive_some(65536):
        pass


async def _start_provider_server(nursery: trio.Nursery) -> ProviderServer:
    server = ProviderServer()
    listeners = await nursery.start(functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]
    return server


@pytest.fixture
async def provider_server(nursery: trio.Nursery) -> ProviderServer:
    """A ProviderServer on an ephemeral loopback port, stopped with the test."""
    return await _start_provider_server(nursery)


@pytest.fixture
async def backup_server(nursery: trio.Nursery) -> ProviderServer:
    """A second ProviderServer, for the model that takes over from the first (``FallbackModel``)."""
    return await _start_provider_server(nursery)


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, as an import would: pydantic resolves the example's annotations there.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture
def load_example() -> Callable[[str], ModuleType]:
    """Import ``examples/<name>.py`` as a module (a fresh one each call)."""
    return _load_example


def _run_example(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=60,
        # PYTHONPATH: the packages of this checkout, whichever one the environment has installed.
        env={"PATH": "", "PYTHONWARNINGS": "error", "PYTHONPATH": str(EXAMPLES.parent), **(env or {})},
        check=False,
    )


@pytest.fixture
def run_example() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_example(name, *args, env=None)``: run ``examples/<name>.py`` as a script with no network, no key
    and no terminal input (``env``: a few variables more), and return the finished process."""
    return _run_example


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster on loopback for the whole test session (``initdb`` + ``pg_ctl``, trust auth)."""
    try:
        find_bindir()
    except PostgresMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    with _postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_dsn(postgres_cluster: PostgresCluster) -> str:
    """A fresh empty database of the session's cluster, for this test alone (its connection string)."""
    return postgres_cluster.create_database()


pytest_plugins = ["pytester"]
