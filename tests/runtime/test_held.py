"""HeldEvents: a durable run asks its model while its first durability point is written, and nobody sees
it start before the store has it.

The store here is a real SQLiteStore whose commits wait at a gate the test opens (and may fail once):
what a consumer, a stream handler and the file hold is checked while a commit is held back.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import attrs
import pytest
import trio
import trio.testing

from agents import (
    Agent,
    Hooks,
    ModelChunk,
    ModelRequest,
    ScriptedModel,
    TextChunk,
    ToolCall,
    ToolResultMessage,
    UsageChunk,
    tool,
)
from runtime import SQLiteStore, StoreUnavailableError, open_runtime
from runtime._handlers import Tee
from runtime._held import HELD_EVENTS, HeldEvents
from runtime._pipe import EventPipe
from runtime.events import CustomEvent, ErrorEvent, Event, RunFinished, RunStarted, TextDelta, Usage

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator
    from pathlib import Path

    from runtime import Session
    from runtime._journal import Journal


class GatedStore(SQLiteStore):
    """Its commits wait until :attr:`gate` is set; the next :attr:`fail` ones fail."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = trio.Event()
        self.fail = 0
        self.written = trio.Event()
        """Set once a commit has written."""

    async def commit(self, checkpoints: Any) -> None:
        await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise StoreUnavailableError("disk I/O error (once)")
        await super().commit(checkpoints)
        self.written.set()


class Asked:
    """A scripted model's turns, counting the requests it was asked."""

    def __init__(self, *answers: str | ToolCall) -> None:
        self.requests = 0
        self._answers = list(answers)

    def __call__(self, request: ModelRequest) -> str | ToolCall:
        self.requests += 1
        return self._answers.pop(0)


class StreamingModel:
    """Streams ``chunks`` text chunks of one word, counting those it has given; first waits for ``go`` if set."""

    def __init__(self, chunks: int, go: trio.Event | None = None) -> None:
        self.chunks = chunks
        self.given = 0
        self.go = go

    def stream(self, request: ModelRequest) -> AbstractAsyncContextManager[AsyncIterator[ModelChunk]]:
        return streaming(self._chunks())

    async def _chunks(self) -> AsyncGenerator[ModelChunk, None]:
        if self.go is not None:
            await self.go.wait()
        for k in range(self.chunks):
            self.given += 1
            yield TextChunk(f"w{k} ")
        yield UsageChunk(1, self.chunks)


class HangingAfter:
    """Streams ``chunks``, then never ends; :attr:`closed` is set once its stream is (run_timeout ended it)."""

    def __init__(self, *chunks: ModelChunk) -> None:
        self.chunks = chunks
        self.closed = trio.Event()

    def stream(self, request: ModelRequest) -> AbstractAsyncContextManager[AsyncIterator[ModelChunk]]:
        return streaming(self._chunks())

    async def _chunks(self) -> AsyncGenerator[ModelChunk, None]:
        try:
            for chunk in self.chunks:
                yield chunk
            await trio.sleep_forever()
        finally:
            self.closed.set()


@asynccontextmanager
async def streaming(chunks: AsyncGenerator[ModelChunk, None]) -> AsyncIterator[AsyncIterator[ModelChunk]]:
    """A model's stream of ``chunks``, closed when the run leaves it."""
    try:
        yield chunks
    finally:
        await chunks.aclose()


ran: list[int] = []


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    ran.append(a + b)
    return a + b


