"""The live inspector's tree and its stream (``GET /inspect/events``), the cancel route and the sign-in, over real HTTP.

Real sockets (Hypercorn on port 0, httpx), so the real clock, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import itertools
import json
import re
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, cast

import httpx
import trio
import trio.testing

from agents import TRANSFER_TOOL, Agent, ScriptedModel, ToolCall, ToolContext, ToolResultMessage, UserMessage, tool
from runtime import SQLiteStore
from runtime.events import ElicitationRequest
from streams import LISTENERS, open_server
from tests.runtime.store.test_durable_sessions import crash_at, make_agent as durable_agent

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator
    from pathlib import Path

    from agents import ModelRequest
    from agents.models import Turn
    from runtime.events import Event
    from streams import Server
    from streams._inspect import InspectorSubscriber

TIMEOUT: Final = 20
TOKEN: Final = "s3cret"
AUTH: Final = {"authorization": f"Bearer {TOKEN}"}
JSON: Final = {"content-type": "application/json"}
LONG_ANSWER: Final = " ".join(f"word{n}" for n in range(300))


@tool
async def ask(ctx: ToolContext[Any]) -> str:
    """Ask whether to go on."""
    answer = await ctx.elicit("Go on?", schema=bool, timeout=TIMEOUT)
    return f"answered {answer.content}"


@tool
async def measure(ctx: ToolContext[Any], what: str) -> str:
    """Measure, reporting progress.

    Args:
        what: What to measure.
    """
    await ctx.report_progress(1, total=2, message="half")
    return f"{what}: 42"


@tool
async def broken() -> str:
    """Fail, at length."""
    raise ValueError("out of order: " + "e" * 1000)


@tool
async def look(topic: str) -> str:
    """Look something up.

    Args:
        topic: What.
    """
    return f"found {topic}"


def _turn(request: ModelRequest) -> Turn:
    last = request.messages[-1]
    if isinstance(last, ToolResultMessage):
        return "done"
    prompt = last.content if isinstance(last, UserMessage) else ""
    if prompt == "ask":
        return ToolCall("ask")
    if prompt == "tools":
        return [ToolCall("measure", {"what": "x" * 1000}), ToolCall("broken")]
    if prompt == "delegate":
        return ToolCall(TRANSFER_TOOL, {"agent": "helper", "task": "trio"})
    if prompt == "long":
        return LONG_ANSWER
    return f"echo: {prompt}"


def _helper_turn(request: ModelRequest) -> Turn:
    last = request.messages[-1]
    return "helped" if isinstance(last, ToolResultMessage) else ToolCall("look", {"topic": "trio"})


def make_agent() -> Agent:
    helper = Agent(name="helper", model=ScriptedModel(itertools.repeat(_helper_turn)), tools=[look])
    return Agent(
        name="bot",
        model=ScriptedModel(itertools.repeat(_turn), record_requests=False),
        tools=[ask, measure, broken],
        sub_agents=[helper],
    )


class Watcher:
    """A client of ``GET /inspect/events``: every message it got, in order, and the tree they make."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self._changed = trio.Event()
        self.ended = False

    def take(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "Snapshot":
            self.sessions = {node["id"]: node for node in message["sessions"]}
        else:
            self.sessions.update((node["id"], node) for node in message["sessions"])
            for sid in message["closed"]:
                self.sessions.pop(sid, None)
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, condition: Any) -> None:
        """Wait until ``condition(self)`` holds."""
        while not condition(self):
            await self._changed.wait()

    def state(self, sid: str, rid: str) -> str | None:
        """The state of run ``rid`` of session ``sid`` (``None`` if the tree has no such run)."""
        for run in self.sessions.get(sid, {}).get("runs", []):
            if run["id"] == rid:
                return str(run["state"])
        return None

    def run(self, sid: str, rid: str) -> dict[str, Any]:
        (run,) = [run for run in self.sessions[sid]["runs"] if run["id"] == rid]
        return cast("dict[str, Any]", run)


@asynccontextmanager
async def watching(server: Server, headers: dict[str, str] | None = None) -> AsyncIterator[Watcher]:
    """Follow the inspector's stream in a task of the block (read until the stream ends or the block exits)."""
    watcher = Watcher()
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=headers or AUTH) as client,
        trio.open_nursery() as nursery,
    ):

        async def read(task_status: trio.TaskStatus[None]) -> None:
            async with client.stream("GET", "/inspect/events") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                task_status.started()
                async with aclosing(cast("AsyncGenerator[str]", response.aiter_lines())) as lines:
                    async for line in lines:
                        if line.startswith("data: "):
                            watcher.take(json.loads(line.removeprefix("data: ")))
            watcher.ended = True
            watcher.take({"type": "Changed", "sessions": [], "closed": []})

        await nursery.start(read)
        await watcher.until(lambda w: w.messages)
        yield watcher
        nursery.cancel_scope.cancel()


