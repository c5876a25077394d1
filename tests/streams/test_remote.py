"""RemoteSession against a real open_server: its streams, runs, answers, listener registry and backoff, and its
HTTP client's one owner (a run's client is never closed under it).

Real sockets, so the real clock: every test is bounded by ``trio.fail_after``
and synchronises on a tool's ``trio.Event``, the next update, a handler's
collector or ``wait_all_tasks_blocked``.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import httpx
import pytest
import trio
import trio.testing

from agents import Agent, RetryPolicy, ScriptedModel, ToolCall, ToolContext, tool
from runtime import open_runtime
from runtime.events import (
    ElicitationRequest,
    Event,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from streams import (
    LISTENERS,
    SESSION_ID_PATTERN,
    WORKSPACE_TOOLS,
    Backoff,
    ClosedRemoteSessionError,
    InvalidRequestError,
    ListenerBusyError,
    ListenerRegistry,
    MalformedMessageError,
    PeerSilentError,
    RemoteError,
    RemoteEvent,
    RemoteSession,
    StreamClosedError,
    StreamError,
    UnknownEvent,
    Update,
    WorkspaceError,
    event_from_json,
    event_to_json,
    open_remote_session,
)
from streams._client import MAX_ERROR_BODY
from streams._remote import MAX_ANSWER_BODY, STREAMS
from tests.raw_http import read_request_head

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from agents import Tool
    from tests.streams.conftest import Create, FaultProxy, MakeAgent, Recorder, Serving, WaitingTool

TIMEOUT: Final = 10
TOKEN: Final = "s3cret-token"
SILENCE: Final = 0.3
"""The connect_timeout of the tests' remote sessions against peers that never finish an answer (seconds)."""


def asking_tool() -> Tool:
    @tool
    async def pick(ctx: ToolContext[Any]) -> str:
        """Ask the human for a number."""
        answer = await ctx.elicit("Pick a number", schema=int)
        return f"picked {answer.content}"

    return pick


def local_agent() -> Agent:
    return Agent(name="local", model=ScriptedModel([]))


async def test_a_run_outlives_the_serve_started_beside_it(
    make_agent: MakeAgent, serving: Serving, create: Create, waiting_tool: WaitingTool
) -> None:
    """A RemoteSession made directly (the older way): its serve ends (its owning session closes) in the middle
    of a run; the run's client is not serve's, so the run goes on to RunFinished("completed")."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    updates: list[Update] = []
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, client), open_runtime() as runtime:
            await create(client, "s1")
            remote = RemoteSession(server.url, "s1", registry=ListenerRegistry())
            local = await runtime.start_session(local_agent())
            await local.session.start(remote.maintain)  # the alias, as the README and examples call it
            await remote.wait_connected()
            async with remote.run("tool: wait") as events:
                async for update in events:
                    updates.append(update)
                    if isinstance(update.event, ToolCallStarted):
                        await started.wait()
                        await local.aclose()  # serve ends, and closes the client it opened
                        assert remote.statistics().connected == frozenset()
                        release.set()
    assert not cancelled.is_set()
    assert updates[-1].event == RunFinished("completed")


async def test_leaving_open_remote_session_ends_a_run_of_another_task_first(
    make_agent: MakeAgent, serving: Serving, create: Create, waiting_tool: WaitingTool
) -> None:
    """The block owns the client: leaving it while another task's run is live ends that run with
    ClosedRemoteSessionError (the server cancels the run, its client having left), and only then closes the
    client; a run after the block is refused with the same error."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    errors: list[BaseException] = []
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, client):
            await create(client, "s1")
            async with trio.open_nursery() as nursery:
                async with open_remote_session(server.url, "s1", registry=ListenerRegistry()) as remote:

                    async def run_it() -> None:
                        try:
                            async with remote.run("tool: wait") as events:
                                async for _ in events:
                                    pass
                        except ClosedRemoteSessionError as exc:
                            errors.append(exc)

                    nursery.start_soon(run_it)
                    await started.wait()
            await cancelled.wait()
            with pytest.raises(ClosedRemoteSessionError):
                async with remote.run("hello"):
                    pytest.fail("a run started after the block")  # pragma: no cover
            with pytest.raises(ClosedRemoteSessionError):
                await remote.respond("e1", "accept", 1)
    assert len(errors) == 1
    assert isinstance(errors[0], ClosedRemoteSessionError)