def stored_log(path: Path, run_id: str) -> list[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT event FROM events WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
    db.close()
    return [json.loads(row[0])["type"] for row in rows]


def stored_runs(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT count(*) FROM runs").fetchone()
    db.close()
    return int(count)


@asynccontextmanager
async def gated_session(path: Path, model: Any, **agent: Any) -> AsyncIterator[tuple[GatedStore, Session]]:
    store = GatedStore(path)
    async with (
        open_runtime(store=store) as runtime,
        runtime.open_session(Agent(name="held", model=model, **agent)) as session,
    ):
        yield store, session


def _recording(into: list[Event]) -> Any:
    async def record(event: Event) -> None:
        into.append(event)

    return record


async def through_the_gate(session: Session, store: GatedStore, *, after: trio.Event | None = None) -> list[Event]:
    """Run "hi" in ``session`` while ``store`` holds its commits (until ``after``, if given, then until every task
    waits): nothing may be seen before the write; then let the write land, and return what the run streamed."""
    seen: list[Event] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, session, "hi", seen)
        if after is not None:
            await after.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert seen == []
        store.gate.set()
    return seen


async def collect(session: Session, text: str, into: list[Event]) -> None:
    async with session.run(text) as stream:
        async for event in stream:
            into.append(event)


def assert_not_written(seen: list[Event]) -> None:
    """The stream of a run its store did not take (and whose model spent nothing): RunStarted, the store's
    error, RunFinished, as when the run waited for its write."""
    assert [type(event) for event in seen] == [RunStarted, ErrorEvent, RunFinished]
    assert isinstance(seen[1], ErrorEvent)
    assert seen[1].kind == "store"
    assert seen[1].message.startswith("the session store could not write the run: ")
    assert seen[2] == RunFinished("error", seen[1].message)


async def test_the_model_is_asked_while_the_run_is_written_and_nothing_is_seen_before_it_is(tmp_path: Path) -> None:
    model = Asked("hello there")
    seen: list[Event] = []
    handled: list[Event] = []
    async with gated_session(tmp_path / "s.db", ScriptedModel(itertools.repeat(model))) as (store, session):
        handler = session.add_handler(_recording(handled))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, session, "hi", seen)
            await trio.testing.wait_all_tasks_blocked()
            assert model.requests == 1  # asked, though the store has not the run yet
            assert stored_runs(tmp_path / "s.db") == 0
            assert seen == []
            store.gate.set()
        await handler.drain()
        assert isinstance(seen[0], RunStarted)
        assert seen[-1] == RunFinished("completed")
        assert "".join(e.text for e in seen if isinstance(e, TextDelta)) == "hello there"
        assert handled == seen
        assert [message.text for message in session.history] == ["hi", "hello there"]
    assert stored_runs(tmp_path / "s.db") == 1


async def test_a_run_its_store_cannot_write_shows_its_start_and_the_error_only_and_leaves_no_history(
    tmp_path: Path,
) -> None:
    """As when the run waited for the write: RunStarted, the store's error, RunFinished; the model's answer,
    given meanwhile, is dropped, and the history does not have the run."""
    model = Asked("hello there", "second answer")
    seen: list[Event] = []
    handled: list[Event] = []
    async with gated_session(tmp_path / "s.db", ScriptedModel(itertools.repeat(model))) as (store, session):
        handler = session.add_handler(_recording(handled))
        store.fail = 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, session, "hi", seen)
            await trio.testing.wait_all_tasks_blocked()
            assert model.requests == 1
            store.gate.set()
        await handler.drain()
        # Its Usage too: the model was asked, and the tokens are the session's.
        assert [type(event) for event in seen] == [RunStarted, Usage, ErrorEvent, RunFinished]
        assert isinstance(seen[2], ErrorEvent)
        assert seen[2].kind == "store"
        assert seen[2].message.startswith("the session store could not write the run: ")
        assert seen[2].message.endswith("disk I/O error (once)")
        assert seen[3] == RunFinished("error", seen[2].message)
        assert handled == seen
        assert session.history == ()
        assert (await session.ask("again")).output == "second answer"


async def test_a_tool_turn_written_with_the_run_that_fails_never_runs_its_tool_and_shows_the_turn(
    tmp_path: Path,
) -> None:
    """The one write of the run and its tool turn fails: as when the turn's own write failed, the stream
    shows the turn, then the store's error; the tool never runs, and its call gets an error result."""
    ran.clear()
    model = Asked(ToolCall("add", {"a": 1, "b": 2}), "3")
    seen: list[Event] = []
    handled: list[Event] = []
    scripted = ScriptedModel(itertools.repeat(model))
    async with gated_session(tmp_path / "s.db", scripted, tools=[add]) as (store, session):
        handler = session.add_handler(_recording(handled))
        store.fail = 2  # (its retry too)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, session, "add", seen)
            await trio.testing.wait_all_tasks_blocked()
            assert (model.requests, seen) == (1, [])
            store.gate.set()
        await handler.drain()
        kinds = [type(event).__name__ for event in seen]
        assert kinds[0] == "RunStarted"
        assert "ModelStopped" in kinds
        assert "ToolCallStarted" not in kinds
        assert kinds[-2:] == ["ErrorEvent", "RunFinished"]
        assert isinstance(seen[-2], ErrorEvent)
        assert seen[-2].message.startswith("the session store could not write the turn: ")
        assert handled == seen
        results = [message for message in session.history if isinstance(message, ToolResultMessage)]
        assert [result.is_error for result in results] == [True]
    assert ran == []


