"""Durable served sessions, with real server processes killed with SIGKILL and started again on one store.

Each test runs ``python -m streams serve --store ...`` as a child process,
drives it over HTTP, kills it with ``kill -9`` at the point the test names
(waiting for an event, never sleeping), and starts a new process on the
same store. ``tests/streams/durable_agent.py`` writes what really happened
(model calls, payments) to a ledger file shared by both processes.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
import trio
import trio.testing

from agents import Agent, ModelRequest, ScriptedModel, ToolCall, ToolContext, UserMessage, tool
from runtime import PostgresStore, SQLiteStore
from streams import ListenerRegistry, open_remote_session, open_server
from tests.processes import Child, running
from tests.streams import durable_agent
from tests.streams.test_protocol import protocol_table

if TYPE_CHECKING:
    from pathlib import Path

    from tests.pg import PostgresCluster

AGENT = "tests.streams.durable_agent:agent"
URL = re.compile(r"^serving on (http://\S+)$", re.MULTILINE)


class Served:
    """A served runtime process on a store, and an HTTP client for it."""

    def __init__(self, child: Child, url: str, client: httpx.AsyncClient) -> None:
        self.child = child
        self.url = url
        self.client = client

    def kill(self) -> None:
        """``kill -9``: no shutdown, no last write."""
        self.child.process.kill()


async def start(nursery: trio.Nursery, store: str, ledger: Path, *options: str) -> Served:
    """Start a server process on ``store`` (with more ``serve`` options) in ``nursery``'s lifetime and wait
    until it listens."""

    async def serve(task_status: trio.TaskStatus[Served]) -> None:
        args = ("-m", "streams", "serve", "--agent", AGENT, "--port", "0", "--store", store, *options)
        async with running(*args, env={"DURABLE_LEDGER": str(ledger)}) as child:
            url = (await child.wait_for(URL))[1]
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                task_status.started(Served(child, url, client))
                await child.process.wait()

    served: Served = await nursery.start(serve)
    return served


async def sse_events(
    client: httpx.AsyncClient, method: str, path: str, *, until: str | None = None, times: int = 1, **kwargs: Any
) -> list[dict[str, Any]]:
    """The JSON events of an SSE response, to its end or up to the ``times``-th of type ``until``."""
    events: list[dict[str, Any]] = []
    async with client.stream(method, path, **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        lines = response.aiter_lines()
        try:
            async for line in lines:
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
                    if events[-1]["type"] == until:
                        times -= 1
                        if not times:
                            break
        finally:
            # httpx's iterators are generators nested several deep: close the response, then run the
            # chain to its end (the closed stream's read error ends it), so that none is left unfinished.
            await response.aclose()
            try:
                async for _ in lines:
                    pass
            except Exception:
                pass
    return events


async def detached_until(served: Served, session: str, user_input: str, until: str) -> list[dict[str, Any]]:
    """Start a detached run (the server drives it: a client leaving does not cancel it, as it would an
    attached one) and follow its log up to the first event of type ``until``."""
    started = await served.client.post(f"/sessions/{session}/runs", json={"input": user_input, "detach": True})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    return await sse_events(served.client, "GET", f"/sessions/{session}/runs/{run_id}/events", until=until)


def ledger_lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


@pytest.fixture
def sqlite_store(tmp_path: Path) -> str:
    return f"sqlite:{tmp_path / 'sessions.db'}"


async def test_an_approval_pending_when_the_process_is_killed_is_answered_after_the_restart(
    sqlite_store: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await start(nursery, sqlite_store, ledger)
            created = await first.client.post("/sessions", json={"id": "d1"})
            assert created.status_code == 201
            events = await detached_until(first, "d1", "pay 5", "ElicitationRequest")
            request = events[-1]
            assert request["type"] == "ElicitationRequest"
            first.kill()

            second = await start(nursery, sqlite_store, ledger)
            state = (await second.client.get("/sessions/d1")).json()
            assert state["runs"] == 1
            assert [pending["id"] for pending in state["pending"]] == [request["id"]]
            assert state["pending"][0]["message"] == request["message"]
            # The between-run feed says so too, first thing.
            feed = await sse_events(second.client, "GET", "/sessions/d1/feed", until="SessionState")
            assert feed[-1] == {"type": "SessionState", "state": "idle", "pending": state["pending"]}
            replay = await sse_events(second.client, "GET", "/sessions/d1/runs/d1-r1/events")
            assert replay[-1]["type"] == "RunFinished"
            assert replay[-1]["reason"] == "interrupted"
            assert [event["type"] for event in replay].count("RunFinished") == 1

            answered = await second.client.post(f"/sessions/d1/elicitations/{request['id']}", json={"action": "accept"})
            assert answered.status_code == 202, answered.text
            run_id = answered.json()["run_id"]
            resumed = await sse_events(second.client, "GET", f"/sessions/d1/runs/{run_id}/events")
            assert resumed[0] == {"type": "RunStarted", "run_id": run_id, "resumes": "d1-r1"}
            finished = [event for event in resumed if event["type"] == "ToolCallFinished"]
            assert [(event["name"], event["result"]) for event in finished] == [("pay", "paid 5")]
            assert resumed[-1]["type"] == "RunFinished"
            assert resumed[-1]["reason"] == "completed"
            assert (await second.client.get("/sessions/d1")).json()["pending"] == []
            second.kill()
    # Paid once; the model was asked for the turn that asked to pay once, and once after the result.
    assert ledger_lines(ledger) == ["model 1", "pay 5", "model 3"]


async def test_remote_respond_to_a_pending_question_returns_the_resumed_runs_id(
    sqlite_store: str, tmp_path: Path
) -> None:
    """RemoteSession.respond to a question in the session's ``pending`` (its process killed) is an accepted
    answer (202), not an error: it returns the id of the run the answer resumes."""
    ledger = tmp_path / "ledger"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await start(nursery, sqlite_store, ledger)
            assert (await first.client.post("/sessions", json={"id": "d1"})).status_code == 201
            request = (await detached_until(first, "d1", "pay 5", "ElicitationRequest"))[-1]
            first.kill()

            second = await start(nursery, sqlite_store, ledger)
            async with open_remote_session(second.url, "d1", registry=ListenerRegistry()) as remote:
                run_id = await remote.respond(request["id"], "accept")
            assert run_id is not None
            resumed = await sse_events(second.client, "GET", f"/sessions/d1/runs/{run_id}/events")
            assert resumed[0] == {"type": "RunStarted", "run_id": run_id, "resumes": "d1-r1"}
            assert resumed[-1]["reason"] == "completed"
            second.kill()
    assert ledger_lines(ledger) == ["model 1", "pay 5", "model 3"]


async def test_a_session_created_over_http_outlives_a_kill_before_its_first_run(
    sqlite_store: str, tmp_path: Path
) -> None:
    """201 means stored: a session the server named is in the store before it is answered, so a process
    killed before its first run leaves it there, empty, for the next one."""
    ledger = tmp_path / "ledger"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await start(nursery, sqlite_store, ledger)
            created = await first.client.post("/sessions")
            assert created.status_code == 201
            session = created.json()["id"]
            first.kill()

            second = await start(nursery, sqlite_store, ledger)
            state = await second.client.get(f"/sessions/{session}")
            assert state.status_code == 200, state.text
            assert (state.json()["runs"], state.json()["pending"]) == (0, [])
            second.kill()


async def test_a_run_killed_mid_tool_is_marked_interrupted_and_the_session_goes_on(
    sqlite_store: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await start(nursery, sqlite_store, ledger)
            assert (await first.client.post("/sessions", json={"id": "d2"})).status_code == 201
            events = await detached_until(first, "d2", "stall", "ToolCallStarted")
            assert events[-1]["name"] == "stall"
            first.kill()

            second = await start(nursery, sqlite_store, ledger)
            state = (await second.client.get("/sessions/d2")).json()
            assert state["runs"] == 1
            assert state["pending"] == []
            replay = await sse_events(second.client, "GET", "/sessions/d2/runs/d2-r1/events")
            assert replay[0]["type"] == "RunStarted"
            assert replay[-1]["reason"] == "interrupted"
            # The history was repaired: the stalled call has a result, so the model gets a valid history.
            events = await sse_events(second.client, "POST", "/sessions/d2/runs", json={"input": "hi"})
            assert events[0]["run_id"] == "d2-r2"
            text = "".join(event["text"] for event in events if event["type"] == "TextDelta")
            assert text == "echo: hi"
            assert events[-1]["reason"] == "completed"
            second.kill()
    assert ledger_lines(ledger) == ["model 1", "model 4"]


async def test_runs_killed_at_any_point_leave_a_store_that_opens_whole(sqlite_store: str, tmp_path: Path) -> None:
    """Mid-checkpoint too: many runs committing while the process is killed; after the restart every run
    has exactly one RunFinished and the history the model gets is valid."""
    ledger = tmp_path / "ledger"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await start(nursery, sqlite_store, ledger)
            assert (await first.client.post("/sessions", json={"id": "d3"})).status_code == 201
            for k in range(20):
                detached = await first.client.post("/sessions/d3/runs", json={"input": f"note {k}", "detach": True})
                assert detached.status_code == 202
            first.kill()  # runs are being written as it dies

            second = await start(nursery, sqlite_store, ledger)
            runs = (await second.client.get("/sessions/d3")).json()["runs"]
            assert runs >= 1  # at least the first run was accepted (written) before the kill
            for n in range(1, runs + 1):
                replay = await sse_events(second.client, "GET", f"/sessions/d3/runs/d3-r{n}/events")
                assert [event["type"] for event in replay].count("RunFinished") == 1, replay
                assert replay[-1]["type"] == "RunFinished"
            events = await sse_events(second.client, "POST", "/sessions/d3/runs", json={"input": "hi"})
            text = "".join(event["text"] for event in events if event["type"] == "TextDelta")
            assert text == "echo: hi"
            second.kill()


def postgres_url(dsn: str) -> str:
    """``--store``'s form of a libpq key=value connection string."""
    fields = dict(item.split("=", 1) for item in dsn.split())
    return f"postgresql://{fields['user']}@{fields['host']}:{fields['port']}/{fields['dbname']}"