async def test_serve_in_an_open_remote_session_ends_with_the_block(make_agent: MakeAgent, serving: Serving) -> None:
    """serve started in a local session that outlives the block uses the block's client and ends, quietly, with
    the block (its registry entry freed, the local session untouched); serve after the block is refused."""
    registry = ListenerRegistry()
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, _), open_runtime() as runtime:
            async with runtime.open_session(local_agent()) as local:
                async with open_remote_session(server.url, "s1", registry=registry) as remote:
                    await local.start(remote.serve)
                    await remote.wait_connected()
                    async with remote.run("hello") as events:
                        assert [update.event async for update in events][-1] == RunFinished("completed")
                assert registry.active == frozenset()
                assert remote.statistics().connected == frozenset()
                assert not local.closed
                with pytest.raises(ClosedRemoteSessionError):
                    await remote.wait_connected()
                with pytest.raises(ClosedRemoteSessionError):
                    await local.start(remote.serve)
                assert not local.closed


async def test_open_remote_session_leaves_a_given_client_open(make_agent: MakeAgent, serving: Serving) -> None:
    """With http_client given, the block uses it and does not close it (its owner does)."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client), httpx.AsyncClient() as given:
            await client.post("/sessions", json={"id": "s1"})
            async with open_remote_session(server.url, "s1", http_client=given, registry=ListenerRegistry()) as remote:
                async with remote.run("hello") as events:
                    assert [update.event async for update in events][-1] == RunFinished("completed")
            assert not given.is_closed


def test_maintain_is_an_alias_of_serve() -> None:
    assert RemoteSession.maintain is RemoteSession.serve


# -- RemoteSession against open_server -------------------------------------------


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


def _dropped_counts(recorder: Recorder, stream: str) -> list[int]:
    return [data["count"] for data in recorder.of(stream) if data["type"] == "EventsDropped"]


async def test_a_slow_handler_is_told_the_updates_it_lost(
    make_agent: MakeAgent, serving: Serving, create: Create, new_recorder: Callable[[], Recorder]
) -> None:
    """A handler too slow for a run's burst of updates is handed EventsDropped {"count"} on the updates stream, as
    the feed does, and statistics().dropped adds the counts up: what it got plus what was dropped is the whole run
    (the counts were dropped silently)."""
    collector = new_recorder()
    caught_up = trio.Event()

    async def slow(event: RemoteEvent) -> None:
        if event.stream == "updates":
            await caught_up.wait()
        await collector(event)

    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), subscriber_buffer=1) as (server, client):
            await create(client, "s1")
            async with (
                open_remote_session(server.url, "s1", handler=slow, registry=ListenerRegistry()) as remote,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(remote.serve)
                await remote.wait_connected()
                await trio.testing.wait_all_tasks_blocked()  # the server has subscribed all three
                async with remote.run(" ".join(f"w{n}" for n in range(1000))) as updates:
                    whole = [update async for update in updates]
                caught_up.set()
                await collector.wait_until(lambda c: any(d["type"] == "RunFinished" for d in c.of("updates")))
                statistics = remote.statistics()
                nursery.cancel_scope.cancel()
    counts = _dropped_counts(collector, "updates")
    assert counts
    assert all(count > 0 for count in counts)
    assert len(collector.of("updates")) - len(counts) + sum(counts) == len(whole)
    assert statistics.dropped == sum(sum(_dropped_counts(collector, stream)) for stream in STREAMS)


async def test_a_slow_handler_is_told_the_workspace_changes_it_lost(
    make_agent: MakeAgent, serving: Serving, create: Create, new_recorder: Callable[[], Recorder]
) -> None:
    """A handler that falls a whole buffer behind the workspace stream is handed EventsDropped {"count"} on it
    before the changes that follow the gap: what it got plus what was dropped is every change."""
    collector = new_recorder()
    caught_up = trio.Event()
    writes = 300  # more than the workspace stream's buffer (256)

    async def slow(event: RemoteEvent) -> None:
        if event.stream == "workspace":
            await caught_up.wait()
        await collector(event)

    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            async with (
                open_remote_session(server.url, "s1", handler=slow, registry=ListenerRegistry()) as remote,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(remote.serve)
                await remote.wait_connected()
                for n in range(writes):
                    await remote.workspace_request("write", f"{n}.txt", "x")
                caught_up.set()
                last = {"type": "WorkspaceChanged", "op": "write", "path": f"{writes - 1}.txt", "source": "client"}
                await collector.wait_until(lambda c: last in c.of("workspace"))
                statistics = remote.statistics()
                nursery.cancel_scope.cancel()
    got = collector.of("workspace")
    counts = _dropped_counts(collector, "workspace")
    assert got[0]["type"] == "WorkspaceChanged"  # the one the handler was blocked on
    assert got[1]["type"] == "EventsDropped"
    assert len(got) - len(counts) + sum(counts) == writes
    assert statistics.dropped == sum(counts)


async def test_remote_session_answers_an_elicitation(make_agent: MakeAgent, serving: Serving) -> None:
    """An ElicitationRequest arrives as an Update; remote.respond answers it (a bad answer or an unknown
    id is a RemoteError with the server's status; a live run's answer returns None) and the tool gets it."""
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
                            assert await remote.respond(update.event.id, "accept", 7) is None

    assert statuses == [404, 422]
    assert [event.result for event in events if isinstance(event, ToolCallFinished)] == ["picked 7"]
    assert events[-1] == RunFinished("completed")


async def test_remote_run_and_respond_send_a_lone_surrogate_as_its_json_escape(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """Input and an answer holding a lone surrogate ("\\ud800" is valid JSON, which the server takes) are sent as
    its escape and arrive unchanged; httpx's json= raised UnicodeEncodeError before sending anything."""

    @tool
    async def name(ctx: ToolContext[Any]) -> str:
        """Ask the human for a name."""
        answer = await ctx.elicit("A name?", schema=str)
        return f"named {answer.content}"

    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(name, call=ToolCall("name"))) as (server, client):
            await create(client, "s1")
            async with open_remote_session(server.url, "s1", registry=ListenerRegistry()) as remote:
                async with remote.run("echo \ud800") as updates:
                    echoed = "".join([u.event.text async for u in updates if isinstance(u.event, TextDelta)])
                async with remote.run("tool: name") as updates:
                    finished = []
                    async for update in updates:
                        if isinstance(update.event, ElicitationRequest):
                            assert await remote.respond(update.event.id, "accept", "x\ud800y") is None
                        elif isinstance(update.event, ToolCallFinished):
                            finished.append(update.event.result)
    assert "echo \ud800" in echoed
    assert finished == ["named x\ud800y"]


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