async def test_a_tool_turn_and_the_run_are_written_before_the_tool_runs(tmp_path: Path) -> None:
    ran.clear()
    model = Asked(ToolCall("add", {"a": 1, "b": 2}), "3")
    seen: list[Event] = []
    scripted = ScriptedModel(itertools.repeat(model))
    async with gated_session(tmp_path / "s.db", scripted, tools=[add]) as (store, session):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, session, "add", seen)
            await trio.testing.wait_all_tasks_blocked()
            assert (model.requests, ran, seen) == (1, [], [])
            store.gate.set()
        assert ran == [3]
        assert seen[-1] == RunFinished("completed")
        kinds = [type(event).__name__ for event in seen]
        assert isinstance(seen[0], RunStarted)
        assert kinds.index("ToolCallStarted") > kinds.index("ModelStopped")
    assert stored_log(tmp_path / "s.db", seen[0].run_id) == kinds  # each event once, in order


async def test_run_started_goes_on_once_written_while_the_model_has_not_answered(tmp_path: Path) -> None:
    """The writer sends what is held as it commits: a consumer sees the run start while a slow model thinks."""
    go = trio.Event()
    model = StreamingModel(3, go)
    seen: list[Event] = []
    async with gated_session(tmp_path / "s.db", model) as (store, session):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, session, "hi", seen)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == []
            store.gate.set()
            await store.written.wait()  # (in a thread: wait_all_tasks_blocked does not see it)
            await trio.testing.wait_all_tasks_blocked()
            assert [type(event) for event in seen] == [RunStarted]
            go.set()
        assert [e.text for e in seen if isinstance(e, TextDelta)] == ["w0 ", "w1 ", "w2 "]


async def test_a_run_holds_a_bounded_number_of_events_then_waits_for_the_write(tmp_path: Path) -> None:
    model = StreamingModel(5 * HELD_EVENTS)
    seen: list[Event] = []
    async with gated_session(tmp_path / "s.db", model) as (store, session):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, session, "hi", seen)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == []
            assert model.given <= HELD_EVENTS + 1  # the run waits for the write instead of holding them all
            store.gate.set()
        words = [e.text for e in seen if isinstance(e, TextDelta)]
        assert words == [f"w{k} " for k in range(5 * HELD_EVENTS)]
        assert seen[-1] == RunFinished("completed")


async def test_a_run_cancelled_before_it_is_written_still_shows_what_it_spent_once_written(tmp_path: Path) -> None:
    """Its model was asked (tokens spent): what it held goes on once the write is done, then its end."""
    model = StreamingModel(3)
    seen: list[Event] = []
    handled: list[Event] = []
    async with gated_session(tmp_path / "s.db", model) as (store, session):
        handler = session.add_handler(_recording(handled))
        async with session.run("hi") as stream:
            await trio.testing.wait_all_tasks_blocked()
            assert model.given == 3
            stream.cancel()
            await trio.testing.wait_all_tasks_blocked()  # the run waits for its write, briefly
            store.gate.set()
            seen.extend([event async for event in stream])
        await handler.drain()
        kinds = [type(event).__name__ for event in seen]
        assert kinds[0] == "RunStarted"
        assert kinds.count("TextDelta") == 3
        assert seen[-1] == RunFinished("cancelled")
        assert handled == seen
        spent = [event for event in seen if isinstance(event, Usage)]
        assert [(u.input_tokens, u.output_tokens) for u in spent] == [(1, 3)]
        assert (session.usage.input_tokens, session.usage.output_tokens) == (1, 3)


