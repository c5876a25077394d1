"""RemoteSession's HTTP client has one owner: a run's client is never closed under it.

Real sockets, so the real clock: every test is bounded by ``trio.fail_after``
and synchronises on a tool's ``trio.Event`` or on the next update.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import httpx
import pytest
import trio

from agents import Agent, ScriptedModel, ToolCall, tool
from runtime import open_runtime
from runtime.events import RunFinished, ToolCallStarted
from streams import (
    ClosedRemoteSessionError,
    ListenerRegistry,
    RemoteSession,
    Update,
    open_remote_session,
)

if TYPE_CHECKING:
    from agents import Tool
    from tests.streams.conftest import Create, MakeAgent, Serving

TIMEOUT: Final = 10


def waiting_tool(started: trio.Event, release: trio.Event, cancelled: trio.Event) -> Tool:
    """A tool that waits for ``release``, noting when it started and whether it was cancelled."""

    @tool
    async def wait_here() -> str:
        """Wait until released."""
        started.set()
        try:
            await release.wait()
        except trio.Cancelled:
            cancelled.set()
            raise
        return "released"

    return wait_here


def local_agent() -> Agent:
    return Agent(name="local", model=ScriptedModel([]))


async def test_a_run_outlives_the_serve_started_beside_it(
    make_agent: MakeAgent, serving: Serving, create: Create
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
    make_agent: MakeAgent, serving: Serving, create: Create
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
