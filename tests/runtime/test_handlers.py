"""Stream handlers: session events delivered in order to user code in a task of its own."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing

from agents import Agent, Hooks, RunContext, ScriptedModel, ToolCall, ToolContext, tool
from runtime import ClosedRunStreamError, open_runtime
from runtime.events import CustomEvent, Event, RunFinished, RunStarted, TextDelta, ToolCallFinished

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path
    from types import ModuleType


@tool
async def add(a: int, b: int) -> int:
    """Add."""
    return a + b


def agent(turns: list[str | ToolCall]) -> Agent:
    return Agent(name="a", model=ScriptedModel(turns), tools=[add])


async def test_handler_sees_every_event_of_every_run_in_order(tmp_path: Path) -> None:
    """A handler gets each run's events in the order the consumer saw them (here: a JSONL transcript)."""
    transcript = tmp_path / "transcript.jsonl"
    lines: list[str] = []

    async def write(event: Event) -> None:
        lines.append(json.dumps({"type": type(event).__name__, **attrs.asdict(event)}))

    async with (
        open_runtime() as runtime,
        runtime.open_session(agent([ToolCall("add", {"a": 1, "b": 2}), "3", "again"])) as s,
    ):
        handler = s.add_handler(write)
        seen: list[Event] = []
        for prompt in ("sum", "more"):
            async with s.run(prompt) as stream:
                seen.extend([event async for event in stream])
        await trio.testing.wait_all_tasks_blocked()
        transcript.write_text("\n".join(lines) + "\n")
    written = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert [entry["type"] for entry in written] == [type(event).__name__ for event in seen]
    assert sum(entry["type"] == "RunFinished" for entry in written) == 2
    assert handler.statistics().handled == len(seen)


async def test_slow_handler_that_drops_never_slows_the_run(autojump_clock: trio.testing.MockClock) -> None:
    """With drop_newest, a handler stuck on its first event costs the run nothing and counts the drops."""
    gate = trio.Event()

    async def stuck(event: Event) -> None:
        await gate.wait()

    async with open_runtime() as runtime, runtime.open_session(agent(["one two three four five"])) as s:
        handler = s.add_handler(stuck, buffer=2, overflow="drop_newest")
        start = trio.current_time()
        result = await s.ask("go")
        assert trio.current_time() == start
        assert result.output == "one two three four five"
        stats = handler.statistics()
        assert stats.handled == 0
        assert stats.buffered <= 2
        assert stats.dropped > 0
        gate.set()


async def test_drop_oldest_keeps_the_newest_events(autojump_clock: trio.testing.MockClock) -> None:
    """With drop_oldest, what the stuck handler finally sees ends with the run's last events."""
    gate = trio.Event()
    got: list[Event] = []

    async def slow(event: Event) -> None:
        await gate.wait()
        got.append(event)

    async with open_runtime() as runtime, runtime.open_session(agent(["a b c d e f"])) as s:
        handler = s.add_handler(slow, buffer=2, overflow="drop_oldest")
        await s.ask("go")
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(got[-1], RunFinished)
        assert handler.statistics().dropped > 0


async def test_blocking_handler_holds_the_run_back_until_it_catches_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With block, the run waits for a handler a whole buffer behind, and every event is delivered."""
    release = trio.Event()
    got: list[Event] = []

    async def slow(event: Event) -> None:
        await release.wait()
        got.append(event)

    async with open_runtime() as runtime, runtime.open_session(agent(["w1 w2 w3 w4 w5 w6"])) as s:
        s.add_handler(slow, buffer=1, overflow="block")
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def ask() -> None:
                await s.ask("go")
                done.set()

            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()  # held back by the handler
            release.set()
        assert next(type(e) for e in got) is RunStarted
        assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "w1 w2 w3 w4 w5 w6"


async def test_handler_error_logged_or_failing_the_session() -> None:
    """on_error="log" counts and goes on; on_error="raise" fails the session with the handler's error."""

    async def broken(event: Event) -> None:
        if isinstance(event, ToolCallFinished):
            raise ValueError("bad handler")

    async with open_runtime() as runtime:
        async with runtime.open_session(agent([ToolCall("add", {"a": 1, "b": 1}), "2"])) as s:
            logged = s.add_handler(broken, on_error="log")
            await s.ask("go")
            await trio.testing.wait_all_tasks_blocked()
            assert logged.statistics().failed == 1
        with pytest.raises(ValueError, match="bad handler"):
            async with runtime.open_session(agent([ToolCall("add", {"a": 1, "b": 1}), "2"])) as s:
                s.add_handler(broken)
                await s.ask("go")
                await trio.testing.wait_all_tasks_blocked()