async def get_when_free(served: Served, path: str) -> httpx.Response:
    """GET ``path`` until it is no longer 421: the killed owner's connection is gone once PostgreSQL sees its
    socket closed, which it does on its own time (checked every 50 ms; the test's deadline bounds it)."""
    while True:
        response = await served.client.get(path)
        if response.status_code != 421:
            return response
        await trio.sleep(0.05)


async def test_another_process_answers_421_naming_the_owner_and_takes_over_when_it_dies(
    postgres_dsn: str, tmp_path: Path
) -> None:
    store = postgres_url(postgres_dsn)
    ledger = tmp_path / "ledger"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, store, ledger, "--public-url", "https://agents-a.internal")
            b = await start(nursery, store, ledger)
            assert (await a.client.post("/sessions", json={"id": "p1"})).status_code == 201
            events = await detached_until(a, "p1", "pay 7", "ElicitationRequest")
            request = events[-1]

            elsewhere = await b.client.get("/sessions/p1")
            assert elsewhere.status_code == 421
            error = elsewhere.json()["error"]
            assert error["type"] == "session_elsewhere"
            assert error["owner"] == "https://agents-a.internal"  # where a client or router can go
            # Creating it there is no "409, it exists, go on" either.
            assert (await b.client.post("/sessions", json={"id": "p1"})).status_code == 421

            a.kill()
            taken = await get_when_free(b, "/sessions/p1")
            assert taken.status_code == 200
            assert [pending["id"] for pending in taken.json()["pending"]] == [request["id"]]
            answered = await b.client.post(f"/sessions/p1/elicitations/{request['id']}", json={"action": "accept"})
            assert answered.status_code == 202
            resumed = await sse_events(b.client, "GET", f"/sessions/p1/runs/{answered.json()['run_id']}/events")
            assert resumed[-1]["reason"] == "completed"
            b.kill()
    assert ledger_lines(ledger) == ["model 1", "pay 7", "model 3"]


