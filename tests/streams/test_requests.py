"""The request checks both HTTP servers share: the bearer token and the body's Content-Length.

The served runtime (``open_server``) and the webhook channel check requests
with the same two functions; each test here runs against both, so the two
cannot drift apart again.
"""

from __future__ import annotations

import contextlib
import json
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import trio
import wsproto
from starlette.requests import Request
from wsproto.events import AcceptConnection, RejectConnection, Request as WSRequest

from agents import Agent, ScriptedModel
from runtime import open_gateway, open_runtime
from streams import UnsafeBindError, WebhookChannel, WebSocketChannel, open_server
from streams.__main__ import main
from streams._requests import RequestRejected, host_name, read_body
from streams._server import _owner

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from tests.streams.conftest import PostScope

TOKEN: Final = "s3cret"
TIMEOUT: Final = 10.0
SERVERS: Final = ["server", "webhook"]


def _agent() -> Agent:
    return Agent(name="bot", model=ScriptedModel(["hi"] * 10))


@asynccontextmanager
async def _serve(kind: str, token: str = TOKEN) -> AsyncIterator[tuple[Any, str, dict[str, Any]]]:
    """One of the two servers, with ``token`` required: its ASGI app, its URL, and a valid request body."""
    if kind == "server":
        async with open_server(_agent(), token=token) as server:
            yield server.app, f"{server.url}/sessions", {"id": "s1"}
        return
    channel = WebhookChannel(secret=token)
    async with open_runtime() as runtime, open_gateway(runtime, _agent(), [channel]) as gateway:
        await gateway.wait_ready(channel.name)
        yield channel.app, f"http://127.0.0.1:{channel.port}/messages", {"chat_id": "c", "text": "x"}


@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer  {TOKEN}"])
async def test_both_servers_take_the_bearer_scheme_in_any_case(kind: str, authorization: str) -> None:
    """``bearer TOKEN`` (RFC 7235: the scheme is case-insensitive) is accepted by the server and the webhook alike."""
    with trio.fail_after(TIMEOUT):
        async with _serve(kind) as (_, url, body), httpx.AsyncClient(timeout=TIMEOUT) as client:
            response = await client.post(url, json=body, headers={"authorization": authorization})
    assert response.status_code in (201, 202), response.text


