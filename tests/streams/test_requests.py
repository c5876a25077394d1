"""The request checks both HTTP servers share: the bearer token and the body's Content-Length.

The served runtime (``open_server``) and the webhook channel check requests
with the same two functions; each test here runs against both, so the two
cannot drift apart again.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import trio
from starlette.requests import Request

from agents import Agent, ScriptedModel
from runtime import open_gateway, open_runtime
from streams import WebhookChannel, open_server
from streams._requests import RequestRejected, read_body

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TOKEN: Final = "s3cret"
TIMEOUT: Final = 10.0
SERVERS: Final = ["server", "webhook"]


def _agent() -> Agent:
    return Agent(name="bot", model=ScriptedModel(["hi"] * 10))


@asynccontextmanager
async def _serve(kind: str) -> AsyncIterator[tuple[Any, str, dict[str, Any]]]:
    """One of the two servers, with ``TOKEN`` required: its ASGI app, its URL, and a valid request body."""
    if kind == "server":
        async with open_server(_agent(), token=TOKEN) as server:
            yield server.app, f"{server.url}/sessions", {"id": "s1"}
        return
    channel = WebhookChannel(secret=TOKEN)
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


async def _asgi_post(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """POST ``body`` straight to ``app`` (no HTTP parser in between, which would refuse a bad header itself)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {TOKEN}".encode()), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
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
async def test_both_servers_answer_a_malformed_content_length_with_400(kind: str, length: bytes) -> None:
    """A Content-Length that is not all ASCII digits is 400 on the server and the webhook alike, before any read."""
    with trio.fail_after(TIMEOUT):
        async with _serve(kind) as (app, url, body):
            path = httpx.URL(url).path
            status = await _asgi_post(app, path, [(b"content-length", length)], json.dumps(body).encode())
            good = await _asgi_post(app, path, [], json.dumps(body).encode())
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
