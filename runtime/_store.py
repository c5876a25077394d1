"""SessionStore: where durable sessions live, and the plain rows the runtime writes into it.

A store deals in rows of JSON text; what the rows mean (messages, events,
recovery after a crash) is the runtime's business (``runtime._journal``), so
that a store is a small translation to one database: ``SQLiteStore`` and
``PostgresStore``. Every method is called from a Trio task; a store does its
database work in worker threads (the event loop never waits on a disk) and a
wait it does is cancellable from the caller's scope.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

import attrs

from ._exceptions import AgentRuntimeError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from contextlib import AbstractAsyncContextManager

SCHEMA_VERSION = 1
"""The schema this version writes; a store migrates older ones forward at open and refuses newer ones."""

RunStatus = Literal["running", "finished"]


class StoreError(AgentRuntimeError):
    """A session store failed; the subclasses say how."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached (the database is down, the file cannot be opened) or failed mid-write.

    Raised at open, or by a run whose checkpoint could not be written (the run ends with an
    ``ErrorEvent`` of kind ``"store"``); the session goes on once the store is back.
    """


class StoreCorruptError(StoreError):
    """The store is not a session store (a truncated or garbage file, tables that are not ours), or is
    damaged (a page that cannot be read, met by any call), or a session's rows are not what trio-agents
    writes (raised when that session is opened)."""


class StoreVersionError(StoreError):
    """The store was written by a newer trio-agents (its schema version is higher than ours)."""


class SessionOwnedError(StoreError):
    """Someone has this session live: another process (it can be opened here once that process lets go or
    dies), or this one, through the same store (it is open already).

    Attributes:
        session_id: The session.
        owner: Who has it, as that process named itself (``host:pid``, or a served URL).
    """

    def __init__(self, session_id: str, owner: str | None) -> None:
        super().__init__(f"session {session_id!r} is live already, held by {owner or 'an unknown owner'}")
        self.session_id = session_id
        self.owner = owner


class SessionConflictError(StoreError):
    """A checkpoint found the session changed under it (another process wrote it): this process lost it.

    Attributes:
        session_id: The session.
    """

    def __init__(self, session_id: str, message: str) -> None:
        super().__init__(message)
        self.session_id = session_id


class StoreRejectedError(StoreError):
    """The store refused what a session wrote (a value its database cannot hold, a row a constraint or a
    trigger refuses): retrying cannot help, so that session writes no more, and the others go on.

    Its runs end with an ``ErrorEvent`` of kind ``"store"`` at their next durability point, as a
    :class:`SessionConflictError`'s do.

    Attributes:
        session_id: The session.
    """

    def __init__(self, session_id: str, message: str) -> None:
        super().__init__(message)
        self.session_id = session_id


def history_of(session_id: str, rows: Sequence[tuple[int, str]]) -> tuple[str, ...]:
    """A session's history from its ``(seq, message)`` rows in ``seq`` order, checked to be numbered 0, 1, 2, ...

    A gap or a row before 0 would make the next checkpoint's messages collide with stored ones: refused here,
    when the session is opened, instead of by a run's write.

    Raises:
        StoreCorruptError: the numbers are not 0 to ``len(rows) - 1``.
    """
    for expected, (seq, _) in enumerate(rows):
        if seq != expected:
            raise StoreCorruptError(
                f"session {session_id!r} cannot be read: its history has message {seq} where {expected} should be"
            )
    return tuple(message for _, message in rows)


def storable(text: str) -> str:
    """``text`` as a plain text column holds it: NUL (PostgreSQL refuses it) and each lone surrogate (UTF-8
    has none) written as its escape (``\\x00``, ``\\ud800``); any other text is returned as it is.

    For what a store keeps as plain text and gets from outside: a model's tool-call id, an agent's or a
    process's name (JSON columns escape both already; session ids are refused with them).
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode()
    return text


@attrs.frozen
class RunRow:
    """One run of a session, as stored."""

    run_id: str
    seq: int
    """The run's number in its session (1, 2, ...): ``run_id`` ends with it."""
    input: str
    """The user's input, JSON (a string, or content parts)."""
    status: RunStatus
    reason: str | None = None
    """Its ``RunFinished`` reason, once finished."""
    resumes: str | None = None
    """The run it continues, if it is a resumption."""


@attrs.frozen
class PendingRow:
    """A question a run asked and was waiting on, stored so that it outlives the process."""

    elicitation_id: str
    run_id: str
    call_id: str
    """The top-level tool call that asked (called again, with the answer, when the run resumes), as
    :func:`storable` has it."""
    request: str
    """The ``ElicitationRequest`` event, JSON."""


