"""SQLiteStore beyond the shared contract: files that are not session stores, paths that cannot be opened."""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import TYPE_CHECKING

import pytest

from runtime import (
    Checkpoint,
    EventRow,
    SessionOwnedError,
    SQLiteStore,
    StoreCorruptError,
    StoreUnavailableError,
)
from runtime._sqlite import CHECKPOINT_PAGES, PAGE_SIZE

if TYPE_CHECKING:
    from pathlib import Path

    from tests.runtime.store.conftest import Backend

OWNER = "test-host:1"


async def _fill(path: Path) -> None:
    store = SQLiteStore(path)
    async with store.open(OWNER):
        for i in range(20):
            await store.claim(f"s{i}", "agent", create=True)
            events = [EventRow("r1", seq, "x" * 500) for seq in range(20)]
            await store.commit([Checkpoint(f"s{i}", 0, 0, messages=["m" * 500] * 20, events=events)])


async def test_sqlite_garbage_file_is_corrupt(tmp_path: Path) -> None:
    """A file that is not an SQLite database raises StoreCorruptError at open."""
    path = tmp_path / "sessions.db"
    path.write_bytes(b"this is not a database, just some text " * 200)
    with pytest.raises(StoreCorruptError):
        async with SQLiteStore(path).open(OWNER):
            pytest.fail("opened")


@pytest.mark.parametrize("keep", [100, 4096, 2 * 4096, 0.5, 0.9, 0.99])
async def test_sqlite_truncated_file_is_corrupt(tmp_path: Path, keep: float) -> None:
    """A session store cut short (a bad copy, a full disk) raises StoreCorruptError at open, not later."""
    path = tmp_path / "sessions.db"
    await _fill(path)
    size = path.stat().st_size
    assert size > 10 * 4096
    os.truncate(path, int(size * keep) if keep < 1 else int(keep))
    with pytest.raises(StoreCorruptError):
        async with SQLiteStore(path).open(OWNER):
            pytest.fail("opened")


async def test_sqlite_foreign_tables_are_corrupt(tmp_path: Path) -> None:
    """An SQLite database of someone else's (its own tables, no schema version) raises StoreCorruptError."""
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    with pytest.raises(StoreCorruptError, match="not a session store"):
        async with SQLiteStore(path).open(OWNER):
            pytest.fail("opened")


async def test_sqlite_extra_table_in_a_session_store_is_corrupt(tmp_path: Path) -> None:
    """A session store with a table that is not ours raises StoreCorruptError."""
    path = tmp_path / "sessions.db"
    async with SQLiteStore(path).open(OWNER):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE extra (x)")
    conn.close()
    with pytest.raises(StoreCorruptError, match="extra"):
        async with SQLiteStore(path).open(OWNER):
            pytest.fail("opened")


async def test_sqlite_a_damaged_page_met_after_the_open_is_corrupt(tmp_path: Path) -> None:
    """A page of the file that cannot be read (a disk fault, a bad copy) is met by a claim long after the open,
    which checks only the schema: StoreCorruptError, not StoreUnavailableError ("the session goes on once the
    store is back", which it never will be)."""
    path = tmp_path / "sessions.db"
    await _fill(path)
    with sqlite3.connect(path) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'messages'").fetchone()
    conn.close()
    with path.open("r+b") as file:
        file.seek((root - 1) * PAGE_SIZE)
        file.write(b"\xff" * PAGE_SIZE)
    store = SQLiteStore(path)
    async with store.open(OWNER):
        with pytest.raises(StoreCorruptError, match="is damaged"):
            await store.claim("s3", "agent", create=False)


async def test_sqlite_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    """A file in a missing directory, or a directory, raises StoreUnavailableError at open."""
    for path in (tmp_path / "missing" / "sessions.db", tmp_path):
        with pytest.raises(StoreUnavailableError):
            async with SQLiteStore(path).open(OWNER):
                pytest.fail("opened")


