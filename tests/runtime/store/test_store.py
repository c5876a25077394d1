"""The SessionStore contract, run against both stores (``backend``: SQLite, then PostgreSQL)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from runtime import (
    Checkpoint,
    EventRow,
    PendingRow,
    RunRow,
    SessionConflictError,
    SessionOwnedError,
    SessionSnapshot,
    StoreCorruptError,
    StoreRejectedError,
    StoreUnavailableError,
    StoreVersionError,
)
from runtime._store import SCHEMA_VERSION
from runtime._worker import WorkerThread, settle

if TYPE_CHECKING:
    from runtime import SessionStore
    from tests.runtime.store.conftest import Backend

OWNER = "test-host:1"


async def settled(store: object) -> None:
    """Wait until the store's abandoned worker calls have ended (SQLite: its thread's queue is drained)."""
    thread = getattr(store, "_thread", None)
    if isinstance(thread, WorkerThread):
        await thread.run(lambda call: None)
    else:
        await settle(store._limiter)  # type: ignore[attr-defined]


def _full_checkpoint(session_id: str, version: int) -> Checkpoint:
    return Checkpoint(
        session_id=session_id,
        version=version,
        message_base=0,
        messages=['{"role": "user", "content": "hi"}', '{"role": "assistant", "content": "hello"}'],
        runs=[RunRow("r1", 1, '"hi"', "running"), RunRow("r2", 2, '"again"', "running", resumes="r1")],
        events=[EventRow("r1", 0, '{"type": "run_started"}'), EventRow("r1", 1, '{"type": "text_delta"}')],
        pending_added=[PendingRow("e2", "r2", "c2", '{"q": 2}'), PendingRow("e1", "r1", "c1", '{"q": 1}')],
        usage='{"input_tokens": 3}',
    )


async def _reclaim(store: SessionStore, session_id: str) -> SessionSnapshot:
    """Release the session and claim it again: what the store really holds."""
    await store.release(session_id)
    snapshot = await store.claim(session_id, "agent", create=False)
    assert snapshot is not None
    return snapshot


async def test_store_claim_creates_and_reports_created(backend: Backend) -> None:
    """claim(create=True) makes an empty session at version 0; claiming it again finds it, not created."""
    store = backend.store()
    async with store.open(OWNER):
        snapshot = await store.claim("s1", "helper", create=True)
        assert snapshot == SessionSnapshot("s1", "helper", 0, (), (), (), None, created=True)
        again = await _reclaim(store, "s1")
        assert again.created is False
        assert again.agent == "helper"


async def test_store_fresh_claim_takes_the_id_and_its_first_checkpoint_makes_it(backend: Backend) -> None:
    """claim(fresh=True) takes the id (another store cannot) but stores nothing: let go, the session is not
    there; taken again, a checkpoint with ``create`` makes it, with the agent's name and its usage, at version 1."""
    store, other = backend.store(), backend.store()
    async with store.open(OWNER), other.open("other-store"):
        snapshot = await store.claim("f1", "helper", create=True, fresh=True)
        assert snapshot == SessionSnapshot("f1", "helper", 0, (), (), (), None, created=True)
        with pytest.raises(SessionOwnedError):
            await other.claim("f1", "helper", create=True)
        async with backend.child("f1", "child-host:8") as child:
            assert child.line.startswith("owned ")  # by nobody it can name yet: no row says who
        await store.release("f1")
        assert await other.claim("f1", "helper", create=False) is None
        await store.claim("f1", "helper", create=True, fresh=True)
        await store.commit([Checkpoint("f1", 0, 0, messages=["m0"], usage="u1", create="helper")])
        again = await _reclaim(store, "f1")
        assert (again.agent, again.version, again.messages, again.usage, again.created) == (
            "helper",
            1,
            ("m0",),
            "u1",
            False,
        )


async def test_store_fresh_claim_of_an_id_held_elsewhere_is_owned(backend: Backend) -> None:
    """A fresh claim of an id another process holds raises SessionOwnedError naming it, as any claim does."""
    store = backend.store()
    async with store.open(OWNER), backend.child("f2", "child-host:7") as child:
        assert child.line == "claimed"
        with pytest.raises(SessionOwnedError) as caught:
            await store.claim("f2", "agent", create=True, fresh=True)
        assert caught.value.owner == "child-host:7"
        await child.kill()


async def test_store_checkpoint_making_a_session_that_exists_conflicts(backend: Backend) -> None:
    """A checkpoint with ``create`` for an id already stored is refused as a conflict, writing nothing."""
    store = backend.store()
    async with store.open(OWNER):
        await store.claim("f3", "agent", create=True)
        with pytest.raises(SessionConflictError) as caught:
            await store.commit([Checkpoint("f3", 0, 0, messages=["m0"], create="agent")])
        assert caught.value.session_id == "f3"
        assert (await _reclaim(store, "f3")).messages == ()


