"""Our clients against a real open_server: the updates and workspace streams, SSE listeners, RemoteSession,
Backoff and the event codec.

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
import typing
from typing import TYPE_CHECKING, Any, Final

import pytest
import trio
import trio.testing

from agents import Agent, RetryPolicy, ScriptedModel, ToolCall, ToolContext, tool
from runtime import open_runtime
from runtime.events import (
    AgentSwitched,
    ElicitationRequest,
    ErrorEvent,
    Event,
    ReasoningDelta,
    RunFinished,
    RunStarted,
    ServerToolUse,
    SubAgentEvent,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
)
from streams import (
    LISTENERS,
    WORKSPACE_TOOLS,
    Backoff,
    ListenerBusyError,
    ListenerRegistry,
    PeerSilentError,
    RemoteError,
    RemoteSession,
    Server,
    SSEMessage,
    StreamClosedError,
    UnknownEvent,
    Update,
    WorkspaceChange,
    WorkspaceError,
    WorkspaceStream,
    event_from_json,
    event_to_json,
    open_sse_listener,
    open_updates_stream,
    open_workspace_stream,
)
from streams._broadcast import Broadcast, Subscriber

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    import httpx

    from agents import Tool
    from tests.streams.conftest import Create, MakeAgent, Recorder, RunAttached, Serving

TIMEOUT: Final = 10
TOKEN: Final = "s3cret-token"
SILENCE: Final = 0.3
"""Seconds of silence after which the tests' clients give up on a peer."""


# -- agents and servers -----------------------------------------------------------


def asking_tool() -> Tool:
    @tool
    async def pick(ctx: ToolContext[Any]) -> str:
        """Ask the human for a number."""
        answer = await ctx.elicit("Pick a number", schema=int)
        return f"picked {answer.content}"

    return pick


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


async def serve_raw(nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Any]) -> int:
    """A TCP server on loopback running ``handler`` per connection, stopped with the test; its port."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def accept_and_say_nothing(stream: trio.SocketStream) -> None:
    async with stream:
        await trio.sleep_forever()


async def handshake_then_say_nothing(stream: trio.SocketStream) -> None:
    """Complete a WebSocket handshake, then never read or write again (no pongs)."""
    async with stream:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            request += chunk
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
        await trio.sleep_forever()


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


# -- RemoteSession -----------------------------------------------------------------


def local_agent() -> Agent:
    return Agent(name="local", model=ScriptedModel([]))


async def test_remote_session_connects_runs_and_hands_every_stream_to_its_handler(
    make_agent: MakeAgent, serving: Serving, new_recorder: Callable[[], Recorder]
) -> None:
    """maintain creates the remote session and brings up updates, workspace and feed; remote.run streams
    Updates ending with RunFinished; the handler sees the run's events, the feed's states and the
    workspace's changes; workspace_request goes over the live workspace stream."""
    collector = new_recorder()
    registry = ListenerRegistry()
    agent = make_agent(*WORKSPACE_TOOLS, call=ToolCall("write_file", {"path": "plan.md", "content": "# Plan"}))
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, _), open_runtime() as runtime:
            async with runtime.open_session(local_agent()) as local:
                remote = RemoteSession(server.url, "s1", handler=collector, registry=registry)
                await local.start(remote.maintain)
                await remote.wait_connected()
                await trio.testing.wait_all_tasks_blocked()  # the server has subscribed all three
                assert set(server.sessions) == {"s1"}
                assert registry.active == {(server.url, "s1")}
                statistics = remote.statistics()
                assert statistics.connected == {"updates", "workspace", "feed"}
                assert statistics.failures == 0

                async with remote.run("tool: write the plan") as events:
                    updates = [update async for update in events]

                await collector.wait_until(lambda c: any(d["type"] == "RunFinished" for d in c.of("updates")))
                await collector.wait_until(lambda c: len(c.of("feed")) >= 4)
                await collector.wait_until(lambda c: len(c.of("workspace")) >= 1)

                written = await remote.workspace_request("write", "notes.txt", "n")
                await collector.wait_until(lambda c: len(c.of("workspace")) >= 2)
                with pytest.raises(WorkspaceError):
                    await remote.workspace_request("read", "missing.txt")
                files = server.sessions["s1"].workspace.list()
            assert registry.active == frozenset()  # freed when the owning session closed

    assert [update.run_id for update in updates] == ["s1-r1"] * len(updates)
    assert updates[0].event == RunStarted("s1-r1")
    assert updates[-1].event == RunFinished("completed")
    assert any(isinstance(update.event, ToolCallFinished) for update in updates)

    run_events = [d for d in collector.of("updates") if d["run_id"] == "s1-r1"]
    assert [event_from_json(d) for d in run_events] == [update.event for update in updates]
    feed_states = [d for d in collector.of("feed") if d["type"] == "SessionState"]
    assert feed_states[:3] == [
        {"type": "SessionState", "state": "idle"},
        {"type": "SessionState", "state": "running", "run_id": "s1-r1"},
        {"type": "SessionState", "state": "idle"},
    ]
    agent_change = {"type": "WorkspaceChanged", "op": "write", "path": "plan.md", "source": "agent"}
    assert agent_change in collector.of("feed")
    assert collector.of("workspace") == [
        agent_change,
        {"type": "WorkspaceChanged", "op": "write", "path": "notes.txt", "source": "client"},
    ]
    assert written["ok"] is True
    assert files == ["notes.txt", "plan.md"]


