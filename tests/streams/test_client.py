"""Our clients against a real open_server: the updates and workspace streams and SSE listeners.

Real sockets, so the real clock: every test is bounded by ``trio.fail_after``
and synchronises on events (the next message, a handler's collector, a tool's
``trio.Event``) or on ``wait_all_tasks_blocked`` (the server and the client
share this Trio loop, so it means the server has caught up). Silent peers are
small servers written here: one that accepts and never answers, one that
completes a WebSocket handshake and then goes quiet, and ``provider_server``
with ``hang_after``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import h11
import pytest
import trio
import trio.testing
import trio_websocket
import wsproto.utilities

import streams._client
from agents import ToolCall
from runtime.events import (
    RunFinished,
    RunStarted,
    TextDelta,
)
from streams import (
    WORKSPACE_TOOLS,
    InvalidRequestError,
    MalformedMessageError,
    PeerSilentError,
    RemoteError,
    Server,
    SSEMessage,
    StreamClosedError,
    Update,
    WorkspaceChange,
    WorkspaceError,
    WorkspaceStream,
    event_from_json,
    open_sse_listener,
    open_updates_stream,
    open_workspace_stream,
)
from streams._broadcast import Broadcast, Subscriber
from streams._client import MAX_MESSAGE
from tests.raw_http import read_request_head

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    import httpx

    from tests.streams.conftest import Create, MakeAgent, RunAttached, Serving

TIMEOUT: Final = 10
TOKEN: Final = "s3cret-token"
SILENCE: Final = 0.3
"""Seconds of silence after which the tests' clients give up on a peer."""
SHARED_FIXTURES: Final = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
"""The shared test data: ``../shared/fixtures`` beside the checkout, and nowhere else."""
SSE_CASES: list[dict[str, Any]] = json.loads((SHARED_FIXTURES / "sse_conformance.json").read_text("utf-8"))


# -- agents and servers -----------------------------------------------------------


def ws_url(server: Server, session_id: str, stream: str) -> str:
    return f"ws://127.0.0.1:{server.port}/sessions/{session_id}/{stream}"


async def updates_until_finished(updates: AsyncIterator[Update]) -> list[Update]:
    received: list[Update] = []
    async for update in updates:
        received.append(update)
        if isinstance(update.event, RunFinished):
            break
    return received


# -- the updates stream ------------------------------------------------------------


async def test_updates_stream_gives_typed_updates_and_ends_when_the_session_closes(
    make_agent: MakeAgent, serving: Serving, create: Create, run_attached: RunAttached
) -> None:
    """Each run event arrives as Update(run_id, event), decoded to the runtime's own event classes;
    the iteration ends when the session is deleted (close code 1000)."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            async with open_updates_stream(ws_url(server, "s1", "updates")) as updates:
                await trio.testing.wait_all_tasks_blocked()  # the server has subscribed it
                run = await run_attached(client, "s1", "hello there")
                received = await updates_until_finished(updates)
                assert (await client.delete("/sessions/s1")).status_code == 204
                rest = [update async for update in updates]
                assert updates.dropped == 0

    assert rest == []
    assert [update.run_id for update in received] == ["s1-r1"] * len(received)
    assert [update.event for update in received] == [event_from_json(data) for data in run]
    assert received[0].event == RunStarted("s1-r1")
    assert [update.event for update in received if isinstance(update.event, TextDelta)] == [
        TextDelta("echo:"),
        TextDelta(" hello"),
        TextDelta(" there"),
    ]
    assert received[-1].event == RunFinished("completed")


async def test_updates_stream_counts_the_events_the_server_dropped(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """A client a whole buffer behind loses the oldest events: the server says how many (EventsDropped),
    and ``updates.dropped`` adds them up; what arrives plus what was dropped is the whole run."""
    words = 160
    answer = " ".join(str(n) * 65536 for n in range(words))  # ~10 MiB: more than the socket buffers hold
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(answer=answer), subscriber_buffer=1) as (server, client):
            await create(client, "s1")
            async with open_updates_stream(ws_url(server, "s1", "updates"), buffer=1) as updates:
                await trio.testing.wait_all_tasks_blocked()
                response = await client.post("/sessions/s1/runs", json={"input": "long", "detach": True})
                assert response.status_code == 202
                whole = await run_attached_follow(client, "s1", response.json()["run_id"])  # the run is over
                received = await updates_until_finished(updates)
                dropped = updates.dropped
            statistics = server.statistics()

    assert len(whole) > words
    assert dropped > 0
    assert len(received) + dropped == len(whole)
    assert received[-1].event == RunFinished("completed")
    assert statistics.updates_dropped == dropped


async def run_attached_follow(client: httpx.AsyncClient, session_id: str, run_id: str) -> list[str]:
    """Follow a run to its end (GET /runs/{rid}/events); the types of its events."""
    types: list[str] = []
    async with client.stream("GET", f"/sessions/{session_id}/runs/{run_id}/events") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                types.append(line.removeprefix("event: "))
    return types


# -- the workspace stream ----------------------------------------------------------


async def test_workspace_stream_round_trips_and_failed_commands_raise(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """request() gives the server's answer; ok:false raises WorkspaceError and the stream goes on."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            async with open_workspace_stream(ws_url(server, "s1", "workspace")) as ws:
                written = await ws.request("write", "a.txt", "hello")
                read = await ws.request("read", "a.txt")
                await ws.request("write", "b.txt", "bee")
                listed = await ws.request("list")
                with pytest.raises(WorkspaceError, match=r"missing\.txt"):
                    await ws.request("read", "missing.txt")
                with pytest.raises(WorkspaceError):
                    await ws.request("explode", "a.txt")
                deleted = await ws.request("delete", "a.txt")
                with pytest.raises(WorkspaceError):
                    await ws.request("delete", "a.txt")
                after = await ws.request("list")
            files = server.sessions["s1"].workspace.list()

    assert written["ok"] is True
    assert written["type"] == "result"
    assert read["content"] == "hello"
    assert listed["paths"] == ["a.txt", "b.txt"]
    assert deleted["ok"] is True
    assert after["paths"] == ["b.txt"]
    assert files == ["b.txt"]


