"""Durable sessions through the runtime: opened again by id, recovered after a crash, resumed.

A crash is made real without killing the test process: SQLite's backup API
copies what is committed at that moment, which is exactly what a process
killed then leaves behind (the copy has no owner). The served tests in
``tests/streams/test_durable_served.py`` kill real processes with SIGKILL.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import sqlite3
import string
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import attrs
import pydantic
import pytest
import trio
import trio.testing

from agents import (
    Agent,
    AssistantMessage,
    DocumentPart,
    ModelChunk,
    ModelRequest,
    ReasoningBlock,
    ReasoningChunk,
    ScriptedModel,
    StopChunk,
    ToolCall,
    ToolCallChunk,
    ToolContext,
    ToolResultMessage,
    UnsupportedContentError,
    UsageLimits,
    UserMessage,
    tool,
)
from runtime import (
    InvalidElicitationResponse,
    NothingToResumeError,
    RunFailedError,
    SessionNotFoundError,
    SessionOwnedError,
    SQLiteStore,
    StoreCorruptError,
    StoreUnavailableError,
    UnknownElicitationError,
    open_runtime,
)
from runtime._journal import INTERRUPTED_RESULT, Journal, StoreWriter, carrying, dumps, run_input_to_json
from runtime._runtime import MAX_SESSION_ID_BYTES
from runtime._store import Checkpoint, EventRow, PendingRow, RunRow
from runtime._wire import event_to_json, message_to_json
from runtime.events import (
    AgentSwitched,
    CustomEvent,
    ElicitationRequest,
    ErrorEvent,
    Event,
    ReasoningDelta,
    RunFinished,
    RunStarted,
    SubAgentEvent,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from agents import Message
    from runtime import Session, SessionStore
    from tests.pg import PostgresCluster
    from tests.runtime.store.conftest import Backend

E = TypeVar("E", bound=Event)

paid: list[int] = []
release = trio.Event()


@tool(requires_approval=True)
def pay(amount: int) -> str:
    """Pay."""
    paid.append(amount)
    return f"paid {amount}"


@tool
async def stall() -> str:
    """Wait until the test lets it go."""
    await release.wait()
    return "released"


def answer(request: ModelRequest) -> str | ToolCall:
    last = request.messages[-1]
    if isinstance(last, ToolResultMessage):
        return f"done: {last.text}"
    assert isinstance(last, UserMessage)
    words = last.text.split()
    if words[0] == "pay":
        return ToolCall("pay", {"amount": int(words[1])})
    if words[0] == "stall":
        return ToolCall("stall", {})
    return f"echo: {last.text}"


@pytest.fixture(autouse=True)
def _reset() -> None:
    paid.clear()
    global release
    release = trio.Event()


def make_agent() -> Agent:
    return Agent(name="durable", model=ScriptedModel(itertools.repeat(answer)), tools=[pay, stall])


def crash_image(path: Path, image: Path) -> None:
    """What a process killed now would leave: every committed transaction, and no owner."""
    with sqlite3.connect(path) as source, sqlite3.connect(image) as copy:
        source.backup(copy)
    source.close()
    copy.close()


async def crash_at(tmp_path: Path, session_id: str | None, user_input: str, kind: type[E]) -> tuple[Path, E]:
    """Run ``user_input`` in a new session of a store (``None``: an id the runtime makes) until an event of
    ``kind``, and take a crash image of the store there; the image's path, and that event."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"
    async with (
        in_session(path, make_agent(), session_id=session_id) as session,
        session.run(user_input) as stream,
    ):
        async for event in stream:
            if isinstance(event, kind):
                crash_image(path, image)
                return image, event
    raise AssertionError(f"the run ended without a {kind.__name__}")


class FailingOnce(SQLiteStore):
    """A store whose next commit fails once :attr:`fail` is set (a disk error, say), then works again."""

    fail = False

    async def commit(self, checkpoints: Any) -> None:
        if self.fail:
            self.fail = False
            raise StoreUnavailableError("disk I/O error (once)")
        await super().commit(checkpoints)


@asynccontextmanager
async def in_session(path: Path, agent: Agent, **options: Any) -> AsyncIterator[Session]:
    """A runtime on the SQLite store at ``path``, and ``agent``'s session opened in it (by ``options``)."""
    async with open_runtime(store=SQLiteStore(path)) as runtime, runtime.open_session(agent, **options) as session:
        yield session


async def resume_accepting(session: Session, question: ElicitationRequest) -> list[tuple[str, str]]:
    """Resume with ``question`` accepted, check the run completed, and return the history after its first
    two messages (the interrupted call's turn) as ``(type, text)`` pairs."""
    async with session.resume({question.id: ("accept", None)}) as stream:
        events = [event async for event in stream]
    assert events[-1] == RunFinished("completed")
    return [(type(message).__name__, message.text) for message in session.history[2:]]


def hold_commits(store: SessionStore) -> trio.Event:
    """Make ``store``'s commits wait, from now on, until the event returned is set."""
    gate = trio.Event()
    commit = store.commit

    async def held(checkpoints: Any) -> None:
        await gate.wait()
        await commit(checkpoints)

    store.commit = held  # type: ignore[method-assign]
    return gate


async def leave_before_its_calls(session: Session, store: SessionStore) -> None:
    """Resume ``session``, and leave while the resumption's turn is being written: before its calls are
    made again, and before it is seen to start."""
    gate = hold_commits(store)
    async with session.resume() as stream:
        await trio.testing.wait_all_tasks_blocked()
        stream.cancel()
        assert [event async for event in stream] == [RunFinished("cancelled")]
    gate.set()