async def test_the_stream_starts_with_a_snapshot_then_sends_coalesced_changes() -> None:
    """A watcher gets the open sessions first, then each change; a run of hundreds of events reaches it in a
    handful of messages, the last one holding the run's final state: its text, tokens and model call."""
    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent(), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                await client.post("/sessions", json={"id": "s1"})
                async with watching(server) as watcher:
                    snapshot = watcher.messages[0]
                    assert snapshot["type"] == "Snapshot"
                    assert [node["id"] for node in snapshot["sessions"]] == ["s1"]
                    assert snapshot["sessions"][0]["state"] == "idle"
                    await client.post("/sessions", json={"id": "s2"})
                    await watcher.until(lambda w: "s2" in w.sessions)
                    before = len(watcher.messages)
                    answer = await client.post("/sessions/s1/runs", json={"input": "long"})
                    events = len(re.findall(r"^event: ", answer.text, re.MULTILINE))
                    assert events > 300
                    await watcher.until(lambda w: w.state("s1", "s1-r1") == "completed")
                    run = watcher.run("s1", "s1-r1")
                    assert run["text"].endswith("word299")
                    assert run["events"] == events
                    assert run["output_tokens"] == 300
                    assert watcher.sessions["s1"]["output_tokens"] == 300
                    (model_call,) = run["model_calls"]
                    assert model_call["stop"] == "end_turn"
                    assert model_call["ended"] >= model_call["started"]
                    assert run["ended"] >= run["started"]
                    assert len(watcher.messages) - before < events / 10  # coalesced
                    await client.delete("/sessions/s2")
                    await watcher.until(lambda w: "s2" not in w.sessions)
                    assert watcher.messages[-1]["closed"] == ["s2"]


async def test_tool_calls_sub_agents_and_questions_are_in_the_tree() -> None:
    """Tool calls show their (cut) arguments, progress, result or error; a sub-agent's calls are its; a
    pending question is listed until it is answered."""
    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent(), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                await client.post("/sessions", json={"id": "s1"})
                async with watching(server) as watcher:
                    await client.post("/sessions/s1/runs", json={"input": "tools"})
                    await watcher.until(lambda w: w.state("s1", "s1-r1") == "completed")
                    measured, failed = watcher.run("s1", "s1-r1")["tool_calls"]
                    assert measured["name"] == "measure"
                    assert len(measured["arguments"]) == 240
                    assert measured["arguments"].startswith('{"what":"xxx')
                    assert (measured["progress"], measured["total"], measured["progress_message"]) == (1, 2, "half")
                    assert len(measured["result"]) == 240
                    assert measured["result"].endswith("…")
                    assert measured["error"] is None
                    assert measured["ended"] >= measured["started"]
                    assert failed["name"] == "broken"
                    assert "out of order" in failed["error"]
                    assert len(failed["error"]) == 240  # cut as arguments and results are

                    await client.post("/sessions/s1/runs", json={"input": "delegate"})
                    await watcher.until(lambda w: w.state("s1", "s1-r2") == "completed")
                    run = watcher.run("s1", "s1-r2")
                    assert run["agents"] == ["helper"]
                    assert [(call["name"], call["agent"]) for call in run["tool_calls"]] == [
                        (TRANSFER_TOOL, None),
                        ("look", "helper"),
                    ]
                    assert [call["agent"] for call in run["model_calls"]] == [None, "helper", "helper", None]
                    assert run["input_tokens"] > watcher.sessions["s1"]["runs"][0]["input_tokens"] > 0

                    started = await client.post("/sessions/s1/runs", json={"input": "ask", "detach": True})
                    rid = started.json()["run_id"]
                    await watcher.until(lambda w: w.sessions["s1"]["pending"] == 1)
                    (question,) = watcher.run("s1", rid)["pending"]
                    assert question["message"] == "Go on?"
                    assert question["schema"] == {"type": "boolean"}
                    answer = {"action": "accept", "content": True}
                    response = await client.post(f"/sessions/s1/elicitations/{question['id']}", json=answer)
                    assert response.status_code == 204
                    await watcher.until(lambda w: w.state("s1", rid) == "completed")
                    assert watcher.run("s1", rid)["pending"] == []
                    assert watcher.sessions["s1"]["pending"] == 0