async def test_store_claim_unknown_without_create_is_none_and_claims_nothing(backend: Backend) -> None:
    """claim(create=False) of an unknown id returns None and leaves nothing claimed."""
    store = backend.store()
    async with store.open(OWNER):
        assert await store.claim("nope", "agent", create=False) is None
        assert (await store.claim("nope", "agent", create=True)) is not None


async def test_store_commit_round_trip(backend: Backend) -> None:
    """A commit's messages, runs (upserted), events, pending questions and usage come back at the next claim."""
    store = backend.store()
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True)
        await store.commit([_full_checkpoint("s1", 0)])
        await store.commit(
            [
                Checkpoint(
                    "s1",
                    1,
                    message_base=2,
                    messages=['{"role": "user", "content": "more"}'],
                    runs=[RunRow("r1", 1, '"hi"', "finished", reason="completed")],
                    events=[EventRow("r1", 2, '{"type": "run_finished"}')],
                    pending_added=[PendingRow("e3", "r2", "c3", '{"q": 3}')],
                    pending_removed=["e1"],
                )
            ]
        )
        snapshot = await _reclaim(store, "s1")
        assert snapshot == SessionSnapshot(
            session_id="s1",
            agent="agent",
            version=2,
            messages=(
                '{"role": "user", "content": "hi"}',
                '{"role": "assistant", "content": "hello"}',
                '{"role": "user", "content": "more"}',
            ),
            runs=(
                RunRow("r1", 1, '"hi"', "finished", reason="completed"),
                RunRow("r2", 2, '"again"', "running", resumes="r1"),
            ),
            pending=(PendingRow("e2", "r2", "c2", '{"q": 2}'), PendingRow("e3", "r2", "c3", '{"q": 3}')),
            usage='{"input_tokens": 3}',  # kept: the second checkpoint had none
            created=False,
        )
        assert await store.events("s1", "r1") == [
            '{"type": "run_started"}',
            '{"type": "text_delta"}',
            '{"type": "run_finished"}',
        ]
        assert await store.events("s1", "r2") == []
        assert await store.events("s1", "unknown") == []


async def test_store_message_base_cuts_the_history(backend: Backend) -> None:
    """A checkpoint's message_base cuts the stored history to that length before its messages are added."""
    store = backend.store()
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True)
        await store.commit([Checkpoint("s1", 0, 0, messages=["a", "b", "c", "d"])])
        await store.commit([Checkpoint("s1", 1, 1, messages=["x"])])
        assert (await _reclaim(store, "s1")).messages == ("a", "x")
        await store.commit([Checkpoint("s1", 2, 0)])
        assert (await _reclaim(store, "s1")).messages == ()


async def test_store_claim_of_a_history_with_a_hole_is_corrupt_and_claims_nothing(backend: Backend) -> None:
    """A session whose stored messages are numbered 0, 2 (1 deleted behind the store's back) fails its claim with
    StoreCorruptError, leaving it unclaimed; it used to load as two messages, and the session's next write
    collided with message 2 in the middle of a run."""
    store = backend.store()
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True)
        await store.commit([Checkpoint("s1", 0, 0, messages=["a", "b", "c"])])
        await store.release("s1")
        backend.delete_message("s1", 1)
        for _ in range(2):  # nothing was left claimed: the second claim fails the same way
            with pytest.raises(StoreCorruptError, match=r"'s1'.*message 2 where 1 should be"):
                await store.claim("s1", "agent", create=False)


async def test_store_version_conflict_writes_nothing(backend: Backend) -> None:
    """A checkpoint at a stale version raises SessionConflictError and no checkpoint of its batch is written."""
    store = backend.store()
    async with store.open(OWNER):
        await store.claim("a", "agent", create=True)
        await store.claim("b", "agent", create=True)
        await store.commit([Checkpoint("b", 0, 0, messages=["b0"])])
        with pytest.raises(SessionConflictError) as caught:
            await store.commit(
                [
                    Checkpoint("a", 0, 0, messages=["a0"], events=[EventRow("r1", 0, "{}")], usage="1"),
                    Checkpoint("b", 0, 1, messages=["stale"]),
                ]
            )
        assert caught.value.session_id == "b"
        a = await _reclaim(store, "a")
        assert (a.version, a.messages, a.usage) == (0, (), None)
        assert await store.events("a", "r1") == []
        b = await _reclaim(store, "b")
        assert (b.version, b.messages) == (1, ("b0",))
        # The batch is writable once it names the right versions.
        await store.commit([Checkpoint("a", 0, 0, messages=["a0"]), Checkpoint("b", 1, 1, messages=["b1"])])
        assert (await _reclaim(store, "b")).messages == ("b0", "b1")


