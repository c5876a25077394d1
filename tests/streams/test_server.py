"""open_server's HTTP and SSE endpoints, driven by httpx and the real httpx-sse client over loopback.

Real sockets, so the real clock: every test is bounded by ``trio.fail_after``
and synchronises on events (a tool's ``trio.Event``, the next SSE message),
never on sleeps.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import sqlite3
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import trio
import trio.testing
from httpx_sse import ServerSentEvent, aconnect_sse
from trio_websocket import open_websocket_url

import streams
from agents import Agent, ElicitationResult, ToolCall, ToolContext, tool
from runtime import ClosedSessionError, SQLiteStore, StoreUnavailableError, open_runtime
from runtime.events import (
    ElicitationRequest,
    ErrorEvent,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
)
from streams import WORKSPACE_TOOLS, SessionExistsError, event_from_json, open_server
from streams._client import MAX_MESSAGE
from streams._server import DETACHED_DRAIN_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator
    from pathlib import Path

    from agents import Tool
    from tests.streams.conftest import Create, MakeAgent, OpenRawWebSocket, PostScope, Serving, WaitingTool

TOKEN: Final = "s3cret-token"
TIMEOUT: Final = 10


# -- agents --------------------------------------------------------------------


# -- helpers -------------------------------------------------------------------


@asynccontextmanager
async def open_sse(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> AsyncIterator[AsyncGenerator[ServerSentEvent, None]]:
    """httpx-sse's messages of a 200 SSE response; leaving the block closes the response (a disconnect).

    httpx's streaming iterators are async generators nested several deep, and
    closing only the outermost abandons the others (Trio warns about each):
    so the response is closed first, then the chain is run to its end, which
    the closed stream's read error brings at once.
    """
    async with aconnect_sse(client, method, url, **kwargs) as source:
        assert source.response.status_code == 200, await source.response.aread()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        messages = source.aiter_sse()
        try:
            yield messages
        finally:
            await close_and_drain(source.response, messages)


async def close_and_drain(response: httpx.Response, chain: AsyncIterator[object]) -> None:
    """Close ``response``, then run the generator chain reading it to its end (its read error ends it)."""
    with trio.CancelScope(shield=True, deadline=trio.current_time() + TIMEOUT):
        await response.aclose()
        try:
            async for _ in chain:
                pass
        except Exception:  # the closed stream's read error, by design
            pass


async def read_sse(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> list[ServerSentEvent]:
    """Every message of an SSE response, read to its end with httpx-sse."""
    async with open_sse(client, method, url, **kwargs) as messages:
        return [message async for message in messages]


async def run_attached(client: httpx.AsyncClient, session_id: str, user_input: str) -> list[dict[str, Any]]:
    """An attached run's SSE messages' data, checking the framing (event = type, sequential ids)."""
    messages = await read_sse(client, "POST", f"/sessions/{session_id}/runs", json={"input": user_input})
    data = [message.json() for message in messages]
    assert [message.event for message in messages] == [item["type"] for item in data]
    assert [message.id for message in messages] == [str(n) for n in range(1, len(messages) + 1)]
    return data


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response has ``status`` and the ``{"error": {"type", "message"}}`` body; returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    assert isinstance(error["type"], str)
    assert error["type"]
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


async def next_data(messages: AsyncGenerator[ServerSentEvent, None]) -> dict[str, Any]:
    message = await anext(messages)
    data = message.json()
    assert isinstance(data, dict)
    assert message.event == data["type"]
    return data


# -- sessions ------------------------------------------------------------------


async def test_health_answers_ok(make_agent: MakeAgent, serving: Serving) -> None:
    """GET /health is 200 {"ok": true}."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (_, client):
            response = await client.get("/health")
            assert response.status_code == 200
            assert response.json() == {"ok": True}


async def test_create_with_and_without_an_id_and_a_duplicate_is_409(make_agent: MakeAgent, serving: Serving) -> None:
    """POST /sessions makes up an id or takes the one given (201); an id in use is 409 with an error body."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            bare = await client.post("/sessions")
            empty = await client.post("/sessions", json={})
            named = await client.post("/sessions", json={"id": "alpha"})
            assert [r.status_code for r in (bare, empty, named)] == [201, 201, 201]
            ids = [bare.json()["id"], empty.json()["id"], named.json()["id"]]
            assert ids[2] == "alpha"
            assert all(isinstance(i, str) and i for i in ids)
            assert len(set(ids)) == 3
            assert set(server.sessions) == set(ids)

            duplicate = await client.post("/sessions", json={"id": "alpha"})
            assert_error(duplicate, 409)
            assert set(server.sessions) == set(ids)
            assert server.statistics().sessions == 3

            # The Python API says the same with a public error, and the first "alpha" is untouched.
            first = server.sessions["alpha"]
            with pytest.raises(SessionExistsError, match="alpha"):
                await server.open_session("alpha")
            assert server.sessions["alpha"] is first
            assert not first.session.closed
            assert len(server.runtime.sessions) == 3  # the would-be duplicate was closed


async def test_list_and_get_describe_sessions_and_unknown_is_404(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """GET /sessions lists {"id", "state", "runs"}; GET /sessions/{sid} describes one; an unknown one is 404."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (_, client):
            await create(client, "a")
            await create(client, "b")
            await run_attached(client, "b", "hello")

            listing = await client.get("/sessions")
            assert listing.status_code == 200
            sessions = sorted(listing.json()["sessions"], key=lambda item: item["id"])
            assert sessions == [
                {"id": "a", "state": "idle", "runs": 0, "pending": []},
                {"id": "b", "state": "idle", "runs": 1, "pending": []},
            ]

            one = await client.get("/sessions/b")
            assert one.status_code == 200
            assert one.json() == {"id": "b", "state": "idle", "runs": 1, "pending": []}

            assert_error(await client.get("/sessions/nope"), 404)


