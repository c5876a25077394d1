"""Limits a served runtime needs: safe session ids, a cap on sessions and on runs waiting in one, and idle
reaping that counts listeners.

Every test runs Hypercorn on port 0 and talks to it over loopback (httpx, a raw
socket, a raw WebSocket, a ``RemoteSession``): the real clock, bounded by
``trio.fail_after``. "Not reaped" is a bounded wait for the session's end that
must time out, several idle timeouts long.
"""

from __future__ import annotations

import inspect
import re
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import pytest
import trio
import trio.testing

from agents import Agent, ScriptedModel, ToolCall
from runtime import open_runtime
from streams import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_QUEUED_RUNS,
    DEFAULT_MAX_SESSIONS,
    SESSION_ID_PATTERN,
    InvalidSessionIdError,
    TooManySessionsError,
    open_remote_session,
    open_server,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import httpx

    from streams import Server
    from tests.streams.conftest import Create, MakeAgent, OpenRawWebSocket, Recorder, Serving, WaitingTool

TIMEOUT: Final = 10
IDLE: Final = 0.1
"""The idle timeout of the reaping tests (seconds)."""


def assert_error(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": {"type": kind, "message": response.json()["error"]["message"]}}
    assert response.json()["error"]["message"]


# -- session ids -----------------------------------------------------------------------


BAD_IDS: Final[list[Any]] = [
    "a/b",  # could never be reached or deleted: /sessions/a/b is another route
    "a\r\nb",  # CR/LF, into logs and headers
    "",
    ".",
    "..",
    "-leading-dash",
    "x" * 129,
    "caf\u00e9",
    "a b",
    "a%2Fb",
    "a?b",
    5,
    ["s1"],
]
GOOD_IDS: Final = ["a", "S1", "run.2024-01-01_x", "0", "x" * 128]


async def test_session_ids_outside_the_safe_set_are_422_bad_session_id(make_agent: MakeAgent, serving: Serving) -> None:
    """POST /sessions with an id outside [A-Za-z0-9][A-Za-z0-9._-]{0,127} is 422 bad_session_id and creates
    nothing; ids inside it are 201 and reachable (GET and DELETE) by their URL as they are."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            for bad in BAD_IDS:
                assert_error(await client.post("/sessions", json={"id": bad}), 422, "bad_session_id")
            assert server.sessions == {}
            for good in GOOD_IDS:
                assert (await client.post("/sessions", json={"id": good})).status_code == 201
                assert (await client.get(f"/sessions/{good}")).json()["id"] == good
                assert (await client.delete(f"/sessions/{good}")).status_code == 204
            with pytest.raises(InvalidSessionIdError):
                await server.open_session("a/b")
            made_up = [(await client.post("/sessions")).json()["id"] for _ in range(2)]
    # The ids the server makes are safe too, and have the shape PROTOCOL.md gives: "s", 11 hex digits of
    # milliseconds, 16 random ones (so they sort by creation).
    for made in made_up:
        assert SESSION_ID_PATTERN.fullmatch(made)
        assert re.fullmatch(r"s[0-9a-f]{27}", made)
    assert made_up[0][:12] <= made_up[1][:12]
    assert made_up[0] != made_up[1]


# -- the session cap -------------------------------------------------------------------


async def test_past_max_sessions_a_new_session_is_503_too_many_sessions(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """With max_sessions=3, the fourth POST /sessions is 503 too_many_sessions (the Python API raises
    TooManySessionsError; an id in use is still 409); once one is deleted, there is room again."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), max_sessions=3) as (server, client):
            for sid in ["a", "b", "c"]:
                await create(client, sid)
            assert_error(await client.post("/sessions", json={"id": "d"}), 503, "too_many_sessions")
            assert_error(await client.post("/sessions"), 503, "too_many_sessions")
            assert_error(await client.post("/sessions", json={"id": "a"}), 409, "conflict")  # full or not
            with pytest.raises(TooManySessionsError):
                await server.open_session("d")
            assert set(server.sessions) == {"a", "b", "c"}
            assert len(server.runtime.sessions) == 3
            assert (await client.delete("/sessions/b")).status_code == 204
            await create(client, "d")
            assert set(server.sessions) == {"a", "c", "d"}


async def test_concurrent_creates_never_pass_max_sessions(make_agent: MakeAgent, serving: Serving) -> None:
    """Twenty POST /sessions at once against max_sessions=5: five are 201, the rest 503, five exist."""
    statuses: list[int] = []
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), max_sessions=5) as (server, client):

            async def post() -> None:
                statuses.append((await client.post("/sessions")).status_code)

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(post)
            assert len(server.sessions) == 5
    assert sorted(statuses) == [201] * 5 + [503] * 15