REFUSED: dict[str, Checkpoint] = {
    "event-written-twice": Checkpoint("b", 0, 0, events=[EventRow("r1", 0, "{}"), EventRow("r1", 0, "{}")]),
    "surrogate-in-a-call-id": Checkpoint("b", 0, 0, pending_added=[PendingRow("e1", "r1", "c\ud800", "{}")]),
}


@pytest.mark.parametrize("refused", list(REFUSED))
async def test_store_checkpoint_the_database_refuses_is_rejected_naming_its_session(
    backend: Backend, refused: str
) -> None:
    """A checkpoint the database refuses (a row twice, text UTF-8 cannot hold) raises StoreRejectedError naming
    its session, and no checkpoint of its batch is written; the others are written once sent without it
    (it was StoreUnavailableError, or a UnicodeEncodeError: the runtime's writer retried it with the others
    for ever, or died)."""
    store = backend.store()
    async with store.open(OWNER):
        await store.claim("a", "agent", create=True)
        await store.claim("b", "agent", create=True)
        with pytest.raises(StoreRejectedError) as caught:
            await store.commit([Checkpoint("a", 0, 0, messages=["a0"], usage="1"), REFUSED[refused]])
        assert caught.value.session_id == "b"
        a = await _reclaim(store, "a")
        assert (a.version, a.messages, a.usage) == (0, (), None)
        assert await store.events("b", "r1") == []
        assert (await _reclaim(store, "b")).pending == ()
        await store.commit([Checkpoint("a", 0, 0, messages=["a0"])])  # the store goes on
        assert (await _reclaim(store, "a")).messages == ("a0",)


async def test_store_agent_and_owner_names_are_stored_with_nul_and_lone_surrogates_escaped(backend: Backend) -> None:
    """An agent's name, and the store's owner, are plain text columns: NUL and a lone surrogate are kept as their
    escapes, whether the session is made by its claim or by its first checkpoint (PostgreSQL refused NUL, and
    both stores raised UnicodeEncodeError for a surrogate: from the writer, which took the runtime down)."""
    name = "bad\x00name\ud800"
    store = backend.store()
    async with store.open("owner\x00\udfff"):
        await store.claim("a", name, create=True)
        await store.claim("b", name, create=True, fresh=True)
        await store.commit([Checkpoint("b", 0, 0, messages=["b0"], create=name)])
        for session_id in ("a", "b"):
            assert (await _reclaim(store, session_id)).agent == "bad\\x00name\\ud800"


async def test_store_commit_of_unclaimed_session_conflicts(backend: Backend) -> None:
    """A checkpoint of a session this store does not hold (never claimed, or released) is refused."""
    store = backend.store()
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True)
        with pytest.raises(SessionConflictError) as caught:
            await store.commit([Checkpoint("s1", 0, 0, messages=["ok"]), Checkpoint("s2", 0, 0)])
        assert caught.value.session_id == "s2"
        await store.release("s1")
        with pytest.raises(SessionConflictError):
            await store.commit([Checkpoint("s1", 0, 0, messages=["late"])])
        assert (await store.claim("s1", "agent", create=False)) == SessionSnapshot(
            "s1", "agent", 0, (), (), (), None, created=False
        )


async def test_store_second_claim_in_process_is_owned(backend: Backend) -> None:
    """A session held by this store, or by another store of this process, cannot be claimed again."""
    store, other = backend.store(), backend.store()
    async with store.open(OWNER), other.open("other-store"):
        await store.claim("s1", "agent", create=True)
        with pytest.raises(SessionOwnedError) as caught:
            await store.claim("s1", "agent", create=True)
        assert (caught.value.session_id, caught.value.owner) == ("s1", OWNER)
        with pytest.raises(SessionOwnedError):
            await other.claim("s1", "agent", create=False)
        await store.release("s1")
        await store.release("s1")  # idempotent
        assert await other.claim("s1", "agent", create=False) is not None


async def test_store_claim_held_by_another_process_is_owned_until_it_dies(backend: Backend) -> None:
    """Another process's claim makes ours raise SessionOwnedError naming it; once it is killed, ours succeeds."""
    store = backend.store()
    async with store.open(OWNER):
        async with backend.child("s1", "child-host:42") as child:
            assert child.line == "claimed"
            with pytest.raises(SessionOwnedError) as caught:
                await store.claim("s1", "agent", create=True)
            assert caught.value.owner == "child-host:42"
            # No clean exit: only the kernel (SQLite) or the server (PostgreSQL) can let go now.
            await child.kill()
            await backend.wait_released("s1")
            snapshot = await store.claim("s1", "agent", create=False)
            assert snapshot is not None
            assert snapshot.created is False
        async with backend.child("s1", "child-host:43") as child:
            assert child.line == f"owned {OWNER}"