async def test_cancelling_a_run_ends_it_with_run_finished_cancelled_and_nothing_else() -> None:
    """``POST .../runs/{rid}/cancel`` ends a run in flight (waiting for an answer) with its waiting call's
    ``ToolCallFinished`` (cancelled) and ``RunFinished`` ``cancelled``, nothing else; the run is then no longer
    in flight (404 ``unknown_run``), nor is one that never was."""
    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent(), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                await client.post("/sessions", json={"id": "s1"})
                async with watching(server) as watcher:
                    started = await client.post("/sessions/s1/runs", json={"input": "ask", "detach": True})
                    rid = started.json()["run_id"]
                    await watcher.until(lambda w: w.sessions["s1"]["pending"] == 1)
                    assert (await client.post(f"/sessions/s1/runs/{rid}/cancel")).status_code == 204
                    await watcher.until(lambda w: w.state("s1", rid) == "cancelled")
                    assert watcher.sessions["s1"]["pending"] == 0
                    # An attached run cancelled from elsewhere ends its own stream the same way.
                    ended: list[str] = []
                    async with trio.open_nursery() as nursery:

                        async def attached() -> None:
                            ended.append((await client.post("/sessions/s1/runs", json={"input": "ask"})).text)

                        nursery.start_soon(attached)
                        await watcher.until(lambda w: w.sessions["s1"]["pending"] == 1)
                        assert (await client.post("/sessions/s1/runs/s1-r2/cancel")).status_code == 204
                    assert ended[0].rstrip().endswith('"reason":"cancelled","message":null,"run_id":"s1-r2"}')
                log = await client.get(f"/sessions/s1/runs/{rid}/events")
                types = [json.loads(line[6:])["type"] for line in log.text.splitlines() if line.startswith("data: ")]
                assert types[-3:] == ["ElicitationRequest", "ToolCallFinished", "RunFinished"]
                assert json.loads(log.text.splitlines()[-2][6:])["reason"] == "cancelled"
                again = await client.post(f"/sessions/s1/runs/{rid}/cancel")
                assert (again.status_code, again.json()["error"]["type"]) == (404, "unknown_run")
                never = await client.post("/sessions/s1/runs/s1-r9/cancel")
                assert (never.status_code, never.json()["error"]["type"]) == (404, "unknown_run")


async def test_the_sign_in_sets_a_cookie_that_stands_in_for_the_token() -> None:
    """With a token: the page needs none, the stream and the API want the token or a sign-in's cookie
    (``HttpOnly``, ``SameSite=strict``, never the token itself); a wrong token is 401; another origin is 403."""
    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent(), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as anonymous:
                page = await anonymous.get("/inspect")
                assert page.status_code == 200
                assert page.headers["content-type"] == "text/html; charset=utf-8"
                assert page.headers["x-frame-options"] == "DENY"
                assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
                assert "/inspect/static/inspect.js" in page.text
                script = await anonymous.get("/inspect/static/inspect.js")
                assert script.headers["content-type"] == "text/javascript; charset=utf-8"
                assert (await anonymous.get("/inspect/static/inspect.css")).status_code == 200
                assert (await anonymous.get("/inspect/static/index.py")).status_code == 404
                assert (await anonymous.get("/inspect/events")).status_code == 401
                assert (await anonymous.post("/inspect/login")).status_code == 401
                wrong = await anonymous.post("/inspect/login", json={"token": "guess"})
                assert (wrong.status_code, wrong.json()["error"]["type"]) == (401, "unauthorized")
                assert (await anonymous.post("/inspect/login", json={"token": 5})).status_code == 401
                assert "set-cookie" not in wrong.headers
                foreign = await anonymous.post(
                    "/inspect/login", json={"token": TOKEN}, headers={"origin": "http://evil.example"}
                )
                assert (foreign.status_code, foreign.json()["error"]["type"]) == (403, "forbidden_origin")

                signed = await anonymous.post("/inspect/login", json={"token": TOKEN})
                assert signed.status_code == 204
                cookie = signed.headers["set-cookie"]
                assert cookie.startswith("trio_agents_inspect=")
                assert TOKEN not in cookie
                assert {"HttpOnly", "Path=/", "SameSite=strict"} <= {part.strip() for part in cookie.split(";")}
                # The client keeps the cookie: from now on it may watch and act without the header.
                assert (await anonymous.post("/inspect/login")).status_code == 204
                assert (await anonymous.post("/sessions", json={"id": "s1"})).status_code == 201
                async with watching(server, headers={}) as watcher:
                    assert [node["id"] for node in watcher.messages[0]["sessions"]] == ["s1"]
                anonymous.cookies.set("trio_agents_inspect", "forged", domain="127.0.0.1")
                assert (await anonymous.get("/sessions")).status_code == 401
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                assert (await client.post("/inspect/login")).status_code == 204  # the header will do


