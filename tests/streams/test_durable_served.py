"""Durable served sessions, with real server processes killed with SIGKILL and started again on one store.

Each test runs ``python -m streams serve --store ...`` as a child process,
drives it over HTTP, kills it with ``kill -9`` at the point the test names
(waiting for an event, never sleeping), and starts a new process on the
same store. ``tests/streams/durable_agent.py`` writes what really happened
(model calls, payments) to a ledger file shared by both processes.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from tests.processes import Child, running

if TYPE_CHECKING:
    from pathlib import Path

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


async def start(nursery: trio.Nursery, store: str, ledger: Path) -> Served:
    """Start a server process on ``store`` in ``nursery``'s lifetime and wait until it listens."""

    async def serve(task_status: trio.TaskStatus[Served]) -> None:
        args = ("-m", "streams", "serve", "--agent", AGENT, "--port", "0", "--store", store)
        async with running(*args, env={"DURABLE_LEDGER": str(ledger)}) as child:
            url = (await child.wait_for(URL))[1]
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                task_status.started(Served(child, url, client))
                await child.process.wait()

    served: Served = await nursery.start(serve)
    return served


async def sse_events(
    client: httpx.AsyncClient, method: str, path: str, *, until: str | None = None, **kwargs: Any
) -> list[dict[str, Any]]:
    """The JSON events of an SSE response, to its end or up to the first of type ``until``."""
    events: list[dict[str, Any]] = []
    async with client.stream(method, path, **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        lines = response.aiter_lines()
        try:
            async for line in lines:
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
                    if events[-1]["type"] == until:
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
            events = await sse_events(
                first.client, "POST", "/sessions/d1/runs", until="ElicitationRequest", json={"input": "pay 5"}
            )
            request = events[-1]
            assert request["type"] == "ElicitationRequest"
            first.kill()

            second = await start(nursery, sqlite_store, ledger)
            state = (await second.client.get("/sessions/d1")).json()
            assert state["runs"] == 1
            assert [pending["id"] for pending in state["pending"]] == [request["id"]]
            assert state["pending"][0]["message"] == request["message"]
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


async def test_a_run_killed_mid_tool_is_marked_interrupted_and_the_session_goes_on(
    sqlite_store: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await start(nursery, sqlite_store, ledger)
            assert (await first.client.post("/sessions", json={"id": "d2"})).status_code == 201
            events = await sse_events(
                first.client, "POST", "/sessions/d2/runs", until="ToolCallStarted", json={"input": "stall"}
            )
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
