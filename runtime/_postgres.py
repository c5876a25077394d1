"""PostgresStore: durable sessions in PostgreSQL, for many processes sharing them.

psycopg 3's blocking API in worker threads (its async mode is asyncio-only),
with a ``psycopg_pool.ConnectionPool``: each call takes a connection with
``with pool.connection()`` *inside* its thread, so a call abandoned by a
cancelled caller still ends its transaction and returns its connection
itself, and no connection is ever handed out mid-transaction.

Ownership is a session-level advisory lock per claimed session, held on one
dedicated *lock connection* (not from the pool), which the server drops when
that connection dies: with the process, or when TCP keepalives (asked of
both ends) find the peer gone. If the lock connection breaks (the server
restarted), the next call reconnects and takes every lock again; a session
it cannot take back is lost, and its next checkpoint raises
:class:`SessionConflictError` rather than write a session another process
may now own.

A commit whose reply is lost (the connection broke after COMMIT was sent) may have been made: the store
keeps the transaction's id, and a retry that finds the session one version on asks the server
(``txid_status``) whether that transaction committed; if it did, the retry, which holds what it held and
what came since, is written over it at that version rather than refused as another writer's.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import urllib.parse
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
from ._worker import INTERRUPT_TIMEOUT, WorkerCall, run_worker, session_hash, settle

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    import psycopg
    import psycopg_pool

    from ._store import Checkpoint

KEEPALIVES: Final = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
"""libpq's client-side TCP keepalives: a partitioned server is noticed within about 11 s."""

SERVER_KEEPALIVES: Final = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
"""The same asked of the server for the lock connection: it drops a partitioned owner's locks."""

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: the first schema.
    (
        """CREATE TABLE trio_agents_sessions (
            id text PRIMARY KEY,
            agent text NOT NULL,
            owner text,
            version bigint NOT NULL DEFAULT 0,
            usage text,
            created_at timestamptz NOT NULL DEFAULT now()
        )""",
        """CREATE TABLE trio_agents_messages (
            session_id text NOT NULL REFERENCES trio_agents_sessions (id) ON DELETE CASCADE,
            seq integer NOT NULL,
            message text NOT NULL,
            PRIMARY KEY (session_id, seq)
        )""",
        """CREATE TABLE trio_agents_runs (
            session_id text NOT NULL REFERENCES trio_agents_sessions (id) ON DELETE CASCADE,
            run_id text NOT NULL,
            seq integer NOT NULL,
            input text NOT NULL,
            status text NOT NULL CHECK (status IN ('running', 'finished')),
            reason text,
            resumes text,
            PRIMARY KEY (session_id, run_id)
        )""",
        """CREATE TABLE trio_agents_events (
            session_id text NOT NULL REFERENCES trio_agents_sessions (id) ON DELETE CASCADE,
            run_id text NOT NULL,
            seq integer NOT NULL,
            event text NOT NULL,
            PRIMARY KEY (session_id, run_id, seq)
        )""",
        # pos keeps the order the questions were asked in.
        """CREATE TABLE trio_agents_pending (
            pos bigint GENERATED ALWAYS AS IDENTITY,
            session_id text NOT NULL REFERENCES trio_agents_sessions (id) ON DELETE CASCADE,
            elicitation_id text NOT NULL,
            run_id text NOT NULL,
            call_id text NOT NULL,
            request text NOT NULL,
            PRIMARY KEY (session_id, elicitation_id)
        )""",
    ),
)
"""``MIGRATIONS[v]`` takes a database from schema version ``v`` to ``v + 1`` (table ``trio_agents_schema``)."""

assert len(MIGRATIONS) == SCHEMA_VERSION

COLUMNS: Final = {
    "trio_agents_schema": frozenset({"version"}),
    "trio_agents_sessions": frozenset({"id", "agent", "owner", "version", "usage", "created_at"}),
    "trio_agents_messages": frozenset({"session_id", "seq", "message"}),
    "trio_agents_runs": frozenset({"session_id", "run_id", "seq", "input", "status", "reason", "resumes"}),
    "trio_agents_events": frozenset({"session_id", "run_id", "seq", "event"}),
    "trio_agents_pending": frozenset({"pos", "session_id", "elicitation_id", "run_id", "call_id", "request"}),
}
"""The tables of schema :data:`SCHEMA_VERSION` and their columns: a database missing one is not a session store."""

