"""PostgresStore beyond the shared contract: an unreachable or restarted server, interrupted statements, urls."""

from __future__ import annotations

import functools
import random
import socket
import string
import sys
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from runtime import (
    Checkpoint,
    PendingRow,
    PostgresStore,
    RunRow,
    SessionConflictError,
    SessionOwnedError,
    StoreCorruptError,
    StoreRejectedError,
    StoreUnavailableError,
)
from runtime._worker import settle

if TYPE_CHECKING:
    from tests.runtime.store.conftest import Backend

OWNER = "test-host:1"
LONG_OWNER = "http://" + "a-host-name-longer-than-postgres-keeps-for-an-application-name" + ":8000"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port  # nobody listens once it is closed


async def test_postgres_unreachable_is_unavailable_at_open_quickly() -> None:
    """A server that cannot be reached raises StoreUnavailableError at open, without waiting out a timeout."""
    store = PostgresStore(f"host=127.0.0.1 port={_closed_port()} user=nobody dbname=nothing")
    with trio.fail_after(3), pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1"):
        async with store.open(OWNER):
            pytest.fail("opened")


async def test_postgres_foreign_tables_are_corrupt(pg_backend: Backend) -> None:
    """A database that has a table of our name that is not ours raises StoreCorruptError at open."""
    import psycopg

    with psycopg.connect(pg_backend.target, autocommit=True) as conn:
        conn.execute("CREATE TABLE trio_agents_sessions (name text)")
    with pytest.raises(StoreCorruptError):
        async with pg_backend.store().open(OWNER):
            pytest.fail("opened")


@pytest.mark.parametrize(
    "change",
    [
        "DROP TABLE trio_agents_events",
        "DROP TABLE trio_agents_pending",
        "ALTER TABLE trio_agents_runs DROP COLUMN resumes",
        "DROP TABLE trio_agents_schema; CREATE TABLE trio_agents_schema (name text)",
    ],
    ids=["no-events", "no-pending", "runs-without-resumes", "foreign-schema-table"],
)
async def test_postgres_a_store_missing_a_table_or_column_is_corrupt_at_open(pg_backend: Backend, change: str) -> None:
    """A session store whose tables are not all there with the columns we use raises StoreCorruptError at
    open, as SQLite's does (it opened, then every commit failed and was retried until the runtime closed; a
    schema table of someone else's was a StoreUnavailableError)."""
    import psycopg

    async with pg_backend.store().open(OWNER):
        pass
    with psycopg.connect(pg_backend.target, autocommit=True) as conn:
        conn.execute(change)
    with pytest.raises(StoreCorruptError, match="session store"):
        async with pg_backend.store().open(OWNER):
            pytest.fail("opened")


@pytest.mark.parametrize("refused", ["nul-in-a-call-id", "index-row-too-large"])
async def test_postgres_checkpoint_the_server_cannot_hold_is_rejected_naming_its_session(
    pg_backend: Backend, refused: str
) -> None:
    """NUL in a plain text column (psycopg's DataError) and a key past the index's 2,704 bytes
    (ProgramLimitExceeded) raise StoreRejectedError naming the session, not StoreUnavailableError (which the
    runtime's writer retried, with every other session's checkpoint, until it closed and lost them)."""
    long_id = "".join(random.Random(0).choices(string.ascii_letters, k=3000))  # random: no compression
    bad = {
        "nul-in-a-call-id": Checkpoint("b", 0, 0, pending_added=[PendingRow("e1", "r1", "c\x00", "{}")]),
        "index-row-too-large": Checkpoint("b", 0, 0, runs=[RunRow(long_id, 1, '"hi"', "running")]),
    }[refused]
    store = pg_backend.store()
    async with store.open(OWNER):
        await store.claim("a", "agent", create=True)
        await store.claim("b", "agent", create=True)
        with pytest.raises(StoreRejectedError) as caught:
            await store.commit([Checkpoint("a", 0, 0, messages=["a0"]), bad])
        assert caught.value.session_id == "b"
        await store.commit([Checkpoint("a", 0, 0, messages=["a0"])])


