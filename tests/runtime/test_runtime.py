"""Runtimes: the nursery every session lives in, idle reaping, failure containment."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
import trio.testing

from agents import Agent, ScriptedModel, ToolCall, tool
from runtime import ClosedSessionError, SQLiteStore, open_runtime
from runtime.events import RunFinished, ToolCallStarted

if TYPE_CHECKING:
    from pathlib import Path


@tool
async def wait() -> str:
    """Sleeps forever."""
    await trio.sleep_forever()
    return "never"


async def test_runtime_exit_closes_started_sessions_and_their_tasks() -> None:
    """Leaving the runtime block cancels and joins every started session and what it owns."""
    ended: list[str] = []

    async def listener() -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.append("listener")

    async with open_runtime() as runtime:
        handles = [await runtime.start_session(Agent(name="a", model=ScriptedModel([]))) for _ in range(3)]
        for handle in handles:
            handle.session.start_soon(listener)
        await trio.testing.wait_all_tasks_blocked()
        assert len(runtime.sessions) == 3
    assert ended == ["listener"] * 3
    assert all(handle.closed for handle in handles)
    assert len(runtime.sessions) == 0
    with pytest.raises(ClosedSessionError, match="runtime is closed"):
        await runtime.start_session(Agent(name="a", model=ScriptedModel([])))


async def test_runtime_idle_session_is_reaped(autojump_clock: trio.testing.MockClock) -> None:
    """A started session with no run for idle_timeout seconds is closed, with its listeners."""
    cancelled = trio.Event()

    async def listener() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with open_runtime(idle_timeout=30) as runtime:
        handle = await runtime.start_session(Agent(name="a", model=ScriptedModel(["hi"])))
        handle.session.start_soon(listener)
        await trio.sleep(20)
        await handle.session.ask("keep me alive")
        start = trio.current_time()
        await handle.wait_closed()
        assert trio.current_time() - start == pytest.approx(30)
        assert cancelled.is_set()
        assert handle.closed
        assert runtime.sessions == ()


async def test_runtime_session_is_not_reaped_during_a_run(autojump_clock: trio.testing.MockClock) -> None:
    """A run longer than idle_timeout keeps its session alive; reaping starts when it ends."""

    @tool
    async def long_task() -> str:
        """Takes 100 seconds."""
        await trio.sleep(100)
        return "done"

    model = ScriptedModel([ToolCall("long_task"), "finished"])
    async with open_runtime(idle_timeout=10) as runtime:
        handle = await runtime.start_session(Agent(name="a", model=model, tools=[long_task]))
        result = await handle.session.ask("go")
        assert result.output == "finished"
        assert not handle.closed
        ended = trio.current_time()
        await handle.wait_closed()
        assert trio.current_time() - ended == pytest.approx(10)


async def test_runtime_session_is_not_reaped_while_in_use(autojump_clock: trio.testing.MockClock) -> None:
    """Inside ``session.in_use()`` (two of them, overlapping) a session is not reaped however long it is
    idle; reaping counts from the end of the last block."""
    async with open_runtime(idle_timeout=10) as runtime:
        handle = await runtime.start_session(Agent(name="a", model=ScriptedModel([])))
        with handle.session.in_use():
            with handle.session.in_use():
                with trio.move_on_after(100):
                    await handle.wait_closed()
            with trio.move_on_after(100):
                await handle.wait_closed()
            assert not handle.closed
        released = trio.current_time()
        with trio.fail_after(60):  # virtual time: a reaper that was never told fails here, not hangs
            await handle.wait_closed()
        assert trio.current_time() - released == pytest.approx(10)


async def test_runtime_session_is_not_reaped_while_a_consumer_reads_its_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A session stays in use until its run's consumer leaves the run block, though the run's task ended
    long before: a slow reader of buffered events still reads RunFinished from an open session, and
    reaping counts from the block's end."""
    async with open_runtime(idle_timeout=10) as runtime:
        handle = await runtime.start_session(Agent(name="a", model=ScriptedModel(["one two three"])))
        async with handle.session.run("hi") as stream:
            await trio.testing.wait_all_tasks_blocked()  # the run has ended; its events wait in the buffer
            async for event in stream:
                await trio.sleep(30)  # a consumer forwarding each event to a slow client
                assert not handle.closed, event
            assert isinstance(event, RunFinished)
            assert event.reason == "completed"
        left = trio.current_time()
        with trio.fail_after(60):
            await handle.wait_closed()
        assert trio.current_time() - left == pytest.approx(10)