async def test_a_run_cancelled_while_its_store_stalls_gives_up_what_it_held_after_a_grace(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[Event] = []
    async with gated_session(tmp_path / "s.db", ScriptedModel(itertools.repeat(Asked("hello")))) as (store, session):
        async with session.run("hi") as stream:
            await trio.testing.wait_all_tasks_blocked()
            stream.cancel()
            seen.extend([event async for event in stream])
        assert seen == [RunFinished("cancelled")]  # nobody saw it start: the store never had it meanwhile
        store.gate.set()


async def test_a_run_ending_before_its_model_is_asked_ends_with_the_stores_error_if_it_was_not_written(
    tmp_path: Path,
) -> None:
    """Its instructions fail, and so does the write of the run: the store's error is the run's."""

    def instructions(ctx: Any) -> str:
        raise RuntimeError("no instructions today")

    async with gated_session(tmp_path / "s.db", ScriptedModel(["unused"]), instructions=instructions) as (
        store,
        session,
    ):
        store.fail = 1
        seen = await through_the_gate(session, store)
    assert_not_written(seen)


class FakeJournal:
    """What HeldEvents uses of a Journal: its write is done once :attr:`done` is set."""

    def __init__(self) -> None:
        self.done = False
        self.on_commit: Any = None

    def flush_soon(self) -> int:
        return 1

    def written(self, ticket: int) -> bool:
        return self.done

    async def wait(self, ticket: int) -> None:
        await trio.lowlevel.checkpoint()


async def test_held_events_go_on_once_each_when_the_writer_commits_while_the_run_sends_them_on() -> None:
    """The run sends on what is held, waiting for room; a commit of the writer meanwhile (its callback) must
    not send the same events too."""
    pipe: EventPipe[Event] = EventPipe(1)
    journal = FakeJournal()
    held = HeldEvents(Tee(pipe, ()), cast("Journal", journal))
    for event in (RunStarted("r"), TextDelta("a"), TextDelta("b")):
        held.send_nowait(event)
    journal.done = True
    journal.on_commit()  # the writer's commit: RunStarted goes on, the pipe is full
    async with trio.open_nursery() as nursery:
        nursery.start_soon(held.settle)
        await trio.testing.wait_all_tasks_blocked()  # the run waits for room for "a"
        got = [pipe.receive_nowait()]  # room: the run is woken...
        if journal.on_commit is not None:
            journal.on_commit()  # ... and another commit's callback comes first
        while len(got) < 3:
            await trio.testing.wait_all_tasks_blocked()
            got.append(pipe.receive_nowait())
    with pytest.raises(trio.WouldBlock):
        pipe.receive_nowait()
    assert got == [RunStarted("r"), TextDelta("a"), TextDelta("b")]


async def test_a_run_whose_model_fails_and_whose_write_fails_ends_with_the_stores_error_and_no_history(
    tmp_path: Path,
) -> None:
    def failing(request: ModelRequest) -> str:
        raise RuntimeError("the model is down")

    async with gated_session(tmp_path / "s.db", ScriptedModel(itertools.repeat(failing))) as (store, session):
        store.fail = 1
        seen = await through_the_gate(session, store)
        assert_not_written(seen)
        assert session.history == ()


async def test_a_run_its_store_cannot_write_shows_no_more_of_its_stream_than_its_usage_past_the_held_bound(
    tmp_path: Path,
) -> None:
    """More than HELD_EVENTS streamed before the write fails: the run waited for the write at the bound, and what
    it streams after the failure reaches nobody either (its Usage does: the tokens are spent)."""
    model = StreamingModel(2 * HELD_EVENTS)
    async with gated_session(tmp_path / "s.db", model) as (store, session):
        store.fail = 2  # (its retry too)
        seen = await through_the_gate(session, store)
        assert [type(event) for event in seen] == [RunStarted, Usage, ErrorEvent, RunFinished]
        assert isinstance(seen[1], Usage)
        assert (seen[1].input_tokens, seen[1].output_tokens) == (1, 2 * HELD_EVENTS)
        assert (session.usage.input_tokens, session.usage.output_tokens) == (1, 2 * HELD_EVENTS)
        assert session.history == ()


async def test_a_run_timed_out_before_its_write_failed_leaves_no_history(tmp_path: Path) -> None:
    model = HangingAfter()
    async with gated_session(tmp_path / "s.db", model, run_timeout=0.01) as (store, session):
        store.fail = 2
        seen = await through_the_gate(session, store, after=model.closed)
        assert_not_written(seen)
        assert session.history == ()


async def test_a_run_timed_out_before_its_write_keeps_its_message_once_written(tmp_path: Path) -> None:
    model = HangingAfter()
    async with gated_session(tmp_path / "s.db", model, run_timeout=0.01) as (store, session):
        seen = await through_the_gate(session, store, after=model.closed)
        assert isinstance(seen[0], RunStarted)
        assert isinstance(seen[-1], RunFinished)
        assert seen[-1].reason == "timeout"
        assert [message.text for message in session.history] == ["hi"]


@attrs.frozen
class Tick(CustomEvent):
    k: int


class Ticking:
    """A toolset whose task emits ``count`` custom events while the run streams its model (from another task)."""

    name = "ticking"

    def __init__(self, count: int, seed: int) -> None:
        self.count = count
        self.rng = random.Random(seed)

    @asynccontextmanager
    async def open_tools(self, ctx: Any) -> AsyncIterator[list[Any]]:
        async def tick() -> None:
            for k in range(self.count):
                await ctx.emit(Tick(k))
                if self.rng.random() < 0.5:
                    await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            yield []
            nursery.cancel_scope.cancel()


async def _ticking_run(path: Path, seed: int) -> list[Event]:
    """One run of an agent with :class:`Ticking`, its write landing after ``seed``-chosen steps, read slowly
    through a pipe with no buffer; what the consumer saw."""
    rng = random.Random(seed)
    store = GatedStore(path)
    seen: list[Event] = []
    agent = Agent(name="held", model=StreamingModel(40), tools=[Ticking(40, seed)])  # more than HELD_EVENTS
    async with open_runtime(store=store, event_buffer=0) as runtime, runtime.open_session(agent) as session:

        async def consume() -> None:
            async with session.run("hi") as stream:
                async for event in stream:
                    seen.append(event)
                    if rng.random() < 0.5:
                        await trio.lowlevel.checkpoint()

        async def land() -> None:
            for _ in range(rng.randrange(30)):
                await trio.lowlevel.checkpoint()
            store.gate.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            nursery.start_soon(land)
    return seen


async def test_events_sent_by_another_task_while_the_run_is_held_go_on_once_each_in_order(tmp_path: Path) -> None:
    """A toolset's task emits while the run streams its model, and the write lands at varied moments: every
    event reaches the consumer once, each task's in its order."""
    for seed in range(12):
        seen = await _ticking_run(tmp_path / f"s{seed}.db", seed)
        ticks = [event.k for event in seen if isinstance(event, Tick)]
        words = [event.text for event in seen if isinstance(event, TextDelta)]
        assert ticks == list(range(len(ticks))), (seed, ticks)  # once each, in order (the rest cut at its end)
        assert words == [f"w{k} " for k in range(40)], (seed, words)
        assert seen[-1] == RunFinished("completed"), seed


async def test_a_usage_owed_at_the_held_bound_is_held_too_when_the_run_times_out_before_its_write(
    tmp_path: Path,
) -> None:
    """The Usage past the bound waits for the write; run_timeout cancels that wait, and the Usage, owed, is held
    behind the rest (not sent ahead of them, nor before the write)."""
    # With RunStarted, the words fill the hold: the Usage's send waits for the write.
    model = HangingAfter(*(TextChunk(f"w{k} ") for k in range(HELD_EVENTS - 1)), UsageChunk(7, 11))
    async with gated_session(tmp_path / "s.db", model, run_timeout=0.01) as (store, session):
        seen = await through_the_gate(session, store, after=model.closed)
        kinds = [type(event).__name__ for event in seen]
        assert kinds[0] == "RunStarted"
        assert kinds.count("TextDelta") == HELD_EVENTS - 1
        assert kinds[-3:] == ["Usage", "ErrorEvent", "RunFinished"]
        assert seen[-1] == RunFinished("timeout", "the run took longer than run_timeout=0.01s")


@attrs.frozen
class Bye(CustomEvent):
    reason: str


class SayingBye(Hooks):
    async def on_run_end(self, ctx: Any, reason: str) -> None:
        await ctx.emit(Bye(reason))


async def test_a_hook_emits_after_its_run_was_not_written(tmp_path: Path) -> None:
    """The hooks' context was made while the run was held: it sends straight on once the run is settled."""
    async with gated_session(tmp_path / "s.db", ScriptedModel(["hello"]), hooks=[SayingBye()]) as (store, session):
        store.fail = 2
        seen = await through_the_gate(session, store)
    assert [type(event).__name__ for event in seen] == ["RunStarted", "Usage", "ErrorEvent", "Bye", "RunFinished"]