async def test_removed_handler_gets_nothing_more_and_its_task_ends() -> None:
    """remove() detaches the handler; later runs are not copied to it."""
    got: list[Event] = []

    async def record(event: Event) -> None:
        got.append(event)

    async with open_runtime() as runtime, runtime.open_session(agent(["x", "y"])) as s:
        handler = s.add_handler(record)
        await s.ask("first")
        await trio.testing.wait_all_tasks_blocked()
        count = len(got)
        handler.remove()
        await s.ask("second")
        await trio.testing.wait_all_tasks_blocked()
        assert len(got) == count
    with pytest.raises(ValueError, match="at least one"):
        async with open_runtime() as runtime, runtime.open_session(agent([])) as s:
            s.add_handler(record, buffer=0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"overflow": "blocking"}, "overflow must be one of block, drop_oldest, drop_newest, not 'blocking'"),
        ({"overflow": "drop-oldest"}, "overflow must be one of"),
        ({"on_error": "Raise"}, "on_error must be raise or log, not 'Raise'"),
    ],
)
async def test_add_handler_refuses_unknown_options(options: dict[str, str], match: str) -> None:
    """A misspelt overflow or on_error is a ValueError naming the allowed values, not another behaviour."""

    async def record(event: Event) -> None:
        pass

    async with open_runtime() as runtime, runtime.open_session(agent([])) as s:
        with pytest.raises(ValueError, match=match):
            s.add_handler(record, **options)  # type: ignore[arg-type]
        assert s.handlers == ()


async def test_drain_waits_until_everything_buffered_is_handled(autojump_clock: trio.testing.MockClock) -> None:
    """drain() returns only once the handler has returned from every event buffered so far."""
    got: list[Event] = []

    async def slow(event: Event) -> None:
        await trio.sleep(1)
        got.append(event)

    async with open_runtime() as runtime, runtime.open_session(agent(["a b c"])) as s:
        handler = s.add_handler(slow, buffer=64, overflow="drop_newest")
        await s.ask("go")
        await handler.drain()
        assert isinstance(got[-1], RunFinished)
        assert handler.statistics().handled == len(got)


@attrs.frozen
class Tick(CustomEvent):
    n: int


async def test_drain_returns_once_what_was_buffered_is_handled_while_events_keep_coming(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """drain() waits for the events buffered when it was called, not for a moment with an empty buffer: a run
    that keeps streaming (a chatty tool) does not put it off for ever."""
    handled: list[Event] = []

    async def slow(event: Event) -> None:
        await trio.sleep(1)  # a write to a slow sink
        handled.append(event)

    @tool
    async def chatty(ctx: ToolContext[None]) -> str:
        """Emits events for a long while."""
        for n in range(10_000):
            await ctx.emit(Tick(n))
        return "done"

    agent = Agent(name="a", model=ScriptedModel([ToolCall("chatty"), "ok"]), tools=[chatty])
    async with open_runtime() as runtime, runtime.open_session(agent) as s:
        handler = s.add_handler(slow, buffer=8, overflow="block")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.ask, "go")
            await trio.sleep(50.5)  # mid-event: the buffer is full and the run waits for room
            at_call = handler.statistics()
            assert at_call.buffered == 8
            with trio.fail_after(20):
                await handler.drain()
            assert len(handled) >= at_call.handled + 1 + at_call.buffered  # the one in hand, then the buffer
            assert handler.statistics().buffered > 0  # the run went on streaming meanwhile
            nursery.cancel_scope.cancel()