async def test_runtime_idle_timeout_can_be_disabled_per_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """start_session(idle_timeout=None) overrides the runtime's default: never reaped."""
    async with open_runtime(idle_timeout=1) as runtime:
        handle = await runtime.start_session(Agent(name="a", model=ScriptedModel([])), idle_timeout=None)
        await trio.sleep(3600)
        assert not handle.closed


@pytest.mark.parametrize("idle_timeout", [math.nan, -1, 0])
async def test_runtime_idle_timeout_that_is_not_above_zero_is_a_value_error(idle_timeout: float) -> None:
    """open_runtime and start_session refuse an idle_timeout that is not above zero, as open_server does:
    NaN meant "never reaped", zero or below "reaped at once"; no session is started."""
    agent = Agent(name="a", model=ScriptedModel([]))
    with pytest.raises(ValueError, match=f"idle_timeout must be above zero, not {idle_timeout!r}"):
        async with open_runtime(idle_timeout=idle_timeout):
            pytest.fail("the block must not run")
    async with open_runtime() as runtime:
        with pytest.raises(ValueError, match=f"idle_timeout must be above zero, not {idle_timeout!r}"):
            await runtime.start_session(agent, idle_timeout=idle_timeout)
        assert runtime.sessions == ()


async def test_runtime_session_failure_does_not_disturb_other_sessions() -> None:
    """A started session whose task raises is closed alone; a run in another session completes."""

    @tool
    async def gated(text: str) -> str:
        """Waits for the gate."""
        await gate.wait()
        return text

    gate = trio.Event()

    async def crash() -> None:
        raise ValueError("broken listener")

    async with open_runtime() as runtime:
        healthy = await runtime.start_session(
            Agent(name="ok", model=ScriptedModel([ToolCall("gated", {"text": "x"}), "fine"]), tools=[gated])
        )
        broken = await runtime.start_session(Agent(name="bad", model=ScriptedModel([])))
        async with healthy.session.run("go") as stream:
            async for event in stream:
                if isinstance(event, ToolCallStarted):
                    broken.session.start_soon(crash)
                    await broken.wait_closed()
                    gate.set()
                last = event
        assert last == RunFinished("completed")
        assert isinstance(broken.error, ValueError)
        assert broken.error.args == ("broken listener",)
        assert healthy.error is None
        assert not healthy.closed


async def test_runtime_block_error_is_raised_unwrapped() -> None:
    """An exception raised in the runtime block comes out as itself, not in an exception group."""
    with pytest.raises(KeyError):
        async with open_runtime() as runtime:
            await runtime.start_session(Agent(name="a", model=ScriptedModel([])))
            raise KeyError("mine")


async def test_runtime_shares_one_http_client_and_closes_its_own() -> None:
    """The runtime's client reaches model requests; a client passed in is left open."""
    model = ScriptedModel(["x"])
    async with open_runtime() as runtime:
        async with runtime.open_session(Agent(name="a", model=model)) as session:
            await session.ask("go")
        own = runtime.http_client
        assert model.requests[0].http_client is own
    assert own.is_closed
    async with httpx.AsyncClient() as given:
        async with open_runtime(http_client=given) as runtime:
            assert runtime.http_client is given
        assert not given.is_closed