async def test_two_processes_racing_for_one_session_exactly_one_wins(postgres_dsn: str, tmp_path: Path) -> None:
    store = postgres_url(postgres_dsn)
    ledger = tmp_path / "ledger"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, store, ledger)
            b = await start(nursery, store, ledger)
            assert (await a.client.post("/sessions", json={"id": "p2"})).status_code == 201
            await sse_events(a.client, "POST", "/sessions/p2/runs", json={"input": "first"})
            assert (await a.client.delete("/sessions/p2")).status_code == 204  # closed here: stored, owned by none
            statuses: dict[str, int] = {}

            async def take(name: str, served: Served) -> None:
                statuses[name] = (await served.client.get("/sessions/p2")).status_code

            async with trio.open_nursery() as race:
                race.start_soon(take, "a", a)
                race.start_soon(take, "b", b)
            assert sorted(statuses.values()) == [200, 421]
            winner = a if statuses["a"] == 200 else b
            events = await sse_events(winner.client, "POST", "/sessions/p2/runs", json={"input": "second"})
            assert events[0]["run_id"] == "p2-r2"  # the history and the run count came along, once
            text = "".join(event["text"] for event in events if event["type"] == "TextDelta")
            assert text == "echo: second"
            a.kill()
            b.kill()
    assert ledger_lines(ledger) == ["model 1", "model 3"]