async def test_transcript_example_writes_one_json_line_per_event(
    tmp_path: Path, load_example: Callable[[str], ModuleType]
) -> None:
    """examples/transcript.py writes every event of its two runs as JSON lines."""
    module = load_example("transcript")
    out = tmp_path / "t.jsonl"
    assert await module.main([str(out)]) == 0
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["type"] for e in entries].count("RunFinished") == 2
    assert entries[0] == {"type": "RunStarted", "run_id": entries[0]["run_id"], "resumes": None}


@pytest.mark.parametrize("breaks_out", [False, True], ids=["reads-to-the-end", "breaks-out"])
async def test_block_handler_sees_every_event_and_one_run_finished_when_the_consumer_leaves(
    autojump_clock: trio.testing.MockClock, breaks_out: bool
) -> None:
    """A slow block handler with a buffer of one still gets each run's every event and exactly one RunFinished.

    The consumer leaves as soon as it has what it wants, which cancels the run
    while it waits for room in the handler: the events the run made still
    reach the handler, none is dropped, and each run ends with one RunFinished.
    """
    got: list[Event] = []

    async def record(event: Event) -> None:
        await trio.sleep(0.001)
        got.append(event)

    words = "one two three four five six"
    async with open_runtime() as runtime, runtime.open_session(agent([words, words])) as s:
        handler = s.add_handler(record, buffer=1)
        for _ in range(2):
            async with s.run("go") as stream:
                async for event in stream:
                    if breaks_out and isinstance(event, TextDelta):
                        break
        await handler.drain()
        assert handler.statistics().dropped == 0
    runs: list[list[Event]] = [[]]
    for event in got:
        runs[-1].append(event)
        if isinstance(event, RunFinished):
            runs.append([])
    assert runs[-1] == []
    assert len(runs) == 3, [type(e).__name__ for e in got]
    for run in runs[:2]:
        assert isinstance(run[0], RunStarted)
        assert [type(e) for e in run].count(RunFinished) == 1
        if breaks_out:
            assert run[-1] == RunFinished("cancelled")
        else:
            assert "".join(e.text for e in run if isinstance(e, TextDelta)) == words
            assert isinstance(run[-1], RunFinished)


async def test_a_run_cancelled_once_it_has_ended_keeps_its_end_for_handlers_and_consumer() -> None:
    """Cancelled after its work was done (while its end hook runs; while its RunFinished waits for room in
    the consumer's buffer): the run ended as it did. A block handler and the consumer each get exactly one
    RunFinished, the real one, and the result says the same."""
    hook_running = trio.Event()

    class SlowEnd(Hooks):
        async def on_run_end(self, ctx: RunContext[None], reason: str) -> None:
            hook_running.set()
            await trio.sleep_forever()

    # RunStarted + 253 TextDelta + ModelStopped + Usage fill the 256-event buffer: RunFinished must wait.
    for agent, cancel_while in (
        (Agent(name="hooked", model=ScriptedModel(["hello"]), hooks=[SlowEnd()]), "end hook"),
        (Agent(name="wordy", model=ScriptedModel([" ".join(["w"] * 253)])), "buffer full"),
    ):
        finished: list[str] = []

        async def handler(event: Event) -> None:
            if isinstance(event, RunFinished):
                finished.append(event.reason)  # noqa: B023 (each round waits for its handler: drain())

        with trio.fail_after(5):
            async with open_runtime() as runtime, runtime.open_session(agent) as session:
                attached = session.add_handler(handler, overflow="block")
                async with session.run("hi") as stream:
                    if cancel_while == "end hook":
                        await hook_running.wait()
                    else:
                        await trio.testing.wait_all_tasks_blocked()
                    assert stream.result.reason == "completed"
                    stream.cancel()
                    ends = [event.reason async for event in stream if isinstance(event, RunFinished)]
                assert ends == ["completed"], cancel_while
                assert stream.result.reason == "completed"
                await attached.drain()
        assert finished == ["completed"], cancel_while