async def test_remote_session_answers_an_elicitation(make_agent: MakeAgent, serving: Serving) -> None:
    """An ElicitationRequest arrives as an Update; remote.respond answers it (a bad answer or an unknown
    id is a RemoteError with the server's status) and the tool gets the answer."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(asking_tool(), call=ToolCall("pick"))) as (server, _), open_runtime() as runtime:
            async with runtime.open_session(local_agent()) as local:
                remote = RemoteSession(server.url, "s1", registry=ListenerRegistry())
                await local.start(remote.maintain)
                await remote.wait_connected()
                statuses: list[int] = []
                events: list[Event | UnknownEvent] = []
                async with remote.run("tool: pick") as updates:
                    async for update in updates:
                        events.append(update.event)
                        if isinstance(update.event, ElicitationRequest):
                            for eid, content in [("nope", 1), (update.event.id, "seven")]:
                                with pytest.raises(RemoteError) as raised:
                                    await remote.respond(eid, "accept", content)
                                statuses.append(raised.value.status)
                            await remote.respond(update.event.id, "accept", 7)

    assert statuses == [404, 422]
    assert [event.result for event in events if isinstance(event, ToolCallFinished)] == ["picked 7"]
    assert events[-1] == RunFinished("completed")


async def test_remote_run_on_an_unknown_session_or_with_a_bad_token_is_a_remote_error(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """remote.run raises RemoteError with the server's status: 404 for an unknown session, 401 for a bad token."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), token=TOKEN) as (server, client):
            await create(client, "s1")
            for session_id, token, status in [("nope", TOKEN, 404), ("s1", "wrong", 401)]:
                remote = RemoteSession(server.url, session_id, token=token, registry=ListenerRegistry())
                with pytest.raises(RemoteError) as raised:
                    async with remote.run("hello"):
                        pytest.fail("the run started")  # pragma: no cover
                assert raised.value.status == status
            assert (await client.get("/sessions/s1")).json()["runs"] == 0


async def test_a_second_listener_for_the_same_remote_session_is_refused(
    make_agent: MakeAgent, serving: Serving
) -> None:
    """One between-run listener per remote session: a second maintain raises ListenerBusyError from
    session.start, the first stays up, and the entry is freed when the owning session closes."""
    registry = ListenerRegistry()
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, _), open_runtime() as runtime:
            async with runtime.open_session(local_agent()) as local:
                first = RemoteSession(server.url, "s1", registry=registry)
                await local.start(first.maintain)
                await first.wait_connected()
                second = RemoteSession(server.url, "s1", registry=registry)
                with pytest.raises(ListenerBusyError):
                    await local.start(second.maintain)
                async with runtime.open_session(local_agent()) as other:
                    with pytest.raises(ListenerBusyError):
                        await other.start(RemoteSession(server.url, "s1", registry=registry).maintain)
                    # Another remote session is another entry.
                    elsewhere = RemoteSession(server.url, "s2", registry=registry)
                    await other.start(elsewhere.maintain)
                    assert registry.active == {(server.url, "s1"), (server.url, "s2")}
                assert registry.active == {(server.url, "s1")}
                assert first.statistics().connected == {"updates", "workspace", "feed"}
                assert not local.closed
            assert registry.active == frozenset()

            async with runtime.open_session(local_agent()) as again:
                third = RemoteSession(server.url, "s1", registry=registry)
                await again.start(third.maintain)
                await third.wait_connected()
                assert registry.active == {(server.url, "s1")}


