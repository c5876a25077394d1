"""Another process for the store tests: opens a store, tries to claim one session, says how it went.

``python claimer.py KIND TARGET OWNER SESSION_ID``: prints ``claimed`` (then holds the session until
stdin closes or the process is killed) or ``owned OWNER`` (another process holds it) on one line.
"""

from __future__ import annotations

import sys

import trio

from runtime import PostgresStore, SessionOwnedError, SessionStore, SQLiteStore


async def main(kind: str, target: str, owner: str, session_id: str) -> None:
    store: SessionStore = SQLiteStore(target) if kind == "sqlite" else PostgresStore(target)
    async with store.open(owner):
        try:
            await store.claim(session_id, "agent", create=True)
        except SessionOwnedError as exc:
            print("owned", exc.owner, flush=True)
            return
        print("claimed", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


if __name__ == "__main__":
    kind, target, owner, session_id = sys.argv[1:5]
    trio.run(main, kind, target, owner, session_id)