async def test_remote_session_sends_a_non_ascii_token_as_utf8(make_agent: MakeAgent, serving: Serving) -> None:
    """With a non-ASCII token (the server takes one), serve brings all three streams up, a run completes and
    respond reaches the server (404: no such question), each sending the token as UTF-8; a token with no UTF-8
    bytes is InvalidRequestError when made (serve, run and respond raised UnicodeEncodeError)."""
    token = "pässwörd-ключ"
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), token=token) as (server, _):
            async with (
                open_remote_session(server.url, "s1", token=token, registry=ListenerRegistry()) as remote,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(remote.serve)
                await remote.wait_connected()
                async with remote.run("hello") as updates:
                    events = [update.event async for update in updates]
                with pytest.raises(RemoteError) as raised:
                    await remote.respond("nope", "accept", 1)
                statistics = remote.statistics()
                nursery.cancel_scope.cancel()
    assert events[-1] == RunFinished("completed")
    assert raised.value.status == 404
    assert statistics.failures == 0
    with pytest.raises(InvalidRequestError, match="UTF-8"):
        RemoteSession("http://127.0.0.1:1", "s1", token="key\ud800", registry=ListenerRegistry())
    with pytest.raises(InvalidRequestError, match="cannot be sent in a header"):  # read from a file, line end kept
        RemoteSession("http://127.0.0.1:1", "s1", token="secret\n", registry=ListenerRegistry())


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


@pytest.mark.parametrize("failure", ["workspace_request", "OSError"])
async def test_a_handler_error_ends_serve_as_it_is_never_as_a_broken_stream(
    failure: str, make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """A handler that raises a StreamError (a WorkspaceError from its own workspace_request) or an OSError ends
    serve with that very exception, at once, with no failure counted: it was taken for a broken connection,
    the stream reconnected (the rest of its events lost) and serve went on."""
    raised: list[Exception] = []

    async def handler(event: RemoteEvent) -> None:
        if event.stream == "updates" and event.type == "RunStarted":
            try:
                if failure == "OSError":
                    raise ConnectionResetError("the handler's own socket")
                await remote.workspace_request("read", "missing.txt")
            except Exception as exc:
                raised.append(exc)
                raise

    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            async with (
                open_remote_session(server.url, "s1", handler=handler, registry=ListenerRegistry()) as remote,
                trio.open_nursery() as nursery,
            ):

                async def run_once_up() -> None:
                    await remote.wait_connected()
                    async with remote.run("hello") as updates:
                        async for _ in updates:
                            pass

                nursery.start_soon(run_once_up)
                with pytest.raises((WorkspaceError, OSError)) as ended:
                    await remote.serve()
    assert [ended.value] == raised
    assert remote.statistics().failures == 0


async def _wait_connects(remote: RemoteSession, count: int) -> None:
    """Until ``remote`` has made ``count`` connections in all."""
    while remote.statistics().connects < count:
        await remote._changed.wait()


async def test_serve_gives_up_with_one_stream_error_not_a_group(
    make_agent: MakeAgent, serving: Serving, fault_proxy: FaultProxy, nursery: trio.Nursery
) -> None:
    """With ``max_attempts=1``, one drop of every connection ends ``serve`` with the first stream's error alone:
    the streams that fail while the first one's verdict cancels them add no group around it."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, _):
            fault_proxy.upstream = ("127.0.0.1", server.port)
            url = f"http://127.0.0.1:{fault_proxy.port}"
            backoff = Backoff(0.01, 0.01, max_attempts=1)
            async with open_remote_session(url, "s1", registry=ListenerRegistry(), backoff=backoff) as remote:

                async def drop_once_up() -> None:
                    await remote.wait_connected()
                    fault_proxy.reset()

                nursery.start_soon(drop_once_up)
                with pytest.raises(StreamError) as raised:
                    await remote.serve()
    assert not isinstance(raised.value, BaseExceptionGroup)
    assert remote.statistics().connected == frozenset()


async def test_serve_counts_the_failures_in_a_row_from_the_last_connection(
    make_agent: MakeAgent, serving: Serving, fault_proxy: FaultProxy
) -> None:
    """With ``max_attempts=2``, drops that each follow a full reconnection are each a first failure: ``serve``
    keeps reconnecting after any number of them."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, _):
            fault_proxy.upstream = ("127.0.0.1", server.port)
            url = f"http://127.0.0.1:{fault_proxy.port}"
            backoff = Backoff(0.01, 0.01, max_attempts=2)
            async with (
                open_remote_session(url, "s1", registry=ListenerRegistry(), backoff=backoff) as remote,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(remote.serve)
                await remote.wait_connected()
                for drop in range(1, 4):
                    fault_proxy.reset()
                    fault_proxy.forward()
                    await _wait_connects(remote, 3 * (drop + 1))
                    await remote.wait_connected()
                statistics = remote.statistics()
                nursery.cancel_scope.cancel()
    assert statistics.connected == {"updates", "workspace", "feed"}
    assert statistics.failures == 3 * 3


# -- peers that break the protocol: raw TCP servers sending crafted bytes ------------------------------------


Respond: TypeAlias = "Callable[[trio.SocketStream, bytes], Awaitable[None]]"
"""Answers one request on a raw connection, given its request line (its head and body already read)."""


async def serve_raw(nursery: trio.Nursery, respond: Respond) -> str:
    """An HTTP peer on loopback that reads each connection's one request and hands it to ``respond``, stopped
    with the test; its base URL."""

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            data = await read_request_head(stream)
            if data is None:
                return
            head, body = data.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            lengths = [int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")]
            while len(body) < sum(lengths):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                body += chunk
            try:
                await respond(stream, lines[0])
            except trio.BrokenResourceError:
                pass  # the client left: it had heard enough

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


CREATED: Final = (
    b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 11\r\n\r\n"
    b'{"id":"s1"}'
)


async def answer_endlessly(
    stream: trio.SocketStream, request: bytes, *, status: bytes, chunk: bytes, pause: float | None
) -> None:
    """To any request, a chunked answer with ``status`` whose body never ends: ``chunk`` every ``pause``
    seconds (a trickle faster than any read timeout), or once and then nothing (``None``)."""
    await stream.send_all(
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    while True:
        await stream.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if pause is None:
            await trio.sleep_forever()
        await trio.sleep(pause)  # the peer's pace, not a wait for the client: nothing depends on its timing


async def test_serve_retries_a_websocket_handshake_the_peer_broke(nursery: trio.Nursery) -> None:
    """A peer answering the updates and workspace handshakes with a 101 whose Sec-WebSocket-Accept is wrong: each
    try is a MalformedMessageError that ``serve`` retries (it is a StreamError), and with ``max_attempts=2`` it ends
    with that error; no h11 error ends it at the first try."""

    async def respond(stream: trio.SocketStream, request: bytes) -> None:
        if request.startswith(b"POST /sessions "):
            await stream.send_all(CREATED)
        elif b"/feed " in request:
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n: hi\n\n")
            await trio.sleep_forever()
        else:
            await stream.send_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: wrong\r\n\r\n"
            )
            await trio.sleep_forever()

    url = await serve_raw(nursery, respond)
    backoff = Backoff(0.01, 0.01, max_attempts=2)
    with trio.fail_after(TIMEOUT):
        async with open_remote_session(url, "s1", registry=ListenerRegistry(), backoff=backoff) as remote:
            with pytest.raises(MalformedMessageError, match="Bad accept token"):
                await remote.serve()
    assert remote.statistics().failures >= 2


ENDLESS_ANSWERS: Final = {
    "a success trickled forever": (b"202 Accepted", b"x", SILENCE / 10, PeerSilentError),
    "an error trickled forever": (b"404 Not Found", b"x", SILENCE / 10, RemoteError),
    "a success over the cap": (b"202 Accepted", b"x" * (MAX_ANSWER_BODY + 1), None, MalformedMessageError),
    "an error over the quote's cap": (b"404 Not Found", b"x" * (MAX_ERROR_BODY + 1), None, RemoteError),
}


@pytest.mark.parametrize("case", ENDLESS_ANSWERS, ids=str)
async def test_respond_reads_an_answer_within_connect_timeout_and_max_answer_body(
    case: str, nursery: trio.Nursery
) -> None:
    """An answer whose body never ends is read for connect_timeout in all, and at most MAX_ANSWER_BODY bytes of
    it: a success trickled forever is PeerSilentError, an error trickled forever RemoteError with its status (the
    body so far quoted), a success body over the cap MalformedMessageError at once, and an error whose body passes
    MAX_ERROR_BODY RemoteError at once."""
    status, chunk, pause, error = ENDLESS_ANSWERS[case]
    url = await serve_raw(nursery, functools.partial(answer_endlessly, status=status, chunk=chunk, pause=pause))
    with trio.fail_after(TIMEOUT):
        async with open_remote_session(url, "s1", registry=ListenerRegistry(), connect_timeout=SILENCE) as remote:
            with pytest.raises(error) as raised:
                await remote.respond("e1", "accept", 1)
    if isinstance(raised.value, RemoteError):
        assert raised.value.status == 404


async def test_serve_gives_up_on_a_session_creation_whose_answer_never_ends(nursery: trio.Nursery) -> None:
    """POST /sessions answered 201 with a body trickled forever: each try ends after connect_timeout with
    PeerSilentError, so ``serve`` retries, and with ``max_attempts=2`` ends with that error."""
    url = await serve_raw(
        nursery, functools.partial(answer_endlessly, status=b"201 Created", chunk=b" ", pause=SILENCE / 10)
    )
    backoff = Backoff(0.01, 0.01, max_attempts=2)
    with trio.fail_after(TIMEOUT):
        async with open_remote_session(
            url, "s1", registry=ListenerRegistry(), backoff=backoff, connect_timeout=SILENCE
        ) as remote:
            with pytest.raises(PeerSilentError):
                await remote.serve()
    assert remote.statistics().failures >= 2


async def test_a_run_stream_that_ends_before_run_finished_is_stream_closed(nursery: trio.Nursery) -> None:
    """A run's stream that ends cleanly (its last chunk, then a close) before any RunFinished: the updates that
    came are delivered, then iterating raises StreamClosedError; every run's events end with a RunFinished."""
    events: list[Event | UnknownEvent] = [RunStarted("r1"), TextDelta("hel")]

    async def respond(stream: trio.SocketStream, request: bytes) -> None:
        messages = [f"data: {json.dumps({**event_to_json(event), 'run_id': 'r1'})}\n\n".encode() for event in events]
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(data), data) for data in messages)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + chunks
            + b"0\r\n\r\n"
        )

    url = await serve_raw(nursery, respond)
    received: list[Event | UnknownEvent] = []
    with trio.fail_after(TIMEOUT):
        async with open_remote_session(url, "s1", registry=ListenerRegistry()) as remote:
            with pytest.raises(StreamClosedError, match="before RunFinished"):
                async with remote.run("hi") as updates:
                    async for update in updates:
                        received.append(update.event)
    assert received == events


async def test_serve_connects_with_a_base_url_whose_scheme_is_upper_case(
    make_agent: MakeAgent, serving: Serving
) -> None:
    """``HTTP://host:port`` is an http URL: the WebSocket streams go to ``ws://`` and all three come up."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, _):
            url = server.url.replace("http://", "HTTP://")
            assert url.startswith("HTTP://")
            async with (
                open_remote_session(url, "s1", registry=ListenerRegistry()) as remote,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(remote.serve)
                await remote.wait_connected()
                nursery.cancel_scope.cancel()
    assert remote.statistics().failures == 0


@pytest.mark.parametrize(
    "base_url", ["ftp://127.0.0.1:1", "127.0.0.1:8000", "wsHTTP://127.0.0.1", "http://", "http://h:port"]
)
def test_a_base_url_that_is_not_http_is_refused_up_front(base_url: str) -> None:
    """A base URL that is not http(s), has no host, or a bad port: RemoteSession raises InvalidRequestError when
    made, before anything connects."""
    with pytest.raises(InvalidRequestError, match="not an http"):
        RemoteSession(base_url, "s1", registry=ListenerRegistry())


@pytest.mark.parametrize("session_id", ["bad id!", "", "-s1", "a/b", "..", "s" * 129, "s1\n"])
def test_a_session_id_the_server_would_refuse_is_refused_up_front(session_id: str) -> None:
    """An id outside SESSION_ID_PATTERN (which every server answers with 422 bad_session_id): RemoteSession and
    open_remote_session raise InvalidRequestError when made, as for a bad base_url; serve retried the 422
    forever."""
    with pytest.raises(InvalidRequestError, match="not a session id"):
        RemoteSession("http://127.0.0.1:1", session_id, registry=ListenerRegistry())
    assert not SESSION_ID_PATTERN.fullmatch(session_id)


async def test_open_remote_session_refuses_a_bad_session_id_and_takes_any_the_server_takes() -> None:
    """open_remote_session refuses a bad id before its block; ids at the edges of SESSION_ID_PATTERN are taken."""
    with pytest.raises(InvalidRequestError, match="not a session id"):
        async with open_remote_session("http://127.0.0.1:1", "bad id!", registry=ListenerRegistry()):
            pytest.fail("the block ran")  # pragma: no cover
    for session_id in ["s", "0._-", "s" * 128]:
        assert RemoteSession("http://127.0.0.1:1", session_id).session_id == session_id