async def test_workspace_stream_iterates_the_changes_of_clients_and_the_agent(
    make_agent: MakeAgent, serving: Serving, create: Create, run_attached: RunAttached
) -> None:
    """``async for change in ws`` gives WorkspaceChange(op, path, source) for another client's commands
    and for the agent's write_file, in order."""
    agent = make_agent(*WORKSPACE_TOOLS, call=ToolCall("write_file", {"path": "plan.md", "content": "# Plan"}))
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, client):
            await create(client, "s1")
            url = ws_url(server, "s1", "workspace")
            async with open_workspace_stream(url) as watcher, open_workspace_stream(url) as writer:
                await trio.testing.wait_all_tasks_blocked()
                await writer.request("write", "a.txt", "A")
                run = await run_attached(client, "s1", "tool: write the plan")
                await writer.request("delete", "a.txt")
                changes = [await anext(watcher) for _ in range(3)]
                own = [await anext(writer) for _ in range(3)]

    assert run[-1]["reason"] == "completed"
    assert changes == [
        WorkspaceChange("write", "a.txt", "client"),
        WorkspaceChange("write", "plan.md", "agent"),
        WorkspaceChange("delete", "a.txt", "client"),
    ]
    assert own == changes


async def test_workspace_stream_sends_a_command_as_utf8_and_refuses_one_over_the_limit_keeping_the_connection(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """A file the workspace holds (6 MB of ``é``) is written through the client: sent with ASCII escapes
    (18 MB) it was over the server's message limit, which closed the connection (1009). A command over
    MAX_MESSAGE bytes as compact UTF-8 JSON raises WorkspaceError(too_large) unsent, and the stream goes on."""
    content = "é" * 3_000_000
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            async with open_workspace_stream(ws_url(server, "s1", "workspace")) as ws:
                await ws.request("write", "big.txt", content)
                with pytest.raises(WorkspaceError, match="over") as too_large:
                    await ws.request("write", "huge.txt", "x" * MAX_MESSAGE)
                listed = await ws.request("list")
            stored = server.sessions["s1"].workspace.read("big.txt")

    assert stored == content
    assert too_large.value.kind == "too_large"
    assert listed["paths"] == ["big.txt"]


# -- the SSE listener ------------------------------------------------------------


async def test_sse_listener_decodes_the_feed_and_ends_with_it(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """open_sse_listener gives SSEMessage(event, data, id) with JSON-decoded data; the iteration ends
    when the server ends the stream (the session closed)."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            async with open_sse_listener(f"{server.url}/sessions/s1/feed") as feed:
                first = await anext(feed)
                server.sessions["s1"].notify("hello")
                notice = await anext(feed)
                assert (await client.delete("/sessions/s1")).status_code == 204
                rest = [message async for message in feed]

    assert first == SSEMessage("SessionState", {"type": "SessionState", "state": "idle"}, "1")
    assert notice == SSEMessage("Notice", {"type": "Notice", "message": "hello"}, "2")
    assert rest == [SSEMessage("SessionState", {"type": "SessionState", "state": "closed"}, "3")]


# -- the SSE listener against the shared conformance cases ----------------------


def _as_received(data: str) -> Any:
    """What ``SSEMessage.data`` holds for a data string: JSON-decoded when it is JSON."""
    try:
        return json.loads(data)
    except ValueError:
        return data


@pytest.mark.parametrize("chunk_size", [None, 1], ids=["whole", "bytewise"])
@pytest.mark.parametrize("case", SSE_CASES, ids=[case["name"] for case in SSE_CASES])
async def test_sse_listener_agrees_with_the_conformance_case(
    provider_server: Any, case: dict[str, Any], chunk_size: int | None
) -> None:
    """Each shared case's bytes, served as stored, give the events the spec's tests expect (BOM fixed at the edge)."""
    body = bytes.fromhex(case["input_utf8_hex"])
    assert body == case["input"].encode("utf-8")
    provider_server.serve(body, chunk_size=chunk_size, content_type=case.get("content_type", "text/event-stream"))
    with trio.fail_after(TIMEOUT):
        async with open_sse_listener(f"{provider_server.base_url}/events") as listener:
            got = [(message.event, message.data, message.id) async for message in listener]
    expected = [(event["event"], _as_received(event["data"]), event["id"]) for event in case["events"]]
    assert got == expected


def test_sse_conformance_cases_are_all_there() -> None:
    """All 32 shared cases are read, so none is silently skipped."""
    assert len(SSE_CASES) == 32


# -- errors: rejected, unknown, silent ---------------------------------------------


def open_client(kind: str, server: Server, session_id: str, token: str | None) -> AbstractAsyncContextManager[object]:
    if kind == "updates":
        return open_updates_stream(ws_url(server, session_id, "updates"), token=token)
    if kind == "workspace":
        return open_workspace_stream(ws_url(server, session_id, "workspace"), token=token)
    return open_sse_listener(f"{server.url}/sessions/{session_id}/feed", token=token)


@pytest.mark.parametrize("kind", ["updates", "workspace", "feed"])
async def test_clients_raise_remote_error_404_for_an_unknown_session_and_401_for_a_bad_token(
    kind: str, make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """Each client's block raises RemoteError with the status: 404 (unknown session), 401 (no or wrong token)."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), token=TOKEN) as (server, client):
            await create(client, "s1")
            for session_id, token, status in [("nope", TOKEN, 404), ("s1", None, 401), ("s1", "wrong", 401)]:
                with pytest.raises(RemoteError) as raised:
                    async with open_client(kind, server, session_id, token):
                        pass
                assert raised.value.status == status
            async with open_client(kind, server, "s1", TOKEN):
                pass  # the right token and session work


UNICODE_TOKEN: Final = "pässwörd-ключ"


@pytest.mark.parametrize("kind", ["updates", "workspace", "feed"])
async def test_clients_send_a_non_ascii_token_as_utf8(
    kind: str, make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """A non-ASCII token (the server takes one) is sent as its UTF-8 bytes, so each client connects with it and a
    near miss is 401; a token with no UTF-8 bytes is InvalidRequestError (httpx sent str headers as ASCII: the
    SSE listener raised UnicodeEncodeError)."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), token=UNICODE_TOKEN) as (server, client):
            await create(client, "s1")
            async with open_client(kind, server, "s1", UNICODE_TOKEN):
                pass
            with pytest.raises(RemoteError) as raised:
                async with open_client(kind, server, "s1", UNICODE_TOKEN.replace("ä", "a")):
                    pass  # pragma: no cover
            assert raised.value.status == 401
            with pytest.raises(InvalidRequestError, match="UTF-8"):
                async with open_client(kind, server, "s1", "key\ud800"):
                    pass  # pragma: no cover


@pytest.mark.parametrize("kind", ["updates", "workspace", "feed"])
@pytest.mark.parametrize("token", ["secret\n", "sec\r\nret", " secret", "sec\x00ret"])
async def test_clients_refuse_a_token_no_header_can_carry(
    kind: str, token: str, make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """A token with a line end (read from a file) or a control character, or white space at an end, is
    InvalidRequestError, our mistake; the WebSocket clients said the server broke the handshake
    (MalformedMessageError) and the SSE listener raised h11's LocalProtocolError inside a StreamClosedError."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), token="secret") as (server, client):
            await create(client, "s1")
            with pytest.raises(InvalidRequestError, match="cannot be sent in a header"):
                async with open_client(kind, server, "s1", token):
                    pass  # pragma: no cover
    # Refused before connecting: a peer that is not there changes nothing (it was a StreamClosedError).
    if kind != "feed":
        url = f"ws://127.0.0.1:{await _closed_port()}/sessions/s1/{kind}"
        opened = open_updates_stream(url, token=token) if kind == "updates" else open_workspace_stream(url, token=token)
        with pytest.raises(InvalidRequestError, match="cannot be sent in a header"):
            async with opened:
                pass  # pragma: no cover


@pytest.mark.parametrize("kind", ["updates", "workspace"])
async def test_websocket_clients_call_a_handshake_h11_cannot_write_an_invalid_request(
    kind: str, make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """A WebSocket URL whose path h11 cannot write (a space) is InvalidRequestError, our mistake: it was a
    MalformedMessageError saying the server broke the handshake, before anything was sent."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            url = ws_url(server, "s1", kind).replace("/sessions/", "/a b/sessions/")
            opened = open_updates_stream(url) if kind == "updates" else open_workspace_stream(url)
            with pytest.raises(InvalidRequestError, match="handshake cannot be sent"):
                async with opened:
                    pass  # pragma: no cover


async def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
    return port


class BlockError(Exception):
    """Raised by a test inside a client's block."""


@pytest.mark.parametrize("kind", ["updates", "workspace", "feed"])
async def test_an_error_raised_inside_a_client_block_comes_out_of_it(
    kind: str, make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """The block's own exception propagates as it is: the client's cleanup neither swallows nor replaces it."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            with pytest.raises(BlockError):
                async with open_client(kind, server, "s1", None):
                    raise BlockError


@pytest.mark.parametrize("kind", ["updates", "workspace", "feed"])
async def test_an_error_inside_a_client_block_comes_out_alone_while_its_owner_is_cancelled(
    kind: str, make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """The block fails as its owner is cancelled (a connection dropping while its session closes): the block's
    exception comes out alone, not in a group with the owner's Cancelled, and the owner still ends cancelled."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            with trio.CancelScope() as owner:
                with pytest.raises(BlockError):
                    async with open_client(kind, server, "s1", None):
                        owner.cancel()
                        raise BlockError
                await trio.lowlevel.checkpoint()
                pytest.fail("the owner's cancellation was lost")  # pragma: no cover
            assert owner.cancelled_caught


async def serve_raw(nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Any]) -> int:
    """A TCP server on loopback running ``handler`` per connection, stopped with the test; its port."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


@pytest.mark.parametrize(("address", "netloc"), [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")])
async def test_a_websocket_handshake_sends_host_with_its_port(address: str, netloc: str, nursery: trio.Nursery) -> None:
    """The handshake's Host is host:port for a port that is not the scheme's default, an IPv6 address in brackets
    (RFC 6455 4.1); it was the bare host."""
    heads: list[bytes] = []

    async def record(stream: trio.SocketStream) -> None:
        async with stream:
            heads.append(await read_request_head(stream) or b"")
            await stream.send_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")

    try:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, record, 0, host=address))
    except OSError:  # pragma: no cover
        pytest.skip(f"cannot listen on {address}")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(TIMEOUT), pytest.raises(RemoteError):
        async with open_updates_stream(f"ws://{netloc}:{port}/sessions/s1/updates"):
            pass  # pragma: no cover
    hosts = [line for line in heads[0].split(b"\r\n") if line.lower().startswith(b"host:")]
    assert hosts == [f"Host: {netloc}:{port}".encode()]


async def accept_and_say_nothing(stream: trio.SocketStream) -> None:
    async with stream:
        await trio.sleep_forever()


async def accept_websocket(stream: trio.SocketStream) -> bool:
    """Complete a WebSocket handshake on ``stream``; ``False`` if the client left first."""
    request = await read_request_head(stream)
    if request is None:
        return False
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return True


async def handshake_then_say_nothing(stream: trio.SocketStream) -> None:
    """Complete a WebSocket handshake, then never read or write again (no pongs)."""
    async with stream:
        if await accept_websocket(stream):
            await trio.sleep_forever()


def handshake_then_send(*texts: str) -> Callable[[trio.SocketStream], Any]:
    """A handler that completes a WebSocket handshake, sends each of ``texts`` in a text frame (all in one
    write), then says nothing."""

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            if await accept_websocket(stream):
                frames = bytearray()
                for text in texts:
                    payload = text.encode()
                    assert len(payload) < 126  # one short unmasked frame
                    frames += bytes([0x81, len(payload)]) + payload
                await stream.send_all(frames)
                await trio.sleep_forever()

    return handler


@pytest.mark.parametrize("kind", ["updates", "workspace"])
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1/sessions/s1/x", "ws:///no-host", "ws://[::1/x", "ws://h:port/x", "ws://h:0/x"]
)
async def test_a_url_that_is_not_ws_is_an_invalid_request(kind: str, url: str) -> None:
    """Not ws:// or wss://, no host, a broken IPv6 bracket, a port that is not one: InvalidRequestError, before
    any connection (not urllib's bare ValueError)."""
    opener = open_updates_stream if kind == "updates" else open_workspace_stream
    with trio.fail_after(TIMEOUT), pytest.raises(InvalidRequestError, match="not a ws:// or wss:// URL"):
        async with opener(url):
            pytest.fail("opened a stream on a URL that is not one")  # pragma: no cover


@pytest.mark.parametrize("kind", ["updates", "workspace"])
async def test_a_peer_that_never_answers_the_handshake_is_peer_silent(kind: str, nursery: trio.Nursery) -> None:
    """A server that accepts the connection and says nothing: PeerSilentError after connect_timeout."""
    port = await serve_raw(nursery, accept_and_say_nothing)
    url = f"ws://127.0.0.1:{port}/sessions/s1/{kind}"
    opener = open_updates_stream if kind == "updates" else open_workspace_stream
    with trio.fail_after(TIMEOUT):
        with pytest.raises(PeerSilentError):
            async with opener(url, connect_timeout=SILENCE):
                pytest.fail("connected to a server that never answered")  # pragma: no cover


@pytest.mark.parametrize("kind", ["updates", "workspace"])
async def test_a_stream_whose_pings_get_no_pong_is_peer_silent(kind: str, nursery: trio.Nursery) -> None:
    """After the handshake the peer goes quiet: iterating an updates or workspace stream raises
    PeerSilentError once a ping gets no pong."""
    port = await serve_raw(nursery, handshake_then_say_nothing)
    url = f"ws://127.0.0.1:{port}/sessions/s1/{kind}"
    opener = open_updates_stream if kind == "updates" else open_workspace_stream
    with trio.fail_after(TIMEOUT):
        with pytest.raises(PeerSilentError):
            async with opener(
                url, heartbeat=SILENCE / 3, heartbeat_timeout=SILENCE, disconnect_timeout=SILENCE
            ) as stream:
                async for _ in stream:
                    pytest.fail(f"a silent peer sent something on {kind}")  # pragma: no cover


def _changed(path: str) -> str:
    return json.dumps({"type": "WorkspaceChanged", "op": "write", "path": path, "source": "agent"})


async def test_the_servers_workspace_gaps_are_counted_where_they_were(nursery: trio.Nursery) -> None:
    """The server's EventsDropped on the workspace counts in ``dropped`` when iterating reaches its place among
    the changes (so ``serve`` tells its handler there, as on the updates stream): it was counted on arrival,
    before changes that came ahead of it."""
    dropped = '{"type": "EventsDropped", "count": %d}'
    sent = [_changed("a"), _changed("b"), dropped % 5, _changed("c"), dropped % 2, dropped % 3, _changed("d")]
    port = await serve_raw(nursery, handshake_then_send(*sent))
    seen = []
    with trio.fail_after(TIMEOUT):
        url = f"ws://127.0.0.1:{port}/sessions/s1/workspace"
        async with open_workspace_stream(url, disconnect_timeout=0.01) as stream:  # the peer never closes
            async for change in stream:
                seen.append((change.path, stream.dropped))
                if change.path == "d":
                    break
    assert seen == [("a", 0), ("b", 0), ("c", 5), ("d", 10)]


MALFORMED: Final = {
    "updates": [
        '{"type": "EventsDropped", "count": 1e999}',
        '{"type": "EventsDropped", "count": -1}',
        '{"type": "EventsDropped", "count": 2.5}',
        '{"type": "EventsDropped", "count": true}',
        '{"type": "EventsDropped"}',
        "[1]",
    ],
    "workspace": [
        '{"type": "EventsDropped", "count": 1e999}',
        '{"type": "EventsDropped", "count": -1}',
        '{"type": "EventsDropped", "count": "3"}',
        '{"type": "WorkspaceChanged", "op": "move", "path": "a", "source": "agent"}',
        '{"type": "WorkspaceChanged", "op": "write", "path": 1, "source": "agent"}',
        '{"type": "WorkspaceChanged", "op": "write", "path": "a"}',
        '{"type": "result", "id": "c1", "ok": "yes"}',
        '{"type": "result", "id": 1, "ok": true}',
        '{"type": "result", "id": "c1", "ok": false, "error": 5}',
        "[1]",
    ],
}


@pytest.mark.parametrize(
    ("kind", "message"), [(kind, message) for kind, messages in MALFORMED.items() for message in messages]
)
async def test_a_message_with_a_field_out_of_the_protocol_is_a_malformed_message(
    kind: str, message: str, nursery: trio.Nursery
) -> None:
    """Every field a client reads is checked: a count that is not an integer >= 0 (even one too big for a float),
    a workspace change or result with a field of the wrong type or value, a message that is not an object:
    iterating raises MalformedMessageError, never a bare Python error."""
    port = await serve_raw(nursery, handshake_then_send(message))
    url = f"ws://127.0.0.1:{port}/sessions/s1/{kind}"
    opener = open_updates_stream if kind == "updates" else open_workspace_stream
    with trio.fail_after(TIMEOUT):
        with pytest.raises(MalformedMessageError):
            async with opener(url) as stream:
                async for _ in stream:
                    pytest.fail(f"{message} was taken")  # pragma: no cover


def reply_to_handshake(reply: bytes, *, then: str) -> Callable[[trio.SocketStream], Any]:
    """A handler that reads the handshake's request, sends ``reply``, then closes (``"close"``) or says nothing
    more (``"hang"``)."""

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            request = await read_request_head(stream)
            if request is None:
                return
            await stream.send_all(reply)
            if then == "hang":
                await trio.sleep_forever()

    return handler


NOT_A_HANDSHAKE: Final = {
    "not HTTP": b"GARBAGE\r\n\r\n",
    "a 101 with a wrong accept key": (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: wrong\r\n\r\n"
    ),
}


@pytest.mark.parametrize("then", ["hang", "close"])
@pytest.mark.parametrize("reply", NOT_A_HANDSHAKE, ids=str)
@pytest.mark.parametrize("kind", ["updates", "workspace"])
async def test_a_handshake_reply_out_of_the_protocol_is_a_malformed_message(
    kind: str, reply: str, then: str, nursery: trio.Nursery
) -> None:
    """A reply to the handshake that is not HTTP, or a 101 whose Sec-WebSocket-Accept is wrong, raises
    MalformedMessageError (a StreamError ``serve`` retries), the peer's protocol error as its cause, never a
    bare h11 or wsproto error."""
    port = await serve_raw(nursery, reply_to_handshake(NOT_A_HANDSHAKE[reply], then=then))
    url = f"ws://127.0.0.1:{port}/sessions/s1/{kind}"
    opener = open_updates_stream if kind == "updates" else open_workspace_stream
    with trio.fail_after(TIMEOUT):
        with pytest.raises(MalformedMessageError, match="broke the WebSocket handshake") as raised:
            async with opener(url, connect_timeout=TIMEOUT):
                pytest.fail("connected through a broken handshake")  # pragma: no cover
    assert isinstance(raised.value.__cause__, h11.RemoteProtocolError | wsproto.utilities.RemoteProtocolError)


@pytest.mark.parametrize("kind", ["updates", "workspace"])
async def test_a_wss_dial_whose_tls_handshake_fails_says_so_at_once(kind: str, nursery: trio.Nursery) -> None:
    """A ``wss://`` peer whose TLS handshake fails (here it is not TLS at all; a certificate the client refuses
    fails the same way) raises StreamClosedError at once, naming the TLS error: the handshake fails in
    trio-websocket's first send, its reader task ended quietly, and the dial waited out connect_timeout to say
    PeerSilentError."""

    async def not_tls(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(b"HTTP/1.1 200 OK\r\n\r\n")
            await trio.sleep_forever()  # and never closes: only the TLS error can end the dial

    port = await serve_raw(nursery, not_tls)
    opener = open_updates_stream if kind == "updates" else open_workspace_stream
    with trio.fail_after(TIMEOUT):
        with pytest.raises(StreamClosedError, match="failed during the WebSocket handshake: SSLError") as raised:
            async with opener(f"wss://127.0.0.1:{port}/sessions/s1/{kind}", connect_timeout=3 * TIMEOUT):
                pytest.fail("connected")  # pragma: no cover
    assert isinstance(raised.value.__cause__, trio.BrokenResourceError)


NOT_AN_EVENT_STREAM: Final = {
    "a redirect": (
        b"HTTP/1.1 302 Found\r\nlocation: /login\r\ncontent-length: 0\r\n\r\n",
        RemoteError,
        "302: Found \\(to /login\\)",
    ),
    "an HTML page": (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 13\r\n\r\n<html></html>",
        MalformedMessageError,
        "200 with text/html content, not an event stream",
    ),
    "no content type": (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", MalformedMessageError, "with no content"),
}


@pytest.mark.parametrize("case", NOT_AN_EVENT_STREAM, ids=str)
async def test_an_sse_answer_that_is_not_an_event_stream_is_an_error(case: str, nursery: trio.Nursery) -> None:
    """A redirect (an auth proxy's, to its login page) is RemoteError with its status and where it points; a
    2xx that is not ``text/event-stream`` is MalformedMessageError. Each was read as an empty stream that ended
    normally, so ``serve`` counted no failure and reconnected in a loop."""
    reply, error, message = NOT_AN_EVENT_STREAM[case]

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            if await read_request_head(stream) is not None:
                await stream.send_all(reply)
                await trio.sleep_forever()

    port = await serve_raw(nursery, answer)
    with trio.fail_after(TIMEOUT), pytest.raises(error, match=message):
        async with open_sse_listener(f"http://127.0.0.1:{port}/sessions/s1/feed"):
            pytest.fail("listening")  # pragma: no cover


REJECTIONS: Final = {
    "no body, then a close": (b"HTTP/1.1 401 Unauthorized\r\n\r\n", "close", "401"),
    "a body ended by the close": (
        b'HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\r\n{"error": "bad token"}',
        "close",
        "bad token",
    ),
    "a body cut short by the close": (b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 100\r\n\r\nbad", "close", "bad"),
    "a body still coming": (b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 100\r\n\r\nbad", "hang", "bad"),
}


@pytest.mark.parametrize("case", REJECTIONS, ids=str)
@pytest.mark.parametrize("kind", ["updates", "workspace"])
async def test_a_rejection_whose_body_is_not_complete_is_still_a_remote_error(
    kind: str, case: str, nursery: trio.Nursery
) -> None:
    """A 401 whose body ends at the close (no content-length), is cut short by it, or is still coming at
    connect_timeout is RemoteError(status=401), quoting what came of the body: the rejection already received
    wins over the close (StreamClosedError) or the timeout (PeerSilentError), so ``serve`` does not retry it."""
    reply, then, quoted = REJECTIONS[case]
    port = await serve_raw(nursery, reply_to_handshake(reply, then=then))
    url = f"ws://127.0.0.1:{port}/sessions/s1/{kind}"
    opener = open_updates_stream if kind == "updates" else open_workspace_stream
    with trio.fail_after(TIMEOUT):
        with pytest.raises(RemoteError, match=quoted) as raised:
            async with opener(url, connect_timeout=SILENCE if then == "hang" else TIMEOUT):
                pytest.fail("connected through a rejection")  # pragma: no cover
    assert raised.value.status == 401


async def test_an_sse_listener_on_a_peer_gone_quiet_is_peer_silent(provider_server: Any) -> None:
    """The head arrives, then nothing (not even a heartbeat) for read_timeout: PeerSilentError."""
    provider_server.serve(b'event: Notice\ndata: {"type": "Notice", "message": "hi"}\n\n' * 4, hang_after=0)
    with trio.fail_after(TIMEOUT):
        with pytest.raises(PeerSilentError):
            async with open_sse_listener(f"{provider_server.base_url}/sessions/s1/feed", read_timeout=SILENCE) as feed:
                async for _ in feed:
                    pytest.fail("a silent peer sent a message")  # pragma: no cover
        await provider_server.disconnected.wait()  # the listener closed its connection


async def test_an_sse_listener_gets_messages_before_the_peer_goes_quiet(provider_server: Any) -> None:
    """What arrives before the silence is delivered; then PeerSilentError."""
    body = b'event: Notice\nid: 1\ndata: {"type": "Notice", "message": "hi"}\n\n'
    provider_server.serve(body + b"event: Notice\ndata: never finished", hang_after=len(body))
    received: list[SSEMessage] = []
    with trio.fail_after(TIMEOUT):
        with pytest.raises(PeerSilentError):
            async with open_sse_listener(f"{provider_server.base_url}/feed", read_timeout=SILENCE) as feed:
                async for message in feed:
                    received.append(message)
    assert received == [SSEMessage("Notice", {"type": "Notice", "message": "hi"}, "1")]


async def test_an_sse_listener_whose_peer_sends_no_head_is_peer_silent_after_connect_timeout(
    nursery: trio.Nursery,
) -> None:
    """A server that accepts the connection and never answers: PeerSilentError after connect_timeout, which
    bounds the wait for the response's head too (read_timeout is the silence allowed between events)."""
    port = await serve_raw(nursery, accept_and_say_nothing)
    url = f"http://127.0.0.1:{port}/feed"
    with trio.fail_after(TIMEOUT):
        with pytest.raises(PeerSilentError, match="head"):
            async with open_sse_listener(url, connect_timeout=SILENCE, read_timeout=10 * TIMEOUT):
                pytest.fail("a server that never answered gave a head")  # pragma: no cover


@pytest.mark.parametrize(
    "endless",
    [b"data: " + b"x" * MAX_MESSAGE, b"data: x\n" * (MAX_MESSAGE // 8 + 1)],
    ids=["one line", "many lines"],
)
async def test_an_sse_event_over_max_message_is_a_malformed_message(provider_server: Any, endless: bytes) -> None:
    """An event that would hold over MAX_MESSAGE bytes (one line that never ends, or data lines with no blank
    line) is refused as the WebSocket clients refuse such a message: MalformedMessageError, the events
    before it delivered."""
    first = b'event: Notice\nid: 1\ndata: {"type": "Notice", "message": "hi"}\n\n'
    provider_server.serve(first + endless, hang_after=len(first) + len(endless))
    received: list[SSEMessage] = []
    with trio.fail_after(TIMEOUT):
        with pytest.raises(MalformedMessageError, match="over"):
            async with open_sse_listener(f"{provider_server.base_url}/feed") as feed:
                async for message in feed:
                    received.append(message)
    assert received == [SSEMessage("Notice", {"type": "Notice", "message": "hi"}, "1")]


@pytest.mark.parametrize("kind", ["updates", "workspace"])
async def test_a_websocket_message_over_max_message_is_a_malformed_message(
    kind: str, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message over MAX_MESSAGE bytes from the server (the client closes with 1009) raises MalformedMessageError
    when iterating, as an SSE event over it does (the README's promise); it was a StreamClosedError."""
    monkeypatch.setattr(streams._client, "MAX_MESSAGE", 1000)

    async def oversized(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(json.dumps({"type": "TextDelta", "text": "x" * 2000, "run_id": "s1-r1"}))
        await trio.sleep_forever()

    server = await nursery.start(functools.partial(trio_websocket.serve_websocket, oversized, "127.0.0.1", 0, None))
    opener = open_updates_stream if kind == "updates" else open_workspace_stream
    with trio.fail_after(TIMEOUT):
        with pytest.raises(MalformedMessageError, match="over the size limit"):
            async with opener(f"ws://127.0.0.1:{server.port}/sessions/s1/{kind}", disconnect_timeout=0.01) as stream:
                async for _ in stream:
                    pytest.fail("an oversized message was taken")  # pragma: no cover


async def test_an_sse_stream_longer_than_max_message_in_events_is_read_whole(provider_server: Any) -> None:
    """The bound is per event, not per stream: events (and heartbeats) adding up to more than MAX_MESSAGE,
    arriving in chunks that end anywhere, are all delivered."""
    event = b"event: Notice\ndata: " + b"x" * 8000 + b"\n\n: ping\n\n"
    count = MAX_MESSAGE // len(event) + 100
    provider_server.serve(event * count, chunk_size=65521)
    with trio.fail_after(TIMEOUT):
        async with open_sse_listener(f"{provider_server.base_url}/feed") as feed:
            received = sum([1 async for _ in feed])
    assert received == count


async def test_an_sse_listener_gives_data_too_deep_to_parse_as_its_text(provider_server: Any) -> None:
    """Data nested deeper than Python's JSON parser goes (RecursionError) arrives as its text, not as a crash."""
    deep = "[" * 100_000 + "]" * 100_000
    body = f"event: Deep\nid: 1\ndata: {deep}\n\nevent: Notice\nid: 2\ndata: {{}}\n\n".encode()
    provider_server.serve(body)
    with trio.fail_after(TIMEOUT):
        async with open_sse_listener(f"{provider_server.base_url}/feed") as feed:
            received = [message async for message in feed]
    assert received == [SSEMessage("Deep", deep, "1"), SSEMessage("Notice", {}, "2")]


# -- the workspace stream's buffer -----------------------------------------------


async def test_workspace_stream_buffers_like_a_broadcast_subscriber() -> None:
    """A slow workspace reader keeps what a broadcast subscriber of the same size keeps (the newest), counts what
    went, and ends, after the buffered changes, with the stream's error: the two share one drop-oldest buffer."""
    send, receive = trio.open_memory_channel[str](1)
    async with send, receive:
        stream = WorkspaceStream("ws://x/workspace", send, buffer=2, request_timeout=1.0)
        broadcast: Broadcast[WorkspaceChange] = Broadcast(buffer=2)
        with broadcast.subscribe() as subscriber:
            for i in range(5):
                change = {"type": "WorkspaceChanged", "op": "write", "path": f"{i}.txt", "source": "agent"}
                stream._received(change)
                broadcast.publish(WorkspaceChange("write", f"{i}.txt", "agent"))
            stream._received({"type": "EventsDropped", "count": 4})
            stream._end(StreamClosedError("gone"))
            broadcast.close()
            kept = [item async for item in _until_end(subscriber)]
        assert [change async for change in _changes_until_error(stream)] == kept
        assert [change.path for change in kept] == ["3.txt", "4.txt"]
        assert stream.dropped == 3 + 4  # ours, and the server's


async def _until_end(subscriber: Subscriber[WorkspaceChange]) -> AsyncIterator[WorkspaceChange]:
    while True:
        try:
            item = await subscriber.get()
        except trio.EndOfChannel:
            return
        if isinstance(item, WorkspaceChange):
            yield item


async def _changes_until_error(stream: WorkspaceStream) -> AsyncIterator[WorkspaceChange]:
    with pytest.raises(StreamClosedError, match="gone"):
        async for change in stream:
            yield change