async def test_postgres_server_restart_unavailable_then_locks_taken_back(pg_backend: Backend) -> None:
    """While the server is down a commit raises StoreUnavailableError; once it is back, the store takes its
    locks again (another process cannot claim) and commits."""
    cluster = pg_backend.cluster
    assert cluster is not None
    store = pg_backend.store()
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True)
        await store.commit([Checkpoint("s1", 0, 0, messages=["a"])])
        await trio.to_thread.run_sync(functools.partial(cluster.stop, "immediate"))
        try:
            with trio.fail_after(10), pytest.raises(StoreUnavailableError):
                await store.commit([Checkpoint("s1", 1, 1, messages=["b"])])
        finally:
            await trio.to_thread.run_sync(cluster.start)
        await store.commit([Checkpoint("s1", 1, 1, messages=["b"])])
        async with pg_backend.child("s1", "child") as child:
            assert child.line == f"owned {OWNER}"
        await store.release("s1")
        snapshot = await store.claim("s1", "agent", create=False)
        assert snapshot is not None
        assert (snapshot.version, snapshot.messages) == (2, ("a", "b"))


async def test_postgres_session_taken_while_server_was_away_is_lost(pg_backend: Backend) -> None:
    """A session another process claimed after a server restart is lost here: its next commit raises
    SessionConflictError and writes nothing."""
    cluster = pg_backend.cluster
    assert cluster is not None
    store = pg_backend.store()
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True)
        await store.claim("s2", "agent", create=True)
        await trio.to_thread.run_sync(cluster.restart_after_crash)
        async with pg_backend.child("s1", "thief") as child:
            assert child.line == "claimed"
            with pytest.raises(SessionConflictError) as caught:
                await store.commit([Checkpoint("s2", 0, 0, messages=["ok"]), Checkpoint("s1", 0, 0, messages=["x"])])
            assert caught.value.session_id == "s1"
            with pytest.raises(SessionConflictError):
                await store.commit([Checkpoint("s1", 0, 0, messages=["x"])])
            await store.commit([Checkpoint("s2", 0, 0, messages=["ok"])])  # s2 was taken back
            await child.kill()
        await pg_backend.wait_released("s1")
        await store.release("s1")  # a lost session releases quietly
        snapshot = await store.claim("s1", "agent", create=False)
        assert snapshot is not None
        assert (snapshot.version, snapshot.messages) == (0, ())


async def test_postgres_cancelled_commit_interrupts_its_statement(pg_backend: Backend) -> None:
    """A commit cancelled while its statement waits on a lock has the server cancel it: the thread ends
    at once (not when the lock is let go) and nothing is written."""
    store = PostgresStore(pg_backend.target)
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True)
        limiter = store._limiter
        assert limiter is not None
        with pg_backend.writes_held():
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(store.commit, [Checkpoint("s1", 0, 0, messages=["never"])])
                    # The commit's thread is blocked on the table lock once the server says so.
                    await trio.to_thread.run_sync(_wait_for_lock_wait, pg_backend.target)
                    scope.cancel()
            with trio.fail_after(10):
                await settle(limiter)  # the writes are still held: only the interrupt can have ended it
        await store.release("s1")
        snapshot = await store.claim("s1", "agent", create=False)
        assert snapshot is not None
        assert (snapshot.version, snapshot.messages) == (0, ())