async def test_a_sign_in_with_a_lone_surrogate_for_token_is_401() -> None:
    """``{"token": "\\ud800"}`` (valid JSON, a string UTF-8 cannot encode) is a wrong token: 401
    unauthorized, no cookie; not a 500."""
    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent(), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as anonymous:
                for token in [b'"\\ud800"', b'"s3cre\\udc74"', b'"\\udfff\\ud800"']:
                    body = b'{"token": ' + token + b"}"
                    answer = await anonymous.post("/inspect/login", content=body, headers=JSON)
                    assert (answer.status_code, answer.json()["error"]["type"]) == (401, "unauthorized")
                    assert "set-cookie" not in answer.headers


async def test_without_a_token_the_sign_in_needs_nothing() -> None:
    """With no token set, ``POST /inspect/login`` answers 204 without a cookie, and the stream is open."""
    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent()) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
                answer = await client.post("/inspect/login")
                assert answer.status_code == 204
                assert "set-cookie" not in answer.headers
                async with watching(server, headers={}) as watcher:
                    assert watcher.messages[0]["sessions"] == []


async def test_a_thousand_sessions_make_a_compact_snapshot_and_few_messages() -> None:
    """With 1,000 sessions (each after a run), the snapshot is a few hundred KiB, and closing them all
    reaches a watcher in a handful of coalesced messages."""
    with trio.fail_after(60):
        async with open_server(make_agent(), token=TOKEN, max_sessions=None) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:

                async def make(first: int) -> None:
                    for n in range(first, 1000, 20):
                        await client.post("/sessions", json={"id": f"s{n}"})
                        await client.post(f"/sessions/s{n}/runs", json={"input": "hi"})

                async with trio.open_nursery() as nursery:
                    for first in range(20):
                        nursery.start_soon(make, first)
                async with watching(server) as watcher:
                    snapshot = watcher.messages[0]
                    assert len(snapshot["sessions"]) == 1000
                    assert all(node["runs"][0]["state"] == "completed" for node in snapshot["sessions"])
                    size = len(json.dumps(snapshot))
                    assert size < 1_000_000, size
                    with trio.CancelScope(shield=True):
                        await server._close_sessions()
                    await watcher.until(lambda w: not w.sessions)
                    assert len(watcher.messages) < 20, len(watcher.messages)


async def test_a_slow_subscriber_holds_the_latest_state_not_a_queue() -> None:
    """A subscriber that reads nothing while runs come and go holds one entry per session, and its next
    message is the latest state of each."""
    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent(), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                await client.post("/sessions", json={"id": "s1"})
                subscriber: InspectorSubscriber = server.inspector.subscribe()
                try:
                    assert subscriber.next_nowait() is not None  # the snapshot
                    for _ in range(5):
                        await client.post("/sessions/s1/runs", json={"input": "long"})
                    assert subscriber._dirty_ids == {"s1"}
                    message = await subscriber.next()
                    assert message is not None
                    kind, data = message
                    assert kind == "Changed"
                    (node,) = data["sessions"]
                    assert node["run_count"] == 5
                    assert node["runs"][-1]["state"] == "completed"
                    assert node["output_tokens"] == 1500
                    with trio.testing.assert_checkpoints():
                        with trio.move_on_after(0.05):
                            await subscriber.next()  # nothing changed since
                finally:
                    server.inspector.unsubscribe(subscriber)
                assert server.inspector.subscribers == 0


async def test_a_session_closed_and_opened_again_within_one_message_is_open_in_it() -> None:
    """A session closed and opened again under its id before the next message is in that message's sessions,
    not its closed (which a watcher applies last); one opened and closed meanwhile is only in closed."""
    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent(), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                await client.post("/sessions", json={"id": "s1"})
                subscriber: InspectorSubscriber = server.inspector.subscribe()
                try:
                    message = subscriber.next_nowait()
                    assert message is not None
                    watcher = Watcher()
                    watcher.take(message[1])
                    assert (await client.delete("/sessions/s1")).status_code == 204
                    assert (await client.post("/sessions", json={"id": "s1"})).status_code == 201
                    assert (await client.post("/sessions", json={"id": "s2"})).status_code == 201
                    assert (await client.delete("/sessions/s2")).status_code == 204
                    message = await subscriber.next()
                    assert message is not None
                    kind, data = message
                    watcher.take(data)
                finally:
                    server.inspector.unsubscribe(subscriber)
    assert kind == "Changed"
    assert [node["id"] for node in data["sessions"]] == ["s1"]
    assert data["closed"] == ["s2"]
    assert set(watcher.sessions) == {"s1"}


