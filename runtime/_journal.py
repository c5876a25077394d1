"""Durable sessions: each session's journal of what to write, and the runtime's one writer that commits them.

A durable session keeps a :class:`Journal`: the run rows, events, history
messages and questions it has not yet written. The runtime's :class:`StoreWriter`
commits every dirty journal in one transaction (group commit), in a task of
its own; runs never touch the database. A run waits for a commit only at the
two durability points (its user's message, before ``RunStarted`` is sent,
while its model is asked: ``runtime._held``; a model turn that asks for
tools, before any tool runs: :meth:`Journal.flush`) and for room when the
writer is a whole backlog behind; a slow store slows the runs that write into
it, never another session's events.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from agents import AssistantMessage, ElicitationResult, RetryPolicy, RunUsage, ToolCallChunk, ToolResultMessage
from agents._exceptions import describe

from ._store import (
    Checkpoint,
    EventRow,
    PendingRow,
    RunRow,
    SessionConflictError,
    StoreError,
    StoreRejectedError,
    StoreUnavailableError,
    storable,
)
from ._wire import (
    content_from_json,
    content_to_json,
    dumps as dumps,
    event_to_json,
    message_from_json,
    message_to_json,
)
from .events import (
    AgentSwitched,
    ElicitationRequest,
    Event,
    ReasoningDelta,
    RunFinished,
    SubAgentEvent,
    TextDelta,
    ToolCallFinished,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

    from agents import Message
    from agents._content import Content

    from ._store import SessionSnapshot, SessionStore
    from ._tally import UsageTally

logger = logging.getLogger("runtime")

GROUP_COMMIT_DELAY: Final = 0.005
"""Seconds the writer waits for more to write when no run waits for a commit: a run's events after its last
durability point then go with the next one, in one transaction instead of several."""
WRITER_BACKLOG: Final = 8192
"""Records (events, messages, rows) waiting to be written before runs wait for the writer."""
CLOSE_FLUSH_TIMEOUT: Final = 10.0
"""Seconds a closing session or runtime may take to write what it has left."""
INTERRUPTED_RESULT: Final = "error: interrupted: the process running this tool call stopped before it finished"
"""The result a tool call gets when its run was interrupted before the call had one."""

_RETRY: Final = RetryPolicy(initial=0.05, maximum=2.0)


def default_owner() -> str:
    """How this process names itself to other processes that find a session it holds: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class StoreWriter:
    """The runtime's writer: commits every dirty journal in one transaction, again and again.

    Bounded: once :data:`WRITER_BACKLOG` records wait, runs wait (in
    :meth:`Journal.room`) until a commit makes room. A failed commit is retried
    with backoff, keeping everything (nothing accepted is lost); meanwhile the
    journals' flushes fail with :class:`StoreUnavailableError`, so runs at a
    durability point end with a typed error instead of waiting. A checkpoint
    the store refuses (:class:`StoreRejectedError`, as a
    :class:`SessionConflictError`) fails its own session only: it writes no
    more, and the others' go again at once; so does a journal whose records
    cannot be turned into rows (a bug), as a :class:`StoreRejectedError`.
    """

    def __init__(self, store: SessionStore, *, backlog: int = WRITER_BACKLOG) -> None:
        self.store = store
        self._backlog_limit = backlog
        self._dirty: dict[Journal, None] = {}  # an ordered set
        self._urgent = trio.Event()  # set when a run waits for a commit (a flush): no group-commit delay
        self._waiting = trio.CancelScope()  # the writer's wait for more to write; its deadline: write anyway
        self._room = trio.Event()
        self.backlog = 0
        """Records waiting to be written."""
        self.failure: StoreError | None = None
        """The last commit's error, while the store is failing (``None`` once a commit succeeds)."""
        self._closing = False
        self.closing: dict[str, Journal] = {}
        """Journals of closed sessions whose last changes are not yet written, by session id: the writer
        lets each claim go once they are (a session opened again by id waits for that)."""
        self.commits = 0
        """Transactions committed so far."""

    @property
    def full(self) -> bool:
        return self.backlog >= self._backlog_limit

    def mark(self, journal: Journal, *, urgent: bool = False) -> None:
        if urgent or self.backlog >= self._backlog_limit:
            self._dirty[journal] = None
            self._urgent.set()
            return
        if journal in self._dirty:
            return  # (the writer gets to it within the delay set when it was marked)
        self._dirty[journal] = None
        if self._waiting.deadline == math.inf:
            # Written within GROUP_COMMIT_DELAY, with whatever comes meanwhile: no wake-up now.
            self._waiting.deadline = trio.current_time() + GROUP_COMMIT_DELAY

    async def room(self) -> None:
        """Wait until the backlog has room (a checkpoint only if it waits)."""
        while self.backlog >= self._backlog_limit:
            if self.failure is not None:
                raise StoreUnavailableError(f"the session store is failing: {self.failure}") from self.failure
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit dirty journals until :meth:`close` and nothing is left (or the close timeout)."""
        task_status.started()
        attempt = 0
        while True:
            if not self._urgent.is_set():
                if not self._dirty and self._closing:
                    return
                # Until a run waits for a commit (urgent), or what is dirty has waited long enough.
                self._waiting = trio.CancelScope(deadline=trio.current_time() if self._dirty else math.inf)
                if self._dirty:
                    self._waiting.deadline += GROUP_COMMIT_DELAY
                with self._waiting:
                    await self._urgent.wait()
            self._urgent = trio.Event()
            if not self._dirty:
                continue
            journals = list(self._dirty)
            self._dirty.clear()
            taken = self._take(journals)
            checkpoints = [checkpoint for _, checkpoint in taken]
            try:
                if checkpoints:
                    await self.store.commit(checkpoints)
            except (SessionConflictError, StoreRejectedError) as conflict:
                # That session is someone else's now, or holds what the store refuses: it is failed (it writes
                # no more); the others go again at once.
                if isinstance(conflict, StoreRejectedError):
                    logger.error("%s; session %r writes no more", conflict, conflict.session_id)
                for journal, checkpoint in taken:
                    if journal.session_id == conflict.session_id:
                        journal.lose(conflict)
                        self.backlog -= journal.taken_records
                    else:
                        journal.restore(checkpoint)
                        self._dirty[journal] = None
                self._made_room()
                await self._release_closed(journals)
                continue
            except StoreError as error:
                self.failure = error
                for journal, checkpoint in taken:
                    journal.restore(checkpoint)
                    journal.failed(error)
                    self._dirty[journal] = None
                logger.warning("the session store failed (%s); retrying", describe(error))
                # Closing too: what was accepted is kept trying until the close timeout (open_writer's) ends it.
                await trio.sleep(_RETRY.delay(attempt))
                attempt += 1
                continue
            except BaseException:
                for journal, checkpoint in taken:
                    journal.restore(checkpoint)
                raise
            attempt = 0
            self.failure = None
            self.commits += 1
            for journal, checkpoint in taken:
                self.backlog -= journal.taken_records
                journal.committed(checkpoint)
            self._made_room()
            await self._release_closed(journals)

    def _take(self, journals: list[Journal]) -> list[tuple[Journal, Checkpoint]]:
        """The checkpoints of the journals with something to write. A journal whose records cannot be taken
        (a bug turning one into JSON) fails its own session only, as a refused checkpoint does: the writer
        serves every session, and the others' go on."""
        taken = []
        for journal in journals:
            if journal.lost or not journal.unwritten():
                continue
            try:
                taken.append((journal, journal.take()))
            except Exception as exc:
                message = f"what session {journal.session_id!r} recorded could not be written: {describe(exc)}"
                rejected = StoreRejectedError(journal.session_id, message)
                logger.error("%s; it writes no more", rejected, exc_info=exc)
                journal.lose(rejected)
                self._made_room()
        return taken

    async def _release_closed(self, journals: list[Journal]) -> None:
        """Let go of the closed sessions among ``journals`` that have nothing left to write (or were lost)."""
        for journal in journals:
            if self.closing.get(journal.session_id) is journal and (journal.lost or not journal.unwritten()):
                del self.closing[journal.session_id]
                await self.store.release(journal.session_id)
                journal.released.set()

    def closed(self, journal: Journal) -> None:
        """The session closed: what it left is written with the next commit, then its claim let go (by
        :meth:`serve`); nobody waits for it. The store's own close lets go of what is still held then."""
        self.closing[journal.session_id] = journal
        self.mark(journal)

    def _made_room(self) -> None:
        if self.backlog < self._backlog_limit:
            self._room.set()

    def close(self) -> None:
        """Stop once nothing is dirty."""
        self._closing = True
        self._urgent.set()


