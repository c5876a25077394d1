"""Network faults between the served runtime and its clients, injected by ``fault_proxy``, under the leak checker.

Real sockets, so the real clock: each test is bounded by ``trio.fail_after``
and waits on events (the proxy's connection and byte counters, a handler's
messages, a tool's ``trio.Event``) or on ``wait_all_tasks_blocked``. A
``move_on_after`` only ever bounds a check that something does *not* happen.
"""

from __future__ import annotations

import functools
import itertools
import json
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import wrap_client_stream

from agents import Agent, ScriptedModel, ToolCall, UserMessage, tool
from runtime import open_runtime
from streams import (
    LISTENERS,
    Backoff,
    ListenerBusyError,
    ListenerRegistry,
    RemoteEvent,
    RemoteSession,
    SSEMessage,
    StreamClosedError,
    open_server,
    open_sse_listener,
    open_updates_stream,
    open_workspace_stream,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from trio_websocket import WebSocketConnection

    from agents import ModelRequest, Tool
    from agents.models import Turn
    from runtime import Runtime, SessionHandle
    from streams import Server
    from tests.streams.conftest import FaultProxy, Recorder

BOUND: Final = 10.0
"""A generous bound on anything that should happen (real sockets, real clock)."""
PROMPT: Final = 2.0
"""How fast closing a session must be, whatever its connections are doing."""
ABSENCE: Final = 0.2
"""How long a test watches for something that must not happen."""


# -- agents --------------------------------------------------------------------


def _echo(request: ModelRequest) -> Turn:
    last = request.messages[-1]
    if isinstance(last, UserMessage) and last.text.startswith("tool"):
        return ToolCall("wait_here")
    if isinstance(last, UserMessage):
        return f"echo: {last.content}"
    return "All done."


def make_agent(*tools: Tool, turn: Callable[[ModelRequest], Turn] = _echo) -> Agent:
    """An agent whose model needs no script position: any number of runs, in any session."""
    return Agent(name="bot", model=ScriptedModel(itertools.repeat(turn)), tools=list(tools))


LOCAL_AGENT: Final = Agent(name="local", model=ScriptedModel([]))
"""The agent of the local sessions that own remote listeners; it never runs."""


# -- helpers -------------------------------------------------------------------


@contextmanager
def _within(seconds: float) -> Iterator[None]:
    """Fail if the block takes ``seconds`` or more.

    Not ``fail_after``: closing waits shielded from cancellation, so a slow
    close would simply finish late and pass.
    """
    start = trio.current_time()
    yield
    elapsed = trio.current_time() - start
    assert elapsed < seconds, f"took {elapsed:.2f} s (at most {seconds} s allowed)"


def _notice(message: str) -> Callable[[RemoteEvent], bool]:
    return lambda event: event.stream == "feed" and event.data == {"type": "Notice", "message": message}


def _state(state: str) -> Callable[[RemoteEvent], bool]:
    return lambda event: event.stream == "feed" and event.type == "SessionState" and event.data["state"] == state


def _via(proxy: FaultProxy) -> str:
    return f"http://127.0.0.1:{proxy.port}"


async def _create_session(server: Server, session_id: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=BOUND) as client:
        response = await client.post("/sessions", json={"id": session_id})
    assert response.status_code == 201, response.text


async def _start_remote(runtime: Runtime, remote: RemoteSession, *, idle_timeout: float | None = None) -> SessionHandle:
    """A local session owning ``remote``'s listener (``maintain``), started as the spec says."""
    handle = await runtime.start_session(LOCAL_AGENT, idle_timeout=idle_timeout)
    await handle.session.start(remote.maintain)
    return handle


async def _connect_then_stop_server(
    runtime: Runtime, remote: RemoteSession, proxy: FaultProxy, agent: Agent
) -> SessionHandle:
    """Start ``remote`` (``_start_remote``) against a server for ``agent`` behind ``proxy``, then stop that server.

    Returns once the proxy has no connections left and every task is blocked:
    the remote has seen all three streams end.
    """
    async with open_server(agent) as server:
        proxy.upstream = ("127.0.0.1", server.port)
        with trio.fail_after(BOUND):
            handle = await _start_remote(runtime, remote)
            await remote.wait_connected()
    with trio.fail_after(BOUND):
        await proxy.wait_connections(0)
        await trio.testing.wait_all_tasks_blocked()
    return handle


# -- 1. a blackholed between-run listener ----------------------------------------


async def test_blackholed_remote_session_closes_promptly_and_frees_its_listener(
    fault_proxy: FaultProxy, new_recorder: Callable[[], Recorder]
) -> None:
    """A RemoteSession on a peer that went silent (no FIN) ends at once with its session, freeing its registry entry.

    The entry is in the process-wide ``LISTENERS``; a second listener for the
    same remote session is refused while the first lives, and starts once it
    is gone.
    """
    recorder = new_recorder()
    async with open_server(make_agent()) as server, open_runtime() as local:
        fault_proxy.upstream = ("127.0.0.1", server.port)
        key = (_via(fault_proxy), "s1")
        # A long disconnect_timeout: a close handshake attempted on the way out would show as a slow close.
        remote = RemoteSession(_via(fault_proxy), "s1", handler=recorder, disconnect_timeout=BOUND)
        with trio.fail_after(BOUND):
            handle = await _start_remote(local, remote)
            await remote.wait_connected()
            await recorder.wait_for(_state("idle"))
        assert key in LISTENERS.active
        other = await local.start_session(LOCAL_AGENT)
        with pytest.raises(ListenerBusyError):
            await other.session.start(RemoteSession(_via(fault_proxy), "s1").maintain)

        fault_proxy.blackhole()
        server.sessions["s1"].notify("into the void")
        with trio.move_on_after(ABSENCE) as quiet:
            await recorder.wait_for(_notice("into the void"))
        assert quiet.cancelled_caught, "the blackhole let the feed through: the test proves nothing"

        with _within(PROMPT):
            await handle.aclose()
        assert key not in LISTENERS.active
        assert remote.statistics().connected == frozenset()

        fault_proxy.forward()
        again = new_recorder()
        successor = RemoteSession(_via(fault_proxy), "s1", handler=again)
        with trio.fail_after(BOUND):
            await other.session.start(successor.maintain)
            await successor.wait_connected()
            await again.wait_for(_state("idle"))
            assert key in LISTENERS.active
            await other.aclose()
        assert key not in LISTENERS.active


async def test_blackholed_sse_listener_in_a_session_task_ends_with_the_session(fault_proxy: FaultProxy) -> None:
    """``open_sse_listener`` reading a silent feed in a session's task ends when the session closes; its socket goes."""
    got: list[SSEMessage] = []
    first = trio.Event()
    second = trio.Event()

    async def listen(url: str, *, task_status: trio.TaskStatus[None]) -> None:
        async with open_sse_listener(url, connect_timeout=BOUND) as feed:
            task_status.started()
            async for message in feed:
                got.append(message)
                (second if first.is_set() else first).set()

    async with open_server(make_agent()) as server, open_runtime() as local:
        await _create_session(server, "s1")
        fault_proxy.upstream = ("127.0.0.1", server.port)
        handle = await local.start_session(LOCAL_AGENT)
        with trio.fail_after(BOUND):
            await handle.session.start(listen, f"{_via(fault_proxy)}/sessions/s1/feed")
            await first.wait()
        fault_proxy.blackhole()
        server.sessions["s1"].notify("unheard")
        with trio.move_on_after(ABSENCE) as quiet:
            await second.wait()
        assert quiet.cancelled_caught, "the blackhole let the feed through: the test proves nothing"
        assert [message.data["type"] for message in got] == ["SessionState"]

        with _within(PROMPT):
            await handle.aclose()
        fault_proxy.forward()  # deliver the held FIN: the proxy's link closes only if the client closed
        with trio.fail_after(BOUND):
            await fault_proxy.wait_connections(0)


async def test_idle_reaping_ends_a_blackholed_remote_session(fault_proxy: FaultProxy) -> None:
    """A session whose only task is ``maintain`` is idle: it is reaped on time though its peer is silent."""
    registry = ListenerRegistry()
    idle = 1.0
    async with open_server(make_agent()) as server, open_runtime() as local:
        fault_proxy.upstream = ("127.0.0.1", server.port)
        remote = RemoteSession(_via(fault_proxy), "s1", registry=registry, disconnect_timeout=BOUND)
        with trio.fail_after(BOUND):
            handle = await _start_remote(local, remote, idle_timeout=idle)
            await remote.wait_connected()
        fault_proxy.blackhole()
        assert not handle.closed
        assert registry.active == {(_via(fault_proxy), "s1")}
        with trio.fail_after(BOUND), _within(idle + PROMPT):
            await handle.wait_closed()
        assert registry.active == frozenset()
        assert handle.error is None


async def test_reaping_a_session_mid_dial_frees_its_listener(fault_proxy: FaultProxy) -> None:
    """A RemoteSession still dialling a blackholed peer (the first request hangs) is reaped on time and let go."""
    registry = ListenerRegistry()
    idle = 0.5
    async with open_server(make_agent()) as server, open_runtime() as local:
        fault_proxy.upstream = ("127.0.0.1", server.port)
        fault_proxy.blackhole()
        remote = RemoteSession(_via(fault_proxy), "s1", registry=registry, connect_timeout=BOUND)
        handle = await _start_remote(local, remote, idle_timeout=idle)
        with trio.fail_after(BOUND):
            await fault_proxy.wait_accepted(1)
        assert registry.active == {(_via(fault_proxy), "s1")}
        with trio.fail_after(BOUND), _within(idle + PROMPT):
            await handle.wait_closed()
        assert registry.active == frozenset()
        assert remote.statistics().connects == 0
        fault_proxy.forward()
        with trio.fail_after(BOUND):
            await fault_proxy.wait_connections(0)


# -- 2. a workspace stream left mid-dial or mid-message ---------------------------


async def test_workspace_stream_left_mid_dial_leaves_nothing(fault_proxy: FaultProxy) -> None:
    """Cancelling ``open_workspace_stream`` while its handshake hangs returns at once and closes the socket."""
    entered = False

    async def client(url: str, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        nonlocal entered
        with trio.CancelScope() as scope:
            task_status.started(scope)
            async with open_workspace_stream(url, connect_timeout=BOUND, disconnect_timeout=BOUND):
                entered = True

    async with open_server(make_agent()) as server:
        await _create_session(server, "s1")
        fault_proxy.upstream = ("127.0.0.1", server.port)
        fault_proxy.blackhole()
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                scope = await nursery.start(client, f"ws://127.0.0.1:{fault_proxy.port}/sessions/s1/workspace")
                await fault_proxy.wait_accepted(1)
                await trio.testing.wait_all_tasks_blocked()
                cancelled_at = trio.current_time()
                scope.cancel()
        assert trio.current_time() - cancelled_at < PROMPT, "leaving the block mid-dial was slow"
        assert not entered
        fault_proxy.forward()  # the link closes only on the client's FIN (else it would now carry the handshake)
        with trio.fail_after(BOUND):
            await fault_proxy.wait_connections(0)
            await trio.testing.wait_all_tasks_blocked()  # the server has read the FIN too
        assert server.statistics().websockets == 0


async def test_workspace_stream_left_mid_message_leaves_nothing(fault_proxy: FaultProxy) -> None:
    """Cancelling ``open_workspace_stream`` while an answer is half received ends its loops and its connection."""
    big = "x" * (2 * 2**20)
    answered = False

    async def client(url: str, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        nonlocal answered
        with trio.CancelScope() as scope:
            async with open_workspace_stream(
                url, connect_timeout=BOUND, disconnect_timeout=BOUND, request_timeout=BOUND
            ) as workspace:
                task_status.started(scope)
                await workspace.request("read", "big.txt")
                answered = True

    async with open_server(make_agent()) as server:
        await _create_session(server, "s1")
        server.sessions["s1"].workspace.write("big.txt", big)
        fault_proxy.upstream = ("127.0.0.1", server.port)
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                scope = await nursery.start(client, f"ws://127.0.0.1:{fault_proxy.port}/sessions/s1/workspace")
                fault_proxy.delay(0.25)  # the 2 MiB answer now trickles, one chunk per delay
                await fault_proxy.wait_bytes(down=fault_proxy.bytes_down + 1)
                assert fault_proxy.bytes_down < len(big)
                cancelled_at = trio.current_time()
                scope.cancel()
        assert trio.current_time() - cancelled_at < PROMPT, "leaving the block mid-message was slow"
        assert not answered
        fault_proxy.forward()
        with trio.fail_after(BOUND):
            await fault_proxy.wait_connections(0)


def _dial(kind: str, port: int) -> AbstractAsyncContextManager[object]:
    if kind == "feed":
        return open_sse_listener(f"http://127.0.0.1:{port}/sessions/s1/feed", connect_timeout=BOUND)
    opener = open_workspace_stream if kind == "workspace" else open_updates_stream
    return opener(f"ws://127.0.0.1:{port}/sessions/s1/{kind}", connect_timeout=BOUND)


@pytest.mark.parametrize("kind", ["workspace", "updates", "feed"])
async def test_reset_mid_dial_fails_at_once(fault_proxy: FaultProxy, kind: str) -> None:
    """A reset while connecting is a ``StreamClosedError`` at once, not a wait for ``connect_timeout``."""
    async with open_server(make_agent()) as server:
        await _create_session(server, "s1")
        fault_proxy.upstream = ("127.0.0.1", server.port)
        fault_proxy.blackhole()

        async def reset_mid_dial() -> None:
            await fault_proxy.wait_accepted(1)
            await trio.testing.wait_all_tasks_blocked()
            fault_proxy.reset()

        with trio.fail_after(BOUND + PROMPT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reset_mid_dial)
                with _within(PROMPT), pytest.raises(StreamClosedError):
                    async with _dial(kind, fault_proxy.port):
                        pass


# -- 3. a server restarted under a RemoteSession ---------------------------------


async def test_remote_session_reconnects_and_resumes_after_server_restart(
    fault_proxy: FaultProxy, new_recorder: Callable[[], Recorder]
) -> None:
    """Server A stops, B starts elsewhere: the RemoteSession recreates its session on B and all three streams resume."""
    recorder = new_recorder()
    registry = ListenerRegistry()
    agent = make_agent()
    async with open_runtime() as local:
        remote = RemoteSession(
            _via(fault_proxy), "s1", handler=recorder, registry=registry, backoff=Backoff(initial=0.05, maximum=0.2)
        )
        handle = await _connect_then_stop_server(local, remote, fault_proxy, agent)  # server A, now gone
        assert remote.statistics().connected == frozenset()
        with trio.fail_after(BOUND):
            await recorder.wait_for(_state("closed"))  # A's session said goodbye on the feed

        async with open_server(agent) as b:
            assert "s1" not in b.sessions
            fault_proxy.upstream = ("127.0.0.1", b.port)
            with trio.fail_after(BOUND):
                await remote.wait_connected()
                assert "s1" in b.sessions
                b.sessions["s1"].notify("hello from B")
                await recorder.wait_for(_notice("hello from B"))

                async with remote.run("after the restart") as updates:
                    events = [update.event async for update in updates]
                assert type(events[-1]).__name__ == "RunFinished"
                finished = await recorder.wait_for(lambda e: e.stream == "updates" and e.type == "RunFinished")
                assert finished.data["reason"] == "completed"

                await remote.workspace_request("write", "after.txt", "resumed")
                change = await recorder.wait_for(
                    lambda e: e.stream == "workspace" and e.data.get("path") == "after.txt"
                )
                assert change.data["source"] == "client"
                assert b.sessions["s1"].workspace.read("after.txt") == "resumed"
            assert remote.statistics().connects >= 6
            with _within(PROMPT):
                await handle.aclose()
        assert registry.active == frozenset()


async def test_remote_session_closed_during_backoff_exits_at_once(fault_proxy: FaultProxy) -> None:
    """With the server down and long backoffs (15-60 s), closing the owning session returns within a second."""
    registry = ListenerRegistry()
    async with open_runtime() as local:
        remote = RemoteSession(_via(fault_proxy), "s1", registry=registry, backoff=Backoff(initial=30, maximum=60))
        handle = await _connect_then_stop_server(local, remote, fault_proxy, make_agent())
        # Every stream ended and sleeps before its next attempt (the server is gone, so none is connected);
        # maintain is still running (it holds its claim), so the close below is what ends it.
        assert remote.statistics().connected == frozenset()
        assert registry.active == {(_via(fault_proxy), "s1")}
        with _within(1.0):
            await handle.aclose()
        assert registry.active == frozenset()


async def test_remote_session_closed_while_retrying_a_dead_server_exits_at_once(fault_proxy: FaultProxy) -> None:
    """A RemoteSession that never reached its server sleeps in backoff after failing; closing it is immediate."""
    registry = ListenerRegistry()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    fault_proxy.upstream = ("127.0.0.1", listeners[0].socket.getsockname()[1])
    await listeners[0].aclose()  # nothing listens there: every dial is refused
    async with open_runtime() as local:
        remote = RemoteSession(_via(fault_proxy), "s1", registry=registry, backoff=Backoff(initial=30, maximum=60))
        handle = await _start_remote(local, remote)
        with trio.fail_after(BOUND):
            await fault_proxy.wait_accepted(1)
            await fault_proxy.wait_connections(0)
            await trio.testing.wait_all_tasks_blocked()
        stats = remote.statistics()
        assert stats.failures == 3  # one failed attempt per stream: each now sleeps 15-30 s
        assert stats.connects == 0
        assert registry.active == {(_via(fault_proxy), "s1")}  # maintain did not give up: the close ends it
        with _within(1.0):
            await handle.aclose()
        assert registry.active == frozenset()


# -- 4. a slow updates consumer ---------------------------------------------------


WORD: Final = "w" * 8192
WORDS: Final = 800
"""A reply of 800 deltas of 8 KiB: far more than the socket buffers between the server and a stalled client."""
SUBSCRIBER_BUFFER: Final = 16


def _long_reply(request: ModelRequest) -> Turn:
    return " ".join([WORD] * WORDS)


@asynccontextmanager
async def _raw_updates_client(proxy: FaultProxy, session_id: str) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client of ``updates`` through ``proxy``, reading only when asked (it queues one message)."""
    with trio.fail_after(BOUND):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    async with stream, trio.open_nursery() as nursery:
        with trio.fail_after(BOUND):
            ws = await wrap_client_stream(nursery, stream, "127.0.0.1", f"/sessions/{session_id}/updates")
        yield ws
        nursery.cancel_scope.cancel()


async def _attached_run(server: Server, session_id: str, user_input: str) -> list[dict[str, Any]]:
    """Every event of a run, read as fast as it comes over its SSE response."""
    with trio.fail_after(BOUND):
        async with open_sse_listener(
            f"{server.url}/sessions/{session_id}/runs", method="POST", json_body={"input": user_input}
        ) as run:
            return [message.data async for message in run]


async def test_slow_updates_consumer_loses_the_oldest_events_not_memory(fault_proxy: FaultProxy) -> None:
    """A client that stops reading ``updates`` costs at most ``subscriber_buffer`` events; the run is not held up.

    When the client reads again it gets what the sockets held,
    ``EventsDropped`` markers adding up to what it lost, then exactly the
    last ``subscriber_buffer`` events: nothing else was kept for it.
    """
    async with open_server(make_agent(turn=_long_reply), subscriber_buffer=SUBSCRIBER_BUFFER) as server:
        await _create_session(server, "s1")
        fault_proxy.upstream = ("127.0.0.1", server.port)
        try:
            async with _raw_updates_client(fault_proxy, "s1") as ws:
                fault_proxy.blackhole()  # the client stalls: nothing it is sent gets through
                published = await _attached_run(server, "s1", "go")
                assert published[-1]["type"] == "RunFinished"
                assert published[-1]["reason"] == "completed"
                assert len(published) > WORDS

                dropped = server.statistics().updates_dropped
                assert dropped > 0
                (subscriber,) = server.sessions["s1"].updates._subscribers  # white box: what is held for it
                assert len(subscriber._items) <= SUBSCRIBER_BUFFER

                fault_proxy.forward()
                received: list[dict[str, Any]] = []
                with trio.fail_after(BOUND):
                    while not received or received[-1]["type"] != "RunFinished":
                        received.append(json.loads(await ws.get_message()))
                with trio.move_on_after(PROMPT):
                    await ws.aclose()
        finally:
            fault_proxy.reset()  # had a check failed mid-way, the server would be stuck sending into the blackhole
    markers = [i for i, message in enumerate(received) if message["type"] == "EventsDropped"]
    assert markers
    assert sum(received[i]["count"] for i in markers) == dropped
    assert len(received) - markers[-1] - 1 == SUBSCRIBER_BUFFER
    assert received[markers[-1] + 1 :] == published[-SUBSCRIBER_BUFFER:]
    assert len(received) - len(markers) + dropped == len(published)


async def test_server_shutdown_is_prompt_with_a_stalled_updates_client(fault_proxy: FaultProxy) -> None:
    """An ``updates`` peer that stopped reading (socket buffers full) and vanished without a FIN can't hold up shutdown.

    A watchdog resets the proxy after ``BOUND`` seconds, so a stuck shutdown
    fails this test instead of hanging it.
    """
    shut = trio.Event()

    async def watchdog() -> None:
        with trio.move_on_after(BOUND):
            await shut.wait()
        fault_proxy.reset()

    async with trio.open_nursery() as nursery:
        async with open_server(
            make_agent(turn=_long_reply), subscriber_buffer=SUBSCRIBER_BUFFER, graceful_timeout=1.0
        ) as server:
            await _create_session(server, "s1")
            fault_proxy.upstream = ("127.0.0.1", server.port)
            async with _raw_updates_client(fault_proxy, "s1"):
                fault_proxy.blackhole()
                await _attached_run(server, "s1", "go")
                assert server.statistics().updates_dropped > 0  # its sender is stuck on a full socket
            nursery.start_soon(watchdog)
            shutdown_at = trio.current_time()
        elapsed = trio.current_time() - shutdown_at
        shut.set()
    assert elapsed < 3.0, f"leaving open_server took {elapsed:.1f} s with a stalled client attached"


async def test_server_shutdown_is_prompt_with_blackholed_remote_sessions(fault_proxy: FaultProxy) -> None:
    """A RemoteSession's three streams on a blackholed link (no FIN, no reads) can't hold up leaving ``open_server``."""
    shut = trio.Event()

    async def watchdog() -> None:
        with trio.move_on_after(BOUND):
            await shut.wait()
        fault_proxy.reset()

    registry = ListenerRegistry()
    async with open_runtime() as local, trio.open_nursery() as nursery:
        remote = RemoteSession(_via(fault_proxy), "s1", registry=registry, backoff=Backoff(initial=30, maximum=60))
        async with open_server(make_agent(), graceful_timeout=1.0) as server:
            fault_proxy.upstream = ("127.0.0.1", server.port)
            with trio.fail_after(BOUND):
                handle = await _start_remote(local, remote)
                await remote.wait_connected()
            fault_proxy.blackhole()
            nursery.start_soon(watchdog)
            shutdown_at = trio.current_time()
        elapsed = trio.current_time() - shutdown_at
        shut.set()
        with _within(PROMPT):
            await handle.aclose()
    assert elapsed < 3.0, f"leaving open_server took {elapsed:.1f} s with blackholed clients attached"


# -- 5. shutting the served runtime down under attached SSE clients ---------------


async def test_server_shutdown_ends_attached_sse_streams_cleanly_and_promptly() -> None:
    """Leaving ``open_server`` ends a run stream blocked in a tool (``RunFinished`` cancelled) and a feed (closed)."""
    tool_started = trio.Event()
    running = trio.Event()
    run_messages: list[SSEMessage] = []
    feed_messages: list[SSEMessage] = []

    @tool
    async def wait_here() -> str:
        """Wait until the server goes away."""
        tool_started.set()
        await trio.sleep_forever()
        return "never"

    async def follow(url: str, into: list[SSEMessage], **options: Any) -> None:
        async with open_sse_listener(url, **options) as listener:
            async for message in listener:
                into.append(message)
                if message.event == "SessionState" and message.data["state"] == "running":
                    running.set()

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as clients:
            async with open_server(make_agent(wait_here)) as server:
                await _create_session(server, "s1")
                base = f"{server.url}/sessions/s1"
                clients.start_soon(follow, f"{base}/feed", feed_messages)
                clients.start_soon(
                    functools.partial(follow, f"{base}/runs", run_messages, method="POST", json_body={"input": "tool"})
                )
                await tool_started.wait()
                await running.wait()
                shutdown_at = trio.current_time()
        assert trio.current_time() - shutdown_at < 3.0, "the shutdown (and the clients' ends) was slow"
    assert run_messages[-1].event == "RunFinished"
    assert run_messages[-1].data["reason"] == "cancelled"
    assert [message.event for message in run_messages].count("RunFinished") == 1
    assert feed_messages[-1].data == {"type": "SessionState", "state": "closed"}