def test_the_defaults_are_caps_and_an_idle_timeout() -> None:
    """open_server caps sessions (1,000) and the runs waiting in one (16), and reaps idle sessions (15 minutes),
    unless told otherwise."""
    defaults = {name: p.default for name, p in inspect.signature(open_server).parameters.items()}
    assert defaults["max_sessions"] == DEFAULT_MAX_SESSIONS == 1000
    assert defaults["max_queued_runs"] == DEFAULT_MAX_QUEUED_RUNS == 16
    assert defaults["idle_timeout"] == DEFAULT_IDLE_TIMEOUT == 900.0


@pytest.mark.parametrize(
    "options",
    [
        {"idle_timeout": -5},
        {"idle_timeout": 0},
        {"idle_timeout": float("nan")},
        {"max_sessions": -3},
        {"max_sessions": 0},
        {"max_queued_runs": -3},
        {"heartbeat": 0},
        {"heartbeat": float("nan")},
        {"subscriber_buffer": 0},
        {"max_body": -1},
        {"graceful_timeout": -1},
    ],
    ids=str,
)
async def test_a_limit_that_makes_no_sense_is_refused_before_anything_listens(
    make_agent: MakeAgent, options: dict[str, Any]
) -> None:
    """A negative (or zero, or NaN) idle timeout reaped every session at once or never, a negative cap
    refused every session or run: each is a ``ValueError`` naming the option, before the server starts."""
    (name,) = options
    with pytest.raises(ValueError, match=name):
        async with open_server(make_agent(), **options):
            pytest.fail("the server started")


async def test_none_infinity_and_no_waiting_runs_are_valid_limits(make_agent: MakeAgent) -> None:
    """``None`` (no limit, never), an infinite idle timeout and ``max_queued_runs=0`` (none may wait) still
    serve a session."""
    with trio.fail_after(TIMEOUT):
        for options in (
            {"idle_timeout": None, "max_sessions": None, "max_queued_runs": None},
            {"idle_timeout": float("inf"), "max_sessions": 1, "max_queued_runs": 0},
        ):
            async with open_server(make_agent(), **options) as server:
                assert (await server.open_session("s1")).id == "s1"


# -- the runs waiting in a session -----------------------------------------------------------


async def test_past_max_queued_runs_a_run_is_503_too_many_runs_and_finished_runs_are_forgotten(
    make_agent: MakeAgent, serving: Serving, create: Create, waiting_tool: WaitingTool
) -> None:
    """With max_queued_runs=10 and a run holding the session, ten detached runs queue behind it (202) and
    the rest of a burst of twenty (at once) are 503 too_many_runs, attached runs too; once they have all
    finished, the session keeps the logs of the last KEPT_RUNS (8) only."""
    started, release, cancelled = trio.Event(), trio.Event(), trio.Event()
    agent = make_agent(waiting_tool(started, release, cancelled), call=ToolCall("wait_here"))
    statuses: list[int] = []
    with trio.fail_after(TIMEOUT):
        async with serving(agent, max_queued_runs=10) as (server, client):
            await create(client, "s1")
            holding = await client.post("/sessions/s1/runs", json={"input": "tool", "detach": True})
            assert holding.status_code == 202
            await started.wait()

            async def post() -> None:
                statuses.append(
                    (await client.post("/sessions/s1/runs", json={"input": "hi", "detach": True})).status_code
                )

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(post)
            assert_error(await client.post("/sessions/s1/runs", json={"input": "hi"}), 503, "too_many_runs")
            served = server.sessions["s1"]
            assert len(served.live) == len(served.runs) == 11
            last = list(served.runs.values())[-1].follow()
            release.set()
            while (event := await last.next()) is not None:
                assert isinstance(event, dict)
            await trio.testing.wait_all_tasks_blocked()  # its task ends the run, after its last event
            assert served.live == {}
            assert len(served.runs) == 8
            assert list(served.runs)[-1] == "s1-r11"
            assert (await client.get("/sessions/s1")).json()["runs"] == 11
    assert sorted(statuses) == [202] * 10 + [503] * 10