@asynccontextmanager
async def open_writer(store: SessionStore, owner: str) -> AsyncIterator[StoreWriter]:
    """Open the store, and run its writer until the block exits; then write what is left (bounded) and close.

    However the block exits (an error, a cancellation, Ctrl-C), what is left is written first, for up to
    :data:`CLOSE_FLUSH_TIMEOUT`; then the block's exception is raised as it was.
    """
    failure: BaseException | None = None
    async with store.open(owner):
        writer = StoreWriter(store)
        # Shielded: a cancel from outside would stop the writer before the closing sessions' last records (it
        # reaches the block anyway); close() stops it, or the deadline set then.
        serving = trio.CancelScope(shield=True)

        async def serve(*, task_status: trio.TaskStatus[None]) -> None:
            with serving:
                await writer.serve(task_status=task_status)

        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve)
                try:
                    yield writer
                except BaseException as exc:
                    # Kept out of the nursery until the writer is done: there it would cancel the nursery's
                    # scope, and that scope, shielded below, would take an outer Cancelled for its own.
                    failure = exc
                writer.close()
                # What sessions left is written even if the runtime is being cancelled, for a while.
                nursery.cancel_scope.shield = True
                serving.deadline = trio.current_time() + CLOSE_FLUSH_TIMEOUT
        except BaseException as error:  # the writer failed (a bug): neither error is lost
            if failure is not None and nursery.cancel_scope.cancel_called:
                failure = _without_cancelled(failure)  # the writer's failure cancelled the block: not news
            if failure is None:
                raise
            raise BaseExceptionGroup("the runtime block and the store writer failed", [failure, error]) from None
    for journal in writer.closing.values():  # not written in time: the store's close let them go
        journal.released.set()
    if failure is not None:
        raise failure


