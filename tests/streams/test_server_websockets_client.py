"""open_server's WebSocket endpoints with a client no one here wrote: the ``websockets`` package (asyncio).

Each client runs in a Trio worker thread (``trio.to_thread.run_sync(asyncio.run, ...)``),
bounded by ``asyncio.timeout``; it synchronises with the server through
``trio.from_thread``: ``caught_up()`` waits until every Trio task is blocked, so
the server has subscribed the connection before the test goes on. Real
sockets, so the real clock, with ``trio.fail_after`` around every test.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pytest
import trio
import trio.testing
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from agents import ToolCall
from streams import WORKSPACE_TOOLS, Server

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from agents import Tool
    from tests.streams.conftest import Create, MakeAgent, RunAttached, Serving

T = TypeVar("T")

TIMEOUT: Final = 10
TOKEN: Final = "s3cret-token"


def ws_url(server: Server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


# -- running a websockets client in a thread -------------------------------------


def open_ws(url: str, **options: Any) -> connect:
    """``websockets.connect`` with explicit timeouts and no proxy from the environment."""
    return connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, proxy=None, **options)


def caught_up() -> None:
    """From the client's thread: wait until every Trio task is blocked (the server has done what it will)."""
    trio.from_thread.run(trio.testing.wait_all_tasks_blocked)


def tell(event: trio.Event) -> None:
    """From the client's thread: set a Trio event."""
    trio.from_thread.run_sync(event.set)


async def in_thread(client: Callable[[], Awaitable[T]]) -> T:
    """Run an asyncio client in a Trio worker thread, bounded by ``TIMEOUT``."""

    async def bounded() -> T:
        async with asyncio.timeout(TIMEOUT):
            return await client()

    return await trio.to_thread.run_sync(asyncio.run, bounded())


class Result:
    """Where a client started with :func:`start_client` leaves what it returned."""

    value: Any = None


def start_client(nursery: trio.Nursery, client: Callable[[], Awaitable[Any]]) -> Result:
    result = Result()

    async def run() -> None:
        result.value = await in_thread(client)

    nursery.start_soon(run)
    return result


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    frame = await ws.recv()
    assert isinstance(frame, str)
    data = json.loads(frame)
    assert isinstance(data, dict)
    return data