# -- idle reaping and the streams that watch a session ---------------------------------------


@asynccontextmanager
async def _feed(server: Server) -> AsyncIterator[None]:
    """GET /sessions/s1/feed over a raw socket, held open once its first message arrived."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(b"GET /sessions/s1/feed HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while b"event: SessionState" not in received:
            chunk = await stream.receive_some(65536)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received
        yield


def _websocket(open_raw_websocket: OpenRawWebSocket, path: str) -> Callable[[Server], Any]:
    @asynccontextmanager
    async def connected(server: Server) -> AsyncIterator[None]:
        async with open_raw_websocket(server.port, path):
            yield

    return connected


@pytest.fixture(params=["feed", "updates", "workspace"])
def watcher(request: pytest.FixtureRequest, open_raw_websocket: OpenRawWebSocket) -> Any:
    """An open connection watching session s1: its feed (SSE), its updates or its workspace (WebSocket)."""
    if request.param == "feed":
        return _feed
    return _websocket(open_raw_websocket, f"/sessions/s1/{request.param}")


async def test_an_open_watching_connection_keeps_an_idle_session(
    watcher: Callable[[Server], AbstractAsyncContextManager[None]],
    make_agent: MakeAgent,
    serving: Serving,
    create: Create,
) -> None:
    """A session with no run is not reaped while a feed, updates or workspace connection is open, for
    several idle timeouts; once it closes, the session is reaped an idle timeout later."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), idle_timeout=IDLE) as (server, client):
            await create(client, "s1")
            session = server.sessions["s1"].session
            async with watcher(server):
                await trio.testing.wait_all_tasks_blocked()  # the server holds the session for it now
                with trio.move_on_after(3 * IDLE):
                    await session.wait_closed()
                assert not session.closed
            released = trio.current_time()
            await session.wait_closed()
            assert trio.current_time() - released >= IDLE / 2  # reaped by the idle timeout, not the close
            assert "s1" not in server.sessions
            assert (await client.get("/sessions/s1")).status_code == 404


async def test_a_remote_session_that_only_listens_keeps_its_session_and_history(
    make_agent: MakeAgent, serving: Serving, new_recorder: Callable[[], Recorder]
) -> None:
    """A RemoteSession serving its three streams, with no run for several idle timeouts, keeps its
    server session: the next run is the session's second (s1-r2), not the first of a session created
    again without its history."""
    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), idle_timeout=IDLE) as (server, _), open_runtime() as runtime:
            async with (
                runtime.open_session(Agent(name="local", model=ScriptedModel([]))) as local,
                open_remote_session(server.url, "s1", handler=new_recorder()) as remote,
            ):
                await local.start(remote.serve)
                await remote.wait_connected()
                async with remote.run("hello") as updates:
                    first = [update async for update in updates]
                session = server.sessions["s1"].session
                await trio.testing.wait_all_tasks_blocked()
                with trio.move_on_after(3 * IDLE):
                    await session.wait_closed()
                assert not session.closed
                async with remote.run("still there?") as updates:
                    second = [update async for update in updates]
                history = len(session.history)
    assert {update.run_id for update in first} == {"s1-r1"}
    assert {update.run_id for update in second} == {"s1-r2"}
    assert history == 4  # two user messages, two answers