_MIGRATION_LOCK: Final = session_hash("trio_agents_schema") - (1 << 63)
"""The advisory lock that makes two processes opening a database at once migrate it one after the other."""

_MASK64: Final = (1 << 64) - 1

_OWNER_TAG: Final = "trio-agents@"
"""Starts the lock connection's ``application_name``, the rest being its owner: how a claim that finds a session
held names the process that holds the lock (in ``pg_stat_activity``), not whoever last wrote the session's row."""

_NAMEDATALEN: Final = 64
"""The server keeps ``application_name`` to ``NAMEDATALEN - 1`` bytes (cutting the rest) of printable ASCII."""


def _require_psycopg() -> None:
    # Imported where used, so that `import runtime` works without the postgres extra.
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"PostgresStore needs psycopg and psycopg-pool ({exc}): pip install 'trio-agents[postgres]'"
        ) from exc


def _lock_key(session_id: str) -> int:
    """A session's advisory lock key: its 64-bit hash as PostgreSQL's signed bigint."""
    return session_hash(session_id) - (1 << 63)


class PostgresStore:
    """A :class:`~runtime.SessionStore` in a PostgreSQL database, for many processes sharing sessions.

    Args:
        dsn: A libpq connection string or ``postgresql://`` URL.
        max_connections: Pooled connections (and worker threads) at most, besides the lock connection.
        connect_timeout: Seconds to wait for a connection (rounded up to whole seconds, as libpq has it).
        statement_timeout: Seconds any statement may run before the server cancels it (``None``: no limit).

    Raises:
        ImportError: psycopg is not installed (the ``postgres`` extra).

    Example::

        store = PostgresStore("postgresql://app@db/agents")
        async with store.open("host:1234"):
            snapshot = await store.claim("s1", "assistant", create=True)
    """

    def __init__(
        self,
        dsn: str,
        *,
        max_connections: int = 8,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = 30.0,
    ) -> None:
        _require_psycopg()
        import psycopg

        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self._dsn = dsn
        self._params: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(dsn)
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._owner = ""
        self._limiter: trio.CapacityLimiter | None = None
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] | None = None
        # The lock connection and what it holds; used by one thread at a time, under _lock_conn_lock.
        self._lock_conn_lock = threading.Lock()
        self._lock_conn: psycopg.Connection[Any] | None = None
        self._held: dict[str, int] = {}  # session id -> its lock key
        self._lost: set[str] = set()  # held once, not taken back after the lock connection broke
        # Session id -> the transactions that wrote it whose outcome we never heard (the connection broke
        # after COMMIT was sent): a retry finding the session one version on asks the server if they committed.
        self._uncertain: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return f"<PostgresStore {self.url} {'open' if self._pool is not None else 'closed'}>"

    @property
    def url(self) -> str:
        """``postgresql://user@host:port/dbname`` (never the password)."""
        params = self._params
        user = urllib.parse.quote(str(params.get("user", "")), safe="")
        host = str(params.get("host", ""))
        port = params.get("port")
        query = ""
        if host.startswith("/"):  # a unix socket directory
            query, host = "?host=" + urllib.parse.quote(host, safe="/"), ""
        netloc = f"{user}@{host}" if user else host
        if port:
            netloc += f":{port}"
        return f"postgresql://{netloc}/{urllib.parse.quote(str(params.get('dbname', '')), safe='')}{query}"

    def _statement_timeout_option(self) -> str:
        timeout = self._statement_timeout
        return "" if timeout is None else f"-c statement_timeout={int(timeout * 1000)}"

    def _connect_kwargs(self, options: str, application_name: str | None = None) -> dict[str, Any]:
        base = str(self._params.get("options", ""))
        return {
            "connect_timeout": max(1, math.ceil(self._connect_timeout)),
            "application_name": application_name or self._params.get("application_name", "trio-agents"),
            "autocommit": True,  # transactions are explicit: `with conn.transaction()`
            "options": f"{base} {options}".strip(),
            **KEEPALIVES,
        }

    @contextlib.asynccontextmanager
    async def open(self, owner: str) -> AsyncIterator[None]:
        """Connect, and create or migrate the schema; leaving the block releases every claim and disconnects.

        Args:
            owner: This process's name, written with each session it claims.

        Raises:
            StoreUnavailableError: The server cannot be reached (within ``connect_timeout``) or refused us.
            StoreCorruptError: The database has tables named like ours that are not a session store.
            StoreVersionError: A newer trio-agents wrote it.
        """
        if self._limiter is not None:
            raise StoreUnavailableError(f"{self!r} is already open")
        self._owner = owner
        limiter = trio.CapacityLimiter(self._max_connections)
        pool = await run_worker(self._open_sync, limiter=limiter, undo=self._close_opened)
        self._pool = pool
        self._limiter = limiter
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await settle(limiter)  # abandoned calls end first: they hold pooled connections
                await trio.to_thread.run_sync(self._close_sync)
            self._limiter = None

    def _open_sync(self, call: WorkerCall[psycopg_pool.ConnectionPool[Any]]) -> psycopg_pool.ConnectionPool[Any]:
        import psycopg_pool

        with self._lock_conn_lock:
            conn = self._reconnect()
            try:
                self._migrate(conn)
            except BaseException:
                self._lock_conn = None
                conn.close()
                raise
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            self._dsn,
            kwargs=self._connect_kwargs(self._statement_timeout_option()),
            # None kept idle at first: the lock connection proved the server is there.
            min_size=0,
            max_size=self._max_connections,
            open=False,
            timeout=self._connect_timeout,
            name=f"trio-agents {self.url}",
        )
        pool.open()
        return pool

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        import psycopg

        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS trio_agents_schema (version integer NOT NULL)")
                self._check_tables(conn, ["trio_agents_schema"])
                row = conn.execute("SELECT max(version) FROM trio_agents_schema").fetchone()
                version = 0 if row is None or row[0] is None else int(row[0])
                if version > SCHEMA_VERSION:
                    raise StoreVersionError(
                        f"{self.url} has session store schema {version}; this trio-agents knows up to {SCHEMA_VERSION}"
                    )
                for step in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[step]:
                        conn.execute(statement)
                if version == 0:
                    conn.execute("INSERT INTO trio_agents_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
                elif version < SCHEMA_VERSION:
                    conn.execute("UPDATE trio_agents_schema SET version = %s", (SCHEMA_VERSION,))
                self._check_tables(conn, list(COLUMNS))
        except (psycopg.errors.DuplicateTable, psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
            raise StoreCorruptError(f"{self.url} has tables named like ours that are not a session store") from exc
        except psycopg.Error as exc:
            raise _unavailable(exc, self.url) from exc

    def _check_tables(self, conn: psycopg.Connection[Any], tables: list[str]) -> None:
        """Raise :class:`StoreCorruptError` if a table is missing, or lacks a column we use.

        Each named as our statements name it (``to_regclass``: through the ``search_path``).
        """
        rows = conn.execute(
            "SELECT t.name, to_regclass(t.name) IS NOT NULL, a.attname FROM unnest(%s::text[]) AS t(name)"
            " LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(t.name) AND a.attnum > 0 AND NOT a.attisdropped",
            (tables,),
        ).fetchall()
        found: dict[str, set[str]] = {}
        for table, exists, column in rows:
            if exists:
                found.setdefault(table, set()).add(column)
        for table in tables:
            if table not in found:
                raise StoreCorruptError(f"{self.url} does not have the session store's table {table}")
            missing = COLUMNS[table] - found[table]
            if missing:
                raise StoreCorruptError(
                    f"{self.url} has a table {table} that is not the session store's: no {', '.join(sorted(missing))}"
                )

    def _close_opened(self, pool: psycopg_pool.ConnectionPool[Any]) -> None:
        pool.close()
        with self._lock_conn_lock:
            conn, self._lock_conn = self._lock_conn, None
            self._held.clear()
            self._lost.clear()
            self._uncertain.clear()
            if conn is not None:
                conn.close()  # the server drops every lock it held

    def _close_sync(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            self._close_opened(pool)

    # The lock connection (each method below is called in a worker thread holding _lock_conn_lock).

    def _reconnect(self) -> psycopg.Connection[Any]:
        import psycopg

        old, self._lock_conn = self._lock_conn, None
        if old is not None:
            old.close()
        try:
            options = f"{SERVER_KEEPALIVES} {self._statement_timeout_option()}"
            # Named for its owner before it takes a lock: a claim that loses names it (see _holder).
            name = _OWNER_TAG + self._owner
            # A name the server would mangle is not given: claims that lose read the sessions table's instead.
            fits = name.isascii() and name.isprintable() and len(name) < _NAMEDATALEN
            kwargs = self._connect_kwargs(options, name if fits else None)
            conn: psycopg.Connection[Any] = psycopg.connect(self._dsn, **kwargs)
        except psycopg.Error as exc:
            raise _unavailable(exc, self.url) from exc
        self._lock_conn = conn
        return conn

    def _lock_connection(self) -> psycopg.Connection[Any]:
        """The lock connection, alive: if it broke, a new one that has taken back every lock it could."""
        import psycopg

        conn = self._lock_conn
        if conn is not None and not conn.broken and not conn.closed:
            try:
                conn.execute("")  # a round trip: only I/O tells a dead connection
                return conn
            except psycopg.Error:
                pass
        conn = self._reconnect()
        try:
            for session_id, key in list(self._held.items()):
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                if not (row and row[0]):
                    # Another process took it while we were away: refuse its next checkpoint.
                    del self._held[session_id]
                    self._lost.add(session_id)
        except psycopg.Error as exc:
            raise _unavailable(exc, self.url) from exc
        return conn

    def _take(self, session_id: str, call: WorkerCall[Any]) -> None:
        """Take the session's advisory lock for this store, or raise :class:`SessionOwnedError`."""
        import psycopg

        key = _lock_key(session_id)
        with self._lock_conn_lock:
            if session_id in self._held:
                raise SessionOwnedError(session_id, self._owner)
            conn = self._lock_connection()
            try:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            except psycopg.Error as exc:
                raise _unavailable(exc, self.url) from exc
            if row and row[0]:
                self._held[session_id] = key
                self._lost.discard(session_id)
                return
            # Who holds it, for the message only: a read that a table lock can hold up, so the caller's cancel
            # interrupts it (as the statement timeout bounds it); failing, the error names no owner.
            call.set_interrupt(functools.partial(conn.cancel_safe, timeout=INTERRUPT_TIMEOUT))
            try:
                owner = _holder(conn, session_id)
            except psycopg.Error:
                owner = None
            finally:
                call.set_interrupt(None)
        raise SessionOwnedError(session_id, owner)

    def _let_go(self, session_id: str) -> None:
        import psycopg

        with self._lock_conn_lock:
            self._lost.discard(session_id)
            self._uncertain.pop(session_id, None)
            key = self._held.pop(session_id, None)
            conn = self._lock_conn
            if key is None or conn is None or conn.broken or conn.closed:
                return  # a broken lock connection's locks went with it
            # A failure means the connection broke: the server drops its locks, and the next call reconnects.
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def _with_connection(self, call: WorkerCall[Any], fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """``fn(conn)`` on a pooled connection known to be alive; a cancelled caller interrupts its statement."""
        import psycopg
        import psycopg_pool

        pool = self._pool
        if pool is None:
            raise StoreUnavailableError(f"{self!r} is not open")
        try:
            # Idle connections die with a server restart: try each one once, then a new one.
            for _ in range(self._max_connections + 1):
                with pool.connection(timeout=self._connect_timeout) as conn:
                    try:
                        conn.execute("")
                    except psycopg.OperationalError:
                        conn.close()  # the pool drops a closed connection when it comes back
                        continue
                    call.set_interrupt(functools.partial(conn.cancel_safe, timeout=INTERRUPT_TIMEOUT))
                    try:
                        return fn(conn)
                    finally:
                        call.set_interrupt(None)
            raise StoreUnavailableError(f"{self.url}: no working connection")
        except psycopg_pool.PoolTimeout as exc:
            raise StoreUnavailableError(f"{self.url}: no connection within {self._connect_timeout} s") from exc
        except psycopg.Error as exc:
            raise _unavailable(exc, self.url) from exc

    def _connection(self) -> trio.CapacityLimiter:
        if self._limiter is None:
            raise StoreUnavailableError(f"{self!r} is not open (use `async with store.open(owner):`)")
        return self._limiter

    async def claim(self, session_id: str, agent: str, *, create: bool, fresh: bool = False) -> SessionSnapshot | None:
        """Take the session for this process and load it; with ``create``, make it if it does not exist.

        Args:
            session_id: The session.
            agent: The agent's name, stored when the session is made.
            create: Make the session if it does not exist.
            fresh: With ``create``: the id was just made, so only take it (its lock, nothing read); the
                first checkpoint, with :attr:`Checkpoint.create`, makes it.

        Returns:
            The session; ``None`` if it does not exist and ``create`` is false (nothing is claimed then).

        Raises:
            SessionOwnedError: Another process, or another claim through this store, holds it.
            StoreUnavailableError: The server cannot be reached.
            StoreCorruptError: Its history rows are not numbered 0, 1, 2, ... (nothing is left claimed).
        """

        def load(conn: psycopg.Connection[Any]) -> SessionSnapshot | None:
            with conn.transaction():
                row = conn.execute(
                    "SELECT agent, version, usage FROM trio_agents_sessions WHERE id = %s", (session_id,)
                ).fetchone()
                created = row is None
                if row is None:
                    if not create:
                        return None
                    conn.execute(
                        "INSERT INTO trio_agents_sessions (id, agent, owner) VALUES (%s, %s, %s)",
                        (session_id, storable(agent), storable(self._owner)),
                    )
                    row = (agent, 0, None)
                else:
                    conn.execute(
                        "UPDATE trio_agents_sessions SET owner = %s WHERE id = %s", (storable(self._owner), session_id)
                    )
                messages = history_of(
                    session_id,
                    conn.execute(
                        "SELECT seq, message FROM trio_agents_messages WHERE session_id = %s ORDER BY seq",
                        (session_id,),
                    ).fetchall(),
                )
                runs = conn.execute(
                    "SELECT run_id, seq, input, status, reason, resumes FROM trio_agents_runs"
                    " WHERE session_id = %s ORDER BY seq",
                    (session_id,),
                ).fetchall()
                pending = conn.execute(
                    "SELECT elicitation_id, run_id, call_id, request FROM trio_agents_pending"
                    " WHERE session_id = %s ORDER BY pos",
                    (session_id,),
                ).fetchall()
            return SessionSnapshot(
                session_id=session_id,
                agent=row[0],
                version=int(row[1]),
                messages=messages,
                runs=tuple(
                    RunRow(run_id=r[0], seq=r[1], input=r[2], status=r[3], reason=r[4], resumes=r[5]) for r in runs
                ),
                pending=tuple(PendingRow(*p) for p in pending),
                usage=row[2],
                created=created,
            )

        def claim(call: WorkerCall[Any]) -> SessionSnapshot | None:
            self._take(session_id, call)
            if fresh and create:
                return SessionSnapshot(session_id, agent, 0, (), (), (), None, created=True)
            try:
                snapshot: SessionSnapshot | None = self._with_connection(call, load)
            except BaseException:
                self._let_go(session_id)
                raise
            if snapshot is None:
                self._let_go(session_id)
            return snapshot

        def undo(snapshot: SessionSnapshot | None) -> None:
            if snapshot is not None:
                self._let_go(session_id)

        result: SessionSnapshot | None = await run_worker(claim, limiter=self._connection(), undo=undo)
        return result

    async def release(self, session_id: str) -> None:
        """Let the session go (idempotent; never raises, even for a server that went away)."""
        limiter = self._limiter
        if limiter is None:
            await trio.lowlevel.checkpoint()
            return  # closing the store released it

        def release(call: WorkerCall[None]) -> None:
            self._let_go(session_id)

        await run_worker(release, limiter=limiter)

    async def commit(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Write the checkpoints in one transaction: all of them, or (raising) none.

        Raises:
            SessionConflictError: A session is not held by this store (never claimed, released, or lost
                while the server was away), or not at the checkpoint's version, or one to be made
                (``create``) exists.
            StoreRejectedError: The server refused what a checkpoint holds (a value it cannot hold, an
                index row too large, a row a constraint refuses); nothing was written.
            StoreUnavailableError: The write failed (nothing was written, or its reply was lost: a retry of
                the same checkpoints, with more, is written over it).
        """
        import psycopg

        checkpoints = list(checkpoints)

        def write(
            call: WorkerCall[None],
            pid: int,
            keys: dict[str, int],
            uncertain: dict[str, list[int]],
            conn: psycopg.Connection[Any],
        ) -> None:
            with conn.transaction():
                # The lock connection may have died since we looked: the locks must still be its.
                row = conn.execute(
                    "SELECT txid_current(), ARRAY(SELECT ARRAY[classid::bigint, objid::bigint] FROM pg_locks"
                    " WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND pid = %s)",
                    (pid,),
                ).fetchone()
                assert row is not None
                xid, locked = int(row[0]), {(classid << 32) | objid for classid, objid in row[1]}
                for cp in checkpoints:
                    if keys[cp.session_id] & _MASK64 not in locked:
                        raise SessionConflictError(cp.session_id, f"session {cp.session_id!r} lost its lock")
                for cp in checkpoints:
                    try:
                        _write(conn, cp, storable(self._owner), uncertain[cp.session_id])
                    except (
                        psycopg.DataError,
                        psycopg.IntegrityError,
                        psycopg.errors.ProgramLimitExceeded,
                        UnicodeEncodeError,
                    ) as exc:
                        # What this checkpoint holds is refused, and would be again: its session's failure only.
                        raise StoreRejectedError(
                            cp.session_id, f"{self.url} refused session {cp.session_id!r}'s changes: {exc}"
                        ) from exc
                if call.abandoned:
                    raise psycopg.Rollback  # the caller gave up on this write: don't make it behind its back
                with self._lock_conn_lock:  # until we hear it committed, it may have
                    for cp in checkpoints:
                        self._uncertain.setdefault(cp.session_id, []).append(xid)

        def commit(call: WorkerCall[None]) -> None:
            with self._lock_conn_lock:
                pid = self._lock_connection().info.backend_pid
                keys: dict[str, int] = {}
                uncertain = {cp.session_id: list(self._uncertain.get(cp.session_id, ())) for cp in checkpoints}
                for cp in checkpoints:
                    sid = cp.session_id
                    if sid in self._lost:
                        raise SessionConflictError(
                            sid, f"session {sid!r} was lost while the database was away; another process took it"
                        )
                    if sid not in self._held:
                        raise SessionConflictError(sid, f"session {sid!r} is not claimed by this store")
                    keys[sid] = self._held[sid]
            self._with_connection(call, functools.partial(write, call, pid, keys, uncertain))
            with self._lock_conn_lock:
                for cp in checkpoints:
                    self._uncertain.pop(cp.session_id, None)

        await run_worker(commit, limiter=self._connection())

    async def events(self, session_id: str, run_id: str) -> list[str]:
        """A run's event log, JSON, in order (empty for an unknown run).

        Raises:
            StoreUnavailableError: The server cannot be reached.
        """

        def read(conn: psycopg.Connection[Any]) -> list[str]:
            rows = conn.execute(
                "SELECT event FROM trio_agents_events WHERE session_id = %s AND run_id = %s ORDER BY seq",
                (session_id, run_id),
            ).fetchall()
            return [event for (event,) in rows]

        def events(call: WorkerCall[list[str]]) -> list[str]:
            result: list[str] = self._with_connection(call, read)
            return result

        return await run_worker(events, limiter=self._connection())

    async def delete(self, session_id: str) -> None:
        """Forget a session with everything it stored, and release it.

        A session not held here is taken for the deletion first.

        Raises:
            SessionOwnedError: Another process holds it.
            StoreUnavailableError: The server cannot be reached.
        """

        def remove(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                conn.execute("DELETE FROM trio_agents_sessions WHERE id = %s", (session_id,))

        def delete(call: WorkerCall[None]) -> None:
            with self._lock_conn_lock:
                held = session_id in self._held
            if not held:
                self._take(session_id, call)
            try:
                self._with_connection(call, remove)
            finally:
                self._let_go(session_id)

        await run_worker(delete, limiter=self._connection())


def _holder(conn: psycopg.Connection[Any], session_id: str) -> str | None:
    """Who holds the session's lock: the owner its lock connection is named for, else the sessions table's.

    The table's owner is written only once the holder loads the session, so right after another process took
    the lock it still names the one before (perhaps long dead); the lock connection is named before any lock.
    """
    key = _lock_key(session_id) & _MASK64
    row = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid::bigint = %s AND l.objid::bigint = %s",
        (key >> 32, key & 0xFFFFFFFF),
    ).fetchone()
    if row is not None and row[0] and row[0].startswith(_OWNER_TAG):
        return str(row[0][len(_OWNER_TAG) :])
    # Not found (let go meanwhile), or held by a lock connection not named for its owner (too long a name).
    owner_row = conn.execute("SELECT owner FROM trio_agents_sessions WHERE id = %s", (session_id,)).fetchone()
    return None if owner_row is None else owner_row[0]


def _committed_before(conn: psycopg.Connection[Any], cp: Checkpoint, uncertain: Sequence[int]) -> bool:
    """Whether the session is one version past the checkpoint's by a write of ours whose reply was lost.

    A retry (what that write held, and what came since) then writes over it, at the same version.
    """
    if not uncertain:
        return False
    row = conn.execute(
        "SELECT version, EXISTS (SELECT FROM unnest(%s::bigint[]) AS x WHERE txid_status(x) = 'committed')"
        " FROM trio_agents_sessions WHERE id = %s FOR UPDATE",
        (list(uncertain), cp.session_id),
    ).fetchone()
    return row is not None and int(row[0]) == cp.version + 1 and bool(row[1])


def _write(conn: psycopg.Connection[Any], cp: Checkpoint, owner: str, uncertain: Sequence[int] = ()) -> None:
    sid = cp.session_id
    again = False  # writing over our own earlier write of (part of) this checkpoint
    if cp.create is not None:  # made by this checkpoint, at the version its update would give it
        made = conn.execute(
            "INSERT INTO trio_agents_sessions (id, agent, owner, version, usage) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (sid, storable(cp.create), owner, cp.version + 1, cp.usage),
        ).rowcount
        if made != 1:
            again = _committed_before(conn, cp, uncertain)
            if not again:
                raise SessionConflictError(sid, f"session {sid!r} was to be made by this checkpoint, but it exists")
    else:
        updated = conn.execute(
            "UPDATE trio_agents_sessions SET version = version + 1, usage = COALESCE(%s, usage)"
            " WHERE id = %s AND version = %s",
            (cp.usage, sid, cp.version),
        ).rowcount
        if updated != 1:
            again = _committed_before(conn, cp, uncertain)
            if not again:
                raise SessionConflictError(
                    sid, f"session {sid!r} is no longer at version {cp.version}: another writer won"
                )
    if again:
        conn.execute("UPDATE trio_agents_sessions SET usage = COALESCE(%s, usage) WHERE id = %s", (cp.usage, sid))
    if cp.cut or again:
        conn.execute("DELETE FROM trio_agents_messages WHERE session_id = %s AND seq >= %s", (sid, cp.message_base))
    with conn.cursor() as cursor:
        if cp.messages:
            cursor.executemany(
                "INSERT INTO trio_agents_messages (session_id, seq, message) VALUES (%s, %s, %s)",
                [(sid, cp.message_base + i, message) for i, message in enumerate(cp.messages)],
            )
        if cp.runs:
            cursor.executemany(
                "INSERT INTO trio_agents_runs (session_id, run_id, seq, input, status, reason, resumes)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (session_id, run_id) DO UPDATE SET"
                " seq = excluded.seq, input = excluded.input, status = excluded.status,"
                " reason = excluded.reason, resumes = excluded.resumes",
                [(sid, r.run_id, r.seq, r.input, r.status, r.reason, r.resumes) for r in cp.runs],
            )
        if cp.events:
            cursor.executemany(
                "INSERT INTO trio_agents_events (session_id, run_id, seq, event) VALUES (%s, %s, %s, %s)"
                + (" ON CONFLICT DO NOTHING" if again else ""),
                [(sid, e.run_id, e.seq, e.event) for e in cp.events],
            )
        if cp.pending_added:
            cursor.executemany(
                "INSERT INTO trio_agents_pending (session_id, elicitation_id, run_id, call_id, request)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (session_id, elicitation_id) DO UPDATE SET"
                " run_id = excluded.run_id, call_id = excluded.call_id, request = excluded.request",
                [(sid, p.elicitation_id, p.run_id, p.call_id, p.request) for p in cp.pending_added],
            )
        if cp.pending_removed:
            cursor.executemany(
                "DELETE FROM trio_agents_pending WHERE session_id = %s AND elicitation_id = %s",
                [(sid, elicitation_id) for elicitation_id in cp.pending_removed],
            )


def _unavailable(exc: Exception, url: str) -> StoreError:
    return StoreUnavailableError(f"{url}: {exc}".strip())