def _without_cancelled(error: BaseException) -> BaseException | None:
    """``error`` without the ``trio.Cancelled`` in it (``None`` if that is all it is)."""
    if isinstance(error, trio.Cancelled):
        return None
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1]
    return error


class Journal:
    """One durable session's record of what is not yet written, and of what its store holds.

    Run rows, events and questions wait in lists until the writer takes them;
    the history is the session's own list, of which the journal knows how many
    messages are written (the loop only appends to it).
    """

    def __init__(
        self,
        writer: StoreWriter,
        session_id: str,
        version: int,
        history: list[Message],
        runs: Sequence[RunRow] = (),
        pending: Sequence[PendingRow] = (),
        stored: int | None = None,
        create: str | None = None,
        rows: int | None = None,
    ) -> None:
        self.writer = writer
        self.session_id = session_id
        self.version = version
        self._history = history
        self._stored = len(history) if stored is None else stored  # how many of its messages the store holds
        self._sent = self._stored  # ... or the checkpoint being written will hold
        # How many message rows the store holds: more than _stored after a repair, which the next checkpoint cuts.
        self._rows = len(history) if rows is None else rows
        # The rows of runs not yet finished, as written or being written: a RunFinished recorded later finds its
        # row there. A finished run's row is written and needed no more (it held the user's input: kept, it grew
        # with every run the session made).
        self._known: dict[str, RunRow] = {row.run_id: row for row in runs if row.status != "finished"}
        self._runs: dict[str, RunRow] = {}
        self._events: list[tuple[str, int, Event | _Pieces]] = []
        self._unwritten: list[EventRow] = []  # events of a checkpoint that failed: they go first
        self._next_seq: dict[str, int] = {}
        self._added: list[PendingRow] = []
        self._removed: list[str] = []
        self._questions: dict[str, list[str]] = {}  # the stored questions, by the tool call that asked
        for row in pending:
            self._questions.setdefault(row.call_id, []).append(row.elicitation_id)
        self._usage: UsageTally | None = None
        self._records = 0  # what this journal added to the writer's backlog since its last take()
        self.taken_records = 0
        """What the checkpoint being written added to the backlog (taken off it once written or lost)."""
        self._create = create  # the agent's name until a checkpoint makes the session (claimed fresh)
        self._flushed = trio.Event()
        self._asked = 0  # bumped by every flush: what a commit must include to satisfy it
        self._taken = 0  # what the checkpoint being written includes
        self._done = 0  # what the last successful commit included
        self.error: StoreError | None = None
        """Why the last commit failed, until one succeeds."""
        self.lost: SessionConflictError | StoreRejectedError | None = None
        """Set if another process took the session, or the store refused what it wrote: nothing more is written."""
        self.released = trio.Event()
        """Set once the session, closed, has been let go in the store."""
        self.on_commit: Callable[[], None] | None = None
        """Called by the writer after each commit of this journal, or its failure (it must not raise)."""

    def unwritten(self) -> bool:
        """Whether anything recorded (history included) is not yet in a checkpoint."""
        return (
            bool(self._runs or self._events or self._unwritten or self._added or self._removed)
            or len(self._history) != self._sent
            or self._create is not None
        )

    def track_usage(self, usage: UsageTally) -> None:
        self._usage = usage

    # -- what runs record -------------------------------------------------------

    def run_row(self, row: RunRow, *, first_event: int = 0) -> None:
        self._runs[row.run_id] = row
        self._next_seq[row.run_id] = first_event
        self._dirty(1)

    def event(self, run_id: str, event: Event) -> None:
        """Record an event of a run's log; consecutive text (or reasoning) pieces become one."""
        events = self._events
        record: Event | _Pieces = event
        if isinstance(event, _PIECES):
            if events:
                last_run, _, last = events[-1]
                if last_run == run_id and isinstance(last, _Pieces) and last.kind is type(event):
                    last.texts.append(event.text)  # joined once, when written: no copy per token
                    return
            record = _Pieces(type(event), [event.text])
        seq = self._next_seq.get(run_id, 0)
        self._next_seq[run_id] = seq + 1
        events.append((run_id, seq, record))
        if isinstance(event, RunFinished):
            row = self._runs.get(run_id) or self._known.pop(run_id, None)
            if row is not None:
                self._runs[run_id] = RunRow(row.run_id, row.seq, row.input, "finished", event.reason, row.resumes)
            self._next_seq.pop(run_id, None)
        self._dirty(1)

    def asked(self, run_id: str, call_id: str, request: ElicitationRequest) -> bool:
        """Record a question (``False`` if it is already stored: a resumed call asking it again)."""
        call_id = storable(call_id)  # a model's: stored, and compared, as a text column can hold it
        open_ids = self._questions.setdefault(call_id, [])
        if request.id in open_ids:
            return False
        open_ids.append(request.id)
        self._added.append(PendingRow(request.id, run_id, call_id, dumps(event_to_json(request))))
        self._dirty(1)
        return True

    def answered(self, elicitation_id: str) -> bool:
        """A question was answered: it is pending no more (the next commit says so); ``False`` if it was not
        stored."""
        for call_id, open_ids in self._questions.items():
            if elicitation_id in open_ids:
                open_ids.remove(elicitation_id)
                if not open_ids:
                    del self._questions[call_id]
                self._removed.append(elicitation_id)
                self._dirty(1)
                return True
        return False

    def forget_questions(self, elicitation_ids: Iterable[str]) -> None:
        """Stored questions that wait no more (recovery found their calls answered): deleted next commit."""
        removed = list(elicitation_ids)
        if removed:
            self._removed.extend(removed)
            self._dirty(len(removed))

    def settle_call(self, call_id: str) -> None:
        """The tool call ended: its questions are pending no more."""
        settled = self._questions.pop(storable(call_id), None)
        if settled:
            self._removed.extend(settled)
            self._dirty(len(settled))

    def _dirty(self, records: int) -> None:
        if self.lost is not None:  # nothing more is written: nothing kept, nothing in the backlog
            self._runs.clear()
            self._events.clear()
            return
        self._records += records
        self.writer.backlog += records
        self.writer.mark(self)

    async def flush(self) -> None:
        """Wait until everything recorded so far (the history too) is written.

        Raises:
            StoreUnavailableError: the store failed to write it (it is kept, and written once it can be).
            SessionConflictError: another process took the session.
            StoreRejectedError: the store refused what the session wrote (it writes no more).
        """
        if self.lost is not None:
            raise self.lost
        await self.wait(self.flush_soon())

    def flush_soon(self) -> int:
        """Have everything recorded so far written at once, without waiting for it: what :meth:`wait` and
        :meth:`written` take to know when it is."""
        if self.unwritten():
            self._asked += 1
            self.writer.mark(self, urgent=True)
            return self._asked
        return self._taken  # all of it is written, or in the commit being made: that one only

    def written(self, ticket: int) -> bool:
        """Whether what :meth:`flush_soon` gave ``ticket`` for is written."""
        return self._done >= ticket

    async def wait(self, ticket: int) -> None:
        """Wait until what :meth:`flush_soon` gave ``ticket`` for is written; raises as :meth:`flush`."""
        if self.lost is not None:
            raise self.lost
        wanted = ticket
        if self._done >= wanted:
            await trio.lowlevel.checkpoint()
            return
        while self._done < wanted:
            if self._flushed.is_set():
                self._flushed = trio.Event()
            await self._flushed.wait()
            if self.lost is not None:
                raise self.lost
            if self._done < wanted and self.error is not None:
                raise StoreUnavailableError(f"the session store did not write it: {self.error}") from self.error

    # -- the writer's side --------------------------------------------------------

    def take(self) -> Checkpoint:
        """What is not yet written, as one checkpoint (given back by :meth:`restore` if it fails)."""
        history = self._history
        events = self._unwritten
        events.extend(
            EventRow(run_id, seq, dumps(event_to_json(event.join() if isinstance(event, _Pieces) else event)))
            for run_id, seq, event in self._events
        )
        checkpoint = Checkpoint(
            self.session_id,
            self.version,
            self._stored,
            [dumps(message_to_json(message)) for message in history[self._stored :]],
            list(self._runs.values()),
            events,
            self._added,
            self._removed,
            None if self._usage is None else usage_to_json(self._usage.snapshot()),
            self._create,
            self._stored < self._rows,
        )
        # What it holds has a number of its own: a flush that finds nothing left to take (the writer took a
        # run's row before the run asked) still waits for this commit, not only for the last one done.
        self._asked += 1
        self._taken = self._asked
        self.taken_records, self._records = self._records, 0
        self._sent = len(history)
        self._create = None
        for run_id, row in self._runs.items():  # a run finishing meanwhile finds its row (finished: written again)
            if row.status == "finished":
                self._known.pop(run_id, None)
            else:
                self._known[run_id] = row
        self._runs = {}
        self._events = []
        self._unwritten = []
        self._added = []
        self._removed = []
        return checkpoint

    def restore(self, checkpoint: Checkpoint) -> None:
        """A checkpoint was not written: what it held waits again (before what came since)."""
        self._records += self.taken_records  # still in the backlog
        self._sent = self._stored
        self._create = checkpoint.create
        for row in checkpoint.runs:
            self._runs.setdefault(row.run_id, row)
        self._unwritten = checkpoint.events
        self._added[:0] = checkpoint.pending_added
        self._removed[:0] = checkpoint.pending_removed

    def failed(self, error: StoreError) -> None:
        self.error = error
        self._flushed.set()
        if self.on_commit is not None:
            self.on_commit()

    def committed(self, checkpoint: Checkpoint) -> None:
        self.version += 1
        self._stored = self._rows = checkpoint.message_base + len(checkpoint.messages)
        self._done = self._taken
        self.error = None
        self._flushed.set()
        if self.on_commit is not None:
            self.on_commit()

    def lose(self, conflict: SessionConflictError | StoreRejectedError) -> None:
        self.lost = conflict
        self._runs.clear()
        self._events.clear()
        self.writer.backlog -= self._records  # what came since the lost checkpoint was taken
        self._records = 0
        self._flushed.set()
        if self.on_commit is not None:
            self.on_commit()