async def test_sqlite_empty_file_becomes_a_store_in_wal_mode(tmp_path: Path) -> None:
    """An empty file is made a session store, in WAL mode, with its sidecar lock file; its url names it."""
    path = tmp_path / "sessions.db"
    path.touch()
    store = SQLiteStore(path)
    assert store.url == f"sqlite:{path}"
    async with store.open(OWNER):
        assert await store.claim("s1", "agent", create=True) is not None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()
    assert (tmp_path / "sessions.db-sessions.lock").exists()


async def test_sqlite_closing_one_store_keeps_another_stores_locks(sqlite_backend: Backend) -> None:
    """Two stores of one file in one process share its lock file: closing one leaves the other's claims held
    (POSIX drops all of a process's locks on a file when any descriptor of it is closed)."""
    keeper = sqlite_backend.store()
    async with keeper.open("keeper"):
        await keeper.claim("s1", "agent", create=True)
        async with sqlite_backend.store().open("passer-by"):
            pass
        async with sqlite_backend.child("s1", "other") as child:
            assert child.line == "owned keeper"


async def test_sqlite_a_store_opened_through_a_symlink_locks_the_files_real_name(
    sqlite_backend: Backend, tmp_path: Path
) -> None:
    """The session locks are in the sidecar of the file SQLite opens (the symlink resolved): a session claimed
    through a link to the file is owned for a claim through its real name, in this process or another (each
    name had a lock file of its own, so both claimed it)."""
    link = tmp_path / "link.db"
    link.symlink_to(sqlite_backend.target)
    keeper = SQLiteStore(link)
    async with keeper.open("keeper"):
        await keeper.claim("s1", "agent", create=True)
        other = SQLiteStore(sqlite_backend.target)
        async with other.open("other"):
            with pytest.raises(SessionOwnedError):
                await other.claim("s1", "agent", create=True)
        async with sqlite_backend.child("s1", "other") as child:
            assert child.line == "owned keeper"
    assert not (tmp_path / "link.db-sessions.lock").exists()


def _size(path: str | Path) -> int:
    return os.stat(path).st_size


async def test_sqlite_commits_leave_checkpoints_to_the_checkpointer_thread(tmp_path: Path) -> None:
    """No commit copies the write-ahead log into the file (SQLite's automatic checkpoint would, inside the
    commit that crosses 1,000 pages): with the checkpointer's thread held, 2,000 pages are committed and
    the file stays as it was; let go, the checkpointer copies them in."""
    path = tmp_path / "sessions.db"
    store = SQLiteStore(path)
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True)
        checkpointer = store._checkpointer
        assert checkpointer is not None
        held = threading.Event()

        def hold() -> None:
            held.wait()

        checkpointer._thread.submit(hold)
        try:
            before = _size(path)
            text = "x" * 100_000
            for version in range(80):  # 8 MB: about 2,000 pages
                await store.commit([Checkpoint("s1", version, version, messages=[text])])
            assert _size(path) == before
            assert _size(f"{path}-wal") > 2 * CHECKPOINT_PAGES * PAGE_SIZE
        finally:
            held.set()  # a failure fails, instead of waiting for the thread at close
        await checkpointer._thread.run(lambda call: None)  # what was queued before this has run
        assert _size(path) > 8_000_000


async def test_sqlite_checkpoints_the_file_it_opened_after_a_change_of_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store opened by a relative path checkpoints that file, not one of the same name wherever the
    process has moved to since."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("sessions.db")
    async with store.open(OWNER):
        monkeypatch.chdir(elsewhere)
        await store.claim("s1", "agent", create=True)
        text = "x" * 100_000
        for version in range(60):  # 6 MB: about 1,500 pages
            await store.commit([Checkpoint("s1", version, version, messages=[text])])
        assert store._checkpointer is not None
        await store._checkpointer._thread.run(lambda call: None)  # the queued checkpoint has run
        assert _size(tmp_path / "sessions.db") > 3_000_000  # at least the first ~1,000 pages
    assert not (elsewhere / "sessions.db").exists()
