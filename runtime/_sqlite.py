"""SQLiteStore: durable sessions in one SQLite file, the embedded default.

One connection, used by one worker thread at a time (a ``threading.Lock``
taken inside the thread, so a call abandoned by a cancelled caller finishes
its statement before the next one starts). WAL mode with ``synchronous =
NORMAL``: a committed checkpoint survives a killed process (not a power
cut, which may lose the last few). The log is copied into the file by a
second thread and connection of the store's own (``_Checkpointer``), never
inside a commit that a run waits for.

Ownership is an OS lock that the kernel drops when the process dies: per
claimed session, a byte-range lock (``fcntl.lockf``) in the sidecar file
``PATH-sessions.lock`` (``PATH`` with symlinks resolved), at an offset hashed from the session id. POSIX
record locks belong to a process, not to a descriptor, and closing *any*
descriptor of a file drops every lock the process holds on it: so the
process opens each sidecar once, shared by every store on it, and keeps the
set of sessions claimed in it to refuse a second claim itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import trio

from ._store import (
    SCHEMA_VERSION,
    PendingRow,
    RunRow,
    SessionConflictError,
    SessionOwnedError,
    SessionSnapshot,
    StoreCorruptError,
    StoreError,
    StoreRejectedError,
    StoreUnavailableError,
    StoreVersionError,
    history_of,
    storable,
)
from ._worker import WorkerCall, WorkerThread, run_worker, session_hash

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from ._store import Checkpoint, RunStatus

BUSY_TIMEOUT: Final = 5.0
"""Seconds a statement waits for another process's write lock on the file before it fails."""

CHECKPOINT_PAGES: Final = 1000
"""About how many pages commits add to the write-ahead log before the store's checkpointer copies it into
the database file (SQLite's own threshold, which it would meet inside the commit that crosses it)."""

PAGE_SIZE: Final = 4096