@attrs.frozen
class _Ended(CustomEvent):
    reason: str


async def test_a_run_cancelled_before_its_start_sends_nothing_its_end_hook_emits() -> None:
    """A run cancelled while its RunStarted waits for room in a block handler: its on_run_end hook's ctx.emit
    is refused (the run never started: its stream is RunFinished alone), so the consumer gets only
    RunFinished("cancelled") and the handler nothing of that run. Before, the hook's event went out, and
    with it an owed RunFinished to a handler that never saw the run start."""
    refused: list[BaseException] = []
    gate = trio.Event()
    seen: list[Event] = []

    class EndHook(Hooks):
        async def on_run_end(self, ctx: RunContext[None], reason: str) -> None:
            try:
                await ctx.emit(_Ended(reason))
            except ClosedRunStreamError as exc:
                refused.append(exc)

    async def stuck(event: Event) -> None:
        seen.append(event)
        if isinstance(event, _Ended):
            await gate.wait()  # behind from the first run's end: its buffer (1) then holds that RunFinished

    agent = Agent(name="a", model=ScriptedModel(["one", "two"]), hooks=[EndHook()])
    with trio.fail_after(5):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            handler = session.add_handler(stuck, buffer=1)
            async with session.run("first") as first:
                assert [event async for event in first][-2:] == [_Ended("completed"), RunFinished("completed")]
            before = len(seen)
            async with session.run("second") as second:
                await trio.testing.wait_all_tasks_blocked()  # its RunStarted waits for room in the handler
                second.cancel()
                events = [event async for event in second]
            gate.set()
            await handler.drain()
    assert events == [RunFinished("cancelled")]
    assert seen[before:] == [RunFinished("completed")]  # the first run's, from the buffer: nothing of the second
    assert [str(exc) for exc in refused] == ["_Ended was emitted before its run had started"]


@attrs.frozen
class _Tick(CustomEvent):
    n: int


@pytest.mark.parametrize("slow", ["handler", "consumer"])
async def test_an_emit_cancelled_while_waiting_for_room_reaches_nobody(
    autojump_clock: trio.testing.MockClock, slow: str
) -> None:
    """A tool's ctx.emit timed out waiting for room goes to neither the consumer nor a block handler.

    Whichever is a whole buffer behind (a stuck handler, a consumer that does
    not read), 100 timed-out emits leave the handler's buffer within its bound
    and the handler sees exactly the events the consumer sees, in order.
    """
    behind = trio.Event()  # set by the tool once every emit was tried: the slow side catches up
    most = 0

    @tool
    async def ticker(ctx: ToolContext[None]) -> str:
        """Tick."""
        nonlocal most
        for n in range(100):
            with trio.move_on_after(0.01):
                await ctx.emit(_Tick(n))
            most = max(most, attached.statistics().buffered)
        behind.set()
        return "ok"

    async def record(event: Event) -> None:
        if slow == "handler":
            await behind.wait()
        handled.append(event)

    handled: list[Event] = []
    seen: list[Event] = []
    bound = 4 if slow == "handler" else 256
    ticker_agent = Agent(name="a", model=ScriptedModel([ToolCall("ticker", {}), "done"]), tools=[ticker])
    async with (
        open_runtime(event_buffer=256 if slow == "handler" else 16) as runtime,
        runtime.open_session(ticker_agent) as s,
    ):
        attached = s.add_handler(record, buffer=bound, overflow="block")
        async with s.run("go") as stream:
            if slow == "consumer":
                await behind.wait()
            seen.extend([event async for event in stream])
        await attached.drain()
    assert most <= bound
    assert handled == seen
    ticks = [event.n for event in seen if isinstance(event, _Tick)]
    assert 0 < len(ticks) < 100  # some went before the slow side was a buffer behind; the others timed out
    assert isinstance(seen[-1], RunFinished)
    assert seen[-1].reason == "completed"