async def test_the_durable_errors_table_is_what_the_server_sends(postgres_cluster: PostgresCluster) -> None:
    """PROTOCOL.md's durable-errors rows, each provoked: two served runtimes on one PostgreSQL (in this
    process: each store holds its own locks), detached runs on sessions changed under one or refused by the
    database, then the database stopped."""
    documented = {(row["status"], row["type"]) for row in protocol_table("durable-errors")}
    seen: set[tuple[str, str]] = set()
    dsn = postgres_cluster.create_database()
    with trio.fail_after(60):
        async with (
            open_server(durable_agent.agent, store=PostgresStore(dsn)) as first,
            open_server(durable_agent.agent, store=PostgresStore(dsn)) as second,
            httpx.AsyncClient(timeout=10) as client,
        ):
            assert (await client.post(f"{first.url}/sessions", json={"id": "t1"})).status_code == 201
            elsewhere = await client.get(f"{second.url}/sessions/t1")
            seen.add((str(elsewhere.status_code), elsewhere.json()["error"]["type"]))
            assert elsewhere.json()["error"]["owner"]
            with psycopg.connect(dsn, autocommit=True) as db:  # a row that trio-agents did not write
                db.execute("INSERT INTO trio_agents_sessions (id, agent, owner) VALUES ('t3', 'durable', 'x')")
                db.execute("INSERT INTO trio_agents_messages (session_id, seq, message) VALUES ('t3', 0, 'garbage')")
            corrupt = await client.get(f"{second.url}/sessions/t3")
            seen.add((str(corrupt.status_code), corrupt.json()["error"]["type"]))
            for sid in ("t4", "t5"):
                assert (await client.post(f"{first.url}/sessions", json={"id": sid})).status_code == 201
            with psycopg.connect(dsn, autocommit=True) as db:  # another writer; a row the database refuses
                db.execute("UPDATE trio_agents_sessions SET version = version + 100 WHERE id = 't4'")
                db.execute("ALTER TABLE trio_agents_runs ADD CONSTRAINT refuse_t5 CHECK (session_id <> 't5')")
            for sid in ("t4", "t5"):
                lost = await client.post(f"{first.url}/sessions/{sid}/runs", json={"input": "hi", "detach": True})
                seen.add((str(lost.status_code), lost.json()["error"]["type"]))
            await trio.to_thread.run_sync(postgres_cluster.stop, "immediate")
            try:
                down = await client.get(f"{second.url}/sessions/t2")
            finally:
                await trio.to_thread.run_sync(postgres_cluster.start)
            seen.add((str(down.status_code), down.json()["error"]["type"]))
    assert seen == documented


async def test_requests_at_once_for_a_session_served_elsewhere_each_get_421(sqlite_store: str, tmp_path: Path) -> None:
    """Requests that wait on another request opening the session from the store get that answer too (421
    naming the owner), never a 404 that says the session does not exist."""
    ledger = tmp_path / "ledger"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, sqlite_store, ledger)
            b = await start(nursery, sqlite_store, ledger)
            assert (await a.client.post("/sessions", json={"id": "x"})).status_code == 201
            statuses: list[int] = []

            async def get() -> None:
                statuses.append((await b.client.get("/sessions/x")).status_code)

            async with trio.open_nursery() as requests:
                for _ in range(6):
                    requests.start_soon(get)
            assert statuses == [421] * 6
            a.kill()
            b.kill()