_PIECES: Final = (TextDelta, ReasoningDelta)


class _Pieces:
    """Consecutive text (or reasoning) pieces of a run's log, written as one event."""

    __slots__ = ("kind", "texts")

    def __init__(self, kind: type[TextDelta | ReasoningDelta], texts: list[str]) -> None:
        self.kind = kind
        self.texts = texts

    def join(self) -> TextDelta | ReasoningDelta:
        return self.kind("".join(self.texts))


def usage_to_json(usage: RunUsage) -> str:
    return dumps(
        {
            "requests": usage.requests,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "tool_calls": usage.tool_calls,
        }
    )


def usage_from_json(usage: str | None) -> RunUsage | None:
    """A session row's ``usage`` (``None``: none written yet), as :func:`usage_to_json` wrote it.

    Raises:
        ValueError, TypeError: it is not (not JSON, not an object, a count that is not a whole number >= 0).
    """
    if usage is None:
        return None
    data = json.loads(usage)
    if not isinstance(data, dict):
        raise TypeError(f"usage is not a JSON object: {usage[:80]!r}")
    counts = []
    for key in ("requests", "input_tokens", "output_tokens", "tool_calls"):
        value = data.get(key, 0)
        if type(value) is not int or value < 0:
            raise ValueError(f"usage {key} is not a count: {value!r:.80}")
        counts.append(value)
    return RunUsage(*counts)