@attrs.frozen
class SessionSnapshot:
    """Everything a store holds of one session, as :meth:`SessionStore.claim` loads it."""

    session_id: str
    agent: str
    version: int
    """Bumped by every checkpoint: a checkpoint names the version it follows (the optimistic check)."""
    messages: tuple[str, ...]
    """The history, oldest first: one JSON message each."""
    runs: tuple[RunRow, ...]
    """Every run, by ``seq``."""
    pending: tuple[PendingRow, ...]
    usage: str | None
    """The session's usage totals, JSON (``None`` before the first checkpoint)."""
    created: bool
    """Whether it is new: ``claim`` made it (it did not exist), or, claimed ``fresh``, the first checkpoint will."""


@attrs.frozen
class EventRow:
    """One event of a run's log."""

    run_id: str
    seq: int
    """Its place in the run's log (0 first)."""
    event: str
    """The event, JSON (as the wire has it)."""


@attrs.define
class Checkpoint:
    """What one session wrote since its last checkpoint: written in one transaction, or not at all."""

    session_id: str
    version: int
    """The version this follows; the store writes only if the session is still at it, then bumps it."""
    message_base: int
    """How many messages the stored history keeps before ``messages`` (it is cut to this length first if
    :attr:`cut`)."""
    messages: list[str] = attrs.Factory(list)
    runs: list[RunRow] = attrs.Factory(list)
    """Runs to insert or update (by ``run_id``)."""
    events: list[EventRow] = attrs.Factory(list)
    pending_added: list[PendingRow] = attrs.Factory(list)
    pending_removed: list[str] = attrs.Factory(list)
    """Elicitation ids."""
    usage: str | None = None
    """The new usage totals, if they changed."""
    create: str | None = None
    """The agent's name, on the first checkpoint of a session claimed ``fresh``: the store makes the
    session with this checkpoint (claimed fresh, it is at version 0: stored at 1), and refuses it as a conflict
    if the id exists."""
    cut: bool = True
    """Whether the stored history may hold messages from ``message_base`` on, to be deleted first
    (``False`` when the writer knows it holds exactly ``message_base``: no statement for nothing)."""


class SessionStore(Protocol):
    """A durable home for sessions; see :class:`~runtime.SQLiteStore` and :class:`~runtime.PostgresStore`.

    Ownership: a session is live in one process at a time. :meth:`claim` takes
    it (a lock that the database or the kernel releases when this process dies),
    :meth:`release` lets it go; a checkpoint of a session this process does not
    hold, or whose version moved, is refused.
    """

    @property
    def url(self) -> str:
        """Where it is (``sqlite:PATH``, ``postgresql://host/db``; never a password)."""
        ...

    def open(self, owner: str) -> AbstractAsyncContextManager[None]:
        """Connect, and create or migrate the schema; leaving the block releases every claim and disconnects.

        ``owner`` names this process in :class:`SessionOwnedError` raised elsewhere.

        Raises:
            StoreUnavailableError, StoreCorruptError, StoreVersionError: (on entering).
        """
        ...

    async def claim(self, session_id: str, agent: str, *, create: bool, fresh: bool = False) -> SessionSnapshot | None:
        """Take the session for this process and load it; with ``create``, make it if it does not exist.

        With ``fresh`` (and ``create``), the caller has just made the id (no store can hold it yet): the
        store only takes the session, and returns it empty at version 0 without reading or writing a
        row; the caller's first checkpoint of it carries :attr:`Checkpoint.create`, which makes it.

        Returns:
            The session; ``None`` if it does not exist and ``create`` is false.

        Raises:
            SessionOwnedError: another process holds it (nothing is left claimed).
            StoreUnavailableError: the store cannot be reached.
            StoreCorruptError: its history rows are not numbered 0, 1, 2, ... (see :func:`history_of`;
                nothing is left claimed).
        """
        ...

    async def release(self, session_id: str) -> None:
        """Let the session go (idempotent; never raises for a store that went away)."""
        ...

    async def commit(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Write the checkpoints in one transaction: all of them, or (raising) none.

        Raises:
            SessionConflictError: a session is not held here or not at the checkpoint's version, or a
                checkpoint with ``create`` found it exists (its ``session_id`` says which; nothing was
                written).
            StoreRejectedError: the database refused what a checkpoint holds (its ``session_id`` says
                whose; nothing was written): writing it again would fail again.
            StoreUnavailableError: the write failed; nothing was written.
        """
        ...

    async def events(self, session_id: str, run_id: str) -> list[str]:
        """A run's event log, JSON, in order (empty for an unknown run)."""
        ...

    async def delete(self, session_id: str) -> None:
        """Forget a session held here, with everything it stored."""
        ...