async def test_stream_handlers_counters_and_remote_listeners_are_looked_at() -> None:
    """A session's stream handler and its counters, and the process's remote listeners, reach the tree
    without an event of their own (looked at once a second)."""
    handled: list[Event] = []

    async def keep(event: Event) -> None:
        handled.append(event)

    with trio.fail_after(TIMEOUT):
        async with open_server(make_agent(), token=TOKEN) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                await client.post("/sessions", json={"id": "s1"})
                server.sessions["s1"].session.add_handler(keep, overflow="drop_oldest")
                async with watching(server) as watcher:
                    (handler,) = watcher.sessions["s1"]["handlers"]
                    assert (handler["name"], handler["overflow"], handler["handled"]) == (
                        "test_stream_handlers_counters_and_remote_listeners_are_looked_at.<locals>.keep",
                        "drop_oldest",
                        0,
                    )
                    answer = await client.post("/sessions/s1/runs", json={"input": "hello"})
                    events = len(re.findall(r"^event: ", answer.text, re.MULTILINE))
                    await watcher.until(lambda w: w.sessions["s1"]["handlers"][0]["handled"] == events)
                    with LISTENERS.claim(("http://elsewhere:8000", "remote-1")):
                        await watcher.until(lambda w: w.messages[-1].get("listeners"))
                        assert watcher.messages[-1]["listeners"] == [
                            {"url": "http://elsewhere:8000", "session": "remote-1"}
                        ]
                    await watcher.until(lambda w: w.messages[-1].get("listeners") == [])


async def test_the_stream_ends_when_the_server_stops() -> None:
    """Leaving the server's block ends a watcher's stream (after the sessions' last changes), without
    waiting for Hypercorn's graceful timeout."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with open_server(make_agent(), token=TOKEN, graceful_timeout=30) as server:
                await server.open_session("s1")
                watcher = Watcher()

                async def read(task_status: trio.TaskStatus[None]) -> None:
                    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, headers=AUTH) as client:
                        async with client.stream("GET", "/inspect/events") as response:
                            task_status.started()
                            async with aclosing(cast("AsyncGenerator[str]", response.aiter_lines())) as lines:
                                async for line in lines:
                                    if line.startswith("data: "):
                                        watcher.take(json.loads(line.removeprefix("data: ")))
                    watcher.ended = True

                await nursery.start(read)
                await watcher.until(lambda w: w.messages)
                stopping = trio.current_time()
        assert trio.current_time() - stopping < 5
        assert watcher.ended
        assert watcher.sessions == {}


async def test_questions_a_durable_session_kept_across_a_restart_are_on_its_interrupted_run(tmp_path: Path) -> None:
    """A session opened from its store with a question still waiting (its process stopped while the run asked
    it) shows the question on that run, interrupted, so it can be answered from the page; the answer resumes
    the run, and the question leaves the tree. The tree showed no run and no question: the README's "approve
    or decline a pending question from the page" was impossible for exactly the questions that outlive a
    restart."""
    image, asked = await crash_at(tmp_path, "d", "pay 3", ElicitationRequest)
    with trio.fail_after(TIMEOUT):
        async with open_server(durable_agent(), store=SQLiteStore(image)) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
                async with watching(server, headers={}) as watcher:
                    assert (await client.get("/sessions/d")).status_code == 200  # opened from the store
                    await watcher.until(lambda w: "d" in w.sessions)
                    assert watcher.sessions["d"]["pending"] == 1
                    assert watcher.state("d", "d-r1") == "interrupted"
                    (question,) = watcher.run("d", "d-r1")["pending"]
                    assert (question["id"], question["message"]) == (asked.id, asked.message)
                    answer = await client.post(f"/sessions/d/elicitations/{asked.id}", json={"action": "accept"})
                    assert answer.status_code == 202, answer.text
                    resumed = answer.json()["run_id"]
                    await watcher.until(lambda w: w.state("d", resumed) == "completed")
                    assert watcher.run("d", "d-r1")["pending"] == []
                    assert watcher.sessions["d"]["pending"] == 0