def _runs_seen(events: list[Event]) -> list[list[type[Event]]]:
    """The events a handler got, split into runs: each should open with RunStarted and close with RunFinished."""
    runs: list[list[type[Event]]] = []
    for event in events:
        if isinstance(event, RunStarted) or not runs:
            runs.append([])
        runs[-1].append(type(event))
    return runs


async def test_a_stuck_block_handler_stays_bounded_over_many_cancelled_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A block handler stuck on its first event, buffer 1, under 20 runs each cancelled while it waits for it:
    its buffer holds at most its bound and the first run's owed RunFinished, and it gets no RunFinished of a
    run whose RunStarted never reached it (each later run was cancelled waiting to send its RunStarted)."""
    gate = trio.Event()
    got: list[Event] = []
    most = 0

    async def stuck(event: Event) -> None:
        await gate.wait()
        got.append(event)

    async with open_runtime() as runtime, runtime.open_session(agent(["hi there"] * 20)) as s:
        handler = s.add_handler(stuck, buffer=1, overflow="block")
        for _ in range(20):
            async with s.run("go") as stream:
                with trio.move_on_after(1):  # a consumer that gives up: leaving cancels the run
                    async for _event in stream:
                        pass
            most = max(most, handler.statistics().buffered)
        gate.set()
        await handler.drain()
    assert most <= 2
    assert handler.statistics().dropped == 0
    assert _runs_seen(got) == [[RunStarted, TextDelta, RunFinished]]
    assert got[-1] == RunFinished("cancelled")


async def test_a_run_cancelled_while_it_waits_for_its_turn_reaches_no_handler() -> None:
    """A run cancelled while it waits for the run slot never started: its consumer gets RunFinished("cancelled")
    (the stream contract), the handlers nothing of it, and every run they see opens and ends once."""
    got: list[Event] = []

    async def record(event: Event) -> None:
        got.append(event)

    slow_done = trio.Event()

    @tool
    async def slow() -> str:
        """Wait until the test lets it finish."""
        await slow_done.wait()
        return "ok"

    model = ScriptedModel([ToolCall("slow", {}), "first", "third"])
    async with (
        open_runtime() as runtime,
        runtime.open_session(Agent(name="a", model=model, tools=[slow])) as s,
        trio.open_nursery() as nursery,
    ):
        handler = s.add_handler(record)
        nursery.start_soon(s.ask, "first")
        await trio.testing.wait_all_tasks_blocked()
        async with s.run("second") as stream:  # waits for its turn behind "first"
            stream.cancel()
            assert [event async for event in stream] == [RunFinished("cancelled")]
        slow_done.set()
        await s.ask("third")
        await handler.drain()
    runs = _runs_seen(got)
    assert len(runs) == 2, runs
    for run in runs:
        assert run[0] is RunStarted
        assert run[-1] is RunFinished
        assert run.count(RunFinished) == 1


async def test_a_handler_added_while_a_run_waits_for_its_turn_sees_that_run() -> None:
    """add_handler while a run's block is entered but the run waits for the slot: the run starts after it, so
    the handler gets all of it, exactly as its consumer does."""
    got: list[Event] = []

    async def record(event: Event) -> None:
        got.append(event)

    slow_done = trio.Event()

    @tool
    async def slow() -> str:
        """Wait until the test lets it finish."""
        await slow_done.wait()
        return "ok"

    model = ScriptedModel([ToolCall("slow", {}), "first", "second"])
    async with (
        open_runtime() as runtime,
        runtime.open_session(Agent(name="a", model=model, tools=[slow])) as s,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(s.ask, "first")
        await trio.testing.wait_all_tasks_blocked()
        async with s.run("second") as stream:  # waits for its turn behind "first"
            handler = s.add_handler(record)
            slow_done.set()
            seen = [event async for event in stream]
        await handler.drain()
    assert isinstance(seen[0], RunStarted)
    assert got == seen


@pytest.mark.parametrize(
    "handler",
    [print, [].append, functools.partial(print, end=""), "record"],
    ids=["print", "list.append", "partial-of-print", "not-callable"],
)
async def test_add_handler_refuses_at_once_what_cannot_be_async(handler: object) -> None:
    """A builtin (print, list.append, in a partial or not) or something not callable is a TypeError from
    add_handler naming it, and attaches nothing: it used to be taken, then fail the session at its first event."""
    async with open_runtime() as runtime, runtime.open_session(agent(["hi"])) as s:
        with pytest.raises(TypeError, match="a stream handler must be an async function, not"):
            s.add_handler(handler)  # type: ignore[arg-type]
        assert s.handlers == ()
        assert (await s.ask("go")).reason == "completed"


async def test_add_handler_takes_every_kind_of_async_callable() -> None:
    """An async function, a partial of one, a bound async method, an object with an async __call__ and a lambda
    returning a coroutine are all taken, and each gets every event of the run."""
    got: dict[str, list[Event]] = {}

    async def record(name: str, event: Event) -> None:
        got.setdefault(name, []).append(event)

    class Recorder:
        async def __call__(self, event: Event) -> None:
            await record("callable object", event)

        async def method(self, event: Event) -> None:
            await record("bound method", event)

    async def plain(event: Event) -> None:
        await record("async function", event)

    handlers: list[Callable[[Event], Awaitable[object]]] = [
        plain,
        functools.partial(record, "partial"),
        Recorder().method,
        Recorder(),
        lambda event: record("lambda", event),
    ]
    async with open_runtime() as runtime, runtime.open_session(agent(["hi"])) as s:
        attached = [s.add_handler(handler) for handler in handlers]
        async with s.run("go") as stream:
            seen = [event async for event in stream]
        for handler in attached:
            await handler.drain()
    assert set(got) == {"async function", "partial", "bound method", "callable object", "lambda"}
    assert all(events == seen for events in got.values())


async def test_a_sync_handler_add_handler_cannot_tell_fails_with_a_type_error_naming_it() -> None:
    """A sync function (which add_handler cannot tell from one returning an awaitable) raises a TypeError naming
    it at its first event, not "NoneType can't be used in 'await' expression": logged and counted with
    on_error="log", failing the session with on_error="raise"."""
    calls: list[Event] = []

    def sync_record(event: Event) -> None:
        calls.append(event)

    async with open_runtime() as runtime:
        async with runtime.open_session(agent(["hi"])) as s:
            logged = s.add_handler(sync_record, on_error="log")  # type: ignore[arg-type]
            await s.ask("go")
            await trio.testing.wait_all_tasks_blocked()
            assert logged.statistics().failed == len(calls) > 0
        with pytest.raises(TypeError, match=r"handler <function .*sync_record.* returned None, not an awaitable"):
            async with runtime.open_session(agent(["hi"])) as s:
                s.add_handler(sync_record)  # type: ignore[arg-type]
                await s.ask("go")
                await trio.testing.wait_all_tasks_blocked()


async def test_drain_from_inside_the_handler_returns_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """A handler (or a task it started) awaiting its own drain() gets it back at once, with every earlier event
    handled; drain() from outside still works after. It used to wait for itself for ever, and so did every
    later drain()."""
    handled: list[Event] = []
    drained_at: list[int] = []

    async def flush_on_end(event: Event) -> None:
        if isinstance(event, RunFinished):
            await attached.drain()
            drained_at.append(len(handled))
            async with trio.open_nursery() as nursery:  # a task of the handler's: the same
                nursery.start_soon(attached.drain)
        handled.append(event)

    with trio.fail_after(60):  # the clock jumps here at once if anything hangs
        async with open_runtime() as runtime, runtime.open_session(agent(["one two", "three"])) as s:
            attached = s.add_handler(flush_on_end, buffer=64, overflow="drop_oldest")
            async with s.run("a") as stream:
                first = [event async for event in stream]
            await s.ask("b")
            await attached.drain()
            assert attached.statistics().buffered == 0
    assert drained_at == [len(first) - 1, len(handled) - 1]
    assert sum(isinstance(event, RunFinished) for event in handled) == 2