@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN])
async def test_both_servers_refuse_a_missing_or_wrong_token_with_401(kind: str, authorization: str | None) -> None:
    """No token, a wrong one, or another scheme is 401 on the server and the webhook alike."""
    headers = {} if authorization is None else {"authorization": authorization}
    with trio.fail_after(TIMEOUT):
        async with _serve(kind) as (_, url, body), httpx.AsyncClient(timeout=TIMEOUT) as client:
            response = await client.post(url, json=body, headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize("kind", SERVERS)
async def test_both_servers_take_a_non_ascii_token_sent_as_utf8(kind: str) -> None:
    """A token with non-ASCII letters matches what curl and httpx send, its UTF-8 bytes (Starlette reads a
    header as Latin-1); the same text in Latin-1 bytes is another token."""
    token = "pässwörd-ü"
    with trio.fail_after(TIMEOUT):
        async with _serve(kind, token) as (_, url, body), httpx.AsyncClient(timeout=TIMEOUT) as client:
            utf8 = await client.post(url, json=body, headers={b"authorization": f"Bearer {token}".encode()})
            latin1 = await client.post(url, json=body, headers={b"authorization": f"Bearer {token}".encode("latin-1")})
    assert utf8.status_code in (201, 202), utf8.text
    assert latin1.status_code == 401


async def _asgi_post(app: Any, scope: dict[str, Any], body: bytes) -> int:
    """POST ``body`` straight to ``app`` (no HTTP parser in between, which would refuse a bad header itself)."""
    sent: list[dict[str, Any]] = []
    parts = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    (start,) = [message for message in sent if message["type"] == "http.response.start"]
    return int(start["status"])


@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("length", [b"12x", b"+5", b"1_0", b" 5", b"-1", b"\xb2", b""])
async def test_both_servers_answer_a_malformed_content_length_with_400(
    kind: str, length: bytes, post_scope: PostScope
) -> None:
    """A Content-Length that is not all ASCII digits is 400 on the server and the webhook alike, before any read."""
    with trio.fail_after(TIMEOUT):
        async with _serve(kind) as (app, url, body):
            path = httpx.URL(url).path
            auth = (b"authorization", f"Bearer {TOKEN}".encode())
            status = await _asgi_post(
                app, post_scope(path, [auth, (b"content-length", length)]), json.dumps(body).encode()
            )
            good = await _asgi_post(app, post_scope(path, [auth]), json.dumps(body).encode())
    assert status == 400
    assert good in (201, 202)  # the same request with no Content-Length is fine


def _request(headers: list[tuple[bytes, bytes]], parts: list[bytes]) -> Request:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return Request(
        {"type": "http", "method": "POST", "headers": [(b"content-type", b"application/json"), *headers]}, receive
    )


async def test_read_body_counts_the_bytes_that_arrive() -> None:
    """A body in parts is read whole; past ``limit`` it is 413 even with no (or a lying) Content-Length."""
    assert await read_body(_request([], [b"ab", b"cd"]), limit=4) == b"abcd"
    with pytest.raises(RequestRejected) as over:
        await read_body(_request([(b"content-length", b"2")], [b"ab", b"cde"]), limit=4)
    assert over.value.status == 413
    with pytest.raises(RequestRejected) as declared:
        await read_body(_request([(b"content-length", b"5")], []), limit=4)
    assert declared.value.status == 413


async def test_read_body_of_a_client_that_went_away_is_499() -> None:
    """A disconnect before the body ended is refused as 499, not read as a short body."""
    messages = [{"type": "http.request", "body": b"ab", "more_body": True}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    with pytest.raises(RequestRejected) as gone:
        await read_body(Request({"type": "http", "method": "POST", "headers": []}, receive), limit=10)
    assert gone.value.status == 499


# -- browsers and other origins ------------------------------------------------------------


@asynccontextmanager
async def _serve_open(kind: str, **options: Any) -> AsyncIterator[tuple[int, str, dict[str, Any], Callable[[], int]]]:
    """One of the two servers with no token (the default): its port, the path to POST, a valid body, and how
    many requests it has accepted so far."""
    if kind == "server":
        async with open_server(_agent(), **options) as server:
            yield server.port, "/sessions", {}, lambda: len(server.sessions)
        return
    channel = WebhookChannel(**options)
    async with open_runtime() as runtime, open_gateway(runtime, _agent(), [channel]) as gateway:
        await gateway.wait_ready(channel.name)
        yield channel.port, "/messages", {"chat_id": "c", "text": "x"}, lambda: channel.statistics().accepted


EVIL: Final = "http://evil.example"


@pytest.mark.parametrize("kind", SERVERS)
async def test_both_servers_refuse_a_cross_origin_request_and_a_foreign_host_with_403(kind: str) -> None:
    """A web page of another origin (even sending JSON) and a foreign ``Host`` (DNS rebinding) get 403, in
    the server's error shape, and nothing is created or accepted; the same request with no ``Origin``
    (a non-browser client), the server's own origin or another port of a loopback name is fine."""
    with trio.fail_after(TIMEOUT):
        async with _serve_open(kind) as (port, path, body, accepted), httpx.AsyncClient(timeout=TIMEOUT) as client:
            url = f"http://127.0.0.1:{port}{path}"
            for headers in ({"origin": EVIL}, {"origin": "null"}, {"host": f"evil.example:{port}"}):
                refused = await client.post(url, json=body, headers=headers)
                assert refused.status_code == 403, headers
                assert "error" in refused.json()
            refused = await client.get(f"http://127.0.0.1:{port}/health", headers={"origin": EVIL})
            assert refused.status_code in (403, 404)  # every request is checked (the webhook has no /health)
            assert accepted() == 0
            for headers in (
                {},
                {"origin": f"http://127.0.0.1:{port}"},
                {"host": "localhost:1", "origin": "http://localhost:1"},
            ):
                assert (await client.post(url, json=body, headers=headers)).status_code in (201, 202), headers
            assert accepted() == 3


@pytest.mark.parametrize("kind", SERVERS)
async def test_both_servers_bound_to_another_loopback_address_answer_to_it(kind: str) -> None:
    """Bound to 127.0.0.2 (loopback too), a server answers at the URL it prints, and still refuses a foreign
    Host; every request to it was 403 forbidden_host (only the loopback names were allowed)."""
    with trio.fail_after(TIMEOUT):
        async with (
            _serve_open(kind, host="127.0.0.2") as (port, path, body, accepted),
            httpx.AsyncClient(timeout=TIMEOUT) as client,
        ):
            url = f"http://127.0.0.2:{port}{path}"
            assert (await client.post(url, json=body)).status_code in (201, 202)
            assert (await client.post(url, json=body, headers={"host": "evil.example"})).status_code == 403
            assert accepted() == 1


@pytest.mark.parametrize("kind", SERVERS)
async def test_both_servers_take_the_origins_and_hosts_they_are_given(kind: str) -> None:
    """``allowed_origins`` lets the pages of those origins in; ``allowed_hosts`` replaces the loopback names."""
    options = {"allowed_origins": ["http://app.example:3000/"], "allowed_hosts": ["api.example"]}
    with trio.fail_after(TIMEOUT):
        async with _serve_open(kind, **options) as (port, path, body, _), httpx.AsyncClient(timeout=TIMEOUT) as c:
            url = f"http://127.0.0.1:{port}{path}"
            allowed = {"host": "API.example:8443", "origin": "http://app.example:3000"}
            assert (await c.post(url, json=body, headers=allowed)).status_code in (201, 202)
            assert (await c.post(url, json=body, headers={"host": "api.example", "origin": EVIL})).status_code == 403
            assert (await c.post(url, json=body)).status_code == 403  # 127.0.0.1 is not a name it answers to now


@pytest.mark.parametrize("kind", SERVERS)
async def test_both_servers_refuse_a_body_that_is_not_json_with_415(kind: str) -> None:
    """A ``text/plain`` (or untyped) body, which a browser sends cross-origin without asking, is 415; an empty
    POST with no type (as ``open_sse_listener`` sends) is not."""
    with trio.fail_after(TIMEOUT):
        async with _serve_open(kind) as (port, path, body, accepted), httpx.AsyncClient(timeout=TIMEOUT) as client:
            url = f"http://127.0.0.1:{port}{path}"
            data = json.dumps(body).encode()
            for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
                headers = {} if content_type is None else {"content-type": content_type}
                response = await client.post(url, content=data, headers=headers)
                assert response.status_code == 415, content_type
                assert "error" in response.json()
            assert accepted() == 0
            assert (await client.post(url)).status_code != 415
            json_utf8 = {"content-type": "Application/JSON; charset=utf-8"}
            assert (await client.post(url, content=data, headers=json_utf8)).status_code in (201, 202)


async def _dribble(port: int, path: str, *, every: float) -> bytes:
    """POST a body a byte at a time, every ``every`` seconds, until the server answers; what it answered, to EOF."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        await stream.send_all(head.encode())
        answer = bytearray()
        async with trio.open_nursery() as nursery:

            async def dribble() -> None:
                with contextlib.suppress(trio.BrokenResourceError):
                    while True:
                        await stream.send_all(b" ")
                        await trio.sleep(every)  # the pace of a slow client, not a wait for something

            nursery.start_soon(dribble)
            with contextlib.suppress(trio.BrokenResourceError):
                while data := await stream.receive_some(4096):
                    answer += data
            nursery.cancel_scope.cancel()
        return bytes(answer)


@pytest.mark.parametrize("kind", SERVERS)
async def test_both_servers_answer_a_dribbled_body_with_408_and_close(kind: str) -> None:
    """A body sent a byte at a time never tripped Hypercorn's read timeout (it restarts at every read): the
    whole body now has ``body_timeout`` seconds, then the answer is 408 and the connection is closed."""
    with trio.fail_after(TIMEOUT):
        async with _serve_open(kind, body_timeout=0.3) as (port, path, _, accepted):
            answers: list[bytes] = []
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(lambda: _append(answers, _dribble(port, path, every=0.02)))
            assert accepted() == 0
    assert len(answers) == 5
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"error"' in answer


async def _append(answers: list[bytes], answer: Awaitable[bytes]) -> None:
    answers.append(await answer)


@asynccontextmanager
async def _started(channel: WebhookChannel | WebSocketChannel) -> AsyncIterator[None]:
    async with open_runtime() as runtime, open_gateway(runtime, _agent(), [channel]) as gateway:
        await gateway.wait_ready(channel.name)
        yield


@pytest.mark.parametrize(
    "make",
    [
        lambda: open_server(_agent(), host="0.0.0.0"),  # the address under test
        lambda: _started(WebhookChannel(host="0.0.0.0")),
        lambda: _started(WebSocketChannel(host="::")),
    ],
    ids=["server", "webhook", "websocket"],
)
async def test_every_server_refuses_to_listen_beyond_loopback_without_a_token(make: Callable[[], Any]) -> None:
    """Bound to every interface with no token, anyone on the network could drive the agent: refused before
    anything listens, with a message that says what to do."""
    with pytest.raises(UnsafeBindError, match="allow_unauthenticated_remote"):
        async with make():
            pass


async def test_a_server_beyond_loopback_starts_with_a_token_or_when_told() -> None:
    """A token, or ``allow_unauthenticated_remote=True``, lets it listen on every interface; it then answers
    to any host name (the loopback names are the default only on loopback)."""
    with trio.fail_after(TIMEOUT):
        for options in ({"token": TOKEN}, {"allow_unauthenticated_remote": True}):
            async with open_server(_agent(), host="0.0.0.0", **options) as server:
                headers = {"host": "my-machine.lan", "authorization": f"Bearer {TOKEN}"}
                async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                    response = await client.post(f"http://127.0.0.1:{server.port}/sessions", headers=headers)
                assert response.status_code == 201


def test_the_cli_refuses_to_listen_beyond_loopback_without_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m streams serve --host 0.0.0.0`` with no token exits with the reason (before loading the agent)."""
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--agent", "no_such_module:agent", "--host", "0.0.0.0"])
    assert exited.value.code == 2
    assert "--allow-unauthenticated-remote" in capsys.readouterr().err


def _handshake(port: int, path: str, origin: str | None) -> Awaitable[int]:
    """Open a WebSocket by hand with that ``Origin``; the handshake's status (101 if accepted)."""

    async def handshake() -> int:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            extra = [] if origin is None else [(b"origin", origin.encode())]
            await stream.send_all(ws.send(WSRequest(host=f"127.0.0.1:{port}", target=path, extra_headers=extra)))
            while True:
                data = await stream.receive_some(4096)
                assert data, "closed before answering the handshake"
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        return 101
                    if isinstance(event, RejectConnection):
                        return event.status_code

    return handshake()


@pytest.mark.parametrize("path", ["/sessions/s1/updates", "/sessions/s1/workspace", "websocket channel"])
async def test_every_websocket_refuses_a_cross_origin_handshake_with_403(path: str) -> None:
    """A web page of another origin got its WebSocket (101) and its workspace commands answered: now the
    handshake is 403, on the server's endpoints and the WebSocket channel alike; a non-browser client (no
    ``Origin``) and an allowed origin still connect."""
    with trio.fail_after(TIMEOUT):
        if path == "websocket channel":
            channel = WebSocketChannel(allowed_origins=["http://app.example"])
            async with _started(channel):
                statuses = [
                    await _handshake(channel.port, "/", origin) for origin in (EVIL, None, "http://app.example")
                ]
        else:
            async with open_server(_agent(), allowed_origins=["http://app.example"]) as server:
                await server.open_session("s1")
                statuses = [
                    await _handshake(server.port, path, origin) for origin in (EVIL, None, "http://app.example")
                ]
    assert statuses == [403, 101, 101]


@pytest.mark.parametrize("option", ["write_timeout", "body_timeout", "backlog"])
async def test_deadlines_and_backlog_must_be_above_zero(option: str) -> None:
    """A zero deadline would fail inside Hypercorn's send, far from the mistake: it is refused up front."""
    zero: dict[str, Any] = {option: 0}
    with pytest.raises(ValueError, match=option):
        async with open_server(_agent(), **zero):
            pass
    with pytest.raises(ValueError, match=option):
        WebhookChannel(**zero)


@pytest.mark.parametrize("port", [-1, 65536, 70000])
async def test_a_port_out_of_range_is_a_value_error(port: int) -> None:
    """A port that is none (bind() raised OverflowError) is a ValueError, as every bad argument is."""
    with pytest.raises(ValueError, match="port must be 0"):
        async with open_server(_agent(), port=port):
            pass


@pytest.mark.parametrize("token", ["", "  ", "two words", "tab\there"])
async def test_a_token_no_client_could_send_is_refused_before_anything_listens(token: str) -> None:
    """An empty token (a variable set to nothing) would let in every ``Authorization: Bearer`` with nothing
    after it; one with spaces could never match. Both are refused, for the server and the webhook."""
    with pytest.raises(ValueError, match="the token"):
        async with open_server(_agent(), host="0.0.0.0", token=token):
            pass
    with pytest.raises(ValueError, match="the secret"):
        WebhookChannel(secret=token)


def test_the_cli_refuses_an_empty_token(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``TRIO_AGENTS_TOKEN=`` (set to nothing) is not a token: the CLI says so instead of serving to anyone."""
    monkeypatch.setenv("TRIO_AGENTS_TOKEN", "")
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--agent", "no_such_module:agent", "--host", "0.0.0.0"])
    assert exited.value.code == 2
    assert "TRIO_AGENTS_TOKEN" in capsys.readouterr().err


def test_a_served_runtime_names_itself_by_where_it_listens() -> None:
    """The owner other servers of the store name in a 421: the public URL if given, else the address it
    listens on (this machine's name for a wildcard), else (a port not known yet) ``hostname:pid``."""
    assert _owner("https://agents-2.internal", "0.0.0.0", 8000) == "https://agents-2.internal"
    assert _owner(None, "10.0.0.7", 8000) == "http://10.0.0.7:8000"
    assert _owner(None, "0.0.0.0", 8000) == f"http://{socket.gethostname()}:8000"
    assert _owner(None, "::1", 8000) == "http://[::1]:8000"
    assert _owner(None, "10.0.0.7", 0) is None


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Example.COM.:443", "example.com"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("::1:43477", "::1"),  # an IPv6 address and a port without brackets, as trio-websocket's client sends it
        ("2001:db8::1", "2001:db8::1"),  # no port: every part is the address's
        ("::1:8080", "::1:8080"),  # an address as it stands (0::1:8080): never cut, whatever was meant
    ],
)
def test_host_name_of_a_host_header(header: str, name: str) -> None:
    """The name a Host header is checked by: lowercase, no port, no final dot, an IPv6 address with or without
    its brackets."""
    assert host_name(header) == name