def restore_usage(tally: UsageTally, usage: RunUsage | None) -> None:
    """Put what a session's earlier processes spent (:func:`usage_from_json`) back in its tally."""
    if usage is not None:
        tally.requests = usage.requests
        tally.input_tokens = usage.input_tokens
        tally.output_tokens = usage.output_tokens
        tally.tool_calls = usage.tool_calls


# -- a run's input, as its row holds it ----------------------------------------------


def run_input_to_json(content: Content | None, history_at: int | None) -> str:
    """A run row's ``input``: the user's content (``None`` for a resumption without one) and how long the
    history was when the run began (recovery puts an interrupted run's message back at that place); ``None``
    while the run waits for its turn (its message goes after everything)."""
    return dumps({"content": None if content is None else content_to_json(content), "at": history_at})


def run_input_from_json(text: str) -> tuple[Content | None, int | None]:
    data = json.loads(text)
    content = data.get("content")
    at = data.get("at", 0)
    return (None if content is None else content_from_json(content)), (None if at is None else int(at))


def carrying(text: str, contents: Sequence[Content], at: int) -> str:
    """A run row's ``input`` that also holds the users' messages a recovery carried over (``then``): they
    follow the results of the calls waiting at history length ``at``, and are stored until those results
    are (see :func:`carried_from_rows`)."""
    data = json.loads(text)
    data["then"] = {"at": at, "content": [content_to_json(content) for content in contents]}
    return dumps(data)