async def test_a_detached_runs_202_id_is_stored_before_the_answer_queued_or_not(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """A 202's run id is in the store when the client gets it, for a run that starts at once and for one
    queued behind it: a process killed right after the 202 (a copy of what SQLite has committed) keeps both
    runs, so their ids are never given to other runs. The clock stands still: no group commit comes on its
    own, only the writes something waits for."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"
    async with (
        open_server(durable_agent.agent, store=SQLiteStore(path)) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        assert (await client.post("/sessions", json={"id": "q"})).status_code == 201
        ids = []
        for user_input in ("stall", "hello"):  # "hello" waits for its turn behind the stalled run
            started = await client.post("/sessions/q/runs", json={"input": user_input, "detach": True})
            assert started.status_code == 202, started.text
            ids.append(started.json()["run_id"])
        with sqlite3.connect(path) as source, sqlite3.connect(image) as copy:  # the process killed now
            source.backup(copy)
        source.close()
        copy.close()
    with sqlite3.connect(image) as db:
        stored = [row[0] for row in db.execute("SELECT run_id FROM runs ORDER BY seq")]
    db.close()
    assert ids == ["q-r1", "q-r2"]
    assert stored == ids


async def test_every_pending_question_is_answered_after_a_restart_while_the_first_answer_resumes(
    tmp_path: Path,
) -> None:
    """Two questions pending after a crash: the first answer resumes the run (202), and the second, given
    before its call has asked it again, is taken as a live question's answer (204), not refused with 404
    (the session listed it as pending); the resumed run uses both answers and completes."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"
    gate = trio.Event()
    gate.set()

    @tool
    async def confirm(ctx: ToolContext[None], what: str) -> str:
        """Ask about ``what`` (once let through)."""
        await gate.wait()
        answer = await ctx.elicit(f"{what}?", schema=str)
        return f"{what}: {answer.content}"

    def model(request: ModelRequest) -> str | list[ToolCall]:
        if isinstance(request.messages[-1], UserMessage):
            return [ToolCall("confirm", {"what": "a"}), ToolCall("confirm", {"what": "b"})]
        return "done"

    agent = Agent(name="durable", model=ScriptedModel(itertools.repeat(model)), tools=[confirm])
    with trio.fail_after(30):
        async with (
            open_server(agent, store=SQLiteStore(path)) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        ):
            assert (await client.post("/sessions", json={"id": "q"})).status_code == 201
            started = await client.post("/sessions/q/runs", json={"input": "go", "detach": True})
            path_of_run = f"/sessions/q/runs/{started.json()['run_id']}/events"
            await sse_events(client, "GET", path_of_run, until="ElicitationRequest", times=2)  # both stored
            with sqlite3.connect(path) as source, sqlite3.connect(image) as copy:  # the process killed now
                source.backup(copy)
            source.close()
            copy.close()
        gate = trio.Event()  # the calls made again wait before they ask
        async with (
            open_server(agent, store=SQLiteStore(image)) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        ):
            pending = (await client.get("/sessions/q")).json()["pending"]
            assert sorted(question["message"] for question in pending) == ["a?", "b?"]
            answers = [
                await client.post(
                    f"/sessions/q/elicitations/{question['id']}",
                    json={"action": "accept", "content": f"yes {question['message'][0]}"},
                )
                for question in pending
            ]
            assert [answer.status_code for answer in answers] == [202, 204], answers[1].text
            gate.set()
            resumed = await sse_events(client, "GET", f"/sessions/q/runs/{answers[0].json()['run_id']}/events")
    finished = sorted(event["result"] for event in resumed if event["type"] == "ToolCallFinished")
    assert finished == ["a: yes a", "b: yes b"]
    assert not [event for event in resumed if event["type"] == "ElicitationRequest"]
    assert resumed[-1]["reason"] == "completed"