async def command(ws: ClientConnection, message: dict[str, Any] | str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send a workspace command; its answer, and the messages (changes) that came before it."""
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    before: list[dict[str, Any]] = []
    while True:
        data = await receive_json(ws)
        if data["type"] == "result":
            return data, before
        before.append(data)


# -- updates -------------------------------------------------------------------


async def test_updates_stream_gets_every_event_of_a_run_and_1000_when_the_session_is_deleted(
    add: Tool, make_agent: MakeAgent, serving: Serving, create: Create, run_attached: RunAttached
) -> None:
    """A websockets client on /updates receives each event of a run started over HTTP, in order, with
    its run_id, ending with RunFinished; deleting the session closes it with code 1000."""
    connected = trio.Event()

    async def watch() -> tuple[list[dict[str, Any]], int | None]:
        async with open_ws(ws_url(server, "/sessions/s1/updates")) as ws:
            caught_up()
            tell(connected)
            messages = [json.loads(frame) async for frame in ws]  # until a normal close
            return messages, ws.close_code

    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(add, call=ToolCall("add", {"a": 2, "b": 3}))) as (server, client):
            await create(client, "s1")
            async with trio.open_nursery() as nursery:
                watched = start_client(nursery, watch)
                await connected.wait()
                run = await run_attached(client, "s1", "tool: add")
                assert (await client.delete("/sessions/s1")).status_code == 204

    messages, code = watched.value
    assert code == 1000
    assert messages == run
    types = [message["type"] for message in messages]
    assert types[0] == "RunStarted"
    assert types.index("ToolCallStarted") < types.index("ToolCallFinished") < types.index("TextDelta")
    assert messages[-1] == {"type": "RunFinished", "reason": "completed", "message": None, "run_id": "s1-r1"}
    assert {message["run_id"] for message in messages} == {"s1-r1"}


async def test_server_shutdown_closes_websocket_clients_with_1001(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """Leaving open_server closes a connected updates client and a workspace client with code 1001."""
    connected = trio.Event()

    async def watch() -> tuple[int | None, int | None]:
        async with (
            open_ws(ws_url(server, "/sessions/s1/updates")) as updates,
            open_ws(ws_url(server, "/sessions/s1/workspace")) as workspace,
        ):
            caught_up()
            tell(connected)
            await asyncio.gather(updates.wait_closed(), workspace.wait_closed())
            return updates.close_code, workspace.close_code

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with serving(make_agent()) as (server, client):
                await create(client, "s1")
                watched = start_client(nursery, watch)
                await connected.wait()
                assert server.statistics().websockets == 2
            # The server has shut down with both connected.

    assert watched.value == (1001, 1001)


# -- workspace -----------------------------------------------------------------


async def test_workspace_commands_are_answered_and_a_malformed_one_keeps_the_connection(
    make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """read/write/delete/list get their answers (a write's change comes first); a malformed command
    gets ok:false with a typed error (id null if it has none) and the connection stays open for the next."""

    async def talk() -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        async with open_ws(ws_url(server, "/sessions/s1/workspace")) as ws:
            return [
                await command(ws, {"id": "c1", "op": "write", "path": "a.txt", "content": "hello"}),
                await command(ws, {"id": "c2", "op": "read", "path": "a.txt"}),
                await command(ws, {"id": "c3", "op": "write", "path": "b.txt", "content": "bee"}),
                await command(ws, {"id": "c4", "op": "list"}),
                await command(ws, {"id": "c5", "op": "read", "path": "missing.txt"}),
                await command(ws, "this is not JSON"),
                await command(ws, {"op": "read"}),  # no path, and no id
                await command(ws, {"id": "c8", "op": "explode", "path": "a.txt"}),
                await command(ws, json.dumps(["c9", "read"])),
                await command(ws, {"id": "c10", "op": "delete", "path": "a.txt"}),
                await command(ws, {"id": "c11", "op": "read", "path": "a.txt"}),
                await command(ws, {"id": "c12", "op": "list"}),
            ]

    with trio.fail_after(TIMEOUT):
        async with serving(make_agent()) as (server, client):
            await create(client, "s1")
            answers = await in_thread(talk)
            files = server.sessions["s1"].workspace.list()

    results = [result for result, _ in answers]
    changes = [before for _, before in answers]
    assert results[0] == {"type": "result", "id": "c1", "ok": True}
    assert changes[0] == [{"type": "WorkspaceChanged", "op": "write", "path": "a.txt", "source": "client"}]
    assert results[1] == {"type": "result", "id": "c2", "ok": True, "content": "hello"}
    assert results[3] == {"type": "result", "id": "c4", "ok": True, "paths": ["a.txt", "b.txt"]}
    expected = [("c5", "no_such_file"), (None, "bad_json"), (None, "bad_command"), ("c8", "bad_command")]
    for result, (expected_id, kind) in zip(results[4:9], [*expected, (None, "bad_command")], strict=True):
        assert result["ok"] is False
        assert result["id"] == expected_id
        assert set(result["error"]) == {"type", "message"}
        assert result["error"]["type"] == kind
        assert isinstance(result["error"]["message"], str)
        assert result["error"]["message"]
    assert results[9] == {"type": "result", "id": "c10", "ok": True}
    assert changes[9] == [{"type": "WorkspaceChanged", "op": "delete", "path": "a.txt", "source": "client"}]
    assert results[10]["ok"] is False
    assert results[10]["error"]["type"] == "no_such_file"
    assert results[11] == {"type": "result", "id": "c12", "ok": True, "paths": ["b.txt"]}
    assert changes[2] == [{"type": "WorkspaceChanged", "op": "write", "path": "b.txt", "source": "client"}]
    assert all(before == [] for before in [changes[1], *changes[3:9], *changes[10:]])
    assert files == ["b.txt"]


async def test_workspace_changes_reach_every_connection_with_their_source(
    make_agent: MakeAgent, serving: Serving, create: Create, run_attached: RunAttached
) -> None:
    """A client's write reaches a second connection as a WorkspaceChanged (source client); an agent's
    write_file during a run reaches both (source agent)."""
    first_seen = trio.Event()
    agent = make_agent(*WORKSPACE_TOOLS, call=ToolCall("write_file", {"path": "plan.md", "content": "# Plan"}))

    async def watch() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        url = ws_url(server, "/sessions/s1/workspace")
        async with open_ws(url) as writer, open_ws(url) as watcher:
            caught_up()
            result, _ = await command(writer, {"id": "w1", "op": "write", "path": "a.txt", "content": "A"})
            seen = [await receive_json(watcher)]
            tell(first_seen)  # now the agent writes
            seen.append(await receive_json(watcher))
            return result, seen, [await receive_json(writer)]

    with trio.fail_after(TIMEOUT):
        async with serving(agent) as (server, client):
            await create(client, "s1")
            async with trio.open_nursery() as nursery:
                watched = start_client(nursery, watch)
                await first_seen.wait()
                run = await run_attached(client, "s1", "tool: write the plan")
            workspace = server.sessions["s1"].workspace
            files = {path: workspace.read(path) for path in workspace.list()}

    result, seen, writer_seen = watched.value
    assert result == {"type": "result", "id": "w1", "ok": True}
    assert seen == [
        {"type": "WorkspaceChanged", "op": "write", "path": "a.txt", "source": "client"},
        {"type": "WorkspaceChanged", "op": "write", "path": "plan.md", "source": "agent"},
    ]
    assert writer_seen == [seen[1]]
    assert run[-1]["reason"] == "completed"
    assert files == {"a.txt": "A", "plan.md": "# Plan"}


# -- handshakes ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/sessions/{sid}/updates", "/sessions/{sid}/workspace"])
async def test_handshakes_are_rejected_with_401_and_404(
    path: str, make_agent: MakeAgent, serving: Serving, create: Create
) -> None:
    """Without the token (or with a wrong one) the handshake gets 401; with it, an unknown session gets 404."""

    async def status(sid: str, headers: dict[str, str]) -> int:
        try:
            async with open_ws(ws_url(server, path.format(sid=sid)), additional_headers=headers) as ws:
                await ws.close()
                return 101
        except InvalidStatus as rejected:
            return rejected.response.status_code

    async def attempts() -> list[int]:
        good = {"Authorization": f"Bearer {TOKEN}"}
        return [
            await status("s1", {}),
            await status("s1", {"Authorization": "Bearer nope"}),
            await status("nope", good),
            await status("s1", good),
        ]

    with trio.fail_after(TIMEOUT):
        async with serving(make_agent(), token=TOKEN) as (server, client):
            await create(client, "s1")
            statuses = await in_thread(attempts)
    assert statuses == [401, 401, 404, 101]