async def test_store_close_releases_every_claim(backend: Backend) -> None:
    """Leaving the store's open block lets every session it held go."""
    store = backend.store()
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True)
        await store.claim("s2", "agent", create=True)
    await store.release("s1")  # after close: still never raises
    other = backend.store()
    async with other.open("other"):
        assert await other.claim("s1", "agent", create=False) is not None
        assert await other.claim("s2", "agent", create=False) is not None


async def test_store_cancelled_claim_leaves_nothing_claimed(backend: Backend) -> None:
    """A claim cancelled while its statement waits on a lock leaves the session unclaimed, here and elsewhere."""
    store = backend.store()
    async with store.open(OWNER):
        with backend.writes_held():
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(functools.partial(store.claim, "s1", "agent", create=True))
                    await trio.testing.wait_all_tasks_blocked()  # the claim's thread has started
                    scope.cancel()
            assert scope.cancelled_caught
        await settled(store)  # the abandoned call has ended
        async with backend.child("s1", "child") as child:
            assert child.line == "claimed"
            await child.kill()
        await backend.wait_released("s1")
        snapshot = await store.claim("s1", "agent", create=True)
        assert snapshot is not None


async def test_store_delete_forgets_everything(backend: Backend) -> None:
    """delete() removes a session with its history, runs, events and questions, and releases it."""
    store = backend.store()
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True)
        await store.claim("s2", "agent", create=True)
        await store.commit([_full_checkpoint("s1", 0), _full_checkpoint("s2", 0)])
        await store.delete("s1")
        assert await store.events("s1", "r1") == []
        assert await store.claim("s1", "agent", create=False) is None
        fresh = await store.claim("s1", "agent", create=True)
        assert fresh is not None
        assert (fresh.created, fresh.messages, fresh.runs, fresh.pending) == (True, (), (), ())
        assert len(await store.events("s2", "r1")) == 2  # the other session is untouched
        await store.release("s2")
        await store.delete("s2")  # a session not held here is taken for the deletion
        assert await store.claim("s2", "agent", create=False) is None


async def test_store_delete_of_session_held_elsewhere_is_owned(backend: Backend) -> None:
    """delete() of a session another process holds raises SessionOwnedError and deletes nothing."""
    store = backend.store()
    async with store.open(OWNER):
        await store.claim("s1", "agent", create=True)
        await store.release("s1")
        async with backend.child("s1", "child") as child:
            assert child.line == "claimed"
            with pytest.raises(SessionOwnedError):
                await store.delete("s1")
            await child.kill()
        await backend.wait_released("s1")
        assert await store.claim("s1", "agent", create=False) is not None


async def test_store_concurrent_opens_migrate_once(backend: Backend) -> None:
    """Stores opening a new database at the same time all succeed (one creates the schema, the others see it)."""
    stores = [backend.store() for _ in range(4)]
    opened = 0
    all_open, done = trio.Event(), trio.Event()

    async def open_one(store: SessionStore, name: str) -> None:
        nonlocal opened
        async with store.open(name):
            opened += 1
            if opened == len(stores):
                all_open.set()
            await done.wait()

    async with trio.open_nursery() as nursery:
        for i, store in enumerate(stores):
            nursery.start_soon(open_one, store, f"p{i}")
        with trio.fail_after(20):
            await all_open.wait()
        assert await stores[0].claim("s1", "agent", create=True) is not None
        done.set()


async def test_store_newer_schema_is_refused_at_open(backend: Backend) -> None:
    """A database written by a newer schema raises StoreVersionError at open."""
    store = backend.store()
    async with store.open(OWNER):
        pass
    await trio.to_thread.run_sync(backend.stamp_version, SCHEMA_VERSION + 1)
    with pytest.raises(StoreVersionError):
        async with store.open(OWNER):
            pytest.fail("opened")
    # Its own version still opens.
    await trio.to_thread.run_sync(backend.stamp_version, SCHEMA_VERSION)
    async with store.open(OWNER):
        pass


async def test_store_calls_outside_open_fail_clearly(backend: Backend) -> None:
    """A store used before it is opened raises StoreUnavailableError (release alone never raises)."""
    store = backend.store()
    with pytest.raises(StoreUnavailableError, match="not open"):
        await store.claim("s1", "agent", create=True)
    with pytest.raises(StoreUnavailableError, match="not open"):
        await store.commit([])
    await store.release("s1")