async def test_runtime_cancelled_run_consumer_in_other_task_sees_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A consumer outside the runtime whose session the runtime closes gets RunFinished("cancelled")."""
    seen: list[object] = []
    async with trio.open_nursery() as consumers:
        async with open_runtime() as runtime:
            handle = await runtime.start_session(Agent(name="a", model=ScriptedModel([ToolCall("wait")]), tools=[wait]))

            async def consume() -> None:
                async with handle.session.run("go") as stream:
                    seen.extend([event async for event in stream])

            consumers.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
    assert seen[-1] == RunFinished("cancelled")


async def test_open_runtime_refuses_a_negative_event_buffer() -> None:
    """A negative event_buffer is a ValueError naming it at open_runtime, not an error in every run."""
    with pytest.raises(ValueError, match="event_buffer"):
        async with open_runtime(event_buffer=-1):
            pass  # pragma: no cover - not entered


@pytest.mark.parametrize("durable", [False, True], ids=["in-memory", "sqlite"])
async def test_an_empty_session_id_is_a_value_error_not_a_made_up_one(tmp_path: Path, durable: bool) -> None:
    """session_id="" is refused by open_session and start_session (it read as "make one up": a durable session
    given it was a new one each time, and create=False named an id the caller never gave); None makes one up."""
    agent = Agent(name="a", model=ScriptedModel([]))
    store = SQLiteStore(tmp_path / "s.db") if durable else None
    async with open_runtime(store=store) as runtime:
        with pytest.raises(ValueError, match="session_id is empty"):
            runtime.open_session(agent, session_id="")
        with pytest.raises(ValueError, match="session_id is empty"):
            await runtime.start_session(agent, session_id="")
        async with runtime.open_session(agent, session_id=None) as session:
            assert session.id


@pytest.mark.parametrize("durable", [False, True], ids=["in-memory", "sqlite"])
async def test_a_session_id_that_is_not_a_str_is_a_type_error(tmp_path: Path, durable: bool) -> None:
    """session_id=42 (a numeric user id, say) is a TypeError naming the type from open_session and
    start_session, not an AttributeError from deep inside."""
    agent = Agent(name="a", model=ScriptedModel([]))
    store = SQLiteStore(tmp_path / "s.db") if durable else None
    async with open_runtime(store=store) as runtime:
        with pytest.raises(TypeError, match=r"session_id must be a str.*not int"):
            runtime.open_session(agent, session_id=42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"session_id must be a str.*not int"):
            await runtime.start_session(agent, session_id=42)  # type: ignore[arg-type]
        assert runtime.sessions == ()


@pytest.mark.parametrize("durable", [False, True], ids=["in-memory", "sqlite"])
@pytest.mark.parametrize(
    ("session_id", "rule"),
    [("a\x00b", "NUL"), ("a\ud800b", "lone surrogate"), ("x" * 1025, "1025 bytes"), ("é" * 513, "1026 bytes")],
    ids=["nul", "surrogate", "long", "long-utf8"],
)
async def test_a_session_id_not_every_store_can_hold_is_a_value_error_naming_the_rule(
    tmp_path: Path, durable: bool, session_id: str, rule: str
) -> None:
    """An id with NUL, a lone surrogate, or more than MAX_SESSION_ID_BYTES bytes of UTF-8 is refused by
    open_session and start_session with a ValueError saying why, with a store or without (PostgreSQL cannot
    hold them: they failed there, with a StoreUnavailableError, at open or at the first run); 1024 is fine."""
    agent = Agent(name="a", model=ScriptedModel(["ok"]))
    store = SQLiteStore(tmp_path / "s.db") if durable else None
    async with open_runtime(store=store) as runtime:
        with pytest.raises(ValueError, match=rule):
            runtime.open_session(agent, session_id=session_id)
        with pytest.raises(ValueError, match=rule):
            await runtime.start_session(agent, session_id=session_id)
        async with runtime.open_session(agent, session_id="é" * 512) as session:
            assert (await session.ask("hi")).output == "ok"