def carried_from_rows(runs: Sequence[RunRow], stored: int) -> list[Content]:
    """The messages the last recovery that carried some over still carries: those of the last row holding
    ``then``, unless the history (``stored`` messages) has grown past where they were to go (a resumption
    made its calls again: the messages are in the history)."""
    for row in reversed(runs):
        if '"then":' not in row.input:  # a key: in a JSON string a quote is escaped
            continue
        then = json.loads(row.input).get("then")
        if then is None:
            continue
        if stored > int(then["at"]):
            return []
        return [content_from_json(content) for content in then["content"]]
    return []


# -- recovery: what a session is after its process stopped --------------------------


class Suspended:
    """An interrupted run that was waiting for answers: resuming it calls those tool calls again."""

    __slots__ = ("_requests", "calls", "questions", "run_id", "then")

    def __init__(
        self,
        run_id: str,
        questions: list[PendingRow],
        calls: dict[str, ToolCallChunk],
        then: Sequence[Content] = (),
    ) -> None:
        """The questions are read here, at recovery: a session holding one that is not an ``ElicitationRequest``
        fails to open (``ValueError``, ``TypeError``), instead of failing at ``Session.pending`` or resume."""
        self.run_id = run_id
        self.questions = questions
        self._requests = tuple(request_from_row(row) for row in questions)
        self.calls = calls
        """The tool calls to call again, by call id."""
        self.then = tuple(then)
        """Users' messages of runs that were resuming it: they follow the calls' results."""

    def requests(self) -> tuple[ElicitationRequest, ...]:
        return self._requests

    def resumption(self, given: Mapping[str, tuple[str, Any]] | None) -> Resumption:
        """What the resuming run needs: per call id, its questions, each with its answer if ``given`` has one.

        Only an answer's action is checked here: its content is checked when its call asks the question
        again, by the tool's own validator (see :class:`ResumedQuestion`).

        Raises:
            UnknownElicitationError: ``given`` answers a question that is not pending.
            InvalidElicitationResponse: an answer's action is not ``accept``, ``decline`` or ``cancel``.
        """
        from ._bridge import PendingElicitation, as_given
        from ._exceptions import UnknownElicitationError

        given = dict(given or {})
        call_ids = {storable(call_id): call_id for call_id in self.calls}  # rows have them as stored
        questions: dict[str, list[ResumedQuestion]] = {}
        for row, request in zip(self.questions, self._requests, strict=True):
            answer = given.pop(row.elicitation_id, None)
            outcome: ElicitationResult | None = None
            if answer is not None:
                pending = PendingElicitation(row.elicitation_id, as_given)
                pending.answer(*answer)
                outcome = pending.result
            questions.setdefault(call_ids.get(row.call_id, row.call_id), []).append(ResumedQuestion(request, outcome))
        if given:
            raise UnknownElicitationError(f"no pending elicitation {next(iter(given))!r} in this session")
        return Resumption(self.run_id, self.calls, questions, self.then)


class ResumedQuestion:
    """A question a resumed call asked before: asked again with the same text, it keeps its id (and is
    answered at once if the answer came with the resumption).

    Its ``answer`` is as given: the tool's own validator (a pydantic model, lax coercion) checks an accepted
    one when the call asks again; the JSON schema stored with the question is only what the consumer was shown.
    """

    __slots__ = ("answer", "request")

    def __init__(self, request: ElicitationRequest, answer: ElicitationResult | None) -> None:
        self.request = request
        self.answer = answer

    def matches(self, message: str, schema: dict[str, Any] | None, agent: str) -> bool:
        request = self.request
        return request.message == message and request.schema == schema and request.agent == agent