logger = logging.getLogger("runtime")

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: the first schema.
    (
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            agent TEXT NOT NULL,
            owner TEXT,
            version INTEGER NOT NULL DEFAULT 0,
            usage TEXT,
            created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
        ) WITHOUT ROWID""",
        """CREATE TABLE messages (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            message TEXT NOT NULL,
            PRIMARY KEY (session_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE runs (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            input TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'finished')),
            reason TEXT,
            resumes TEXT,
            PRIMARY KEY (session_id, run_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE events (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            event TEXT NOT NULL,
            PRIMARY KEY (session_id, run_id, seq)
        ) WITHOUT ROWID""",
        # A rowid table: its rowid keeps the order the questions were asked in.
        """CREATE TABLE pending (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            elicitation_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            call_id TEXT NOT NULL,
            request TEXT NOT NULL,
            UNIQUE (session_id, elicitation_id)
        )""",
    ),
)
"""``MIGRATIONS[v]`` takes a file from schema version ``v`` to ``v + 1`` (``PRAGMA user_version``)."""

TABLES: Final = frozenset({"sessions", "messages", "runs", "events", "pending"})
"""The tables of schema :data:`SCHEMA_VERSION`: a file with any other table is not ours."""

assert len(MIGRATIONS) == SCHEMA_VERSION

# SQLite result codes (the primary code, the low byte of the extended one) that mean "not a database".
_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class _LockFile:
    """This process's one descriptor of a sidecar lock file, and the sessions claimed in it."""

    __slots__ = ("claims", "fd", "key", "refs")

    def __init__(self, key: str, fd: int) -> None:
        self.key = key
        """Its real path: the key of :data:`_LOCK_FILES`."""
        self.fd = fd
        self.refs = 0
        self.claims: dict[str, str] = {}
        """Session id -> the owner name of the store in this process that holds it."""


_LOCK_FILES: dict[str, _LockFile] = {}
_LOCK_FILES_LOCK = threading.Lock()
"""Guards :data:`_LOCK_FILES` and every ``_LockFile``'s claims (held only around syscalls, never a wait)."""


def _lock_offset(session_id: str) -> int:
    # 62 bits: a byte offset that fits a signed 64-bit off_t with room to spare.
    return session_hash(session_id) >> 2


class _Checkpointer:
    """Copies the write-ahead log into the database file in a thread of its own, once commits have added
    about :data:`CHECKPOINT_PAGES` pages to it (``PRAGMA wal_checkpoint(PASSIVE)``: it never blocks a writer).

    SQLite's automatic checkpoint would run inside the commit that crosses the threshold: milliseconds and
    two fsyncs, every hundred or so commits, paid by whichever run waits on that commit. Here no commit pays.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._thread = WorkerThread(f"SQLiteStore {path} checkpoints")
        self._conn: sqlite3.Connection | None = None  # its own, used in its thread only
        self._pages = 0  # written since the last checkpoint was queued (counted in the store's thread)

    def start(self) -> None:
        self._thread.start()

    def wrote(self, pages: int) -> None:
        """A commit wrote about ``pages`` pages (called in the store's thread): queue a checkpoint if it is time."""
        self._pages += pages
        if self._pages >= CHECKPOINT_PAGES:
            self._pages = 0
            self._thread.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        # Nothing may escape a job: it would end the thread, and with it every later checkpoint.
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the log only grows until a checkpoint succeeds; nothing is lost
            logger.warning("checkpointing %s failed: %s", self._path, exc)
        except Exception:
            logger.exception("checkpointing %s failed", self._path)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    async def stop(self) -> None:
        """Let a queued checkpoint finish, close the connection, and end the thread."""
        self._thread.submit(self._close)
        await self._thread.stop()


def _pages(checkpoints: Sequence[Checkpoint]) -> int:
    """About how many pages a commit of ``checkpoints`` adds to the log: the leaves it touches, and its text."""
    size = sum(len(m) for cp in checkpoints for m in cp.messages) + sum(
        len(e.event) for cp in checkpoints for e in cp.events
    )
    return 4 * len(checkpoints) + size // PAGE_SIZE


class SQLiteStore:
    """A :class:`~runtime.SessionStore` in one SQLite file (the embedded default).

    Args:
        path: The database file (created if missing; its directory must exist).

    Example::

        store = SQLiteStore("sessions.db")
        async with store.open("host:1234"):
            snapshot = await store.claim("s1", "assistant", create=True)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._lock_path = self._path + "-sessions.lock"
        self._conn: sqlite3.Connection | None = None
        self._conn_lock = threading.Lock()  # one thread on the connection at a time
        self._lock_file: _LockFile | None = None
        self._held: set[str] = set()  # guarded by _LOCK_FILES_LOCK
        self._owner = ""
        self._thread: WorkerThread | None = None  # the connection's own thread, while open
        self._checkpointer: _Checkpointer | None = None  # while open
        self._file = self._path  # once open: the file the connection has, as SQLite names it (absolute)

    def __repr__(self) -> str:
        return f"<SQLiteStore {self._path!r} {'open' if self._conn is not None else 'closed'}>"

    @property
    def url(self) -> str:
        """``sqlite:PATH``."""
        return f"sqlite:{self._path}"

    @contextlib.asynccontextmanager
    async def open(self, owner: str) -> AsyncIterator[None]:
        """Open the file, and create or migrate its schema; leaving the block releases every claim and closes it.

        Args:
            owner: This process's name, written with each session it claims.

        Raises:
            StoreUnavailableError: The file cannot be opened (its directory is missing, no permission).
            StoreCorruptError: It is not a session store (garbage, truncated, or someone else's tables).
            StoreVersionError: A newer trio-agents wrote it.
        """
        if self._thread is not None:
            raise StoreUnavailableError(f"{self!r} is already open")
        self._owner = owner
        self._conn, self._lock_file = await run_worker(
            self._open_sync, limiter=trio.CapacityLimiter(1), undo=_close_opened
        )
        # The connection's calls run in one thread of its own, in order: one thread on it at a time.
        thread = self._thread = WorkerThread(f"SQLiteStore {self._path}")
        # The file the connection opened, by its absolute name: the process may change directory.
        checkpointer = self._checkpointer = _Checkpointer(self._file)
        thread.start()
        checkpointer.start()
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await thread.stop()  # abandoned calls end first: they may still be using the connection
                await checkpointer.stop()
                await trio.to_thread.run_sync(self._close_sync)
            self._thread = self._checkpointer = None

    def _open_sync(self, call: WorkerCall[Any]) -> tuple[sqlite3.Connection, _LockFile]:
        try:
            conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _map_error(exc, self._path, opening=True) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            _set_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the store's checkpointer does it, off the commits
            self._file = conn.execute("PRAGMA database_list").fetchone()[2]
            self._migrate(conn)
            # Beside the file SQLite opened, symlinks resolved: every name of one file shares its locks.
            self._lock_path = os.path.realpath(self._path) + "-sessions.lock"
            return conn, _open_lock_file(self._lock_path)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise _map_error(exc, self._path, opening=True) from exc
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE: two processes opening a new file at once migrate it one after the other.
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            tables = {
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                )
            }
            if version > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"{self._path} has session store schema {version}; this trio-agents knows up to {SCHEMA_VERSION}"
                )
            if version == 0 and tables:
                raise StoreCorruptError(f"{self._path} is an SQLite database with tables that are not a session store")
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {step + 1}")
            if version:
                if tables != TABLES:
                    raise StoreCorruptError(
                        f"{self._path} does not have the session store's tables: "
                        f"{sorted(tables - TABLES)} more, {sorted(TABLES - tables)} missing"
                    )
                # Reads the schema's pages: a truncated file fails here, at open.
                conn.execute("SELECT 1 FROM sessions LIMIT 1").fetchone()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _close_sync(self) -> None:
        with _LOCK_FILES_LOCK:
            lock_file, self._lock_file = self._lock_file, None
            held, self._held = self._held, set()
            if lock_file is not None:
                for session_id in held:
                    _unlock(lock_file, session_id)
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None and lock_file is not None:
            _close_opened((conn, lock_file))

    def _connection(self) -> tuple[sqlite3.Connection, WorkerThread]:
        if self._conn is None or self._thread is None:
            raise StoreUnavailableError(f"{self!r} is not open (use `async with store.open(owner):`)")
        return self._conn, self._thread

    async def _run(self, fn: Callable[[WorkerCall[Any]], Any], *, undo: Callable[[Any], None] | None = None) -> Any:
        _, thread = self._connection()
        try:
            return await thread.run(fn, undo=undo)
        except trio.ClosedResourceError as exc:  # the store's open block is exiting under this call
            raise StoreUnavailableError(f"{self!r} is closing") from exc

    async def claim(self, session_id: str, agent: str, *, create: bool, fresh: bool = False) -> SessionSnapshot | None:
        """Take the session for this process and load it; with ``create``, make it if it does not exist.

        Args:
            session_id: The session.
            agent: The agent's name, stored when the session is made.
            create: Make the session if it does not exist.
            fresh: With ``create``: the id was just made, so only take it (no thread, nothing read);
                the first checkpoint, with :attr:`Checkpoint.create`, makes it.

        Returns:
            The session; ``None`` if it does not exist and ``create`` is false (nothing is claimed then).

        Raises:
            SessionOwnedError: Another process, or another claim in this one, holds it.
            StoreUnavailableError: The file could not be read or written.
            StoreCorruptError: Its history rows are not numbered 0, 1, 2, ... (nothing is left claimed).
        """
        if fresh and create:
            # Taking the lock is one non-blocking syscall (as letting it go is): no thread needed, nor a
            # schedule point (as a session in memory opens). If the id is held after all, the thread's claim
            # says by whom (reading the file), or takes it.
            await trio.lowlevel.checkpoint_if_cancelled()
            if not self._lock(session_id):
                await self._run(lambda call: self._take(session_id), undo=lambda _: self._let_go(session_id))
            return SessionSnapshot(session_id, agent, 0, (), (), (), None, created=True)

        def claim(call: WorkerCall[Any]) -> SessionSnapshot | None:
            self._take(session_id)
            try:
                snapshot = self._load(session_id, agent, create)
            except BaseException:
                self._let_go(session_id)
                raise
            if snapshot is None:
                self._let_go(session_id)
            return snapshot

        def undo(snapshot: SessionSnapshot | None) -> None:
            if snapshot is not None:
                self._let_go(session_id)

        result: SessionSnapshot | None = await self._run(claim, undo=undo)
        return result

    def _take(self, session_id: str) -> None:
        """Lock the session for this store, or raise :class:`SessionOwnedError` (in a worker thread)."""
        if self._lock(session_id):
            return
        with _LOCK_FILES_LOCK:
            holder = None if self._lock_file is None else self._lock_file.claims.get(session_id)
        raise SessionOwnedError(session_id, holder or self._stored_owner(session_id))

    def _lock(self, session_id: str) -> bool:
        """Lock the session for this store; ``False`` if another claim, here or elsewhere, holds it."""
        with _LOCK_FILES_LOCK:
            lock_file = self._lock_file
            if lock_file is None:
                raise StoreUnavailableError(f"{self!r} is not open")
            if session_id in lock_file.claims:
                return False
            try:
                fcntl.lockf(lock_file.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _lock_offset(session_id))
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise StoreUnavailableError(f"cannot lock {self._lock_path}: {exc}") from exc
                return False
            lock_file.claims[session_id] = self._owner
            self._held.add(session_id)
            return True

    def _let_go(self, session_id: str) -> None:
        with _LOCK_FILES_LOCK:
            if session_id in self._held and self._lock_file is not None:
                self._held.discard(session_id)
                _unlock(self._lock_file, session_id)

    def _stored_owner(self, session_id: str) -> str | None:
        conn, _ = self._connection()
        try:
            with self._conn_lock:
                row = conn.execute("SELECT owner FROM sessions WHERE id = ?", (session_id,)).fetchone()
        except sqlite3.Error:
            return None  # the lock says who may write; the name is only for the message
        return None if row is None else str(row[0])

    def _load(self, session_id: str, agent: str, create: bool) -> SessionSnapshot | None:
        conn, _ = self._connection()
        with self._conn_lock, _transaction(conn, self._path):
            row = conn.execute("SELECT agent, version, usage FROM sessions WHERE id = ?", (session_id,)).fetchone()
            created = row is None
            if row is None:
                if not create:
                    return None
                conn.execute(
                    "INSERT INTO sessions (id, agent, owner) VALUES (?, ?, ?)",
                    (session_id, storable(agent), storable(self._owner)),
                )
                row = (agent, 0, None)
            else:
                conn.execute("UPDATE sessions SET owner = ? WHERE id = ?", (storable(self._owner), session_id))
            messages = history_of(
                session_id,
                conn.execute(
                    "SELECT seq, message FROM messages WHERE session_id = ? ORDER BY seq", (session_id,)
                ).fetchall(),
            )
            runs = conn.execute(
                "SELECT run_id, seq, input, status, reason, resumes FROM runs WHERE session_id = ? ORDER BY seq",
                (session_id,),
            ).fetchall()
            pending = conn.execute(
                "SELECT elicitation_id, run_id, call_id, request FROM pending WHERE session_id = ? ORDER BY rowid",
                (session_id,),
            ).fetchall()
        return SessionSnapshot(
            session_id=session_id,
            agent=row[0],
            version=row[1],
            messages=messages,
            runs=tuple(_run_row(*run) for run in runs),
            pending=tuple(PendingRow(*p) for p in pending),
            usage=row[2],
            created=created,
        )

    async def release(self, session_id: str) -> None:
        """Let the session go (idempotent; never raises)."""
        # Unlocking is one non-blocking syscall: no thread needed, nor a schedule point (the writer lets
        # sessions go between its commits), and it cannot be cancelled halfway.
        self._let_go(session_id)

    async def commit(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Write the checkpoints in one transaction: all of them, or (raising) none.

        Raises:
            SessionConflictError: A session is not claimed by this store, or not at the checkpoint's version,
                or one to be made (``create``) exists.
            StoreRejectedError: SQLite refused what a checkpoint holds (text that is not UTF-8, a row a
                constraint refuses); nothing was written.
            StoreUnavailableError: The write failed (nothing was written).
        """
        checkpoints = list(checkpoints)

        def commit(call: WorkerCall[None]) -> None:
            with _LOCK_FILES_LOCK:
                missing = next((cp.session_id for cp in checkpoints if cp.session_id not in self._held), None)
            if missing is not None:
                raise SessionConflictError(missing, f"session {missing!r} is not claimed by this store")
            conn, _ = self._connection()
            with self._conn_lock, _transaction(conn, self._path, call):
                for cp in checkpoints:
                    try:
                        _write(conn, cp, storable(self._owner))
                    except (sqlite3.IntegrityError, sqlite3.DataError, UnicodeEncodeError) as exc:
                        # What this checkpoint holds is refused, and would be again: its session's failure only.
                        message = f"{self._path} refused session {cp.session_id!r}'s changes: {exc}"
                        raise StoreRejectedError(cp.session_id, message) from exc
            if self._checkpointer is not None:
                self._checkpointer.wrote(_pages(checkpoints))

        await self._run(commit)

    async def events(self, session_id: str, run_id: str) -> list[str]:
        """A run's event log, JSON, in order (empty for an unknown run).

        Raises:
            StoreUnavailableError: The file could not be read.
        """

        def events(call: WorkerCall[list[str]]) -> list[str]:
            conn, _ = self._connection()
            try:
                with self._conn_lock:
                    rows = conn.execute(
                        "SELECT event FROM events WHERE session_id = ? AND run_id = ? ORDER BY seq",
                        (session_id, run_id),
                    ).fetchall()
            except sqlite3.Error as exc:
                raise _map_error(exc, self._path) from exc
            return [event for (event,) in rows]

        result: list[str] = await self._run(events)
        return result

    async def delete(self, session_id: str) -> None:
        """Forget a session with everything it stored, and release it.

        A session not held here is taken for the deletion first.

        Raises:
            SessionOwnedError: Another process holds it.
            StoreUnavailableError: The file could not be written.
        """

        def delete(call: WorkerCall[None]) -> None:
            with _LOCK_FILES_LOCK:
                held = session_id in self._held
            if not held:
                self._take(session_id)
            try:
                conn, _ = self._connection()
                with self._conn_lock, _transaction(conn, self._path):
                    conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            finally:
                self._let_go(session_id)

        await self._run(delete)


def _open_lock_file(path: str) -> _LockFile:
    key = os.path.realpath(path)
    with _LOCK_FILES_LOCK:
        lock_file = _LOCK_FILES.get(key)
        if lock_file is None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise StoreUnavailableError(f"cannot open the lock file {path}: {exc}") from exc
            lock_file = _LOCK_FILES[key] = _LockFile(key, fd)
        lock_file.refs += 1
        return lock_file


def _close_opened(opened: tuple[sqlite3.Connection, _LockFile]) -> None:
    conn, lock_file = opened
    conn.close()
    with _LOCK_FILES_LOCK:
        lock_file.refs -= 1
        if lock_file.refs == 0:
            # Closing it drops every lock this process has in the file: only once no store uses it.
            del _LOCK_FILES[lock_file.key]
            os.close(lock_file.fd)


def _unlock(lock_file: _LockFile, session_id: str) -> None:
    # Called with _LOCK_FILES_LOCK held.
    lock_file.claims.pop(session_id, None)
    with contextlib.suppress(OSError):
        fcntl.lockf(lock_file.fd, fcntl.LOCK_UN, 1, _lock_offset(session_id))


def _set_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (it stays so). Switching takes the file's exclusive lock without the busy
    handler's waiting: processes opening a new file at once retry, within :data:`BUSY_TIMEOUT`."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)  # in the store's worker thread, never the event loop's


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, path: str, call: WorkerCall[Any] | None = None) -> Any:
    """A write transaction (``BEGIN IMMEDIATE``): committed if the block ends well, else rolled back.

    With ``call``, a caller cancelled before the commit gets a rollback instead: a write it
    gave up on is not made behind its back (unless the cancel lands during the COMMIT itself).
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        if call is not None and call.abandoned:
            conn.execute("ROLLBACK")
        else:
            conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise _map_error(exc, path) from exc
        raise


def _write(conn: sqlite3.Connection, cp: Checkpoint, owner: str) -> None:
    sid = cp.session_id
    if cp.create is not None:  # made by this checkpoint, at the version its update would give it
        made = conn.execute(
            "INSERT INTO sessions (id, agent, owner, version, usage) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (sid, storable(cp.create), owner, cp.version + 1, cp.usage),
        ).rowcount
        if made != 1:
            raise SessionConflictError(sid, f"session {sid!r} was to be made by this checkpoint, but it exists")
    else:
        updated = conn.execute(
            "UPDATE sessions SET version = version + 1, usage = COALESCE(?, usage) WHERE id = ? AND version = ?",
            (cp.usage, sid, cp.version),
        ).rowcount
        if updated != 1:
            raise SessionConflictError(sid, f"session {sid!r} is no longer at version {cp.version}: another writer won")
    if cp.cut:
        conn.execute("DELETE FROM messages WHERE session_id = ? AND seq >= ?", (sid, cp.message_base))
    if cp.messages:
        conn.executemany(
            "INSERT INTO messages (session_id, seq, message) VALUES (?, ?, ?)",
            [(sid, cp.message_base + i, message) for i, message in enumerate(cp.messages)],
        )
    if cp.runs:
        conn.executemany(
            "INSERT INTO runs (session_id, run_id, seq, input, status, reason, resumes) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (session_id, run_id) DO UPDATE SET seq = excluded.seq, input = excluded.input,"
            " status = excluded.status, reason = excluded.reason, resumes = excluded.resumes",
            [(sid, r.run_id, r.seq, r.input, r.status, r.reason, r.resumes) for r in cp.runs],
        )
    if cp.events:
        conn.executemany(
            "INSERT INTO events (session_id, run_id, seq, event) VALUES (?, ?, ?, ?)",
            [(sid, e.run_id, e.seq, e.event) for e in cp.events],
        )
    if cp.pending_added:
        conn.executemany(
            "INSERT INTO pending (session_id, elicitation_id, run_id, call_id, request) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (session_id, elicitation_id) DO UPDATE SET run_id = excluded.run_id,"
            " call_id = excluded.call_id, request = excluded.request",
            [(sid, p.elicitation_id, p.run_id, p.call_id, p.request) for p in cp.pending_added],
        )
    if cp.pending_removed:
        conn.executemany(
            "DELETE FROM pending WHERE session_id = ? AND elicitation_id = ?",
            [(sid, elicitation_id) for elicitation_id in cp.pending_removed],
        )


def _run_row(run_id: str, seq: int, input: str, status: RunStatus, reason: str | None, resumes: str | None) -> RunRow:
    return RunRow(run_id=run_id, seq=seq, input=input, status=status, reason=reason, resumes=resumes)


def _map_error(exc: sqlite3.Error, path: str, *, opening: bool = False) -> StoreError:
    """An sqlite3 error as ours: "not a database" or "malformed" is corruption (a page that cannot be read may
    be met long after the open); anything else is unavailability."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _CORRUPT_CODES:
        return StoreCorruptError(f"{path} is not a session store: {exc}" if opening else f"{path} is damaged: {exc}")
    return StoreUnavailableError(f"{path}: {exc}")
