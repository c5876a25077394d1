"""Fixtures for the session store tests: ``backend``, each test once with SQLite and once with PostgreSQL.

A :class:`Backend` makes stores on one fresh database (a file in ``tmp_path``, or a database of
its own in the session's PostgreSQL cluster) and reaches it from outside the store under test:
another process claiming a session, a transaction holding its writes, a schema stamp.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import pytest
import trio

from runtime import PostgresStore, SessionStore, SQLiteStore
from runtime._postgres import _lock_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from tests.pg import PostgresCluster

CLAIMER: Final = Path(__file__).with_name("claimer.py")
ROOT: Final = Path(__file__).resolve().parents[3]
CHILD_TIMEOUT: Final = 30.0
"""Seconds a child process may take to start, open its store and claim (real clock: it is a process)."""


@attrs.define(eq=False)
class Child:
    """Another process that tried to claim a session (and holds it, if it got it)."""

    process: trio.Process
    line: str
    """What it said: ``claimed``, or ``owned OWNER``."""

    async def kill(self) -> None:
        """Kill it (SIGKILL: no clean exit, as if it crashed) and wait until it is gone."""
        self.process.kill()
        await self.process.wait()


@attrs.define(eq=False)
class Backend:
    """One database of one kind, and ways to reach it from outside the store under test."""

    kind: str
    """``sqlite`` or ``postgres``."""
    target: str
    """The file, or the connection string."""
    cluster: PostgresCluster | None = None

    def store(self) -> SessionStore:
        """A new store on this database."""
        return SQLiteStore(self.target) if self.kind == "sqlite" else PostgresStore(self.target)

    @contextlib.asynccontextmanager
    async def child(self, session_id: str, owner: str) -> AsyncIterator[Child]:
        """A process that opens a store on this database as ``owner`` and claims ``session_id``; killed on exit."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error"}
        argv = [sys.executable, str(CLAIMER), self.kind, self.target, owner, session_id]
        process = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:
            assert process.stdout is not None
            with trio.fail_after(CHILD_TIMEOUT):
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await process.stdout.receive_some()
                    assert chunk, f"the child exited before it said anything (status {await process.wait()})"
                    line += chunk
            yield Child(process, line.decode().strip())
        finally:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
                for pipe in (process.stdin, process.stdout):
                    if pipe is not None:
                        await pipe.aclose()

    async def wait_released(self, session_id: str) -> None:
        """Wait until nobody holds the session's lock any more (PostgreSQL drops a dead client's in its own time).

        A kernel lock (SQLite) is gone by the time a killed process is reaped: nothing to wait for.
        """
        if self.kind == "postgres":
            await trio.to_thread.run_sync(self._wait_released_sync, session_id)
        else:
            await trio.lowlevel.checkpoint()

    def _wait_released_sync(self, session_id: str) -> None:
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '20s'")  # blocks until the server has dropped it: no polling
            conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(session_id),))
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(session_id),))

    @contextlib.contextmanager
    def writes_held(self) -> Iterator[None]:
        """Hold a transaction that blocks every write to the sessions table until the block ends."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.target, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield
                conn.execute("ROLLBACK")
            finally:
                conn.close()
            return
        import psycopg

        with psycopg.connect(self.target) as pg:
            pg.execute("LOCK TABLE trio_agents_sessions IN EXCLUSIVE MODE")
            yield
            pg.rollback()

    def delete_message(self, session_id: str, seq: int) -> None:
        """Delete one stored history message from outside the store (a hole no store writes)."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.target)) as conn, conn:
                conn.execute("DELETE FROM messages WHERE session_id = ? AND seq = ?", (session_id, seq))
            return
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as pg:
            pg.execute("DELETE FROM trio_agents_messages WHERE session_id = %s AND seq = %s", (session_id, seq))

    def stamp_version(self, version: int) -> None:
        """Mark the (already created) schema as written by schema ``version``."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.target)) as conn:
                conn.execute(f"PRAGMA user_version = {version}")
            return
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as pg:
            pg.execute("UPDATE trio_agents_schema SET version = %s", (version,))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh database: an SQLite file, or a PostgreSQL database of the session's cluster."""
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "sessions.db"))
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return Backend("postgres", cluster.create_database(), cluster)


@pytest.fixture
def pg_backend(postgres_cluster: PostgresCluster) -> Backend:
    """A fresh database of the session's PostgreSQL cluster (for the PostgreSQL-only tests)."""
    return Backend("postgres", postgres_cluster.create_database(), postgres_cluster)


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Backend:
    """A fresh SQLite file (for the SQLite-only tests)."""
    return Backend("sqlite", str(tmp_path / "sessions.db"))