class Resumption:
    """A run resuming an interrupted one: the calls to make again, their questions, and what follows."""

    __slots__ = ("calls", "done", "questions", "run_id", "then")

    def __init__(
        self,
        run_id: str,
        calls: dict[str, ToolCallChunk],
        questions: dict[str, list[ResumedQuestion]],
        then: tuple[Content, ...] = (),
    ) -> None:
        self.run_id = run_id
        """The run it resumes."""
        self.done = False
        """Whether the resuming run has called them again (their results are in the history)."""
        self.calls = calls
        self.questions = questions
        """By call id, in the order they were asked."""
        self.then = then
        """Users' messages that go after the calls' results."""


def request_from_row(row: PendingRow) -> ElicitationRequest:
    """A stored question's ``ElicitationRequest``.

    Raises:
        ValueError, TypeError: it is not one (not JSON, or not the fields an ``ElicitationRequest`` has, of
            their types, with its row's id).
    """
    data = json.loads(row.request)
    if not isinstance(data, dict):
        raise TypeError(f"stored question {row.elicitation_id!r} is not a JSON object: {row.request[:80]!r}")
    request_id, message, schema, agent = data.get("id"), data.get("message"), data.get("schema"), data.get("agent", "")
    if request_id != row.elicitation_id:
        raise ValueError(f"stored question {row.elicitation_id!r} has the id {request_id!r:.80}")
    if not (isinstance(message, str) and isinstance(agent, str) and (schema is None or isinstance(schema, dict))):
        raise TypeError(f"stored question {row.elicitation_id!r} is not an ElicitationRequest: {row.request[:80]!r}")
    return ElicitationRequest(row.elicitation_id, message, schema, agent)


def recover(snapshot: SessionSnapshot) -> tuple[list[Message], list[RunRow], Suspended | None, int]:
    """The history to go on with, the interrupted runs (to be marked), the run to resume if any, and how
    many of the history's first messages are as stored (the rest is written again).

    An interrupted run (still ``running`` in the store: its process stopped)
    gets its user's message back if it was not written, and a result for every
    tool call that has none ("interrupted"), except the calls that were waiting
    for an answer: those are called again when the session resumes.
    """
    history = [message_from_json(json.loads(text)) for text in snapshot.messages]
    unchanged = stored = len(history)
    interrupted = [row for row in snapshot.runs if row.status == "running"]
    suspended: Suspended | None = None
    waiting = {pending.call_id for pending in snapshot.pending}  # as stored: compared with storable(call_id)
    waits = _waits(history, waiting)
    # Messages of runs that were resuming, or waiting for their turn, while calls wait: they go after the
    # resumed calls' results. Those an earlier recovery carried over come first: their runs are marked
    # interrupted, so its row is all that holds them until the calls are made again.
    carried = carried_from_rows(snapshot.runs, stored)
    then: list[Content] = list(carried) if waits else []
    if not waits:  # the calls they were to follow have their results, or will have "interrupted" ones
        history.extend(_user_message(content) for content in carried)
    started = []  # the interrupted runs that began (a run waiting for its turn has no place yet: at is None)
    for row in interrupted:
        content, at = run_input_from_json(row.input)
        if at is not None:
            started.append(row)
        if content is None or (at is not None and stored > at):
            continue  # none, or written with the history
        if (row.resumes is not None or at is None) and waits:
            then.append(content)
        else:
            history.append(_user_message(content))
    resumable: dict[str, ToolCallChunk] = {}
    # A call is answered by a result after it, before the next model turn; not by any result of its id:
    # models may number their calls anew (a scripted model per process, Gemini without ids).
    answered: dict[int, set[str]] = {}  # by the model turn's place in the history
    results: set[str] = set()
    for at, message in enumerate(history):
        if isinstance(message, AssistantMessage):
            results = answered[at] = set()
        elif isinstance(message, ToolResultMessage):
            results.add(message.call_id)
    last_turn = max(answered, default=-1)
    repaired: list[Message] = []
    for at, message in enumerate(history):
        repaired.append(message)
        if isinstance(message, AssistantMessage):
            for call in message.tool_calls:
                if call.call_id in answered[at]:
                    continue
                answered[at].add(call.call_id)
                if storable(call.call_id) in waiting and at == last_turn:  # a run waits at its last model turn
                    resumable[call.call_id] = call
                else:
                    unchanged = min(unchanged, len(repaired))
                    repaired.append(ToolResultMessage(call.call_id, call.name, INTERRUPTED_RESULT, True))
    if resumable:
        resumed = {storable(call_id) for call_id in resumable}
        questions = [pending for pending in snapshot.pending if pending.call_id in resumed]
        # The run that waited: the last one interrupted that began (a resumption interrupted in its turn
        # resumes it).
        waited = started[-1].run_id if started else questions[0].run_id
        suspended = Suspended(waited, questions, resumable, then)
        if len(then) > len(carried):
            # Carried over anew: stored now, with the recovery, in the last interrupted run's row (the last
            # row that holds them), so that a process stopping again before the calls are made keeps them.
            last = interrupted[-1]
            interrupted[-1] = attrs.evolve(last, input=carrying(last.input, then, len(repaired)))
    return repaired, interrupted, suspended, unchanged


