"""W1 durable: W1 with its sessions in a store; µs per run, and 1,000 runs at once on one SQLite file.

``--impl`` is one column of the table:

- ``trio-agents``: in memory (no store), this run's reference;
- ``trio-agents-sqlite``: ``open_runtime(store=SQLiteStore(FILE))``, a file in a temporary directory;
- ``trio-agents-postgres``: ``PostgresStore(dsn)`` on a throwaway cluster this script starts
  (``tests/pg.py``, the helper the tests use; ``initdb`` + ``pg_ctl``, ~1 s, not timed); without the
  PostgreSQL server binaries or psycopg it measures nothing and says why;
- ``openai-agents-sqlite``: openai-agents with ``SQLiteSession(id, db_path=FILE)`` (a file, not
  ``:memory:``); run with the peers' interpreter.

W1 streamed, ``--prompts`` runs one after another, two ways: each prompt in a **fresh** session
(a new id: a durable store claims, loads and releases it, included in the time, as W1 includes
making a session), and all prompts in **one shared** session (its history grows by 4 messages a
run and goes to the model every turn). The model answers the latest prompt. A warm-up pass, then
``--reps`` repetitions of each; the store's file (or database) is made once per process, the
runtime opened on it for each repetition (outside the timed loop).

A store's column also measures its reference **paired**: each repetition on the store is
followed (or, every other time, preceded) by the same repetition in memory, in the same process,
and the ratio of the two is kept (``fresh_over_memory``, ``shared_over_memory``; the in-memory
figures as ``fresh_memory_us_per_run``, ``shared_memory_us_per_run``). The store's target is read
from those ratios: this VM drifts from one process to the next by more than a store's cost moves
(the columns run between leave it slower for a while), and a pair shares whatever state it is in.

trio-agents columns also run ``--runs`` (1,000) streamed runs at once across ``--sessions`` (1,000:
each run its own session) fresh sessions of one store, and report the wall time, runs/s, how many
ended ``completed``, every "database is locked" seen (raised, an ``ErrorEvent``, or the writer's
log) and the store transactions per run (group commit).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _harness import quiet_gc

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
IMPLS = ("trio-agents", "trio-agents-sqlite", "trio-agents-postgres", "openai-agents-sqlite")


def _postgres_helper() -> Any:
    """tests/pg.py, loaded from its file (the bench does not import the test suite as a package)."""
    spec = importlib.util.spec_from_file_location("bench_pg", ROOT / "tests" / "pg.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs resolves the module's annotations there
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _store_factory(impl: str, directory: str) -> Iterator[tuple[Callable[[], Any] | None, str | None]]:
    """Yields (a callable making the store for one runtime, None) or (None, why it cannot be measured)."""
    if impl == "trio-agents":
        yield (lambda: None), None
    elif impl == "trio-agents-sqlite":
        from runtime import SQLiteStore

        path = os.path.join(directory, "sessions.db")
        yield (lambda: SQLiteStore(path)), None
    else:
        pg = _postgres_helper()
        try:
            pg.find_bindir()
            from runtime import PostgresStore
        except (pg.PostgresMissingError, ImportError) as exc:
            yield None, f"not measured: {exc}"
            return
        with pg.postgres_cluster() as cluster:
            dsn = cluster.create_database()
            yield (lambda: PostgresStore(dsn)), None


def measure(args: argparse.Namespace, directory: str) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """The implementation's module, its metrics, and what it did not measure and why."""
    metrics: dict[str, Any] = {}
    if args.impl == "openai-agents-sqlite":
        import impl_openai_agents as peer

        path = os.path.join(directory, "sessions.db")
        series(metrics, args, lambda n, shared: peer.durable_w1(n, db_path=path, shared=shared))
        return peer, metrics, {}
    import impl_trio_agents as ours

    with _store_factory(args.impl, directory) as (factory, why):
        if factory is None:
            return ours, metrics, {"w1_durable": why}
        in_memory = (
            None
            if args.impl == "trio-agents"
            else (lambda n, shared: ours.durable_w1(n, store=lambda: None, shared=shared))
        )
        series(metrics, args, lambda n, shared: ours.durable_w1(n, store=factory, shared=shared), paired=in_memory)
        quiet_gc()
        result = ours.durable_concurrent(args.runs, store=factory, sessions=args.sessions)
    metrics.update({f"concurrent_{name}": value for name, value in result.items()})
    return ours, metrics, {}


def series(
    metrics: dict[str, Any],
    args: argparse.Namespace,
    run: Callable[[int, bool], float],
    *,
    paired: Callable[[int, bool], float] | None = None,
) -> None:
    """Fresh sessions, then one shared session: a warm-up pass, then ``--reps`` timed passes (µs/run).

    With ``paired`` (the in-memory reference), each pass of ``run`` has one of ``paired`` beside it,
    which of the two goes first alternating, and their ratios are kept too.
    """
    for shared, way in ((False, "fresh"), (True, "shared")):
        runs = [run] if paired is None else [run, paired]
        for each in runs:
            each(max(args.prompts // 3, 1), shared)
        timed: list[list[float]] = [[] for _ in runs]
        for rep in range(args.reps):
            for index in range(len(runs)) if rep % 2 == 0 else reversed(range(len(runs))):
                quiet_gc()
                timed[index].append(runs[index](args.prompts, shared) / args.prompts * 1e6)
        metrics[f"{way}_us_per_run"] = timed[0]
        if paired is not None:
            metrics[f"{way}_memory_us_per_run"] = timed[1]
            metrics[f"{way}_over_memory"] = [store / memory for store, memory in zip(*timed, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=IMPLS, default="trio-agents-sqlite")
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="w1-durable-")
    try:
        module, metrics, notes = measure(args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    record: dict[str, Any] = {"workload": "w1_durable", "impl": args.impl, "versions": module.VERSIONS}
    record["metrics"] = metrics
    if notes:
        record["notes"] = notes
    sys.stdout.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