def _wait_for_lock_wait(dsn: str) -> None:
    """Block until some backend of this database waits on a lock (LISTEN-free: a server-side wait loop)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """DO $$
            BEGIN
                WHILE NOT EXISTS (
                    SELECT 1 FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock'
                ) LOOP
                    PERFORM pg_sleep(0.01);
                END LOOP;
            END $$"""
        )


def test_postgres_url_hides_the_password() -> None:
    """url names user, host, port and database, never the password."""
    assert (
        PostgresStore("postgresql://app:s3cret@db.example:6543/agents").url == "postgresql://app@db.example:6543/agents"
    )
    assert "s3cret" not in PostgresStore("host=h user=u password=s3cret dbname=d").url
    assert PostgresStore("host=/run/pg dbname=d").url == "postgresql:///d?host=/run/pg"


def test_postgres_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg installed, making a PostgresStore raises ImportError naming the postgres extra."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ImportError, match=r"trio-agents\[postgres\]"):
        PostgresStore("dbname=x")


async def test_postgres_second_store_in_process_is_owned(pg_backend: Backend) -> None:
    """Two stores in one process have a lock connection each: one's claim is owned for the other, by name."""
    first, second = pg_backend.store(), pg_backend.store()
    async with first.open("first"), second.open("second"):
        await first.claim("s1", "agent", create=True)
        with pytest.raises(SessionOwnedError) as caught:
            await second.claim("s1", "agent", create=False)
        assert caught.value.owner == "first"


async def test_postgres_cancelled_claim_of_a_session_held_elsewhere_interrupts_its_owner_lookup(
    pg_backend: Backend,
) -> None:
    """A claim of a session another store holds looks up who holds it, for a holder whose lock connection
    cannot carry its name (too long) a read that a table lock holds up: cancelled, it has the server cancel
    that read (its thread ends, the store closes at once)."""
    import psycopg

    holder, claimer = PostgresStore(pg_backend.target), PostgresStore(pg_backend.target)
    async with holder.open(LONG_OWNER):
        await holder.claim("s1", "agent", create=True)
        async with claimer.open("other-host:2"):
            limiter = claimer._limiter
            assert limiter is not None
            with psycopg.connect(pg_backend.target) as locker:
                locker.execute("LOCK TABLE trio_agents_sessions")  # ACCESS EXCLUSIVE: reads wait too
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(functools.partial(claimer.claim, "s1", "agent", create=False))
                        await trio.to_thread.run_sync(_wait_for_lock_wait, pg_backend.target)
                        scope.cancel()
                with trio.fail_after(10):
                    await settle(limiter)  # the lock is still held: only the interrupt can have ended it
                locker.rollback()
            with pytest.raises(SessionOwnedError) as owned:
                await claimer.claim("s1", "agent", create=False)
            assert owned.value.owner == LONG_OWNER


async def test_postgres_owned_names_the_lock_holder_not_the_last_owner_written(pg_backend: Backend) -> None:
    """A claim that loses to a process that has just taken the lock (and not yet written its name to the
    session's row) names that process, not the one the row still names (which may be long dead)."""
    import psycopg

    from runtime._postgres import _lock_key

    dead = pg_backend.store()
    async with dead.open("http://dead:1"):
        await dead.claim("s1", "agent", create=True)
    # The winner, stopped between taking the lock and loading the session (which writes its name).
    with psycopg.connect(pg_backend.target, autocommit=True, application_name="trio-agents@http://winner:2") as conn:
        for session_id in ("s1", "s2"):
            conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(session_id),))
        loser = pg_backend.store()
        async with loser.open("http://loser:3"):
            with pytest.raises(SessionOwnedError) as owned:
                await loser.claim("s1", "agent", create=False)
            assert owned.value.owner == "http://winner:2"
            with pytest.raises(SessionOwnedError) as owned:  # one that has no row yet
                await loser.claim("s2", "agent", create=True)
            assert owned.value.owner == "http://winner:2"


async def test_postgres_owned_names_a_store_that_has_not_loaded_its_claim_yet(pg_backend: Backend) -> None:
    """The same with a real store as the winner, held between taking the lock and loading the session."""
    import threading

    dead = pg_backend.store()
    async with dead.open("http://dead:1"):
        await dead.claim("s1", "agent", create=True)
    winner, loser = PostgresStore(pg_backend.target), PostgresStore(pg_backend.target)
    locked, go_on = threading.Event(), threading.Event()
    load = winner._with_connection

    def held_load(*args: Any) -> Any:
        locked.set()
        go_on.wait(10)
        return load(*args)

    winner._with_connection = held_load  # type: ignore[method-assign,assignment]
    async with winner.open("http://winner:2"), loser.open("http://loser:3"), trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(winner.claim, "s1", "agent", create=False))
        await trio.to_thread.run_sync(locked.wait, 10)
        try:
            with pytest.raises(SessionOwnedError) as owned:
                await loser.claim("s1", "agent", create=False)
        finally:
            go_on.set()
        assert owned.value.owner == "http://winner:2"