async def test_delete_closes_the_session_and_later_requests_are_404(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """DELETE /sessions/{sid} is 204 and closes the runtime session; then it is gone (404 everywhere)."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "gone")
            await create(client, "kept")
            session = server.sessions["gone"].session

            response = await client.delete("/sessions/gone")
            assert response.status_code == 204
            assert session.closed
            assert set(server.sessions) == {"kept"}
            assert [item["id"] for item in (await client.get("/sessions")).json()["sessions"]] == ["kept"]

            assert_error(await client.get("/sessions/gone"), 404)
            assert_error(await client.delete("/sessions/gone"), 404)
            assert_error(await client.post("/sessions/gone/runs", json={"input": "hi"}), 404)
            assert_error(await client.get("/sessions/gone/feed"), 404)
            assert_error(await client.delete("/sessions/never"), 404)


async def test_a_session_deleted_under_an_attached_run_ends_its_streams_after_that_runs_last_event(
    make_agent: MakeAgent, serving: Serving, create: Create, waiting_tool: WaitingTool
) -> None:
    """DELETE while a client reads an attached run: the run's RunFinished still reaches the updates
    stream, the run's log and a live follower of it, and only then does the feed say closed."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent, idle_timeout=None) as (server, client):
            await create(client, "s1")
            served = server.sessions["s1"]
            updates = served.updates.add()
            async with open_sse(client, "POST", "/sessions/s1/runs", json={"input": "tool: wait"}) as run:
                assert (await next_data(run))["type"] == "RunStarted"
                await started.wait()
                follower = served.runs["s1-r1"].follow()
                assert (await client.delete("/sessions/s1")).status_code == 204
                assert "s1" not in server.sessions
                read = [message.json()["type"] async for message in run]
            assert read[-1] == "RunFinished"
            seen = []
            while (event := await follower.next()) is not None:
                assert isinstance(event, dict)
                seen.append(event["type"])
            assert seen[-1] == "RunFinished"
            published = []
            with contextlib.suppress(trio.EndOfChannel):  # the session's updates end after the run's last
                while True:
                    item = await updates.get()
                    assert isinstance(item, dict)
                    published.append(item["type"])
            assert published[0] == "RunStarted"
            assert published[-1] == "RunFinished"
            assert served.state == {"type": "SessionState", "state": "closed"}
            assert server.statistics().sessions == 0


async def test_a_session_deleted_under_a_detached_run_ends_that_run_with_run_finished(
    make_agent: MakeAgent, serving: Serving, create: Create, waiting_tool: WaitingTool
) -> None:
    """DELETE while a detached run waits in a tool: its log's follower and the updates stream both get
    what the run sends as it is cancelled, as an attached client would (the call's ToolCallFinished), then
    its RunFinished("cancelled"), once, before they end."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent, idle_timeout=None) as (server, client):
            await create(client, "s1")
            updates = server.sessions["s1"].updates.add()
            response = await client.post("/sessions/s1/runs", json={"input": "tool: wait", "detach": True})
            run_id = response.json()["run_id"]
            await started.wait()
            async with open_sse(client, "GET", f"/sessions/s1/runs/{run_id}/events") as messages:
                assert (await next_data(messages))["type"] == "RunStarted"
                assert (await client.delete("/sessions/s1")).status_code == 204
                rest = [message.json() async for message in messages]
            assert cancelled.is_set()
            tail = ["ToolCallStarted", "ToolCallFinished", "RunFinished"]
            assert [item["type"] for item in rest][-3:] == tail
            assert [item["type"] for item in rest].count("RunFinished") == 1
            assert rest[-2]["error"] == "the tool call was cancelled"
            assert rest[-1] == {"type": "RunFinished", "reason": "cancelled", "message": None, "run_id": run_id}
            published = []
            with contextlib.suppress(trio.EndOfChannel):
                while True:
                    item = await updates.get()
                    assert isinstance(item, dict)
                    published.append(item)
            assert [item["type"] for item in published][-3:] == tail
            assert published[-1] == rest[-1]


async def test_a_detached_run_whose_tool_closes_its_own_session_ends_it_at_once(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """A detached run's tool closing its own session (ctx.session.aclose(), "end the conversation"): the session
    closes at once and the run's log ends with one RunFinished. The task reading the run must not wait for the
    run to end (it waits for that task): it waited DETACHED_DRAIN_TIMEOUT (5 s)."""

    @tool
    async def hang_up(ctx: ToolContext[Any]) -> str:
        """End the conversation."""
        session: Any = ctx.session  # a runtime Session: SessionLike does not offer aclose()
        await session.aclose()
        return "bye"  # pragma: no cover - cancelled by its own close

    began = trio.current_time()
    with trio.fail_after(DETACHED_DRAIN_TIMEOUT * 2):
        async with serving(make_agent(hang_up, call=ToolCall("hang_up")), idle_timeout=None) as (server, client):
            await create(client, "s1")
            session = server.sessions["s1"].session
            response = await client.post("/sessions/s1/runs", json={"input": "tool: hang up", "detach": True})
            assert response.status_code == 202
            await session.wait_released()
            assert session.closed
            assert (await client.get("/sessions/s1")).status_code == 404
    # The close and the server's exit, both shielded (fail_after alone cannot see them take too long).
    assert trio.current_time() - began < DETACHED_DRAIN_TIMEOUT / 2


async def test_a_detached_runs_followers_get_its_cancelled_calls_at_shutdown(
    make_agent: MakeAgent, create: Create, waiting_tool: WaitingTool
) -> None:
    """Leaving open_server while a detached run waits in a tool: its log and the updates stream end with
    the call's ToolCallFinished (cancelled), then one RunFinished("cancelled")."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    with trio.fail_after(TIMEOUT):
        async with open_server(agent, idle_timeout=None) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                await create(client, "s1")
                served = server.sessions["s1"]
                updates = served.updates.add()
                response = await client.post("/sessions/s1/runs", json={"input": "tool: wait", "detach": True})
            run_id = response.json()["run_id"]
            await started.wait()
        follower, logged = served.runs[run_id].follow(), []
        while (logged_item := follower.next_nowait()) is not None:
            assert isinstance(logged_item, dict)
            logged.append(logged_item["type"])
        published = []
        with contextlib.suppress(trio.EndOfChannel):
            while True:
                item = await updates.get()
                assert isinstance(item, dict)
                published.append(item["type"])
    assert cancelled.is_set()
    assert logged[-3:] == published[-3:] == ["ToolCallStarted", "ToolCallFinished", "RunFinished"]
    assert logged.count("RunFinished") == 1


async def test_a_closing_session_is_gone_everywhere_and_its_id_is_free_once_it_has_closed(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """While a deleted session's run is still ending (its tool cleaning up), it is listed nowhere and is
    404; POST /sessions with its id waits until it has closed, then creates it (201, not 409)."""
    started, cleaning, cleaned = trio.Event(), trio.Event(), trio.Event()

    @tool
    async def stubborn() -> str:
        """Waits, and takes its time to clean up when cancelled."""
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cleaning.set()
            with trio.CancelScope(shield=True):
                await cleaned.wait()
        return "never"  # pragma: no cover

    agent = make_agent(stubborn, call=ToolCall("stubborn"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent, idle_timeout=None) as (server, client):
            await create(client, "s1")
            old = server.sessions["s1"]
            await client.post("/sessions/s1/runs", json={"input": "tool: stubborn", "detach": True})
            await started.wait()
            answers: dict[str, httpx.Response] = {}

            async def request(name: str, method: str, url: str, body: Any = None) -> None:
                answers[name] = await client.request(method, url, json=body)

            async with trio.open_nursery() as nursery:
                try:
                    nursery.start_soon(request, "delete", "DELETE", "/sessions/s1")
                    await cleaning.wait()
                    assert (await client.get("/sessions")).json() == {"sessions": []}
                    assert_error(await client.get("/sessions/s1"), 404)
                    assert "s1" not in server.sessions
                    nursery.start_soon(request, "create", "POST", "/sessions", {"id": "s1"})
                    await trio.testing.wait_all_tasks_blocked()
                    assert "create" not in answers  # it waits for the old session to close
                finally:
                    cleaned.set()
            assert answers["delete"].status_code == 204
            assert answers["create"].status_code == 201, answers["create"].text
            assert answers["create"].json()["runs"] == 0
            assert server.sessions["s1"] is not old


async def test_a_sessions_run_count_counts_a_run_cancelled_while_it_waited_for_its_turn(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """``runs`` is the ``n`` of the session's latest run id: a run cancelled while it waited for its turn (it
    never sent RunStarted) counts, as it does in the count a stored session reopens with. Before, only runs
    that started counted here, so the count and the run ids disagreed, and a restart changed the count."""
    started = trio.Event()

    @tool
    async def stall() -> str:
        """Waits for good."""
        started.set()
        await trio.sleep_forever()
        return "never"  # pragma: no cover

    agent = make_agent(stall, call=ToolCall("stall"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent, idle_timeout=None) as (_, client):
            await create(client, "s1")
            first = (await client.post("/sessions/s1/runs", json={"input": "tool: stall", "detach": True})).json()
            await started.wait()
            second = (await client.post("/sessions/s1/runs", json={"input": "hi", "detach": True})).json()
            assert (first["run_id"], second["run_id"]) == ("s1-r1", "s1-r2")
            assert (await client.post("/sessions/s1/runs/s1-r2/cancel")).status_code == 204
            assert (await client.post("/sessions/s1/runs/s1-r1/cancel")).status_code == 204
            assert (await client.get("/sessions/s1")).json()["runs"] == 2


async def test_a_closing_session_counts_toward_neither_max_sessions_nor_statistics_nor_the_inspector(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """While a deleted session's run is still ending, it leaves room under max_sessions (another session opens:
    201, not 503), statistics().sessions and the inspector's tree no longer count it, and a watcher of the
    inspector is told it closed."""
    started, cleaning, cleaned = trio.Event(), trio.Event(), trio.Event()

    @tool
    async def stubborn() -> str:
        """Waits, and takes its time to clean up when cancelled."""
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cleaning.set()
            with trio.CancelScope(shield=True):
                await cleaned.wait()
        return "never"  # pragma: no cover

    agent = make_agent(stubborn, call=ToolCall("stubborn"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent, idle_timeout=None, max_sessions=1) as (server, client):
            await create(client, "s1")
            subscriber = server.inspector.subscribe()
            try:
                assert subscriber.next_nowait() is not None  # the snapshot
                await client.post("/sessions/s1/runs", json={"input": "tool: stubborn", "detach": True})
                await started.wait()
                async with trio.open_nursery() as nursery:
                    try:
                        nursery.start_soon(client.delete, "/sessions/s1")
                        await cleaning.wait()
                        changed = await subscriber.next()
                        assert changed is not None
                        assert changed[1]["closed"] == ["s1"]
                        assert server.statistics().sessions == 0
                        assert server.inspector.snapshot()["sessions"] == []
                        assert len(server.inspector) == 0
                        await create(client, "s2")
                        assert_error(await client.post("/sessions", json={"id": "s3"}), 503)  # s2 has the room
                        assert server.statistics().sessions == 1
                        assert [node["id"] for node in server.inspector.snapshot()["sessions"]] == ["s2"]
                    finally:
                        cleaned.set()
            finally:
                server.inspector.unsubscribe(subscriber)


@pytest.mark.parametrize("path", ["/sessions/s1/feed", "/inspect/events"])
async def test_head_on_an_event_stream_gets_the_head_and_ends(
    path: str, make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """HEAD on an SSE route (a monitoring probe, ``curl -I``) gets the stream's head and the response ends: the
    keep-alive connection answers its next request, and nothing is held open. The source was opened and
    pumped for ever (Hypercorn ends a HEAD response only at its body's end): the connection hung, the feed
    counted in sse_streams, and its session, held in use, was never reaped."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), idle_timeout=0.5) as (server, client):
            await create(client, "s1")
            head = await client.head(path)
            assert head.status_code == 200
            assert head.headers["content-type"].startswith("text/event-stream")
            assert (await client.get("/health")).status_code == 200  # the same connection, free again
            assert server.statistics().sse_streams == 0
            await server.sessions["s1"].session.wait_closed()  # reaped when idle: nothing holds it


async def test_the_feed_names_a_run_that_waited_for_its_turn_when_its_turn_comes(
    make_agent: MakeAgent, serving: Serving, create: Create, waiting_tool: WaitingTool
) -> None:
    """Runs queued behind a running one: the feed says "running" with the id of the run under way, then
    with the next one's as its turn comes (a queued run cancelled before its turn is never named), then idle."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent, idle_timeout=None) as (server, client):
            await create(client, "s1")
            served = server.sessions["s1"]
            async with open_sse(client, "GET", "/sessions/s1/feed") as feed:
                assert (await next_data(feed))["state"] == "idle"
                runs = []
                for text in ("tool: wait", "second", "third"):
                    response = await client.post("/sessions/s1/runs", json={"input": text, "detach": True})
                    runs.append(response.json()["run_id"])
                await started.wait()
                assert served.state == {"type": "SessionState", "state": "running", "run_id": runs[0]}
                assert (await client.post(f"/sessions/s1/runs/{runs[1]}/cancel")).status_code == 204
                release.set()
                states = [await next_data(feed) for _ in range(3)]
            assert [(state["state"], state.get("run_id")) for state in states] == [
                ("running", runs[0]),
                ("running", runs[2]),
                ("idle", None),
            ]


async def test_a_deleted_sessions_attached_run_does_not_touch_a_new_session_of_its_id_in_the_inspector(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """After DELETE, a run of the old session still streaming to its client records nothing in the
    inspector, where a new session of the same id may be: that one's run is its own."""
    release = trio.Event()

    @tool
    async def slow() -> str:
        """Waits for the test."""
        await release.wait()
        return "done"

    agent = make_agent(slow, call=ToolCall("slow"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent, idle_timeout=None) as (server, client):

            def inspected() -> tuple[str, list[tuple[str, str]]]:
                (node,) = [node for node in server.inspector.snapshot()["sessions"] if node["id"] == "a"]
                return node["state"], [(run["id"], run["state"]) for run in node["runs"]]

            await create(client, "a")
            old = server.sessions["a"]
            async with old.session.run("tool: slow") as stream:  # as an attached run's request holds it
                old.run_begins(stream.run_id, stream)
                old.record(stream.run_id, await stream.__anext__())
                await client.delete("/sessions/a")
                await create(client, "a")
                assert inspected() == ("idle", [])
                async for event in stream:
                    old.record(stream.run_id, event)
                old.run_ends(stream.run_id)
            release.set()
            assert inspected() == ("idle", [])
            assert server.sessions["a"].state["state"] == "idle"


async def test_a_path_with_a_trailing_slash_is_a_404_not_a_redirect(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """No route takes a slash too many: 404 with the error body (a redirect would re-send a POST elsewhere)."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (_, client):
            await create(client, "a")
            for method, path in (("GET", "/sessions/"), ("GET", "/sessions/a/"), ("POST", "/sessions/a/runs/")):
                response = await client.request(method, path, json={"input": "hi"} if method == "POST" else None)
                assert assert_error(response, 404)["type"] == "not_found"


async def test_a_deleted_durable_session_is_free_for_another_process_when_delete_answers(
    make_agent: MakeAgent, tmp_path: Path
) -> None:
    """DELETE answers 204 once the session's last changes are written and its lock let go: a runtime on
    another store object of the same file (as another process would) opens it at once."""
    path = str(tmp_path / "s.db")
    with trio.fail_after(TIMEOUT):
        async with (
            open_runtime(store=SQLiteStore(path)) as runtime,
            open_server(make_agent(), runtime=runtime, port=0) as server,
            httpx.AsyncClient(base_url=server.url) as client,
            open_runtime(store=SQLiteStore(path)) as other,
        ):
            assert (await client.post("/sessions", json={"id": "d1"})).status_code == 201
            assert (await run_attached(client, "d1", "hello"))[-1]["reason"] == "completed"
            assert (await client.delete("/sessions/d1")).status_code == 204
            async with other.open_session(make_agent(), session_id="d1", create=False) as session:
                assert [type(message).__name__ for message in session.history] == ["UserMessage", "AssistantMessage"]


@pytest.mark.parametrize(
    ("tamper", "status", "kind"),
    [
        # Another writer moved the session on: this process has lost it (SessionConflictError).
        ("UPDATE sessions SET version = version + 100 WHERE id = 'd1'", 409, "session_conflict"),
        # The database refuses the run's row, and would again (StoreRejectedError).
        ("CREATE TRIGGER no BEFORE INSERT ON runs BEGIN SELECT RAISE(ABORT, 'no'); END", 500, "store_rejected"),
    ],
)
async def test_a_detached_run_the_store_cannot_keep_is_a_typed_error(
    make_agent: MakeAgent, tmp_path: Path, tamper: str, status: int, kind: str
) -> None:
    """A detached run whose row a lost session's store will never write is answered in the error shape
    (409 session_conflict, 500 store_rejected), not a 500 internal; the session still answers."""
    path = str(tmp_path / "s.db")
    with trio.fail_after(TIMEOUT):
        async with (
            open_server(make_agent(), store=SQLiteStore(path), port=0) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            assert (await client.post("/sessions", json={"id": "d1"})).status_code == 201
            with contextlib.closing(sqlite3.connect(path)) as db, db:
                db.execute(tamper)
            error = assert_error(await client.post("/sessions/d1/runs", json={"input": "hi", "detach": True}), status)
            assert error["type"] == kind
            assert (await client.get("/sessions/d1")).status_code == 200


async def test_a_run_log_the_store_cannot_be_reached_for_is_503_store_unavailable(
    make_agent: MakeAgent, tmp_path: Path
) -> None:
    """GET .../runs/{rid}/events for a run this process does not hold asks the store for its log: a store that
    cannot be reached then is 503 store_unavailable, as PROTOCOL's durable errors say, not a 500 internal."""

    class Unreachable(SQLiteStore):
        async def events(self, session_id: str, run_id: str) -> list[str]:
            raise StoreUnavailableError("the database is down")

    with trio.fail_after(TIMEOUT):
        async with (
            open_server(make_agent(), store=Unreachable(str(tmp_path / "s.db")), port=0) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            assert (await client.post("/sessions", json={"id": "d1"})).status_code == 201
            error = assert_error(await client.get("/sessions/d1/runs/d1-r1/events"), 503)
            assert error["type"] == "store_unavailable"
            assert (await client.get("/sessions/d1")).status_code == 200


async def test_a_second_open_of_an_id_being_opened_waits_and_is_a_conflict_not_owned_elsewhere(
    make_agent: MakeAgent, tmp_path: Path
) -> None:
    """Two open_session() of one id at once on a durable server (two POST /sessions): the second waits for
    the first's store claim, then raises SessionExistsError (409 conflict), not the SessionOwnedError (421
    session_elsewhere, naming this very server) its own claim would meet; the first opens the session."""
    claiming, resume = trio.Event(), trio.Event()

    class SlowStore(SQLiteStore):
        async def claim(self, *args: Any, **kwargs: Any) -> Any:
            claiming.set()
            await resume.wait()
            return await super().claim(*args, **kwargs)

    outcomes: dict[str, BaseException | object] = {}

    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent(), store=SlowStore(str(tmp_path / "s.db")), port=0) as server:

            async def open_as(name: str) -> None:
                try:
                    outcomes[name] = await server.open_session("x")
                except Exception as error:
                    outcomes[name] = error

            async with trio.open_nursery() as nursery:
                nursery.start_soon(open_as, "first")
                await claiming.wait()
                nursery.start_soon(open_as, "second")
                await trio.testing.wait_all_tasks_blocked()
                resume.set()
            assert outcomes["first"] is server.sessions["x"]
            assert isinstance(outcomes["second"], SessionExistsError)


async def test_a_session_still_opening_when_the_server_shuts_down_is_refused_and_closed(
    make_agent: MakeAgent, tmp_path: Path
) -> None:
    """open_session() whose store claim is under way as the server's block exits: it raises
    ClosedSessionError("...shutting down") and leaves no session open, in the server or the runtime."""
    claiming, resume = trio.Event(), trio.Event()

    class SlowStore(SQLiteStore):
        async def claim(self, *args: Any, **kwargs: Any) -> Any:
            claiming.set()
            await resume.wait()
            return await super().claim(*args, **kwargs)

    outcome: list[BaseException | object] = []

    with trio.fail_after(TIMEOUT):
        async with open_runtime(store=SlowStore(str(tmp_path / "s.db"))) as runtime:
            async with trio.open_nursery() as nursery:
                async with open_server(make_agent(), runtime=runtime, port=0) as server:

                    async def open_late() -> None:
                        try:
                            outcome.append(await server.open_session("late"))
                        except ClosedSessionError as error:
                            outcome.append(error)

                    nursery.start_soon(open_late)
                    await claiming.wait()
                resume.set()
            assert len(outcome) == 1
            assert isinstance(outcome[0], ClosedSessionError)
            assert "shutting down" in str(outcome[0])
            assert server.sessions == {}
            assert runtime.sessions == ()


async def test_unknown_session_run_and_elicitation_are_404(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """The per-session endpoints answer 404 with an error body for an unknown session, run or elicitation."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (_, client):
            await create(client, "s1")
            answers = [
                (await client.post("/sessions/nope/runs", json={"input": "hi"}), "unknown_session"),
                (await client.get("/sessions/nope/runs/nope-r1/events"), "unknown_session"),
                (await client.get("/sessions/s1/runs/s1-r99/events"), "unknown_run"),
                (await client.post("/sessions/nope/elicitations/e1", json={"action": "cancel"}), "unknown_session"),
                (await client.post("/sessions/s1/elicitations/e1", json={"action": "cancel"}), "unknown_elicitation"),
                (await client.get("/sessions/nope/feed"), "unknown_session"),
            ]
            for response, kind in answers:
                assert assert_error(response, 404)["type"] == kind


# -- runs ----------------------------------------------------------------------


async def test_an_attached_run_streams_the_events_a_local_run_gives(
    make_agent: MakeAgent, add: Tool, serving: Serving, create: Create
) -> None:
    """POST /runs streams the run as SSE: each event's JSON with its type and run_id, the same events a
    local session gives for the same input, ending with RunFinished."""

    def adding_agent() -> Agent:  # a model of its own each: call ids count the model's calls
        return make_agent(add, call=ToolCall("add", {"a": 2, "b": 3}), answer="The sum is 5.")

    with trio.fail_after(TIMEOUT):
        async with serving(adding_agent()) as (_, client):
            await create(client, "s1")
            data = await run_attached(client, "s1", "tool: add 2 and 3")
            described = (await client.get("/sessions/s1")).json()

        async with open_runtime() as runtime, runtime.open_session(adding_agent(), session_id="s1") as session:
            async with session.run("tool: add 2 and 3") as stream:
                local = [event async for event in stream]
            result = await session.ask("tool: add 2 and 3")

    assert {item["run_id"] for item in data} == {"s1-r1"}
    served = [event_from_json(item) for item in data]
    assert served == local
    assert served[0] == RunStarted("s1-r1")
    assert served[-1] == RunFinished("completed")
    assert [type(event) for event in served].count(RunFinished) == 1
    (call_id,) = [event.call_id for event in served if isinstance(event, ToolCallStarted)]
    assert ToolCallFinished(call_id=call_id, name="add", result=5) in served
    assert any(isinstance(event, Usage) for event in served)
    text = "".join(event.text for event in served if isinstance(event, TextDelta))
    assert text == result.output == "The sum is 5."
    assert described == {"id": "s1", "state": "idle", "runs": 1, "pending": []}


async def test_a_client_that_disconnects_cancels_its_attached_run(
    make_agent: MakeAgent,
    serving: Serving,
    create: Create,
    waiting_tool: WaitingTool,
) -> None:
    """Leaving the httpx stream block mid-run cancels the run's tool; the session can run again."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, client):
            await create(client, "s1")
            async with open_sse(client, "POST", "/sessions/s1/runs", json={"input": "tool: wait"}) as messages:
                async for message in messages:
                    if message.event == "ToolCallStarted":
                        break
                await started.wait()
            # The response is closed with the run still in its tool: the server must cancel it.
            await cancelled.wait()
            assert not release.is_set()

            data = await run_attached(client, "s1", "hello again")
            assert data[0]["type"] == "RunStarted"
            assert data[0]["run_id"] == "s1-r2"
            assert data[-1] == {"type": "RunFinished", "reason": "completed", "message": None, "run_id": "s1-r2"}
            assert not server.sessions["s1"].session.closed


async def test_an_abandoned_attached_run_ends_for_its_followers(
    make_agent: MakeAgent,
    serving: Serving,
    create: Create,
    waiting_tool: WaitingTool,
) -> None:
    """Someone following an attached run (GET /runs/{rid}/events) gets the run's whole end once its own client
    has left and the run was cancelled: the cancelled call's ToolCallFinished, then RunFinished("cancelled")."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (_, client):
            await create(client, "s1")
            async with AsyncExitStack() as attached:
                run = await attached.enter_async_context(
                    open_sse(client, "POST", "/sessions/s1/runs", json={"input": "tool: wait"})
                )
                async for message in run:
                    if message.event == "ToolCallStarted":
                        break
                await started.wait()
                async with open_sse(client, "GET", "/sessions/s1/runs/s1-r1/events") as followed:
                    assert (await next_data(followed))["type"] == "RunStarted"
                    await attached.aclose()  # the attached client leaves
                    await cancelled.wait()
                    rest = [message.json() async for message in followed]
    started_at = next(at for at, event in enumerate(rest) if event["type"] == "ToolCallStarted")
    call_id = rest[started_at]["call_id"]
    finished, last = rest[started_at + 1 :]
    assert (finished["type"], finished["call_id"]) == ("ToolCallFinished", call_id)
    assert finished["error"] is not None
    assert last == {"type": "RunFinished", "reason": "cancelled", "message": None, "run_id": "s1-r1"}


async def test_an_abandoned_attached_run_leaves_the_session_idle(
    make_agent: MakeAgent,
    serving: Serving,
    create: Create,
    waiting_tool: WaitingTool,
) -> None:
    """Once an attached run's client has left and the run was cancelled, the feed says idle again and
    then GET /sessions/{sid} says idle (before any other run)."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (_, client):
            await create(client, "s1")
            async with open_sse(client, "GET", "/sessions/s1/feed") as feed:
                assert await next_data(feed) == {"type": "SessionState", "state": "idle"}
                async with open_sse(client, "POST", "/sessions/s1/runs", json={"input": "tool: wait"}) as run:
                    async for message in run:
                        if message.event == "ToolCallStarted":
                            break
                    await started.wait()
                    assert await next_data(feed) == {"type": "SessionState", "state": "running", "run_id": "s1-r1"}
                await cancelled.wait()
                assert await next_data(feed) == {"type": "SessionState", "state": "idle"}
                described = (await client.get("/sessions/s1")).json()
                assert described == {"id": "s1", "state": "idle", "runs": 1, "pending": []}


async def test_a_detached_run_lives_on_and_any_client_can_follow_it_from_its_start(
    make_agent: MakeAgent,
    create: Create,
    waiting_tool: WaitingTool,
) -> None:
    """detach: 202 with the run id; the run outlives the client that started it, and another client
    gets every event from RunStarted (replayed) to RunFinished (live), as does one that comes after."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    with trio.fail_after(TIMEOUT):
        async with open_server(agent) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as starter:
                await create(starter, "s1")
                response = await starter.post("/sessions/s1/runs", json={"input": "tool: wait", "detach": True})
                assert response.status_code == 202
                run_id = response.json()["run_id"]
                assert run_id == "s1-r1"
            await started.wait()  # the starting client is gone; the run is in its tool

            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as other:
                events: list[dict[str, Any]] = []
                async with open_sse(other, "GET", f"/sessions/s1/runs/{run_id}/events") as messages:
                    async for message in messages:
                        events.append(message.json())
                        if message.event == "ToolCallStarted":
                            release.set()  # the rest of the run arrives live
                again = [
                    message.json() for message in await read_sse(other, "GET", f"/sessions/s1/runs/{run_id}/events")
                ]
                described = (await other.get("/sessions/s1")).json()

    assert not cancelled.is_set()
    assert release.is_set()
    assert {event["run_id"] for event in events} == {run_id}
    decoded = [event_from_json(event) for event in events]
    assert decoded[0] == RunStarted(run_id)
    assert decoded[-1] == RunFinished("completed")
    assert [type(event) for event in decoded].count(RunFinished) == 1
    assert any(isinstance(event, ToolCallFinished) and event.result == "released" for event in decoded)
    assert again == events
    assert described == {"id": "s1", "state": "idle", "runs": 1, "pending": []}


async def test_the_last_eight_finished_runs_can_be_followed(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """GET /runs/{rid}/events replays a finished run while it is among the session's last 8; older is 404."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (_, client):
            await create(client, "s1")
            runs = [await run_attached(client, "s1", f"run {n}") for n in range(1, 10)]
            assert_error(await client.get("/sessions/s1/runs/s1-r1/events"), 404)
            for n in range(2, 10):
                replayed = await read_sse(client, "GET", f"/sessions/s1/runs/s1-r{n}/events")
                assert [message.json() for message in replayed] == runs[n - 1]
                assert replayed[-1].event == "RunFinished"


# -- elicitation -----------------------------------------------------------------


def asking_tool(answers: list[ElicitationResult]) -> Tool:
    @tool
    async def pick(ctx: ToolContext[Any]) -> str:
        """Ask the human for a number."""
        answer = await ctx.elicit("Pick a number", schema=int)
        answers.append(answer)
        return f"picked {answer.content}"

    return pick


async def test_an_elicitation_is_answered_over_http(make_agent: MakeAgent, serving: Serving, create: Create) -> None:
    """The run's SSE shows the ElicitationRequest; a bad answer is 422 and leaves it open, an unknown
    id is 404, a good answer is 204 and reaches the tool (once)."""
    answers: list[ElicitationResult] = []
    agent = make_agent(asking_tool(answers), call=ToolCall("pick"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (_, client):
            await create(client, "s1")
            events: list[dict[str, Any]] = []
            statuses: list[int] = []
            async with open_sse(client, "POST", "/sessions/s1/runs", json={"input": "tool: pick"}) as messages:
                async for message in messages:
                    events.append(message.json())
                    if message.event != "ElicitationRequest":
                        continue
                    eid = message.json()["id"]
                    url = f"/sessions/s1/elicitations/{eid}"
                    assert_error(await client.post("/sessions/s1/elicitations/nope", json={"action": "accept"}), 404)
                    assert_error(await client.post(url, json={"action": "accept", "content": "seven"}), 422)
                    assert_error(await client.post(url, json={"action": "maybe"}), 422)
                    assert answers == []  # still open
                    statuses.append((await client.post(url, json={"action": "accept", "content": 7})).status_code)
                    assert_error(await client.post(url, json={"action": "accept", "content": 8}), 404)

    assert statuses == [204]
    assert answers == [ElicitationResult("accept", 7)]
    requests = [event_from_json(event) for event in events if event["type"] == "ElicitationRequest"]
    assert len(requests) == 1
    request = requests[0]
    assert isinstance(request, ElicitationRequest)
    assert request.message == "Pick a number"
    assert request.agent == "bot"
    assert request.schema is not None
    assert request.schema["type"] == "integer"
    finished = [event_from_json(event) for event in events if event["type"] == "ToolCallFinished"]
    assert [event.result for event in finished] == ["picked 7"]  # type: ignore[union-attr]
    assert events[-1]["type"] == "RunFinished"
    assert events[-1]["reason"] == "completed"


# -- the between-run feed ------------------------------------------------------


async def test_the_feed_shows_state_workspace_changes_notices_and_closing(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """GET /feed: SessionState idle, running (with run_id), a WorkspaceChanged from the agent's
    write_file, idle again, a Notice from served.notify, and SessionState closed, after which it ends.

    In that order: running comes before the change the run's own tool made, so a feed client never
    sees an agent's write while the session is, as far as it knows, idle."""
    agent = make_agent(*WORKSPACE_TOOLS, call=ToolCall("write_file", {"path": "notes.txt", "content": "hi"}))
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, client):
            await create(client, "s1")
            served = server.sessions["s1"]
            async with open_sse(client, "GET", "/sessions/s1/feed") as messages:
                assert await next_data(messages) == {"type": "SessionState", "state": "idle"}

                run = await run_attached(client, "s1", "tool: write notes")
                assert run[-1]["reason"] == "completed"
                between = [await next_data(messages) for _ in range(3)]
                assert between == [
                    {"type": "SessionState", "state": "running", "run_id": "s1-r1"},
                    {"type": "WorkspaceChanged", "op": "write", "path": "notes.txt", "source": "agent"},
                    {"type": "SessionState", "state": "idle"},
                ]
                assert served.workspace.read("notes.txt") == "hi"

                served.notify("maintenance at noon")
                assert await next_data(messages) == {"type": "Notice", "message": "maintenance at noon"}

                assert (await client.delete("/sessions/s1")).status_code == 204
                assert await next_data(messages) == {"type": "SessionState", "state": "closed"}
                assert [message async for message in messages] == []  # the stream ended


async def test_a_quiet_sse_stream_gets_ping_comments(make_agent: MakeAgent, serving: Serving, create: Create) -> None:
    """With nothing to say, the feed sends ``: ping`` comments every ``heartbeat`` seconds."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), heartbeat=0.05) as (_, client):
            await create(client, "s1")
            async with client.stream("GET", "/sessions/s1/feed") as response:
                assert response.status_code == 200
                seen = ""
                chunks = response.aiter_text()
                try:
                    async for text in chunks:
                        seen += text
                        if seen.count(": ping\n\n") >= 2:
                            break
                finally:
                    await close_and_drain(response, chunks)
            assert seen.startswith("event: SessionState\n")


# -- auth and bad requests -------------------------------------------------------

ENDPOINTS: Final = [
    ("POST", "/sessions", {"id": "other"}),
    ("GET", "/sessions", None),
    ("GET", "/sessions/s1", None),
    ("DELETE", "/sessions/s1", None),
    ("POST", "/sessions/s1/runs", {"input": "hi"}),
    ("POST", "/sessions/s1/runs", {"input": "hi", "detach": True}),
    ("GET", "/sessions/s1/runs/s1-r1/events", None),
    ("POST", "/sessions/s1/elicitations/e1", {"action": "cancel"}),
    ("GET", "/sessions/s1/feed", None),
]

BAD_CREDENTIALS: Final = [
    {},
    {"authorization": "Bearer wrong"},
    {"authorization": f"Basic {TOKEN}"},
    {"authorization": f"Bearer {TOKEN}x"},
]


async def test_every_endpoint_but_health_needs_the_bearer_token(make_agent: MakeAgent) -> None:
    """With a token set, each endpoint kind answers 401 with an error body without it or with a wrong
    one, and does nothing; /health stays open; the right token works."""
    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent(), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
                good = {"authorization": f"Bearer {TOKEN}"}
                assert (await client.post("/sessions", json={"id": "s1"}, headers=good)).status_code == 201
                for (method, path, body), headers in itertools.product(ENDPOINTS, BAD_CREDENTIALS):
                    response = await client.request(method, path, json=body, headers=headers)
                    assert response.status_code == 401, (method, path, headers)
                    assert_error(response, 401)

                health = await client.get("/health")
                assert health.status_code == 200
                assert health.json() == {"ok": True}

                assert set(server.sessions) == {"s1"}
                listing = await client.get("/sessions", headers=good)
                assert listing.json() == {"sessions": [{"id": "s1", "state": "idle", "runs": 0, "pending": []}]}


async def websocket_handshake(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Send a WebSocket upgrade request on a raw socket; the answer's status and body.

    (httpx cannot make an upgrade request, and a refused handshake is a plain HTTP answer.)
    """
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
        length = int({name.strip().lower(): value.strip() for name, value in fields.items()}.get(b"content-length", 0))
        while len(body) < length:
            chunk = await stream.receive_some(65536)
            assert chunk, body
            body += chunk
    return status, body


@pytest.mark.parametrize("path", ["/sessions/s1/updates", "/sessions/s1/workspace"])
async def test_a_websocket_handshake_without_the_token_is_rejected_with_401(path: str, make_agent: MakeAgent) -> None:
    """An upgrade request to a WebSocket endpoint without (or with a wrong) token gets an HTTP 401 with
    the error body; with the token, an unknown session gets 404, and a known one is switched (101)."""
    good = {"authorization": f"Bearer {TOKEN}"}
    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent(), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
                assert (await client.post("/sessions", json={"id": "s1"}, headers=good)).status_code == 201
            for headers in BAD_CREDENTIALS:
                status, body = await websocket_handshake(server.port, path, headers)
                assert status == 401
                assert json.loads(body)["error"]["type"]
            status, body = await websocket_handshake(server.port, path.replace("s1", "nope"), good)
            assert status == 404
            assert json.loads(body)["error"]["type"]
            status, _ = await websocket_handshake(server.port, path, good)
            assert status == 101


async def test_malformed_json_is_422(make_agent: MakeAgent, serving: Serving, create: Create) -> None:
    """A body that is not JSON, or not a JSON object, or a run without a string input, is 422 and does nothing."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            json_header = {"content-type": "application/json"}
            assert_error(await client.post("/sessions", content=b'{"id": ', headers=json_header), 422)
            assert_error(await client.post("/sessions", json=["s2"]), 422)
            assert_error(await client.post("/sessions/s1/runs", content=b"{input", headers=json_header), 422)
            assert_error(await client.post("/sessions/s1/runs", json={"input": 5}), 422)
            assert_error(await client.post("/sessions/s1/runs", json={}), 422)
            assert_error(await client.post("/sessions/s1/elicitations/e1", content=b"\xff", headers=json_header), 422)
            assert set(server.sessions) == {"s1"}
            assert (await client.get("/sessions/s1")).json()["runs"] == 0


@pytest.mark.parametrize("detach", ["false", "no", [0], 1, 0, "", None])
async def test_detach_takes_only_true_or_false(
    detach: Any, make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """``detach`` is a JSON boolean (left out: false): any other value (a truthy "false" or [0], a falsy 0 or
    null) is 422 bad_request and starts no run; ``false`` streams the run, ``true`` detaches it."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (_, client):
            await create(client, "s1")
            error = assert_error(await client.post("/sessions/s1/runs", json={"input": "hi", "detach": detach}), 422)
            assert error["type"] == "bad_request"
            assert "'detach'" in error["message"]
            assert (await client.get("/sessions/s1")).json()["runs"] == 0
            async with client.stream("POST", "/sessions/s1/runs", json={"input": "hi", "detach": False}) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                await response.aread()
            detached = await client.post("/sessions/s1/runs", json={"input": "hi", "detach": True})
            assert detached.status_code == 202
            assert detached.json() == {"run_id": "s1-r2"}


async def test_the_optional_fields_of_sessions_and_workspace_commands_take_only_their_type(
    make_agent: MakeAgent, serving: Serving, create: Create, open_raw_websocket: OpenRawWebSocket
) -> None:
    """``{"id": null}`` is not "no id" (422 bad_session_id, nothing made), and a ``list`` command's ``path``
    is a string prefix or left out: 5 is not "5", nor 0 or false "every file" (a failed command)."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            assert assert_error(await client.post("/sessions", json={"id": None}), 422)["type"] == "bad_session_id"
            assert server.sessions == {}
            await create(client, "s1")
            async with open_raw_websocket(server.port, "/sessions/s1/workspace") as ws:
                await ws.send_text(json.dumps({"id": 1, "op": "write", "path": "5", "content": "x"}))
                assert (await ws.receive_json())["type"] == "WorkspaceChanged"
                assert (await ws.receive_json())["ok"] is True
                answers = []
                prefixes: list[Any] = [5, 0, False, None, []]
                for prefix in prefixes:
                    await ws.send_text(json.dumps({"id": 2, "op": "list", "path": prefix}))
                    answers.append(await ws.receive_json())
                await ws.send_text(json.dumps({"id": 3, "op": "list"}))
                listed = await ws.receive_json()
    assert [answer["ok"] for answer in answers] == [False] * 5
    assert {answer["error"]["type"] for answer in answers} == {"bad_command"}
    assert listed == {"type": "result", "id": 3, "ok": True, "paths": ["5"]}


async def test_a_workspace_client_that_pipelines_commands_gets_every_answer(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """A client that sends commands faster than it reads gets one ``result`` for each, in order; only
    change notices are dropped (a buffer of 2 holds far fewer than the commands sent)."""
    count = 500
    answered: list[Any] = []
    notices: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), subscriber_buffer=2) as (server, client):
            await create(client, "s1")
            url = f"ws://127.0.0.1:{server.port}/sessions/s1/workspace"
            async with open_websocket_url(url) as ws, trio.open_nursery() as nursery:

                async def send() -> None:
                    for n in range(count):
                        await ws.send_message(json.dumps({"id": n, "op": "write", "path": f"{n}", "content": ""}))

                nursery.start_soon(send)
                while not answered or answered[-1] != count - 1:
                    message = json.loads(await ws.get_message())
                    if message["type"] == "result":
                        assert message["ok"], message
                        answered.append(message["id"])
                    else:
                        notices.append(message["type"])
    assert answered == list(range(count))
    assert set(notices) <= {"WorkspaceChanged", "EventsDropped"}


async def test_a_workspace_read_whose_answer_a_client_cannot_take_fails_and_the_connection_goes_on(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """A file the workspace holds (the agent's 8 MiB of newlines) whose answer would be over the client's
    16 MiB message size as JSON (each newline is 2 bytes there) is refused as ``too_large``, a WorkspaceError:
    the package's own client gets no message it would close the connection for (1009), and reads on; a file
    just under that size as JSON is read in full."""
    escaped = "\n" * (8 * 2**20 + 1)
    fitting = "x" * (MAX_MESSAGE - 100)
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            workspace = server.sessions["s1"].workspace
            workspace.write("escaped.txt", escaped, source="agent")
            url = f"ws://127.0.0.1:{server.port}/sessions/s1/workspace"
            async with streams.open_workspace_stream(url) as ws:
                with pytest.raises(streams.WorkspaceError) as refused:
                    await ws.request("read", "escaped.txt")
                assert refused.value.kind == "too_large"
                assert (await ws.request("list"))["paths"] == ["escaped.txt"]
                workspace.delete("escaped.txt", source="agent")
                workspace.write("fitting.txt", fitting, source="agent")
                assert (await ws.request("read", "fitting.txt"))["content"] == fitting


async def test_a_workspace_answer_echoing_an_id_too_large_to_send_back_fails_within_the_message_size(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """A command near the 16 MiB message size: its answer, the id echoed, would be over it. A read's answer is
    refused as ``too_large`` with the id; a failure (a delete of no file) the id alone makes too large is
    ``too_large`` with ``id: null``. Both were sent over the size, closing the connection (1009); it goes on."""
    read = json.dumps({"id": "r" * (MAX_MESSAGE - 600), "op": "read", "path": "small.txt"})
    delete = json.dumps({"id": "d" * (MAX_MESSAGE - 60), "op": "delete", "path": "missing"})
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            server.sessions["s1"].workspace.write("small.txt", "x" * 1000, source="agent")
            url = f"ws://127.0.0.1:{server.port}/sessions/s1/workspace"
            async with open_websocket_url(
                url, max_message_size=MAX_MESSAGE, connect_timeout=TIMEOUT, disconnect_timeout=TIMEOUT
            ) as ws:
                answers = []
                for command in (read, delete, json.dumps({"id": "l", "op": "list"})):
                    await ws.send_message(command)
                    answers.append(json.loads(await ws.get_message()))

    assert len(read) <= MAX_MESSAGE
    assert len(delete) <= MAX_MESSAGE
    assert [(a["id"], a["ok"], a.get("error", {}).get("type")) for a in answers] == [
        (json.loads(read)["id"], False, "too_large"),
        (None, False, "too_large"),
        ("l", True, None),
    ]


def body_of(size: int) -> bytes:
    """A run request's JSON body of exactly ``size`` bytes."""
    overhead = len(json.dumps({"input": ""}))
    body = json.dumps({"input": "x" * (size - overhead)}).encode()
    assert len(body) == size
    return body


JSON_HEADER: Final = {"content-type": "application/json"}


async def test_a_body_over_max_body_is_413(make_agent: MakeAgent, serving: Serving, create: Create) -> None:
    """A body of max_body bytes is accepted; one byte more (by its Content-Length) is 413 and does nothing."""
    limit = 1024
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), max_body=limit) as (server, client):
            await create(client, "s1")
            assert_error(await client.post("/sessions/s1/runs", content=body_of(limit + 1), headers=JSON_HEADER), 413)
            assert_error(await client.post("/sessions", content=b"{" + b" " * limit + b"}", headers=JSON_HEADER), 413)
            assert set(server.sessions) == {"s1"}
            assert (await client.get("/sessions/s1")).json()["runs"] == 0

            async with client.stream("POST", "/sessions/s1/runs", content=body_of(limit), headers=JSON_HEADER) as ok:
                assert ok.status_code == 200
                await ok.aread()
            assert (await client.get("/sessions/s1")).json()["runs"] == 1


async def test_a_chunked_body_over_max_body_is_413(make_agent: MakeAgent, serving: Serving, create: Create) -> None:
    """Without a Content-Length (chunked), the limit holds as the body arrives: 413, and nothing is left behind."""
    limit = 1024

    async def chunked(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), max_body=limit) as (_, client):
            await create(client, "s1")
            response = await client.post("/sessions/s1/runs", content=chunked(body_of(limit + 1)), headers=JSON_HEADER)
            assert_error(response, 413)
            assert (await client.get("/sessions/s1")).json()["runs"] == 0


# -- isolation -----------------------------------------------------------------


async def test_a_failing_run_in_one_session_does_not_disturb_another(
    make_agent: MakeAgent,
    serving: Serving,
    create: Create,
    waiting_tool: WaitingTool,
) -> None:
    """A run whose model raises ends with ErrorEvent and RunFinished("error") in its own session only:
    another session's run in flight completes, and both sessions go on serving."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, client):
            await create(client, "good")
            await create(client, "bad")
            response = await client.post("/sessions/good/runs", json={"input": "tool: wait", "detach": True})
            assert response.status_code == 202
            good_run = response.json()["run_id"]
            await started.wait()

            failed = [event_from_json(item) for item in await run_attached(client, "bad", "boom")]
            assert any(isinstance(event, ErrorEvent) for event in failed)
            assert failed[-1] == RunFinished("error", failed[-1].message)  # type: ignore[union-attr]

            release.set()
            good = [
                message.json() for message in await read_sse(client, "GET", f"/sessions/good/runs/{good_run}/events")
            ]
            assert good[-1]["type"] == "RunFinished"
            assert good[-1]["reason"] == "completed"
            assert not cancelled.is_set()

            again = await run_attached(client, "bad", "still here?")
            assert [item["text"] for item in again if item["type"] == "TextDelta"] == ["echo:", " still", " here?"]
            listing = sorted((await client.get("/sessions")).json()["sessions"], key=lambda item: item["id"])
            assert listing == [
                {"id": "bad", "state": "idle", "runs": 2, "pending": []},
                {"id": "good", "state": "idle", "runs": 1, "pending": []},
            ]
            assert not server.sessions["good"].session.closed
            assert server.sessions["bad"].handle.error is None


async def test_an_idle_served_session_is_reaped_and_a_busy_one_is_not(
    make_agent: MakeAgent,
    serving: Serving,
    create: Create,
    waiting_tool: WaitingTool,
) -> None:
    """With ``idle_timeout``, a session with a run in flight stays; once idle that long (its run over, its
    feed closed), it is closed and gone from the server."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    idle = 0.2
    with trio.fail_after(TIMEOUT):
        async with serving(agent, idle_timeout=idle) as (server, client):
            await create(client, "s1")
            session = server.sessions["s1"].session
            async with open_sse(client, "GET", "/sessions/s1/feed") as feed:
                assert (await next_data(feed))["state"] == "idle"
                async with open_sse(client, "POST", "/sessions/s1/runs", json={"input": "tool: wait"}) as run:
                    assert (await next_data(feed))["state"] == "running"
                    await started.wait()
                    # Busy for several idle timeouts (the tool is blocked): not reaped.
                    with trio.move_on_after(3 * idle):
                        await cancelled.wait()
                    assert not cancelled.is_set()
                    assert "s1" in server.sessions
                    release.set()
                    async for message in run:
                        if message.event == "RunFinished":
                            assert message.json()["reason"] == "completed"
                assert (await next_data(feed))["state"] == "idle"
            idle_since = trio.current_time()
            await session.wait_closed()
            assert trio.current_time() - idle_since >= idle * 0.9  # the clock of the reaper, not of this test
            assert "s1" not in server.sessions
            assert (await client.get("/sessions/s1")).status_code == 404


async def test_a_served_session_owns_no_task_and_its_streams_end_when_it_closes(
    make_agent: MakeAgent, serving: Serving
) -> None:
    """Opening served sessions (idle timeout on) spawns no task: nothing waits for each one to close, the
    runtime's one reaper watches them all. Closing one still ends its streams and forgets it."""

    class Spawns(trio.abc.Instrument):
        def __init__(self) -> None:
            self.names: list[str] = []

        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            self.names.append(task.name)

    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), idle_timeout=600) as (server, _):
            spawns = Spawns()
            trio.lowlevel.add_instrument(spawns)
            try:
                opened = [await server.open_session() for _ in range(20)]
            finally:
                trio.lowlevel.remove_instrument(spawns)
            assert spawns.names == []
            for served in opened:
                await served.handle.aclose()
                assert served.state == {"type": "SessionState", "state": "closed"}
                assert served.feed.closed
                assert served.updates.closed
                assert served.id not in server.sessions


# -- the run's life in the response, at the ASGI level ------------------------------


async def test_a_session_closed_before_its_attached_run_starts_is_a_404_not_a_200(
    make_agent: MakeAgent, post_scope: PostScope
) -> None:
    """The session closes after the request was accepted but before the run is entered (here: while the body
    is read): the response's own ``async with session.run()`` is refused, and the answer is the 404 error body,
    never a 200 stream."""
    sent: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent()) as server:
            served = await server.open_session("s1")
            body = json.dumps({"input": "hello"}).encode()
            scope = post_scope("/sessions/s1/runs", [(b"content-length", str(len(body)).encode())])
            delivered = False

            async def receive() -> dict[str, Any]:
                nonlocal delivered
                if delivered:
                    await trio.sleep_forever()
                delivered = True
                await served.handle.aclose()  # the session goes between the lookup and the run
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await server.app(scope, receive, send)  # type: ignore[arg-type]

    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 404
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["error"]["type"] == "unknown_session"


async def test_an_attached_run_whose_client_breaks_mid_stream_is_ended_and_frees_the_session(
    make_agent: MakeAgent,
    waiting_tool: WaitingTool,
    post_scope: PostScope,
) -> None:
    """A send that fails (the client's connection broke) after the 200: the run's ``async with`` in the
    response exits on that path too: the run is cancelled, its log ends with RunFinished("cancelled"), the
    session is idle and runs again."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    with trio.fail_after(TIMEOUT):
        async with open_server(agent) as server:
            served = await server.open_session("s1")
            body = json.dumps({"input": "tool: wait"}).encode()
            scope = post_scope("/sessions/s1/runs", [(b"content-length", str(len(body)).encode())])
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await trio.sleep_forever()
                raise AssertionError("unreachable")  # pragma: no cover

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.body" and b"ToolCallStarted" in message.get("body", b""):
                    await started.wait()
                    raise OSError("connection reset by peer")

            with pytest.raises(BaseException) as raised:  # noqa: PT011  # Starlette re-raises it, grouped or not
                await server.app(scope, receive, send)  # type: ignore[arg-type]
            assert "connection reset by peer" in repr(raised.value)
            assert cancelled.is_set()
            assert served.state == {"type": "SessionState", "state": "idle"}
            assert served.live == {}
            log = served.runs["s1-r1"]
            assert log.finished
            followed = [event async for event in _drain(log.follow())]
            assert followed[-1]["type"] == "RunFinished"
            assert followed[-1]["reason"] == "cancelled"

            async with served.session.run("again") as stream:
                assert [event async for event in stream][-1] == RunFinished("completed")


async def _drain(follower: Any) -> AsyncIterator[dict[str, Any]]:
    while (event := await follower.next()) is not None:
        yield event


@pytest.mark.parametrize("own_runtime", [True, False], ids=["own runtime", "given runtime"])
async def test_an_error_raised_in_the_open_server_block_arrives_as_itself(
    own_runtime: bool, make_agent: MakeAgent
) -> None:
    """``async with open_server(...)`` gives the block's own exception back, not an ExceptionGroup holding it,
    whether it runs a runtime of its own or serves one it was given."""
    with trio.fail_after(TIMEOUT):
        async with open_runtime() as runtime:
            with pytest.raises(ValueError, match="the block's own") as raised:
                async with open_server(make_agent(), runtime=None if own_runtime else runtime):
                    raise ValueError("the block's own")
    assert type(raised.value) is ValueError


def test_every_public_method_and_property_of_an_exported_class_has_a_docstring() -> None:
    """``ServedSession.id`` and ``ServedSession.run_ends`` had none: every public method and property of the
    classes ``streams`` exports (a served session's, the server's, the clients') says what it is."""
    undocumented = [
        f"{cls.__name__}.{name}"
        for cls in vars(streams).values()
        if inspect.isclass(cls) and cls.__module__.startswith("streams.")
        for name, member in vars(cls).items()
        if not name.startswith("_")
        and (inspect.isfunction(member) or isinstance(member, property))
        and not (member.__doc__ or "").strip()
    ]
    assert undocumented == []