def unfinished_calls(log: Sequence[str]) -> list[Event]:
    """What an interrupted run's stored log (JSON events) still owes before its ``RunFinished``.

    A sub-agent's run still open is closed as a live one ends, wrapped as its events were (deepest first):
    a ``ToolCallFinished`` for each of its calls without one, its ``RunFinished("interrupted")``, and the
    ``AgentSwitched`` back. Then one ``ToolCallFinished`` per top-level call without its own. Each call gets
    the error the repaired history gives it.
    """
    calls: dict[tuple[str, ...], dict[str, str]] = {(): {}}  # open calls by sub-agent path ((): the run's own)
    runs: dict[tuple[str, ...], None] = {}  # sub-agent runs started and not finished, by path
    came_from: dict[tuple[str, ...], str] = {}  # the agent each sub-agent path was switched to from
    for text in log:
        data = json.loads(text)
        path: tuple[str, ...] = ()
        while data.get("type") == "SubAgentEvent":
            path += (data["agent"],)
            data = data["event"]
        kind = data.get("type")
        if kind == "ToolCallStarted":
            calls.setdefault(path, {})[data["call_id"]] = data["name"]
        elif kind == "ToolCallFinished":
            calls.get(path, {}).pop(data["call_id"], None)
        elif kind == "AgentSwitched":
            came_from[(*path, data["to_agent"])] = data["from_agent"]
        elif path and kind == "RunStarted":
            runs[path] = None
            calls[path] = {}
        elif path and kind == "RunFinished":
            runs.pop(path, None)
            calls.pop(path, None)
    owed: list[Event] = []
    for path in sorted(runs, key=len, reverse=True):
        closing: list[Event] = [
            ToolCallFinished(call_id, name, None, INTERRUPTED_RESULT) for call_id, name in calls[path].items()
        ]
        closing.append(RunFinished("interrupted", "the process running it stopped"))
        owed.extend(_wrapped(path, event) for event in closing)
        if path in came_from:
            owed.append(_wrapped(path[:-1], AgentSwitched(path[-1], came_from[path])))
    owed.extend(ToolCallFinished(call_id, name, None, INTERRUPTED_RESULT) for call_id, name in calls[()].items())
    return owed


def _wrapped(path: tuple[str, ...], event: Event) -> Event:
    for agent in reversed(path):
        event = SubAgentEvent(agent, event)
    return event


def _waits(history: list[Message], waiting: set[str]) -> bool:
    """Whether the last model turn has a call with no result that a question waits on."""
    for at in range(len(history) - 1, -1, -1):
        message = history[at]
        if isinstance(message, AssistantMessage):
            results = {m.call_id for m in history[at + 1 :] if isinstance(m, ToolResultMessage)}
            return any(storable(call.call_id) in waiting and call.call_id not in results for call in message.tool_calls)
    return False


def _user_message(content: Content) -> Message:
    from agents import UserMessage

    return UserMessage(content)


class Recorder:
    """A durable run's copy of its events into its session's journal (a sink of the run's ``Tee``)."""

    __slots__ = ("_journal", "_run_id")

    def __init__(self, journal: Journal, run_id: str) -> None:
        self._journal = journal
        self._run_id = run_id

    def full(self) -> bool:
        """Whether the writer is a whole backlog behind (the run then waits in :meth:`room`).

        Not while the store fails: events are kept past the bound, and the
        run's next durability point fails it with that error.
        """
        writer = self._journal.writer
        return writer.full and writer.failure is None

    def offer_nowait(self, event: Event, *, owed: bool = False) -> None:
        self._journal.event(self._run_id, event)

    async def room(self) -> None:
        try:
            await self._journal.writer.room()
        except StoreUnavailableError:
            pass  # full() says no more now