async def test_postgres_commit_whose_reply_is_lost_is_not_a_conflict_on_retry(pg_backend: Backend) -> None:
    """A commit the server made but whose reply the connection lost raises StoreUnavailableError; the retry
    (what it held and what came since, at the same version) is written over it, not refused as if another
    writer had won, and the session goes on at the right version with the right rows."""
    import psycopg

    from runtime import EventRow, RunRow

    store = PostgresStore(pg_backend.target)
    real = store._with_connection
    lose_reply = True

    def with_connection(call: Any, fn: Any) -> Any:
        def committed_then_dropped(conn: psycopg.Connection[Any]) -> Any:
            result = fn(conn)
            if lose_reply:
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return result

        return real(call, committed_then_dropped)

    def rolled_back_then_dropped(call: Any, fn: Any) -> Any:
        def dropped(conn: psycopg.Connection[Any]) -> Any:
            with conn.transaction():  # the write's own is a savepoint in it: all of it is rolled back
                fn(conn)
                raise psycopg.OperationalError("server closed the connection unexpectedly")

        return real(call, dropped)

    store._with_connection = with_connection  # type: ignore[method-assign]
    run = RunRow("s1-1", 1, '"hi"', "running")
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True, fresh=True)
        first = Checkpoint("s1", 0, 0, ["a"], [run], [EventRow("s1-1", 0, "e0")], usage="u1", create="agent")
        with pytest.raises(StoreUnavailableError):
            await store.commit([first])
        with pytest.raises(StoreUnavailableError):  # lost again: the retry's outcome is unknown too
            await store.commit([first])
        lose_reply = False
        finished = RunRow("s1-1", 1, '"hi"', "finished", "done")
        events = [EventRow("s1-1", 0, "e0"), EventRow("s1-1", 1, "e1")]
        await store.commit([Checkpoint("s1", 0, 0, ["a", "b"], [finished], events, usage="u2", create="agent")])
        await store.commit([Checkpoint("s1", 1, 2, ["c"], cut=False)])
        with pytest.raises(StoreUnavailableError):
            lose_reply = True
            await store.commit([Checkpoint("s1", 2, 3, ["d"], cut=False)])
        lose_reply = False
        await store.commit([Checkpoint("s1", 2, 3, ["d", "e"], cut=False, usage="u3")])
        with pytest.raises(SessionConflictError):  # an old version is still refused
            await store.commit([Checkpoint("s1", 1, 2, ["x"])])
        # A write that did not commit, then another writer (not through this store) moved the session on:
        # the retry is the conflict it is.
        store._with_connection = rolled_back_then_dropped  # type: ignore[method-assign]
        with pytest.raises(StoreUnavailableError):
            await store.commit([Checkpoint("s1", 3, 5, ["f"], cut=False)])
        store._with_connection = real  # type: ignore[method-assign]
        with psycopg.connect(pg_backend.target, autocommit=True) as conn:
            conn.execute("UPDATE trio_agents_sessions SET version = 4 WHERE id = 's1'")
        with pytest.raises(SessionConflictError):
            await store.commit([Checkpoint("s1", 3, 5, ["f"], cut=False)])
        with psycopg.connect(pg_backend.target, autocommit=True) as conn:
            conn.execute("UPDATE trio_agents_sessions SET version = 3 WHERE id = 's1'")
        await store.release("s1")
        snapshot = await store.claim("s1", "agent", create=False)
        assert snapshot is not None
        assert (snapshot.version, snapshot.messages, snapshot.runs, snapshot.usage) == (
            3,
            ("a", "b", "c", "d", "e"),
            (finished,),
            "u3",
        )
        assert await store.events("s1", "s1-1") == ["e0", "e1"]