def stored_events(path: Path, run_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT event FROM events WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
    db.close()
    return [json.loads(row[0]) for row in rows]


async def test_a_session_opens_again_by_id_with_its_history_usage_and_run_count(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    agent = make_agent()
    async with open_runtime(store=SQLiteStore(path)) as runtime, runtime.open_session(agent, session_id="a") as session:
        assert (await session.ask("hello")).output == "echo: hello"
        first_usage = session.usage
    async with open_runtime(store=SQLiteStore(path)) as runtime, runtime.open_session(agent, session_id="a") as session:
        assert [type(message).__name__ for message in session.history] == ["UserMessage", "AssistantMessage"]
        assert session.usage == first_usage
        result = await session.ask("again")
        assert result.run_id == "a-r2"
        assert len(session.history) == 4


async def test_open_without_create_and_a_second_open_in_one_process_are_typed_errors(tmp_path: Path) -> None:
    async with open_runtime(store=SQLiteStore(tmp_path / "s.db")) as runtime:
        with pytest.raises(SessionNotFoundError):
            async with runtime.open_session(make_agent(), session_id="nobody", create=False):
                pass
        async with runtime.open_session(make_agent(), session_id="b"):
            with pytest.raises(SessionOwnedError):
                async with runtime.open_session(make_agent(), session_id="b"):
                    pass


async def test_a_run_interrupted_mid_tool_is_marked_and_its_history_repaired(tmp_path: Path) -> None:
    agent = make_agent()
    image, started = await crash_at(tmp_path, "c", "stall", ToolCallStarted)
    async with in_session(image, agent, session_id="c") as session:
        assert session.pending == ()
        last = session.history[-1]
        assert isinstance(last, ToolResultMessage)
        assert (last.call_id, last.content, last.is_error) == (started.call_id, INTERRUPTED_RESULT, True)
        with pytest.raises(NothingToResumeError):
            async with session.resume():
                pass
        assert (await session.ask("hi")).output == "echo: hi"
    log = stored_events(image, "c-r1")
    assert log[0]["type"] == "RunStarted"
    assert [event["type"] for event in log].count("RunFinished") == 1
    assert log[-1]["reason"] == "interrupted"


async def test_resume_asks_the_waiting_question_again_with_its_id_and_goes_on(tmp_path: Path) -> None:
    agent = make_agent()
    image, asked = await crash_at(tmp_path, "d", "pay 3", ElicitationRequest)
    async with in_session(image, agent, session_id="d") as session:
        assert session.pending == (asked,)
        assert session.suspended_run == "d-r1"
        events: list[Event] = []
        async with session.resume() as stream:
            async for event in stream:
                events.append(event)
                if isinstance(event, ElicitationRequest):
                    await stream.respond(event.id, "accept")
        assert events[0] == RunStarted("d-r2", resumes="d-r1")
        assert [event.id for event in events if isinstance(event, ElicitationRequest)] == [asked.id]
        assert events[-1] == RunFinished("completed")
        assert stream.result.output == "done: paid 3"
        assert not session.pending
    assert paid == [3]


@pytest.mark.parametrize(
    "request_json",
    [
        "[]",
        '"x"',
        "{}",
        '{"type": "ElicitationRequest"}',
        '{"id": "elicitation-other", "message": "Pay?"}',
        '{"id": ID, "message": 5}',
        '{"id": ID, "message": "Pay?", "schema": [1]}',
    ],
    ids=["array", "string", "empty", "no-id", "other-id", "message-number", "schema-array"],
)
async def test_a_stored_question_that_is_not_a_request_fails_the_open_with_a_typed_error(
    tmp_path: Path, request_json: str
) -> None:
    """A pending row whose request is not an ElicitationRequest fails open_session with StoreCorruptError and
    leaves the session unclaimed (it opened, then session.pending and resume raised KeyError or TypeError)."""
    image, asked = await crash_at(tmp_path, "q", "pay 5", ElicitationRequest)
    with sqlite3.connect(image) as db:
        db.execute("UPDATE pending SET request = ?", (request_json.replace("ID", json.dumps(asked.id)),))
    db.close()
    async with open_runtime(store=SQLiteStore(image)) as runtime:
        for _ in range(2):
            with pytest.raises(StoreCorruptError, match="'q'"):
                async with runtime.open_session(make_agent(), session_id="q"):
                    pass
        assert runtime.sessions == ()
    assert paid == []


async def test_answers_given_to_resume_are_used_and_unknown_ones_refused(tmp_path: Path) -> None:
    agent = make_agent()
    image, asked = await crash_at(tmp_path, "e", "pay 4", ElicitationRequest)
    async with in_session(image, agent, session_id="e") as session:
        with pytest.raises(UnknownElicitationError):
            async with session.resume({"elicitation-nope": ("accept", None)}):
                pass
        assert session.pending == (asked,)  # a refused answer changes nothing
        async with session.resume({asked.id: ("decline", None)}) as stream:
            events = [event async for event in stream]
        assert not any(isinstance(event, ElicitationRequest) for event in events)
        assert stream.result.tool_calls[0].error == "declined by user"
        assert events[-1] == RunFinished("completed")
    assert paid == []


async def test_run_on_a_suspended_session_settles_the_waiting_call_then_takes_the_new_message(
    tmp_path: Path,
) -> None:
    agent = make_agent()
    image, asked = await crash_at(tmp_path, "f", "pay 5", ElicitationRequest)
    async with in_session(image, agent, session_id="f") as session:
        async with session.run("thanks") as stream:
            async for event in stream:
                if isinstance(event, ElicitationRequest):
                    assert event.id == asked.id
                    await stream.respond(event.id, "accept")
        assert stream.result.output == "echo: thanks"
        kinds = [type(message).__name__ for message in session.history]
        assert kinds == ["UserMessage", "AssistantMessage", "ToolResultMessage", "UserMessage", "AssistantMessage"]
    assert paid == [5]


async def test_postgres_going_away_fails_a_run_with_a_store_error_and_the_session_recovers(
    postgres_cluster: PostgresCluster,
) -> None:
    from runtime import PostgresStore

    dsn = postgres_cluster.create_database()
    with trio.fail_after(60):
        async with open_runtime(store=PostgresStore(dsn)) as runtime:
            async with runtime.open_session(make_agent(), session_id="g") as session:
                assert (await session.ask("one")).output == "echo: one"
                await trio.to_thread.run_sync(postgres_cluster.stop, "immediate")
                try:
                    async with session.run("two") as stream:
                        events = [event async for event in stream]
                finally:
                    await trio.to_thread.run_sync(postgres_cluster.start)
                errors = [event for event in events if isinstance(event, ErrorEvent)]
                assert isinstance(events[0], RunStarted)  # first, even though what it promises failed
                assert [error.kind for error in errors] == ["store"]
                assert events[-1] == RunFinished("error", errors[0].message)
                # Back: the writer's retry writes what waited (it polls the server, with backoff: so does this,
                # bounded by fail_after), and runs go on.
                writer = runtime._writer
                assert writer is not None
                while True:
                    if writer.failure is None and not writer.backlog:
                        break
                    await trio.sleep(0.05)
                assert (await session.ask("three")).output == "echo: three"
        async with open_runtime(store=PostgresStore(dsn)) as runtime:
            async with runtime.open_session(make_agent(), session_id="g", create=False) as session:
                assert session.run_count == 3  # the failed run's row was kept through the outage
                assert [message.text for message in session.history] == ["one", "echo: one", "three", "echo: three"]


async def test_the_users_message_is_written_before_run_started(tmp_path: Path) -> None:
    """The first durability point: a crash right after RunStarted still has the run and its message."""
    agent = make_agent()
    image, _ = await crash_at(tmp_path, "h", "stall", RunStarted)
    async with in_session(image, agent, session_id="h") as session:
        assert session.history[0] == UserMessage("stall")
        assert session.run_count == 1
    assert stored_events(image, "h-r1")[-1]["reason"] == "interrupted"


async def test_a_fresh_session_is_made_in_the_store_by_its_first_run_before_run_started(tmp_path: Path) -> None:
    """A session whose id the runtime made is stored by its first checkpoint (opening it wrote nothing):
    a crash right after RunStarted has the session, the run and its message."""
    image, started = await crash_at(tmp_path, None, "stall", RunStarted)
    session_id = started.run_id.rsplit("-r", 1)[0]
    async with in_session(image, make_agent(), session_id=session_id, create=False) as session:
        assert session.history[0] == UserMessage("stall")
        assert session.run_count == 1
    with sqlite3.connect(image) as db:
        assert db.execute("SELECT agent FROM sessions WHERE id = ?", (session_id,)).fetchone() == ("durable",)
    db.close()


async def test_a_fresh_session_opens_without_the_store_and_is_taken_at_once(tmp_path: Path) -> None:
    """Opening a session with an id the runtime makes reads and writes nothing: it opens while another
    connection holds the file's write lock (a claim would wait for it, then fail). Its id is taken at
    once all the same (another store cannot open it), and its first run stores it."""
    path = tmp_path / "s.db"
    agent = make_agent()
    async with open_runtime(store=SQLiteStore(path)) as other:
        async with open_runtime(store=SQLiteStore(path)) as runtime:
            held = sqlite3.connect(path, isolation_level=None)
            try:
                held.execute("BEGIN IMMEDIATE")
                async with runtime.open_session(agent) as session:
                    with pytest.raises(SessionOwnedError):
                        async with other.open_session(agent, session_id=session.id):
                            pass
                    held.execute("ROLLBACK")
                    assert (await session.ask("hello")).output == "echo: hello"
            finally:
                held.close()
        async with other.open_session(agent, session_id=session.id, create=False) as again:
            assert [type(message).__name__ for message in again.history] == ["UserMessage", "AssistantMessage"]


async def test_a_fresh_session_closed_before_any_run_is_stored_and_opens_again(tmp_path: Path) -> None:
    """A fresh session that never ran is still made in the store when it closes (by the writer, as every
    close's last changes are): opened again by id, here and in a new runtime, it is there and empty."""
    path = tmp_path / "s.db"
    agent = make_agent()
    async with open_runtime(store=SQLiteStore(path)) as runtime:
        async with runtime.open_session(agent) as session:
            pass
        async with runtime.open_session(agent, session_id=session.id, create=False) as again:
            assert (again.history, again.run_count) == ((), 0)
    async with (
        open_runtime(store=SQLiteStore(path)) as runtime,
        runtime.open_session(agent, session_id=session.id, create=False) as again,
    ):
        assert (await again.ask("hi")).run_id == f"{session.id}-r1"


async def test_a_session_closed_and_opened_again_at_once_in_one_runtime_has_everything(tmp_path: Path) -> None:
    """A closed session's last changes are written after it closed, by the writer: opening it again by id
    waits for them (and for its claim to be let go) instead of failing or seeing less."""
    agent = make_agent()
    async with open_runtime(store=SQLiteStore(tmp_path / "s.db")) as runtime:
        for k in range(5):
            async with runtime.open_session(agent, session_id="i") as session:
                assert len(session.history) == 2 * k
                assert (await session.ask(f"hello {k}")).output == f"echo: hello {k}"


async def test_a_session_whose_rows_are_garbage_fails_to_open_with_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with open_runtime(store=SQLiteStore(path)) as runtime, runtime.open_session(make_agent(), session_id="j"):
        pass
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO messages (session_id, seq, message) VALUES ('j', 0, '{\"role\": \"robot\"}')")
    db.close()
    async with open_runtime(store=SQLiteStore(path)) as runtime:
        with pytest.raises(StoreCorruptError, match="'j'"):
            async with runtime.open_session(make_agent(), session_id="j"):
                pass
        # Nothing is left claimed: the session can be tried again (and fails the same way).
        with pytest.raises(StoreCorruptError):
            async with runtime.open_session(make_agent(), session_id="j"):
                pass


@pytest.mark.parametrize("usage", ["not json", "[1]", '{"requests": "x"}', '{"tool_calls": -1}', '{"requests": 1e999}'])
async def test_a_session_whose_usage_is_garbage_fails_to_open_with_a_typed_error(tmp_path: Path, usage: str) -> None:
    """A session row whose usage column is not what trio-agents writes fails to open with StoreCorruptError,
    and leaves the session unclaimed (a second try fails the same way, not with SessionOwnedError)."""
    path = tmp_path / "s.db"
    async with open_runtime(store=SQLiteStore(path)) as runtime, runtime.open_session(make_agent(), session_id="j"):
        pass
    with sqlite3.connect(path) as db:
        db.execute("UPDATE sessions SET usage = ? WHERE id = 'j'", (usage,))
    db.close()
    async with open_runtime(store=SQLiteStore(path)) as runtime:
        for _ in range(2):
            with pytest.raises(StoreCorruptError, match="'j'"):
                async with runtime.open_session(make_agent(), session_id="j"):
                    pass
        assert runtime.sessions == ()


@pytest.mark.parametrize(
    "garbage",
    [
        "UPDATE events SET event = 'not json' WHERE run_id = 'j-r1' AND seq = 0",
        """UPDATE events SET event = '{"type": "ToolCallStarted", "call_id": "x"}' WHERE run_id = 'j-r1'""",
        "UPDATE runs SET input = '[1, 2]' WHERE run_id = 'j-r1'",
    ],
    ids=["event not JSON", "event without a field", "run input a list"],
)
async def test_an_interrupted_run_whose_rows_are_garbage_fails_to_open_with_a_typed_error(
    tmp_path: Path, garbage: str
) -> None:
    """The rows of a run interrupted in a tool (its log, its input) are read when the session opens: rows
    trio-agents did not write fail with StoreCorruptError, and leave the session unclaimed. They raised
    JSONDecodeError, KeyError and AttributeError."""
    image, _ = await crash_at(tmp_path, "j", "stall", ToolCallStarted)
    with sqlite3.connect(image) as db:
        assert db.execute(garbage).rowcount >= 1
    db.close()
    async with open_runtime(store=SQLiteStore(image)) as runtime:
        for _ in range(2):
            with pytest.raises(StoreCorruptError, match="'j'"):
                async with runtime.open_session(make_agent(), session_id="j"):
                    pass
        assert runtime.sessions == ()


async def test_a_resumption_interrupted_in_its_turn_is_the_run_resumed_next(tmp_path: Path) -> None:
    """Crash while waiting, resume, crash again while the same question waits: the next resumption names
    the second run, and the question keeps its id."""
    agent = make_agent()
    image, asked = await crash_at(tmp_path, "k", "pay 6", ElicitationRequest)
    again = tmp_path / "again.db"
    async with (
        in_session(image, agent, session_id="k") as session,
        session.resume() as stream,
    ):
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                assert event.id == asked.id
                crash_image(image, again)
                break
    async with in_session(again, agent, session_id="k") as session:
        assert session.suspended_run == "k-r2"
        assert session.pending == (asked,)
        async with session.resume({asked.id: ("accept", None)}) as stream:
            events = [event async for event in stream]
        assert events[0] == RunStarted("k-r3", resumes="k-r2")
        assert events[-1] == RunFinished("completed")
    assert paid == [6]


async def test_a_streamed_answer_is_logged_as_one_text_event(tmp_path: Path) -> None:
    """The pieces a model streams between two other events are written as one TextDelta with all their text."""
    words = " ".join(f"w{i}" for i in range(300))
    async with in_session(tmp_path / "s.db", make_agent(), session_id="long") as session:
        async with session.run(words) as stream:
            streamed = [event async for event in stream]
    assert sum(isinstance(event, TextDelta) for event in streamed) > 100  # streamed word by word
    logged = stored_events(tmp_path / "s.db", stream.run_id)
    assert [event["text"] for event in logged if event["type"] == "TextDelta"] == [f"echo: {words}"]
    assert logged[-1]["type"] == "RunFinished"


async def test_text_pieces_are_joined_per_checkpoint_and_numbered_in_order() -> None:
    """Pieces before a checkpoint is taken are one event; pieces after it start the next, in sequence."""
    writer = StoreWriter(cast("SessionStore", None))
    journal = Journal(writer, "s", 0, [])
    for event in (RunStarted("r1"), TextDelta("a"), TextDelta("b"), ReasoningDelta("x"), TextDelta("c")):
        journal.event("r1", event)
    first = journal.take()
    journal.event("r1", TextDelta("d"))
    journal.event("r1", TextDelta("e"))
    journal.event("r1", RunFinished("completed"))
    second = journal.take()
    logged = [(row.seq, json.loads(row.event)) for row in (*first.events, *second.events)]
    assert [(seq, event["type"], event.get("text")) for seq, event in logged] == [
        (0, "RunStarted", None),
        (1, "TextDelta", "ab"),
        (2, "ReasoningDelta", "x"),
        (3, "TextDelta", "c"),
        (4, "TextDelta", "de"),
        (5, "RunFinished", None),
    ]


async def test_a_journal_keeps_no_row_of_a_finished_run() -> None:
    """A run's row (it holds the user's whole input) is kept only until its RunFinished is recorded: a
    finished run's row, stored or just written, is dropped, and a run finishing after its row was taken
    still gets its finished row written. They were all kept for the session's life, loaded again at open."""
    writer = StoreWriter(cast("SessionStore", None))
    stored = (RunRow("r0", 0, '"old"', "finished", "completed"), RunRow("r1", 1, '"waiting"', "running"))
    journal = Journal(writer, "s", 0, [], runs=stored)
    journal.run_row(RunRow("r2", 2, '"new"', "running"))
    journal.take()
    journal.event("r2", RunFinished("completed"))
    assert [(row.run_id, row.status) for row in journal.take().runs] == [("r2", "finished")]
    journal.event("r1", RunFinished("cancelled"))
    assert [(row.run_id, row.status, row.input) for row in journal.take().runs] == [("r1", "finished", '"waiting"')]
    assert journal._known == {}


async def test_a_checkpoint_cuts_the_stored_history_only_after_a_repair() -> None:
    """A journal whose store holds more message rows than it keeps (a repaired history) asks the next
    checkpoint to cut them; after that commit, and for a fresh session, nothing is cut (no statement)."""
    writer = StoreWriter(cast("SessionStore", None))
    history: list[Any] = [UserMessage("a"), UserMessage("b")]
    repaired = Journal(writer, "s", 3, history, stored=1, rows=3)
    first = repaired.take()
    assert (first.message_base, first.cut, len(first.messages)) == (1, True, 1)
    repaired.committed(first)
    history.append(UserMessage("c"))
    second = repaired.take()
    assert (second.message_base, second.cut, len(second.messages)) == (2, False, 1)
    fresh = Journal(writer, "f", 0, [UserMessage("x")], stored=0, rows=0, create="agent")
    assert fresh.take().cut is False


async def test_a_repair_inside_the_history_rewrites_the_stored_messages_after_it(tmp_path: Path) -> None:
    """A run interrupted with one of two calls answered: its missing result goes right after the call,
    before the stored answer, so the stored history is rewritten from there (cut, then written again)."""
    path = tmp_path / "s.db"
    calls = (ToolCallChunk("a", "pay", {"amount": 1}), ToolCallChunk("b", "pay", {"amount": 2}))
    stored: list[Message] = [UserMessage("pay twice"), AssistantMessage("", calls), ToolResultMessage("a", "pay", "1")]
    store = SQLiteStore(path)
    async with store.open("crashed-host:1"):  # what a process killed after the first call's result leaves
        await store.claim("m", "durable", create=True)
        run = RunRow("m-r1", 1, run_input_to_json("pay twice", 0), "running")
        await store.commit([Checkpoint("m", 0, 0, [dumps(message_to_json(m)) for m in stored], [run])])
    repaired = [stored[0], stored[1], ToolResultMessage("b", "pay", INTERRUPTED_RESULT, True), stored[2]]
    for _ in range(2):  # recovered, then as written back
        async with in_session(path, make_agent(), session_id="m", create=False) as session:
            assert list(session.history) == repaired


async def test_an_interrupted_runs_log_finishes_each_call_it_started_before_its_run_finished(tmp_path: Path) -> None:
    """A run interrupted with one of two calls finished: recovery logs a ToolCallFinished for the other (its
    error the result the repaired history gives it) before the RunFinished, as every run's log has."""
    path = tmp_path / "s.db"
    calls = (ToolCallChunk("a", "pay", {"amount": 1}), ToolCallChunk("b", "pay", {"amount": 2}))
    stored: list[Message] = [UserMessage("pay twice"), AssistantMessage("", calls), ToolResultMessage("a", "pay", "1")]
    logged: list[Event] = [
        RunStarted("f-r1"),
        ToolCallStarted("a", "pay", {"amount": 1}),
        ToolCallStarted("b", "pay", {"amount": 2}),
        ToolCallFinished("a", "pay", "1"),
    ]
    store = SQLiteStore(path)
    async with store.open("crashed-host:1"):  # what a process killed in the second call's body leaves
        await store.claim("f", "durable", create=True)
        run = RunRow("f-r1", 1, run_input_to_json("pay twice", 0), "running")
        events = [EventRow("f-r1", seq, dumps(event_to_json(event))) for seq, event in enumerate(logged)]
        await store.commit([Checkpoint("f", 0, 0, [dumps(message_to_json(m)) for m in stored], [run], events)])
    async with in_session(path, make_agent(), session_id="f", create=False):
        pass
    log = stored_events(path, "f-r1")
    assert [(event["type"], event.get("call_id")) for event in log] == [
        ("RunStarted", None),
        ("ToolCallStarted", "a"),
        ("ToolCallStarted", "b"),
        ("ToolCallFinished", "a"),
        ("ToolCallFinished", "b"),
        ("RunFinished", None),
    ]
    assert (log[4]["result"], log[4]["error"], log[5]["reason"]) == (None, INTERRUPTED_RESULT, "interrupted")


async def test_an_interrupted_runs_log_closes_the_sub_agent_runs_it_left_open(tmp_path: Path) -> None:
    """A run interrupted inside a sub-agent's tool call: recovery closes the sub-agent's run as a live one
    ends, wrapped as its events were (its call's ToolCallFinished, its RunFinished, the AgentSwitched back),
    then the parent's own call; a sub-agent run that had finished is left as it was. Before, only top-level
    calls were closed: the nested call and run stayed open in the log forever."""
    path = tmp_path / "s.db"
    calls = (ToolCallChunk("c1", "transfer_task", {"agent": "child", "task": "go"}),)
    stored: list[Message] = [UserMessage("delegate"), AssistantMessage("", calls)]

    def child(event: Event) -> Event:
        return SubAgentEvent("child", event)

    logged: list[Event] = [
        RunStarted("g-r1"),
        ToolCallStarted("c1", "transfer_task", {"agent": "child", "task": "go"}),
        AgentSwitched("durable", "child"),
        child(RunStarted("g-r1/child-1")),
        child(ToolCallStarted("c1", "pay", {"amount": 1})),  # the same id as the parent's call, one level down
        child(ToolCallFinished("c1", "pay", "paid 1")),
        child(ToolCallStarted("c2", "stall", {})),
        child(AgentSwitched("child", "grandchild")),
        child(SubAgentEvent("grandchild", RunStarted("g-r1/child-1/grandchild-1"))),
        child(SubAgentEvent("grandchild", RunFinished("completed"))),
        child(AgentSwitched("grandchild", "child")),
    ]
    store = SQLiteStore(path)
    async with store.open("crashed-host:1"):
        await store.claim("g", "durable", create=True)
        run = RunRow("g-r1", 1, run_input_to_json("delegate", 0), "running")
        events = [EventRow("g-r1", seq, dumps(event_to_json(event))) for seq, event in enumerate(logged)]
        await store.commit([Checkpoint("g", 0, 0, [dumps(message_to_json(m)) for m in stored], [run], events)])
    async with in_session(path, make_agent(), session_id="g", create=False):
        pass
    interrupted = "the process running it stopped"
    owed: list[Event] = [
        child(ToolCallFinished("c2", "stall", None, INTERRUPTED_RESULT)),
        child(RunFinished("interrupted", interrupted)),
        AgentSwitched("child", "durable"),
        ToolCallFinished("c1", "transfer_task", None, INTERRUPTED_RESULT),
        RunFinished("interrupted", interrupted),
    ]
    assert stored_events(path, "g-r1")[len(logged) :] == [event_to_json(event) for event in owed]


async def test_a_call_id_answered_in_an_earlier_run_does_not_hide_an_interrupted_call(tmp_path: Path) -> None:
    """Models may repeat call ids across turns (a scripted model per process, Gemini without ids): a call
    is answered by a result after it, not by an earlier call's result of the same id."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"
    async with (
        in_session(path, make_agent(), session_id="n") as session,
        session.run("pay 7") as stream,
    ):
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                await stream.respond(event.id, "accept")
    first_call = next(m for m in session.history if isinstance(m, AssistantMessage)).tool_calls[0].call_id
    # A new process, whose model numbers its calls from the start again.
    async with (
        in_session(path, make_agent(), session_id="n") as session,
        session.run("stall") as stream,
    ):
        async for event in stream:
            if isinstance(event, ToolCallStarted):
                assert event.call_id == first_call
                crash_image(path, image)
                break
    async with in_session(image, make_agent(), session_id="n") as session:
        last = session.history[-1]
        assert isinstance(last, ToolResultMessage)
        assert (last.call_id, last.content, last.is_error) == (first_call, INTERRUPTED_RESULT, True)
        assert (await session.ask("hi")).output == "echo: hi"
    assert stored_events(image, "n-r2")[-1]["reason"] == "interrupted"
    assert paid == [7]


async def test_a_question_waiting_under_a_call_id_used_before_is_pending_after_a_crash(tmp_path: Path) -> None:
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"
    async with in_session(path, make_agent(), session_id="o") as session:
        async with session.run("pay 1") as stream:
            async for event in stream:
                if isinstance(event, ElicitationRequest):
                    await stream.respond(event.id, "accept")
    async with (
        in_session(path, make_agent(), session_id="o") as session,
        session.run("pay 2") as stream,
    ):
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                asked = event
                crash_image(path, image)
                break
    async with in_session(image, make_agent(), session_id="o") as session:
        assert session.pending == (asked,)
        assert session.suspended_run == "o-r2"
        async with session.resume({asked.id: ("accept", None)}) as stream:
            events = [event async for event in stream]
        assert events[-1] == RunFinished("completed")
        assert stream.result.output == "done: paid 2"
    assert paid == [1, 2]


def greedy(request: ModelRequest) -> str | ToolCall:
    """Pays what the user says, then asks to pay 5000 more (a second call that must be approved on its own)."""
    last = request.messages[-1]
    if isinstance(last, UserMessage):
        return ToolCall("pay", {"amount": int(last.text.split()[1])})
    assert isinstance(last, ToolResultMessage)
    return ToolCall("pay", {"amount": 5000}) if last.text == "paid 10" else f"done: {last.text}"


async def test_an_answer_given_to_resume_approves_the_resumed_call_only(tmp_path: Path) -> None:
    """The resumed run's model makes a new call with the very id of the resumed one (its model numbers
    calls from the start again): the answer given for the old question must not approve it."""
    image, asked = await crash_at(tmp_path, "p", "pay 10", ElicitationRequest)
    agent = Agent(name="durable", model=ScriptedModel(itertools.repeat(greedy)), tools=[pay])
    async with (
        in_session(image, agent, session_id="p") as session,
        session.resume({asked.id: ("accept", None)}) as stream,
    ):
        questions = []
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                questions.append(event)
                await stream.respond(event.id, "decline")
        calls = stream.result.tool_calls
    assert len(calls) == 2
    assert calls[0].call_id == calls[1].call_id  # the model did repeat the id
    assert len(questions) == 1
    assert questions[0].id != asked.id
    assert paid == [10]
    assert calls[1].error == "declined by user"


async def test_a_run_waiting_for_its_turn_keeps_its_message_through_a_crash(tmp_path: Path) -> None:
    """The second run waits behind the first; the process dies once the second has started. Its message
    was accepted (its RunStarted was sent): recovery puts it after the first run's messages."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"
    agent = Agent(name="durable", model=ScriptedModel(itertools.repeat(answer)), tools=[stall])
    async with (
        in_session(path, agent, session_id="q") as session,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(session.ask, "stall")
        await trio.testing.wait_all_tasks_blocked()
        async with session.run("second") as stream:  # waits behind the first run
            release.set()
            first = await stream.__anext__()
            crash_image(path, image)
            assert type(first) is RunStarted
            assert first.run_id == "q-r2"
    async with in_session(image, agent, session_id="q") as session:
        texts = [message.text for message in session.history]
        assert texts == ["stall", "", "released", "done: released", "second"]
    assert stored_events(image, "q-r2")[-1]["reason"] == "interrupted"


async def test_a_run_cancelled_while_waiting_for_its_turn_is_logged_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with (
        in_session(path, make_agent(), session_id="g") as session,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(session.ask, "stall")
        await trio.testing.wait_all_tasks_blocked()
        async with session.run("never") as stream:
            pass  # left while it waits for the first run: cancelled before it started
        assert stream.result.reason == "cancelled"
        release.set()
    assert [event["type"] for event in stored_events(path, "g-r2")] == ["RunFinished"]
    assert stored_events(path, "g-r2")[0]["reason"] == "cancelled"
    async with in_session(path, make_agent(), session_id="g") as session:
        assert [message.text for message in session.history] == ["stall", "", "released", "done: released"]
    assert stored_events(path, "g-r2")[-1]["reason"] == "cancelled"  # not marked interrupted on reopen


class Gated(SQLiteStore):
    """A store whose commits wait, once :attr:`gate` is set, until it is; :attr:`waiting` says one does."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate: trio.Event | None = None
        self.waiting = trio.Event()

    async def commit(self, checkpoints: Any) -> None:
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        await super().commit(checkpoints)


async def test_a_run_cancelled_while_its_message_is_written_streams_only_its_run_finished(tmp_path: Path) -> None:
    """A durable run cancelled at its first durability point (its user's message not yet written) never started,
    as the README says: its stream, and its stored log, are that one ``RunFinished("cancelled")``."""
    path = tmp_path / "s.db"
    store = Gated(path)
    async with open_runtime(store=store) as runtime, runtime.open_session(make_agent(), session_id="w") as session:
        store.gate = gate = trio.Event()
        async with session.run("hello") as stream:
            await store.waiting.wait()
            stream.cancel()
            events = [event async for event in stream]
        assert events == [RunFinished("cancelled")]
        store.gate = None
        gate.set()
    assert [(event["type"], event["reason"]) for event in stored_events(path, "w-r1")] == [("RunFinished", "cancelled")]


async def test_a_resumption_that_ends_before_calling_again_leaves_the_session_suspended(tmp_path: Path) -> None:
    """The resuming run's consumer leaves before the waiting call is called again: the question stays
    pending, and the next run resumes (the history never has a call without its result)."""
    image, asked = await crash_at(tmp_path, "r", "pay 3", ElicitationRequest)
    async with in_session(image, make_agent(), session_id="r") as session:
        async with session.resume() as stream:
            pass
        assert stream.result.reason == "cancelled"
        assert session.pending == (asked,)
        assert session.suspended_run == "r-r1"
        async with session.resume({asked.id: ("accept", None)}) as stream:
            events = [event async for event in stream]
        assert events[0] == RunStarted("r-r3", resumes="r-r1")
        assert stream.result.output == "done: paid 3"
    assert paid == [3]


async def test_a_commit_failing_as_the_runtime_closes_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a run wrote last goes with the close's commit: a store that fails it once is tried again
    (within the close timeout), and nothing accepted is lost."""
    # No group commit before the close: on a busy machine its 5 ms could pass before the test sets `fail`
    # (the retry after the failure waits for it too).
    monkeypatch.setattr("runtime._journal.GROUP_COMMIT_DELAY", 0.5)
    path = tmp_path / "s.db"
    store = FailingOnce(path)
    async with open_runtime(store=store) as runtime, runtime.open_session(make_agent(), session_id="c") as session:
        assert (await session.ask("hello")).output == "echo: hello"
        store.fail = True
    assert not store.fail
    async with in_session(path, make_agent(), session_id="c") as session:
        assert [message.text for message in session.history] == ["hello", "echo: hello"]
    assert stored_events(path, "c-r1")[-1]["reason"] == "completed"


class BuggyStore(SQLiteStore):
    """A store whose commit has a bug (it raises what no store should)."""

    async def commit(self, checkpoints: Any) -> None:
        raise ValueError("bug in the store")


async def test_a_writer_that_fails_in_the_block_raises_its_error_alone(tmp_path: Path) -> None:
    """A store bug that kills the writer while the runtime's block waits ends the block with that error as
    itself: the Cancelled the writer's failure sent into the block is not raised beside it (it was, in a group
    the caller's `except ValueError` missed)."""
    agent = Agent(name="a", model=ScriptedModel(["hi"]))
    with pytest.raises(ValueError, match="bug in the store"):
        async with open_runtime(store=BuggyStore(tmp_path / "s.db")) as runtime:
            async with runtime.open_session(agent) as session:
                await session.ask("go")


class Boom(Exception):
    """An error of the code inside the runtime's block."""


@pytest.mark.parametrize("how", ["cancel", "error", "ctrl-c"])
async def test_leaving_the_runtime_block_by_a_cancel_an_error_or_ctrl_c_writes_what_is_left_then_raises_it(
    tmp_path: Path, how: str
) -> None:
    """Leaving ``open_runtime(store=...)`` by a cancel, an error or Ctrl-C while a run waits in a tool: the close
    still writes the run's end (``cancelled``, not marked interrupted on reopen), and then the block's exception
    goes on as itself (a cancel reaches its scope; the code after the block does not run)."""
    path = tmp_path / "s.db"
    outcome = "cancel"
    with trio.CancelScope() as outer:
        try:
            async with in_session(path, make_agent(), session_id="x") as session:
                assert (await session.ask("hello")).output == "echo: hello"
                in_tool = trio.Event()

                async def consume() -> None:
                    async with session.run("stall") as stream:
                        async for event in stream:
                            if isinstance(event, ToolCallStarted):
                                in_tool.set()

                session.start_soon(consume)
                await in_tool.wait()
                if how == "cancel":
                    outer.cancel()
                    await trio.sleep_forever()
                raise Boom("the block failed") if how == "error" else KeyboardInterrupt
            outcome = "returned"
        except Boom:
            outcome = "error"
        except KeyboardInterrupt:
            outcome = "ctrl-c"
    assert outcome == how
    assert outer.cancelled_caught == (how == "cancel")
    ended = stored_events(path, "x-r2")[-2:]
    assert [event["type"] for event in ended] == ["ToolCallFinished", "RunFinished"]
    assert ended[-1]["reason"] == "cancelled"
    async with in_session(path, make_agent(), session_id="x") as session:
        assert [message.text for message in session.history][:3] == ["hello", "echo: hello", "stall"]
    assert stored_events(path, "x-r2")[-1]["reason"] == "cancelled"  # not marked interrupted on reopen


async def test_an_approved_body_runs_once_though_the_process_dies_in_it(tmp_path: Path) -> None:
    """The approval is written before the body runs: a process that dies in the body leaves the call
    interrupted, not its question pending to be approved and run again."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"

    @tool(requires_approval=True)
    def transfer(amount: int) -> str:
        """Transfer."""
        paid.append(amount)
        crash_image(path, image)  # the process dies right after the side effect
        return f"sent {amount}"

    def model(request: ModelRequest) -> str | ToolCall:
        last = request.messages[-1]
        return ToolCall("transfer", {"amount": 100}) if isinstance(last, UserMessage) else "sent"

    agent = Agent(name="durable", model=ScriptedModel(itertools.repeat(model)), tools=[transfer])
    async with (
        in_session(path, agent, session_id="t") as session,
        session.run("send it") as stream,
    ):
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                await stream.respond(event.id, "accept")
    async with in_session(image, agent, session_id="t") as session:
        assert session.pending == ()
        last = session.history[-1]
        assert isinstance(last, ToolResultMessage)
        assert last.content == INTERRUPTED_RESULT
        with pytest.raises(NothingToResumeError):
            async with session.resume():
                pass
    assert paid == [100]


async def test_an_answer_is_written_before_the_tool_acts_on_it(tmp_path: Path) -> None:
    """A tool acts on its question's answer and the process dies right after: the answer was written before
    the tool got it, so the question is not pending again (the code after it would run twice): the call is
    interrupted."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"

    @tool
    async def send(ctx: ToolContext[None], amount: int) -> str:
        """Send."""
        await ctx.elicit("Send it?")
        paid.append(amount)
        crash_image(path, image)  # the process dies right after the side effect
        return f"sent {amount}"

    def model(request: ModelRequest) -> str | ToolCall:
        last = request.messages[-1]
        return ToolCall("send", {"amount": 7}) if isinstance(last, UserMessage) else "sent"

    agent = Agent(name="durable", model=ScriptedModel(itertools.repeat(model)), tools=[send])
    async with (
        in_session(path, agent, session_id="w") as session,
        session.run("send it") as stream,
    ):
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                await stream.respond(event.id, "accept")
    async with in_session(image, agent, session_id="w") as session:
        assert session.pending == ()
        last = session.history[-1]
        assert isinstance(last, ToolResultMessage)
        assert last.content == INTERRUPTED_RESULT
    assert paid == [7]


async def test_a_call_that_asked_twice_resumes_with_each_answer_for_its_own_question(tmp_path: Path) -> None:
    """Approved, then its body asks which account, and the process dies: only the account question is
    pending, and its answer goes to that question when the call is made again (the approval, written, is
    asked again: the body runs from the top)."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"
    got: list[Any] = []

    @tool(requires_approval=True)
    async def transfer(ctx: ToolContext[None], amount: int) -> str:
        """Transfer."""
        account = await ctx.elicit("Which account?", schema=str)
        got.append(account.content)
        return f"sent {amount} from {account.content}"

    def model(request: ModelRequest) -> str | ToolCall:
        last = request.messages[-1]
        return ToolCall("transfer", {"amount": 9}) if isinstance(last, UserMessage) else f"done: {last.text}"

    agent = Agent(name="durable", model=ScriptedModel(itertools.repeat(model)), tools=[transfer])
    async with (
        in_session(path, agent, session_id="w") as session,
        session.run("send") as stream,
    ):
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                if event.message == "Which account?":
                    account = event
                    crash_image(path, image)
                    break
                await stream.respond(event.id, "accept")
    async with in_session(image, agent, session_id="w") as session:
        assert session.pending == (account,)
        async with session.resume({account.id: ("accept", "acct-42")}) as stream:
            async for event in stream:
                if isinstance(event, ElicitationRequest):
                    assert event.message.startswith("Allow durable to run transfer")
                    assert event.id != account.id
                    await stream.respond(event.id, "accept")
        assert stream.result.output == "done: sent 9 from acct-42"
    assert got == ["acct-42"]


async def test_a_message_sent_while_resuming_follows_the_resumed_calls_results_after_a_crash(
    tmp_path: Path,
) -> None:
    """run("thanks") on a suspended session calls the waiting call again first; the process dies while it
    asks again. Recovered, "thanks" waits for that call's result, which it follows once resumed."""
    image, asked = await crash_at(tmp_path, "x", "pay 5", ElicitationRequest)
    again = tmp_path / "again.db"
    async with (
        in_session(image, make_agent(), session_id="x") as session,
        session.run("thanks") as stream,
    ):
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                crash_image(image, again)
                break
    async with in_session(again, make_agent(), session_id="x") as session:
        assert [type(message).__name__ for message in session.history] == ["UserMessage", "AssistantMessage"]
        assert session.pending == (asked,)
        assert await resume_accepting(session, asked) == [
            ("ToolResultMessage", "paid 5"),
            ("UserMessage", "thanks"),
            ("AssistantMessage", "echo: thanks"),
        ]
    assert paid == [5]


async def test_an_approval_the_store_cannot_write_runs_nothing_and_says_so(tmp_path: Path) -> None:
    """An approval given while the store fails its commit: the tool's body does not run (a process that stopped
    then would run it again unknowingly), and the call's error says the approval could not be kept, not that
    no one was there to give it."""
    store = FailingOnce(tmp_path / "s.db")
    async with open_runtime(store=store) as runtime, runtime.open_session(make_agent(), session_id="a") as session:
        async with session.run("pay 5") as stream:
            async for event in stream:
                if isinstance(event, ElicitationRequest):
                    store.fail = True  # the answer's commit
                    await stream.respond(event.id, "accept")
                elif isinstance(event, ToolCallFinished):
                    finished = event
    assert paid == []
    assert finished.error is not None
    assert finished.error.startswith("not run: the approval could not be kept: ")


async def test_the_writer_backlog_counts_what_waits_and_is_empty_once_all_is_written(tmp_path: Path) -> None:
    """The bound on what waits to be written holds only if the count is right: back to 0 once everything
    is written, after runs that rewrote their rows and a commit that failed and was retried."""

    store = FailingOnce(tmp_path / "s.db")
    store.fail = True  # the first commit
    async with open_runtime(store=store) as runtime:
        writer = runtime._writer
        assert writer is not None
        async with runtime.open_session(make_agent(), session_id="b") as session:
            with pytest.raises(RunFailedError):  # its first durability point meets the failing commit
                await session.ask("first")
            for k in range(20):
                assert (await session.ask(f"hello {k}")).output == f"echo: hello {k}"
            journal = writer.closing.get("b") or session._journal
        assert journal is not None
        await journal.released.wait()
        assert writer.backlog == 0
    async with in_session(tmp_path / "s.db", make_agent(), session_id="b") as session:
        assert session.run_count == 21  # the failed commit's rows were kept and written by the retry
        assert len(session.history) == 40  # "first" failed before it began: never in the history
    assert [event["type"] for event in stored_events(tmp_path / "s.db", "b-r1")][-1] == "RunFinished"


async def test_a_resumption_left_while_the_call_asks_again_ends_that_call(tmp_path: Path) -> None:
    """Once the waiting call has been called again, a consumer leaving ends it like any call (its result says
    it was cancelled): the session is no longer suspended, and its history has one result for the call."""
    image, asked = await crash_at(tmp_path, "y", "pay 8", ElicitationRequest)
    async with in_session(image, make_agent(), session_id="y") as session:
        async with session.resume() as stream:
            async for event in stream:
                if isinstance(event, ElicitationRequest):
                    assert event.id == asked.id
                    break
        assert session.pending == ()
        assert session.suspended_run is None
        assert (await session.ask("hi")).output == "echo: hi"
        kinds = [type(message).__name__ for message in session.history]
        assert kinds == ["UserMessage", "AssistantMessage", "ToolResultMessage", "UserMessage", "AssistantMessage"]
    assert paid == []


async def test_a_lone_surrogate_in_a_message_is_stored_and_read_back(backend: Backend) -> None:
    """JSON's "\\ud800" is a valid string; a client, a model or a tool may give one. It is written (as its
    escape: the encoder and the databases refuse the character itself) and read back the same."""
    text = "odd \ud800 text"
    async with open_runtime(store=backend.store()) as runtime, runtime.open_session(make_agent(), session_id="u") as s:
        assert (await s.ask(text)).output == f"echo: {text}"
    async with open_runtime(store=backend.store()) as runtime, runtime.open_session(make_agent(), session_id="u") as s:
        assert [message.text for message in s.history] == [text, f"echo: {text}"]


async def test_a_session_id_of_the_longest_size_allowed_runs_and_opens_again_on_every_store(backend: Backend) -> None:
    """An id of MAX_SESSION_ID_BYTES bytes (random letters: PostgreSQL could compress a repeated one) fits
    every store: its runs' rows are indexed by it twice (PostgreSQL refused 1,400 such bytes at the first run)."""
    session_id = "".join(random.Random(0).choices(string.ascii_letters, k=MAX_SESSION_ID_BYTES))
    async with open_runtime(store=backend.store()) as runtime:
        async with runtime.open_session(make_agent(), session_id=session_id) as session:
            assert (await session.ask("hello")).output == "echo: hello"
            async with session.run("pay 5") as stream:
                async for event in stream:
                    if isinstance(event, ElicitationRequest):
                        await stream.respond(event.id, "accept")
    async with open_runtime(store=backend.store()) as runtime:
        async with runtime.open_session(make_agent(), session_id=session_id) as session:
            assert session.run_count == 2
            assert session.history[-1].text == "done: paid 5"


def refuse_runs_of(backend: Backend, session_id: str) -> None:
    """Make the database refuse every run row of ``session_id`` (a trigger, a check constraint): a row it will
    never take, as PostgreSQL refuses text with NUL."""
    if backend.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(backend.target)) as db:
            db.execute(
                f"CREATE TRIGGER refuse BEFORE INSERT ON runs WHEN NEW.session_id = '{session_id}'"
                " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        return
    import psycopg

    with psycopg.connect(backend.target, autocommit=True) as pg:
        pg.execute(f"ALTER TABLE trio_agents_runs ADD CONSTRAINT refuse CHECK (session_id <> '{session_id}')")


async def test_a_session_whose_rows_the_database_refuses_fails_alone_and_the_others_are_written(
    backend: Backend,
) -> None:
    """A checkpoint the database refuses fails its own session's runs (with StoreRejectedError) and that
    session writes no more; the other sessions' checkpoints are written at once. It was retried, with every
    session's checkpoint, until the runtime closed: their runs failed, and their changes were lost."""
    async with open_runtime(store=backend.store()) as runtime:
        async with (
            runtime.open_session(make_agent(), session_id="good") as good,
            runtime.open_session(make_agent(), session_id="bad") as bad,
        ):
            assert (await good.ask("one")).output == "echo: one"
            refuse_runs_of(backend, "bad")
            with pytest.raises(RunFailedError, match="StoreRejectedError"):
                await bad.ask("hi")
            assert (await good.ask("two")).output == "echo: two"
            with pytest.raises(RunFailedError, match="StoreRejectedError"):  # it writes no more
                await bad.ask("again")
            assert (await good.ask("three")).output == "echo: three"
    async with open_runtime(store=backend.store()) as runtime:
        async with runtime.open_session(make_agent(), session_id="good") as good:
            assert [message.text for message in good.history][-2:] == ["three", "echo: three"]
            assert len(good.history) == 6


class Opaque:
    """A value with no text form: its ``__str__`` raises (its repr is object's)."""

    def __str__(self) -> str:
        raise TypeError("no text form")

    __repr__ = object.__repr__


@attrs.frozen
class Handed(CustomEvent):
    """A tool's own event, holding whatever it was given."""

    payload: object


@tool
async def hand_over(ctx: ToolContext[None], broken: bool = False) -> object:
    """Emits an event holding a value with no text form (or, ``broken``, missing its field), and returns one.

    Args:
        broken: Emit an event the store's writer cannot even read.
    """
    event = Handed(Opaque())
    if broken:
        object.__delattr__(event, "payload")  # a bug in making it: turning it into JSON raises AttributeError
    await ctx.emit(event)
    return {"handle": Opaque()}


def handing_over(*, broken: bool = False) -> Agent:
    return Agent(
        name="durable",
        model=ScriptedModel(
            itertools.chain([ToolCall("hand_over", {"broken": broken}), "done"], itertools.repeat("more"))
        ),
        tools=[hand_over],
    )


async def test_a_value_with_no_text_form_is_written_as_a_placeholder_and_every_session_goes_on(
    tmp_path: Path,
) -> None:
    """An event field whose str() raises is written as a placeholder naming what failed, and the runtime's
    other sessions go on. The store's one writer, shared by every session, used to die of it and take the
    runtime down with it ("the runtime block and the store writer failed")."""
    path = tmp_path / "s.db"
    async with open_runtime(store=SQLiteStore(path)) as runtime:
        async with (
            runtime.open_session(make_agent(), session_id="good") as good,
            runtime.open_session(handing_over(), session_id="bad") as bad,
        ):
            assert (await bad.ask("go")).output == "done"
            assert (await good.ask("one")).output == "echo: one"
            assert (await bad.ask("again")).output == "more"  # its first run's last events are written by now
            assert (await good.ask("two")).output == "echo: two"
    (custom,) = [event for event in stored_events(path, "bad-r1") if event["type"] == "CustomEvent"]
    assert custom["payload"] == "<Opaque that could not be converted to JSON: TypeError: no text form>"
    assert stored_events(path, "bad-r2")[-1] == {"type": "RunFinished", "reason": "completed", "message": None}
    assert stored_events(path, "good-r2")[-1]["reason"] == "completed"


async def test_a_session_whose_records_cannot_be_written_fails_alone_and_the_writer_goes_on(tmp_path: Path) -> None:
    """A session whose records the store's writer cannot turn into rows (an event missing a field) writes no
    more, as one whose rows the database refuses: its next run fails with StoreRejectedError, while the other
    sessions' runs are written. The error escaped the writer, which stopped for every session, and the
    runtime's block raised it."""
    path = tmp_path / "s.db"
    async with open_runtime(store=SQLiteStore(path)) as runtime:
        async with (
            runtime.open_session(make_agent(), session_id="good") as good,
            runtime.open_session(handing_over(broken=True), session_id="bad") as bad,
        ):
            assert (await bad.ask("go")).output == "done"  # its events after the tool are written later
            with pytest.raises(RunFailedError, match=r"StoreRejectedError.*could not be written: AttributeError"):
                await bad.ask("again")
            assert (await good.ask("one")).output == "echo: one"
            with pytest.raises(RunFailedError, match="StoreRejectedError"):  # it writes no more
                await bad.ask("and again")
            assert (await good.ask("two")).output == "echo: two"
    async with open_runtime(store=SQLiteStore(path)) as runtime:
        async with runtime.open_session(make_agent(), session_id="good") as good:
            assert [message.text for message in good.history][-2:] == ["two", "echo: two"]


def calling(call_id: str) -> Agent:
    """An agent whose model calls ``pay(7)`` with the tool-call id ``call_id``."""

    def turn(request: ModelRequest) -> str | list[ModelChunk]:
        last = request.messages[-1]
        if isinstance(last, ToolResultMessage):
            return f"done: {last.text}"
        return [ToolCallChunk(call_id, "pay", {"amount": 7}), StopChunk("tool_use", "tool_calls")]

    return Agent(name="durable", model=ScriptedModel(itertools.repeat(turn)), tools=[pay])


ODD_CALL_IDS = pytest.mark.parametrize("call_id", ["call\x00id", "call\ud800id"], ids=["nul", "surrogate"])


@ODD_CALL_IDS
async def test_a_tool_call_id_with_nul_or_a_lone_surrogate_is_stored_with_its_question(
    backend: Backend, call_id: str
) -> None:
    """A model's tool-call id is the pending question's plain text column: NUL or a lone surrogate in it is
    stored escaped, and neither its session nor another fails (PostgreSQL refused NUL, and the writer retried
    every session's checkpoints until the runtime closed; a surrogate's UnicodeEncodeError took the runtime
    down, on both stores)."""
    async with open_runtime(store=backend.store()) as runtime:
        async with (
            runtime.open_session(calling(call_id), session_id="c") as session,
            runtime.open_session(make_agent(), session_id="good") as good,
        ):
            async with session.run("pay") as stream:
                async for event in stream:
                    if isinstance(event, ElicitationRequest):
                        await stream.respond(event.id, "accept")
            assert stream.result.output == "done: paid 7"
            assert (await good.ask("hi")).output == "echo: hi"
    async with open_runtime(store=backend.store()) as runtime:
        async with runtime.open_session(calling(call_id), session_id="c") as session:
            assert [type(message).__name__ for message in session.history] == [
                "UserMessage",
                "AssistantMessage",
                "ToolResultMessage",
                "AssistantMessage",
            ]
            assert session.pending == ()
        async with runtime.open_session(make_agent(), session_id="good") as good:
            assert len(good.history) == 2
    assert paid == [7]


@ODD_CALL_IDS
async def test_a_question_asked_by_a_call_with_an_odd_id_is_resumed_after_a_crash(tmp_path: Path, call_id: str) -> None:
    """Its question stored with the escaped id, the waiting call is still found in the history after a crash:
    the question is pending, and resuming calls it again with the answer."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"
    async with in_session(path, calling(call_id), session_id="c") as session, session.run("pay") as stream:
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                crash_image(path, image)
                asked = event
                break
    async with in_session(image, calling(call_id), session_id="c") as session:
        assert session.pending == (asked,)
        after = await resume_accepting(session, asked)
        assert after == [("ToolResultMessage", "paid 7"), ("AssistantMessage", "done: paid 7")]
    assert paid == [7]


@pytest.mark.parametrize("name", ["bad\x00name", "bad\ud800name"], ids=["nul", "surrogate"])
async def test_an_agent_name_with_nul_or_a_lone_surrogate_is_stored_and_fails_no_session(
    backend: Backend, name: str
) -> None:
    """An agent's name is the session row's plain text column: with NUL or a lone surrogate, its sessions, made
    by their claim (an id given) or by their first checkpoint (none), run and open again, and so does another
    session of the runtime (PostgreSQL refused NUL, and the writer retried every session's checkpoints until the
    runtime closed; a surrogate's UnicodeEncodeError took the runtime down, on both stores)."""
    odd = Agent(name=name, model=ScriptedModel(itertools.repeat(answer)))
    async with open_runtime(store=backend.store()) as runtime:
        async with runtime.open_session(make_agent(), session_id="good") as good:
            async with runtime.open_session(odd) as fresh:
                assert (await fresh.ask("one")).output == "echo: one"
            async with runtime.open_session(odd, session_id="named") as named:
                assert (await named.ask("two")).output == "echo: two"
            assert (await good.ask("three")).output == "echo: three"
    async with open_runtime(store=backend.store()) as runtime:
        for session_id, text in ((fresh.id, "one"), ("named", "two"), ("good", "three")):
            async with runtime.open_session(odd, session_id=session_id, create=False) as session:
                assert [message.text for message in session.history] == [text, f"echo: {text}"]


async def test_a_flush_waits_for_the_commit_already_holding_what_it_recorded() -> None:
    """The writer's group commit may take a run's row before the run asks for it (its flush before
    RunStarted): nothing is then left to take, but the flush must still wait for that commit. And the run
    finishing meanwhile finds its row, so the row is written again as finished (not left running)."""
    writer = StoreWriter(cast("SessionStore", None))
    journal = Journal(writer, "s", 0, [])
    journal.run_row(RunRow("s-r1", 1, run_input_to_json("hi", 0), "running"))
    in_flight = journal.take()  # the writer took it, and is writing it
    returned = trio.Event()

    async def flush() -> None:
        await journal.flush()
        returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flush)
        await trio.testing.wait_all_tasks_blocked()
        assert not returned.is_set()  # the row is not written yet
        journal.event("s-r1", RunFinished("completed"))
        journal.committed(in_flight)
    assert returned.is_set()
    (finished,) = journal.take().runs
    assert (finished.run_id, finished.status, finished.reason) == ("s-r1", "finished", "completed")


async def test_a_second_resume_while_the_first_waits_for_its_turn_is_refused(tmp_path: Path) -> None:
    image, asked = await crash_at(tmp_path, "d2", "pay 3", ElicitationRequest)
    async with (
        in_session(image, make_agent(), session_id="d2") as session,
        session.resume({asked.id: ("accept", None)}) as first,
    ):
        with pytest.raises(NothingToResumeError):
            async with session.resume({asked.id: ("decline", None)}):
                pass
        events = []
        async for event in first:
            events.append(event)
            if isinstance(event, ElicitationRequest):  # asked again: the given answer was for the first ask
                raise AssertionError("the answer given to resume() was not used")
        assert events[-1] == RunFinished("completed")
    assert paid == [3]


async def test_a_run_started_before_a_resume_is_the_resumption_and_the_resume_is_refused(tmp_path: Path) -> None:
    """run() on a suspended session, then resume() at once: the run (it starts first) takes the waiting
    call, which asks again, and resume() is refused; the model never sees a call without its result, and
    the session reopens with the history the run left (nothing marked interrupted)."""
    image, asked = await crash_at(tmp_path, "r0", "pay 6", ElicitationRequest)
    async with in_session(image, make_agent(), session_id="r0") as session:
        async with session.run("thanks") as stream:
            with pytest.raises(NothingToResumeError):
                async with session.resume({asked.id: ("accept", None)}):
                    pass
            events = []
            async for event in stream:
                events.append(event)
                if isinstance(event, ElicitationRequest):
                    assert event.id == asked.id
                    await stream.respond(event.id, "accept")
        assert events[0] == RunStarted("r0-r2", resumes="r0-r1")
        assert events[-1] == RunFinished("completed")
        history = session.history
    assert paid == [6]
    kinds = [type(message).__name__ for message in history]
    assert kinds[:3] == ["UserMessage", "AssistantMessage", "ToolResultMessage"]  # the call's result first
    async with in_session(image, make_agent(), session_id="r0") as session:
        assert session.history == history
        assert not any(isinstance(m, ToolResultMessage) and m.content == INTERRUPTED_RESULT for m in history)


async def test_a_resumption_ended_before_its_calls_were_made_again_leaves_them_waiting(tmp_path: Path) -> None:
    """Its consumer leaves before the resumed call is made again (while the turn's commit is written): no
    result is made up for it, the question stays pending, and the session is still suspended."""
    image, asked = await crash_at(tmp_path, "e2", "pay 3", ElicitationRequest)
    store = SQLiteStore(image)
    async with open_runtime(store=store) as runtime, runtime.open_session(make_agent(), session_id="e2") as session:
        await leave_before_its_calls(session, store)
        assert [type(message).__name__ for message in session.history] == ["UserMessage", "AssistantMessage"]
        assert session.pending == (asked,)
        assert session.suspended_run == "e2-r1"
    async with in_session(image, make_agent(), session_id="e2") as session:
        assert session.pending == (asked,)
        async with session.resume({asked.id: ("accept", None)}) as stream:
            events = [event async for event in stream]
        assert events[-1] == RunFinished("completed")
    assert paid == [3]


async def test_a_run_waiting_for_its_turn_when_the_process_died_follows_the_resumed_calls(tmp_path: Path) -> None:
    """The session was suspended; run("thanks") resumed it and asked again, run("later") waited for its
    turn; the process died. Both messages follow the resumed call's result, in order, and the run resumed
    next is the one that began."""
    image, asked = await crash_at(tmp_path, "q2", "pay 3", ElicitationRequest)
    again = tmp_path / "again.db"
    async with (
        in_session(image, make_agent(), session_id="q2") as session,
        session.run("thanks") as resuming,
        session.run("later") as _,  # waits for its turn
    ):
        async for event in resuming:
            if isinstance(event, ElicitationRequest):
                crash_image(image, again)
                break
    async with in_session(again, make_agent(), session_id="q2") as session:
        assert session.suspended_run == "q2-r2"
        assert await resume_accepting(session, asked) == [
            ("ToolResultMessage", "paid 3"),
            ("UserMessage", "thanks"),
            ("UserMessage", "later"),
            ("AssistantMessage", "echo: later"),
        ]


async def test_a_stored_question_whose_call_has_its_result_is_deleted_on_reopen(tmp_path: Path) -> None:
    """A question row left for a call that has its result (a process stopped between the two writes): it is
    not pending when the session opens again, and the recovery deletes it from the store."""
    path = tmp_path / "s.db"
    call = ToolCallChunk("a", "pay", {"amount": 1})
    stored: list[Message] = [UserMessage("pay"), AssistantMessage("", (call,)), ToolResultMessage("a", "pay", "paid 1")]
    request = ElicitationRequest("elicitation-old", "Allow durable to run pay(amount=1)?", None, "durable")
    store = SQLiteStore(path)
    async with store.open("crashed-host:1"):
        await store.claim("z", "durable", create=True)
        run = RunRow("z-r1", 1, run_input_to_json("pay", 0), "finished", "completed")
        question = PendingRow("elicitation-old", "z-r1", "a", dumps(event_to_json(request)))
        messages = [dumps(message_to_json(m)) for m in stored]
        await store.commit([Checkpoint("z", 0, 0, messages, [run], pending_added=[question])])
    async with in_session(path, make_agent(), session_id="z", create=False) as session:
        assert session.pending == ()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM pending").fetchone() == (0,)
    db.close()


async def test_a_message_carried_over_from_a_crash_survives_a_second_crash_while_resuming(tmp_path: Path) -> None:
    """run("later") waited behind a run whose call waits for approval when the process died; recovered,
    "later" is carried to follow the resumed call's result. The resuming run asks again and the process
    dies again: "later" is still carried, and answered once the call is resumed."""
    path, image, again = tmp_path / "s.db", tmp_path / "crashed.db", tmp_path / "again.db"
    asked: ElicitationRequest | None = None
    async with (
        in_session(path, make_agent(), session_id="c2") as session,
        session.run("pay 3") as first,
        session.run("later") as _,  # waits for its turn
    ):
        async for event in first:
            if isinstance(event, ElicitationRequest):
                asked = event
                crash_image(path, image)
                break
    assert asked is not None
    async with (
        in_session(image, make_agent(), session_id="c2") as session,
        session.resume() as stream,
    ):
        async for event in stream:
            if isinstance(event, ElicitationRequest):  # the same question, asked again
                crash_image(image, again)
                break
    async with in_session(again, make_agent(), session_id="c2") as session:
        assert session.pending == (asked,)
        assert await resume_accepting(session, asked) == [
            ("ToolResultMessage", "paid 3"),
            ("UserMessage", "later"),
            ("AssistantMessage", "echo: later"),
        ]
    assert paid == [3]


async def test_a_message_carried_over_from_a_crash_is_kept_by_a_session_closed_before_resuming(
    backend: Backend,
) -> None:
    """What a process killed while "pay 3" waited for approval and "later" waited for its turn leaves:
    the session is opened and closed without a run, then resumed by a run left before it calls again,
    then closed. "later" still follows the resumed call's result when the session is finally resumed."""
    call = ToolCallChunk("a", "pay", {"amount": 3})
    request = ElicitationRequest("elicitation-paid", "Allow durable to run pay(amount=3)?", None, "durable")
    store = backend.store()
    async with store.open("crashed-host:1"):
        await store.claim("c3", "durable", create=True)
        messages = [dumps(message_to_json(m)) for m in (UserMessage("pay 3"), AssistantMessage("", (call,)))]
        runs = [
            RunRow("c3-r1", 1, run_input_to_json("pay 3", 0), "running"),
            RunRow("c3-r2", 2, run_input_to_json("later", None), "running"),
        ]
        question = PendingRow(request.id, "c3-r1", "a", dumps(event_to_json(request)))
        await store.commit([Checkpoint("c3", 0, 0, messages, runs, pending_added=[question])])
    store = backend.store()
    async with open_runtime(store=store) as runtime:
        async with runtime.open_session(make_agent(), session_id="c3", create=False) as session:
            assert session.pending == (request,)
        async with runtime.open_session(make_agent(), session_id="c3", create=False) as session:
            assert session.pending == (request,)
            await leave_before_its_calls(session, store)
    async with (
        open_runtime(store=backend.store()) as runtime,
        runtime.open_session(make_agent(), session_id="c3", create=False) as session,
    ):
        assert session.pending == (request,)
        assert await resume_accepting(session, request) == [
            ("ToolResultMessage", "paid 3"),
            ("UserMessage", "later"),
            ("AssistantMessage", "echo: later"),
        ]
    assert paid == [3]


async def test_a_carried_message_and_the_resumption_that_carried_it_are_both_kept_when_its_call_ends_interrupted(
    backend: Backend,
) -> None:
    """A recovery carried "later" over; run("thanks") resumed the waiting call, its approval was given and
    the process died in the call's body. Nothing waits now: the call is interrupted, and both messages are
    put back after its result, in order."""
    call = ToolCallChunk("a", "pay", {"amount": 3})
    store = backend.store()
    async with store.open("crashed-host:1"):
        await store.claim("c4", "durable", create=True)
        messages = [dumps(message_to_json(m)) for m in (UserMessage("pay 3"), AssistantMessage("", (call,)))]
        runs = [
            RunRow("c4-r1", 1, run_input_to_json("pay 3", 0), "finished", "interrupted"),
            RunRow("c4-r2", 2, carrying(run_input_to_json("later", None), ["later"], 2), "finished", "interrupted"),
            RunRow("c4-r3", 3, run_input_to_json("thanks", 2), "running", resumes="c4-r1"),
        ]
        await store.commit([Checkpoint("c4", 0, 0, messages, runs)])
    for _ in range(2):  # recovered, then as written back
        async with (
            open_runtime(store=backend.store()) as runtime,
            runtime.open_session(make_agent(), session_id="c4", create=False) as session,
        ):
            assert session.pending == ()
            texts = [(type(message).__name__, message.text) for message in session.history]
            assert texts[2:] == [
                ("ToolResultMessage", INTERRUPTED_RESULT),
                ("UserMessage", "later"),
                ("UserMessage", "thanks"),
            ]


async def test_a_responses_signed_reasoning_is_stored_with_it_and_sent_back_after_a_restart(tmp_path: Path) -> None:
    """Reasoning blocks a provider wants back (Anthropic's signed thinking, a redacted block) are part of the
    response's stored message: the session reopened elsewhere sends them with the history."""
    path = tmp_path / "s.db"
    blocks = (ReasoningBlock("let me add", "sig-1"), ReasoningBlock("b64-secret", redacted=True))
    turn: list[ModelChunk] = [
        ReasoningChunk("let me add"),
        *blocks,
        ToolCallChunk("c1", "add", {"a": 1, "b": 2}),
        StopChunk("tool_use"),
    ]

    @tool
    async def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    first = ScriptedModel([turn, "3"])
    async with in_session(path, Agent(name="a", model=first, tools=[add]), session_id="t") as session:
        await session.ask("1 + 2?")
        call = ToolCallChunk("c1", "add", {"a": 1, "b": 2})
        assert first.requests[1].messages[1] == AssistantMessage("", (call,), blocks)
    again = ScriptedModel(["ok"])
    async with in_session(path, Agent(name="a", model=again, tools=[add]), session_id="t") as session:
        await session.ask("thanks")
    assert again.requests[0].messages[1].reasoning == blocks  # type: ignore[union-attr]


async def test_a_closed_session_waited_for_until_released_opens_at_once_in_another_runtime(tmp_path: Path) -> None:
    """wait_released(): once it returns, what the session left is written and its lock is let go, so a
    runtime on another store object (as another process) opens it at once, with its history."""
    path = tmp_path / "s.db"
    async with open_runtime(store=SQLiteStore(path)) as first, open_runtime(store=SQLiteStore(path)) as second:
        async with first.open_session(make_agent(), session_id="h") as session:
            await session.ask("hello")
        await session.wait_released()
        async with second.open_session(make_agent(), session_id="h", create=False) as again:
            assert [type(message).__name__ for message in again.history] == ["UserMessage", "AssistantMessage"]
        await again.wait_released()
        await again.wait_released()  # at once, the second time
    async with open_runtime() as runtime, runtime.open_session(make_agent()) as in_memory:
        pass
    await in_memory.wait_released()  # a session in memory has nothing to let go


class CommitsKnown(SQLiteStore):
    """A SQLite store that tells when its next commit is done."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.committed = trio.Event()

    async def commit(self, checkpoints: Any) -> None:
        await super().commit(checkpoints)
        self.committed.set()
        self.committed = trio.Event()


class NoDocumentURLs:
    """A provider that takes no document by URL: it refuses one, sending nothing, after the store's next
    commit (the run's RunStarted goes with it); it answers other requests as ``answer`` does."""

    def __init__(self, store: CommitsKnown) -> None:
        self.store = store
        self.answers = ScriptedModel(itertools.repeat(answer))

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[ModelChunk]]:
        last = request.messages[-1]
        if isinstance(last, UserMessage) and not isinstance(last.content, str):
            for part in last.content:
                if isinstance(part, DocumentPart) and part.url is not None:
                    await self.store.committed.wait()
                    raise UnsupportedContentError(part, provider="test", reason="no document by URL")
        async with self.answers.stream(request) as chunks:
            yield chunks


async def test_a_message_with_a_part_the_model_cannot_take_is_not_stored(tmp_path: Path) -> None:
    """A run failing on a part of its message the model refuses leaves that message out of the history the
    store holds too (though the store committed while the model was asked): the session goes on."""
    path = tmp_path / "s.db"
    store = CommitsKnown(path)
    agent = Agent(name="durable", model=NoDocumentURLs(store))
    async with open_runtime(store=store) as runtime, runtime.open_session(agent, session_id="n") as session:
        with pytest.raises(RunFailedError, match="cannot send a document by URL"):
            await session.ask(["read", DocumentPart(url="https://example.com/a.pdf")])
        assert session.history == ()
        assert (await session.ask("hello")).output == "echo: hello"
    async with in_session(path, make_agent(), session_id="n") as session:
        assert [message.text for message in session.history] == ["hello", "echo: hello"]
        assert session.run_count == 2
        assert (await session.ask("again")).output == "echo: again"
    assert stored_events(path, "n-r1")[-1]["reason"] == "error"


async def test_a_call_resumed_after_crashes_counts_once_in_the_session_usage(tmp_path: Path) -> None:
    """A call resumed after two crashes (the first resumption dies as it asks again) counts once in
    session.usage: the totals, and the outcome under a session limit of one tool call, are those of a
    run never interrupted."""

    def limited() -> Agent:
        return Agent(
            name="durable",
            model=ScriptedModel(itertools.repeat(answer)),
            tools=[pay],
            session_usage_limits=UsageLimits(tool_calls=1),
        )

    async with in_session(tmp_path / "u.db", limited(), session_id="u") as session:
        async with session.run("pay 5") as stream:
            async for event in stream:
                if isinstance(event, ElicitationRequest):
                    await stream.respond(event.id, "accept")
        assert stream.result.reason == "completed"
        uninterrupted = session.usage
    path, first, second = tmp_path / "s.db", tmp_path / "first.db", tmp_path / "second.db"
    async with in_session(path, limited(), session_id="v") as session, session.run("pay 5") as stream:
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                crash_image(path, first)
                break
    async with in_session(first, limited(), session_id="v") as session, session.resume() as stream:
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                crash_image(first, second)
                asked = event
                break
    async with in_session(second, limited(), session_id="v") as session:
        assert session.usage.tool_calls == 1
        async with session.resume({asked.id: ("accept", None)}) as stream:
            events = [event async for event in stream]
        assert events[-1] == RunFinished("completed")
        assert session.usage == uninterrupted
    assert paid == [5, 5]


@pytest.mark.parametrize("timeout", [-1.0, float("nan")])
async def test_a_resumed_question_asked_with_a_bad_timeout_is_a_value_error(tmp_path: Path, timeout: float) -> None:
    """A resumed call asking its question again with a negative or NaN timeout (a deadline that passed while
    the process was down) gets ValueError, as a live question does, not the answer given to resume."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"
    timeouts: list[float | None] = [None]

    @tool
    async def confirm(ctx: ToolContext[None]) -> str:
        """Confirm."""
        answered = await ctx.elicit("Sure?", timeout=timeouts[0])
        return f"answered {answered.action}"

    def model(request: ModelRequest) -> str | ToolCall:
        last = request.messages[-1]
        return ToolCall("confirm", {}) if isinstance(last, UserMessage) else f"done: {last.text}"

    agent = Agent(name="durable", model=ScriptedModel(itertools.repeat(model)), tools=[confirm])
    async with in_session(path, agent, session_id="t") as session, session.run("go") as stream:
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                crash_image(path, image)
                asked = event
                break
    timeouts[0] = timeout
    async with in_session(image, agent, session_id="t") as session:
        async with session.resume({asked.id: ("accept", None)}) as stream:
            events = [event async for event in stream]
        assert events[-1] == RunFinished("completed")
        (call,) = stream.result.tool_calls
        assert call.error is not None
        assert call.error.startswith("ValueError: timeout must be None or a number of seconds >= 0")


async def test_a_resumed_question_is_answered_on_the_stream_before_its_call_asks_it_again(tmp_path: Path) -> None:
    """Two calls wait on questions when the process dies; resume() with the first one's answer: its stream
    lists the other question from its start and takes its answer (respond) before its call asks it again
    (the calls wait here until then), its action checked at once (its content when its call asks); the call
    uses that answer, nothing is asked again and the session waits no more. Before, the answer was refused
    (nothing listed it) and the call then asked it again."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"
    gate = trio.Event()
    gate.set()
    got: list[tuple[str, Any]] = []

    @tool
    async def confirm(ctx: ToolContext[None], what: str) -> str:
        """Ask about ``what`` (once let through)."""
        await gate.wait()
        answer = await ctx.elicit(f"{what}?", schema=str)
        got.append((what, answer.content))
        return f"{what}: {answer.content}"

    def model(request: ModelRequest) -> str | list[ToolCall]:
        if isinstance(request.messages[-1], UserMessage):
            return [ToolCall("confirm", {"what": "a"}), ToolCall("confirm", {"what": "b"})]
        return "done"

    agent = Agent(name="durable", model=ScriptedModel(itertools.repeat(model)), tools=[confirm])
    async with in_session(path, agent, session_id="q") as session, session.run("go") as stream:
        asked = 0
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                asked += 1
                if asked == 2:
                    crash_image(path, image)
                    break
    gate = trio.Event()  # the calls made again wait before they ask
    async with in_session(image, agent, session_id="q") as session:
        first, second = sorted(session.pending, key=lambda question: question.message)
        assert (first.message, second.message) == ("a?", "b?")
        async with session.resume({first.id: ("accept", "yes a")}) as stream:
            assert session.pending == ()
            assert stream.pending_elicitations == (second.id,)
            with pytest.raises(InvalidElicitationResponse):
                await stream.respond(second.id, "maybe", "yes b")  # type: ignore[arg-type]  # it stays open
            await stream.respond(second.id, "accept", "yes b")
            assert not stream.pending_elicitations
            with pytest.raises(UnknownElicitationError):
                await stream.respond(second.id, "accept", "again")
            gate.set()
            events = [event async for event in stream]
        assert not [event for event in events if isinstance(event, ElicitationRequest)]
        assert events[-1] == RunFinished("completed")
        assert sorted(got) == [("a", "yes a"), ("b", "yes b")]
        assert session.pending == ()
        assert session.suspended_run is None


class Deployment(pydantic.BaseModel):
    env: Literal["staging", "prod"]
    replicas: int


@pytest.mark.parametrize("given", ["to-resume", "on-the-stream"])
async def test_a_resumed_answer_is_validated_by_the_tools_own_schema_when_its_call_asks_again(
    tmp_path: Path, given: str
) -> None:
    """Answers given to resume(), or on its stream before their calls ask again, are checked by the tool's own
    validator as a live answer is: the tool gets its pydantic model (a lax "3" taken as 3), and an answer the
    validator refuses is not handed over: its question is asked again on the stream with its id. Before, they
    were checked against the stored JSON schema only: the tool got a plain dict, and "3" was refused."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"
    gate = trio.Event()
    gate.set()
    got: dict[int, Any] = {}

    @tool
    async def deploy(ctx: ToolContext[None], n: int) -> str:
        """Ask how to deploy (once let through)."""
        await gate.wait()
        answer = await ctx.elicit(f"How ({n})?", schema=Deployment)
        got[n] = answer.content
        return "ok"

    def model(request: ModelRequest) -> str | list[ToolCall]:
        if isinstance(request.messages[-1], UserMessage):
            return [ToolCall("deploy", {"n": 1}), ToolCall("deploy", {"n": 2})]
        return "done"

    agent = Agent(name="durable", model=ScriptedModel(itertools.repeat(model)), tools=[deploy])
    async with in_session(path, agent, session_id="m") as session, session.run("go") as stream:
        asked = 0
        async for event in stream:
            if isinstance(event, ElicitationRequest):
                asked += 1
                if asked == 2:
                    crash_image(path, image)
                    break
    gate = trio.Event()  # the calls made again wait before they ask
    lax = {"env": "prod", "replicas": "3"}
    wrong = {"env": "dev", "replicas": 1}
    async with in_session(image, agent, session_id="m") as session:
        first, second = sorted(session.pending, key=lambda question: question.message)
        answers: dict[str, tuple[Literal["accept"], Any]] = {}
        if given == "to-resume":
            answers = {first.id: ("accept", lax), second.id: ("accept", wrong)}
        asked_again: list[str] = []
        async with session.resume(answers) as stream:
            if given == "on-the-stream":
                await stream.respond(first.id, "accept", lax)
                await stream.respond(second.id, "accept", wrong)
            gate.set()
            async for event in stream:
                if isinstance(event, ElicitationRequest):
                    asked_again.append(event.id)
                    await stream.respond(event.id, "accept", {"env": "staging", "replicas": 2})
        assert asked_again == [second.id]
        assert got == {1: Deployment(env="prod", replicas=3), 2: Deployment(env="staging", replicas=2)}
        assert stream.result.reason == "completed"
        assert session.pending == ()


@pytest.mark.parametrize("answered", [True, False])
async def test_a_sub_agents_question_pending_at_a_crash_is_answered_by_resume_or_asked_again_with_its_id(
    tmp_path: Path, answered: bool
) -> None:
    """A sub-agent's approval waiting when the process died: resume() with its answer approves the call made
    again (nothing asked on the stream); without one, it is asked again with its stored id. Before, nested runs
    asked through the plain bridge: the answer was dropped and the question asked again under a new id."""
    path, image = tmp_path / "s.db", tmp_path / "crashed.db"

    def child_turn(request: ModelRequest) -> str | ToolCall:
        last = request.messages[-1]
        return f"child: {last.text}" if isinstance(last, ToolResultMessage) else ToolCall("pay", {"amount": 5})

    def top_turn(request: ModelRequest) -> str | ToolCall:
        last = request.messages[-1]
        if isinstance(last, ToolResultMessage):
            return f"top: {last.text}"
        return ToolCall("transfer_task", {"agent": "child", "task": "pay 5"})

    child = Agent(name="child", model=ScriptedModel(itertools.repeat(child_turn)), tools=[pay])
    agent = Agent(name="top", model=ScriptedModel(itertools.repeat(top_turn)), sub_agents=[child])
    async with in_session(path, agent, session_id="n") as session, session.run("go") as stream:
        async for event in stream:
            if isinstance(event, SubAgentEvent) and isinstance(event.innermost()[1], ElicitationRequest):
                crash_image(path, image)
                break
    async with in_session(image, agent, session_id="n") as session:
        (question,) = session.pending
        assert question.agent == "child"
        asked_again: list[str] = []
        async with session.resume({question.id: ("accept", None)} if answered else None) as stream:
            async for event in stream:
                inner = event.innermost()[1] if isinstance(event, SubAgentEvent) else event
                if isinstance(inner, ElicitationRequest):
                    asked_again.append(inner.id)
                    await stream.respond(inner.id, "accept")
        assert asked_again == ([] if answered else [question.id])
        assert paid == [5]
        assert stream.result.output == "top: child: paid 5"
        assert session.pending == ()