async def test_remote_sessions_claim_the_process_wide_registry_by_default(
    make_agent: MakeAgent, serving: Serving
) -> None:
    """Without a registry, maintain claims streams.LISTENERS, and frees it in the end."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, _), open_runtime() as runtime:
            async with runtime.open_session(local_agent()) as local:
                remote = RemoteSession(server.url, "s1")
                await local.start(remote.maintain)
                assert (server.url, "s1") in LISTENERS.active
                with pytest.raises(ListenerBusyError):
                    await local.start(RemoteSession(server.url, "s1").maintain)
            assert (server.url, "s1") not in LISTENERS.active


# -- Backoff -------------------------------------------------------------------


def test_backoff_is_the_one_retry_policy() -> None:
    """``streams.Backoff`` is ``agents.RetryPolicy``; ``Backoff(initial=, maximum=)`` never gives up, like before."""
    assert Backoff is RetryPolicy
    backoff = Backoff(initial=0.05, maximum=0.2)
    assert backoff == RetryPolicy(0.05, 0.2)
    assert backoff.max_attempts is None
    assert 0.1 <= backoff.delay(10) <= 0.2


async def test_remote_session_with_max_attempts_gives_up_with_the_last_error() -> None:
    """With ``max_attempts=2`` and nothing listening, ``maintain`` raises after two failed tries in a row."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nothing listens there: every dial is refused
    registry = ListenerRegistry()
    remote = RemoteSession(
        f"http://127.0.0.1:{port}", "s1", registry=registry, backoff=Backoff(0.01, 0.01, max_attempts=2)
    )
    with trio.fail_after(10), pytest.raises(StreamClosedError, match="ConnectError"):
        await remote.maintain()
    failures = remote.statistics().failures
    assert 2 <= failures <= 2 * 3  # each stream tried at most twice
    assert registry.active == frozenset()


# -- the codec -----------------------------------------------------------------

SAMPLES: Final[list[Event]] = [
    RunStarted("s1-r1"),
    TextDelta("héllo\nworld"),
    ReasoningDelta("thinking…"),
    ToolCallStarted("call_1", "add", {"a": 1, "b": [2, 3], "c": {"d": None}}),
    ToolCallFinished("call_1", "add", {"sum": 6}),
    ToolCallFinished("call_2", "boom", None, error="it broke"),
    ServerToolUse("srv_1", "web_search", {"query": "trio"}),
    Usage(12, 34),
    ErrorEvent("model", "the model blew up"),
    ElicitationRequest("e1", "Pick a number", {"type": "integer"}, "bot"),
    ElicitationRequest("e2", "Anything?", None, "bot"),
    AgentSwitched("triage", "billing"),
    SubAgentEvent("billing", TextDelta("nested")),
    SubAgentEvent("billing", SubAgentEvent("refunds", ToolCallStarted("call_9", "refund", {"amount": 5}))),
    SubAgentEvent("billing", RunFinished("completed")),
    RunFinished("completed"),
    RunFinished("hook_stop", "stopped by a hook"),
]


def test_the_samples_cover_every_event_type() -> None:
    assert {type(sample) for sample in SAMPLES} == set(typing.get_args(Event))


@pytest.mark.parametrize("event", SAMPLES, ids=repr)
def test_event_json_round_trips(event: Event) -> None:
    """event_to_json gives a JSON object with the class name as type; event_from_json gives the event back
    (through real JSON text, and ignoring a wire run_id)."""
    data = event_to_json(event)
    assert data["type"] == type(event).__name__
    wire = json.loads(json.dumps({**data, "run_id": "s1-r1"}))
    assert event_from_json(wire) == event


def test_a_nested_sub_agent_event_has_the_documented_shape() -> None:
    event = SubAgentEvent("billing", SubAgentEvent("refunds", TextDelta("hi")))
    assert event_to_json(event) == {
        "type": "SubAgentEvent",
        "agent": "billing",
        "event": {"type": "SubAgentEvent", "agent": "refunds", "event": {"type": "TextDelta", "text": "hi"}},
    }


@pytest.mark.parametrize("data", [{}, {"type": 5}])
def test_event_from_json_refuses_what_is_not_an_event(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="event"):
        event_from_json(data)


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
