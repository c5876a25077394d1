"""Run the workloads for trio-agents and its peers, A B A B, and write BENCHMARKS.md.

    python bench/run.py           # everything (make bench), ~8.5 minutes on 2 cores
    python bench/run.py --quick   # W1 only (make bench-quick), ~2 minutes; writes bench/results-quick.json
    python bench/run.py --report  # rewrite BENCHMARKS.md and the chart from bench/results.json
    python bench/run.py --only w5 # one workload; its results replace that workload's in bench/results.json
    python bench/run.py --only w6 # the token stream (make bench-tokens), ~3 minutes
    python bench/run.py --only w1_durable # W1 on session stores (make bench-durable), ~3 minutes

Each measurement is a fresh process of a workload script (bench/w*_*.py),
run with the interpreter of that implementation's virtualenv: trio-agents
in ours, openai-agents and pydantic-ai in bench/.venv-peers (made here from
bench/requirements-peers.txt; openai-agents' top-level package `agents`
would clash with ours). Implementations alternate within each round, so a
slow spell of the machine hits all of them alike.

W5 (served) is the exception to "each implementation's interpreter": its
script runs in ours and starts each server in its own process, with the
interpreter that server needs (bench/w5_served.py). W6 (token stream) adds
an implementation of its own, the raw floor, run in ours; its loopback
provider is a process of its own (bench/w6_tokens.py). W1 durable has a
column per store: trio-agents in memory, on SQLite and on PostgreSQL (in
ours), and openai-agents with its SQLiteSession on a file (in the peers').
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from token_bodies import FORMATS

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS_VENV = BENCH / ".venv-peers"
REQUIREMENTS = BENCH / "requirements-peers.txt"
IMPLS = ("trio-agents", "openai-agents", "pydantic-ai")
PEERS = IMPLS[1:]

# (workload, script, rounds): W1 processes each report 5 repetitions.
FULL_PLAN = [("w0", "w0_floor.py", 2), ("w1", "w1_tool_turn.py", 2), ("w2", "w2_concurrency.py", 3),
             ("w2_50k", "w2_scale.py", 2), ("w3", "w3_cancel.py", 3), ("w4", "w4_scale.py", 3),
             ("w5", "w5_served.py", 3), ("w6", "w6_tokens.py", 3), ("w1_durable", "w1_durable.py", 2)]  # fmt: skip
QUICK_PLAN = [("w1", "w1_tool_turn.py", 2)]
# W5's servers: trio-agents, (a) the peer stack around pydantic-ai, (b) the plumbing floor, and two
# that take trio-agents' figure apart.
W5_IMPLS = ("trio-agents", "pydantic-ai", "floor", "trio-agents-async-tool", "trio-floor")
W5_CLIENTS = (50, 200)
W5_LABELS = {
    "trio-agents": "trio-agents",
    "pydantic-ai": "(a) pydantic-ai",
    "floor": "(b) floor",
    "trio-agents-async-tool": "trio-agents, async tool",
    "trio-floor": "trio-agents' plumbing",
}
# W6: the raw floor (httpx + httpx-sse + json.loads, under Trio) first, the ratios' denominator.
W6_IMPLS = ("raw-floor", "trio-agents", "openai-agents", "pydantic-ai")
W6_TARGET = 1.1
# W1 durable: trio-agents in memory (the reference), on each store, and openai-agents on SQLiteSession (a file).
W1D_IMPLS = ("trio-agents", "trio-agents-sqlite", "trio-agents-postgres", "openai-agents-sqlite")
W1D_LABELS = {
    "trio-agents": "trio-agents, in memory",
    "trio-agents-sqlite": "trio-agents, SQLiteStore",
    "trio-agents-postgres": "trio-agents, PostgresStore",
    "openai-agents-sqlite": "openai-agents, SQLiteSession (file)",
}
W1D_SQLITE_OVER_MEMORY = 3.0
W1D_SQLITE_OVER_PEER = 1 / 5

TITLES = {
    "w0": "W0 floor: one event hop",
    "w1": "W1 tool turn: 300 sequential runs with one tool call",
    "w2": "W2 concurrency: 1,000 W1 runs at once",
    "w2_50k": "W2 at scale: 1,000 and 50,000 runs at once",
    "w3": "W3 cancel: 1,000 parked runs cancelled together",
    "w4": "W4 scale: 10,000 idle sessions",
    "w5": "W5 served: M concurrent HTTP clients, each creating a session and streaming one W1 run over SSE",
    "w6": "W6 token stream: 5,000 one-token chunks from a loopback provider, per provider format",
    "w1_durable": "W1 durable: W1 with its sessions in a store, and 1,000 runs at once on one SQLite file",
}
METRICS = {  # workload -> [(metric, label, unit, lower is better)]
    "w0": [
        ("channel_buffer0_ns", "raw trio channel, buffer 0", "ns/item", True),
        ("channel_buffer100_ns", "raw trio channel, buffer 100", "ns/item", True),
        ("agent_event_ns", "trio-agents: one streamed event, model chunk to consumer", "ns/event", True),
        ("agent_tool_delta_ns", "trio-agents: one ToolCallDelta, model chunk to consumer", "ns/event", True),
    ],
    "w1": [
        ("streamed_us_per_run", "streamed", "µs/run", True),
        ("plain_us_per_run", "not streamed", "µs/run", True),
    ],
    "w2": [
        ("wall_s", "wall time", "s", True),
        ("runs_per_s", "throughput", "runs/s", False),
        ("peak_rss_kib_per_run", "peak RSS over baseline", "KiB/run", True),
    ],
    "w2_50k": [
        ("us_per_run_1k", "1,000 runs at once", "µs/run", True),
        ("us_per_run_50k", "50,000 runs at once", "µs/run", True),
        ("ratio_50k_1k", "50,000 over 1,000", "×", True),
        ("peak_rss_kib_per_run_50k", "peak RSS over baseline at 50,000", "KiB/run", True),
        ("gen2_collections_50k", "generation-2 collections during the 50,000", "collections", True),
        ("gen2_share_50k", "their share of the 50,000's wall time", "%", True),
    ],
    "w3": [
        ("cancel_ms", "cancel until the owning block exited", "ms", True),
        ("tasks_alive", "tasks still alive then", "tasks", True),
    ],
    "w4": [
        ("rss_kib_per_session", "RSS", "KiB/session", True),
        ("close_ms", "close them all", "ms", True),
    ],
    "w5": [
        (f"{metric}_{clients}", f"{label}, M={clients}", unit, lower)
        for clients in W5_CLIENTS
        for metric, label, unit, lower in (
            ("cpu_us_per_run", "server CPU per run", "µs/run", True),
            ("runs_per_s", "throughput", "runs/s", False),
            ("p50_ms", "p50 latency", "ms", True),
            ("p99_ms", "p99 latency", "ms", True),
        )
    ],
    "w1_durable": [
        ("fresh_us_per_run", "W1 streamed, a fresh session per prompt", "µs/run", True),
        ("shared_us_per_run", "W1 streamed, all prompts in one session", "µs/run", True),
        (
            "fresh_memory_us_per_run",
            "in memory, paired: fresh sessions, beside each repetition on the store",
            "µs/run",
            True,
        ),
        (
            "shared_memory_us_per_run",
            "in memory, paired: one session, beside each repetition on the store",
            "µs/run",
            True,
        ),
        (
            "fresh_over_memory",
            "paired ratio, fresh sessions: the store's repetition over its in-memory pair's",
            "×",
            True,
        ),
        (
            "shared_over_memory",
            "paired ratio, one session: the store's repetition over its in-memory pair's",
            "×",
            True,
        ),
        ("concurrent_wall_s", "1,000 runs at once, one session each: wall time", "s", True),
        ("concurrent_runs_per_s", "1,000 runs at once: throughput", "runs/s", False),
        ("concurrent_completed", "1,000 runs at once: ended completed", "runs", False),
        ("concurrent_locked_errors", '1,000 runs at once: "database is locked" seen', "errors", True),
        ("concurrent_commits", "1,000 runs at once: store transactions for them all", "commits", True),
    ],
    "w6": [
        (f"{fmt}_{metric}", f"{spec.label}: {label}", unit, True)
        for fmt, spec in FORMATS.items()
        for metric, label, unit in (
            ("cpu_us_per_chunk", "CPU per chunk", "µs/chunk"),
            ("first_event_ms", "time to first event", "ms"),
            ("model_cpu_us_per_chunk", "CPU per chunk, model alone", "µs/chunk"),
            ("model_first_event_ms", "time to first event, model alone", "ms"),
        )
    ],
}


def log(message: str) -> None:
    print(message, flush=True)


def ensure_peers() -> Path:
    """Make bench/.venv-peers from the pinned requirements, unless it is up to date."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".installed"
    wanted = REQUIREMENTS.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"[setup] creating {PEERS_VENV.relative_to(ROOT)} with {', '.join(_pins())} (about a minute)")
    shutil.rmtree(PEERS_VENV, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def _pins() -> list[str]:
    return [line.strip() for line in REQUIREMENTS.read_text().splitlines() if line.strip() and line[0] != "#"]


def measure(python: Path | str, script: str, impl: str) -> dict[str, Any]:
    """Run one workload script in a fresh process; return its JSON record."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYDANTIC_AI_NO_BANNER": "1"}
    if str(python) != sys.executable:
        env.pop("PYTHONPATH", None)  # the peers' `agents` is openai-agents': never this checkout's
    done = subprocess.run(
        [str(python), str(BENCH / script), "--impl", impl],
        cwd=BENCH,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{script} --impl {impl} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def headline(workload: str, metrics: dict[str, Any]) -> str:
    """One short summary of a record, for the progress line."""
    preferred = METRICS[workload][{"w2": 2, "w2_50k": 2}.get(workload, 0) :]
    first = next((m for m in [*preferred, *METRICS[workload]] if m[0] in metrics), None)
    if first is None:
        return "not measured"
    value = metrics[first[0]]
    value = statistics.median(value) if isinstance(value, list) else value
    return f"{first[1]}: {value:,.1f} {first[2]}"


def run_plan(plan: list[tuple[str, str, int]], peers_python: Path) -> dict[str, Any]:
    """Measure every workload of the plan; return {workload: {impl: {metric: [values]}}, versions}."""
    results: dict[str, Any] = {"workloads": {}, "versions": {}}
    steps = sum(rounds * len(_impls(workload)) for workload, _, rounds in plan)
    step = 0
    started = time.monotonic()
    for workload, script, rounds in plan:
        table: dict[str, dict[str, list[float]]] = results["workloads"].setdefault(workload, {})
        impls = _impls(workload)
        for round_ in range(rounds):
            for impl in impls:
                step += 1
                ours = workload == "w5" or not impl.startswith(PEERS)
                python = sys.executable if ours else peers_python
                began = time.monotonic()
                record = measure(python, script, impl)
                results["versions"][impl] = record["versions"]
                if record.get("notes"):  # what a W6 implementation did not measure, and why
                    results.setdefault("notes", {}).setdefault(workload, {})[impl] = record["notes"]
                for metric, value in record["metrics"].items():
                    table.setdefault(impl, {}).setdefault(metric, []).extend(
                        value if isinstance(value, list) else [value]
                    )
                elapsed = time.monotonic() - started
                eta = elapsed / step * (steps - step)
                log(
                    f"[{step:>2}/{steps}] {workload} round {round_ + 1}/{rounds} {impl:<14} "
                    f"{headline(workload, record['metrics']):<42} ({time.monotonic() - began:4.1f} s, "
                    f"~{eta / 60:.1f} min left)"
                )
    return results


def _impls(workload: str) -> tuple[str, ...]:
    return {
        "w0": ("trio-agents",),
        "w2_50k": ("trio-agents",),
        "w5": W5_IMPLS,
        "w6": W6_IMPLS,
        "w1_durable": W1D_IMPLS,
    }.get(workload, IMPLS)


def stats(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def median_of(results: dict[str, Any], workload: str, impl: str, metric: str) -> float:
    return statistics.median(results["workloads"][workload][impl][metric])


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The targets of issue 3 that these results speak to: (target, measured, met)."""
    w = results["workloads"]
    rows = []
    if "w1" in w:
        ours = median_of(results, "w1", "trio-agents", "streamed_us_per_run")
        theirs = median_of(results, "w1", "openai-agents", "streamed_us_per_run")
        rows.append(("W1 streamed ≤ 1/10 of openai-agents'", f"{ours:,.0f} / {theirs:,.0f} µs = {ours / theirs:.3f}",
                     ours <= theirs / 10))  # fmt: skip
    if "w2" in w:
        kib = median_of(results, "w2", "trio-agents", "peak_rss_kib_per_run")
        rows.append(("W2 ≤ 16 KiB per run", f"{kib:.1f} KiB", kib <= 16))
    if "w2_50k" in w:
        small = median_of(results, "w2_50k", "trio-agents", "us_per_run_1k")
        large = median_of(results, "w2_50k", "trio-agents", "us_per_run_50k")
        rows.append(("W2 at 50,000: µs/run ≤ 1.15× µs/run at 1,000 (same process)",
                     f"{large:,.0f} / {small:,.0f} µs = {large / small:.2f}×", large <= 1.15 * small))  # fmt: skip
        kib = median_of(results, "w2_50k", "trio-agents", "peak_rss_kib_per_run_50k")
        rows.append(("W2 at 50,000 ≤ 16 KiB per run", f"{kib:.1f} KiB", kib <= 16))
    if "w3" in w:
        ours = median_of(results, "w3", "trio-agents", "cancel_ms")
        fastest = min(median_of(results, "w3", peer, "cancel_ms") for peer in PEERS)
        alive = max(results["workloads"]["w3"]["trio-agents"]["tasks_alive"])
        rows.append(("W3 ≤ 1/4 of the fastest peer's cancel", f"{ours:.0f} / {fastest:.0f} ms = {ours / fastest:.3f}",
                     ours <= fastest / 4))  # fmt: skip
        rows.append(("W3: zero tasks alive when the block exits", f"{alive:.0f} (max over rounds)", alive == 0))
    if "w4" in w:
        kib = median_of(results, "w4", "trio-agents", "rss_kib_per_session")
        rows.append(("W4 ≤ 8 KiB per idle session", f"{kib:.2f} KiB", kib <= 8))
    if "w5" in w:
        for clients in W5_CLIENTS:
            ours = median_of(results, "w5", "trio-agents", f"cpu_us_per_run_{clients}")
            floor = median_of(results, "w5", "floor", f"cpu_us_per_run_{clients}")
            rows.append((f"W5 server CPU per run ≤ 1.2× the plumbing floor (b), M={clients}",
                         f"{ours:,.0f} / {floor:,.0f} µs = {ours / floor:.2f}×", ours <= 1.2 * floor))  # fmt: skip
    if "w0" in w:
        event = median_of(results, "w0", "trio-agents", "agent_event_ns")
        floor = min(median_of(results, "w0", "trio-agents", m) for m in ("channel_buffer0_ns", "channel_buffer100_ns"))
        rows.append(("per-event overhead ≤ 2× the W0 floor", f"{event:,.0f} / {floor:,.0f} ns = {event / floor:.2f}×",
                     event <= 2 * floor))  # fmt: skip
        if "agent_tool_delta_ns" in results["workloads"]["w0"]["trio-agents"]:
            delta = median_of(results, "w0", "trio-agents", "agent_tool_delta_ns")
            rows.append(("ToolCallDelta per-event overhead ≤ 2× the W0 floor",
                         f"{delta:,.0f} / {floor:,.0f} ns = {delta / floor:.2f}×", delta <= 2 * floor))  # fmt: skip
    if "w6" in w:
        rows += _w6_targets(results)
    if "w1_durable" in w:
        rows += _w1_durable_targets(results)
    return rows


def _w1_durable_targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """SQLite W1 against in-memory W1 and against openai-agents' SQLiteSession, each way of using sessions;
    and the 1,000 runs at once on one SQLite file."""
    table = results["workloads"]["w1_durable"]
    rows = []
    for way, how in (("fresh", "fresh sessions"), ("shared", "one shared session")):
        metric = f"{way}_us_per_run"
        sqlite = median_of(results, "w1_durable", "trio-agents-sqlite", metric)
        peer = median_of(results, "w1_durable", "openai-agents-sqlite", metric)
        # Read from the pairs (each repetition on SQLite beside one in memory, in its process): the processes
        # between the columns move this VM's speed by more than the store's cost. Results from before the
        # pairs have only the columns.
        if f"{way}_over_memory" in table["trio-agents-sqlite"]:
            paired = median_of(results, "w1_durable", "trio-agents-sqlite", f"{way}_over_memory")
            memory = median_of(results, "w1_durable", "trio-agents-sqlite", f"{way}_memory_us_per_run")
            rows.append((f"W1 durable, {how}: SQLite ≤ {W1D_SQLITE_OVER_MEMORY:.0f}× in memory (paired repetitions)",
                         f"{sqlite:,.0f} / {memory:,.0f} µs, median of the pairs' ratios {paired:.2f}×",
                         paired <= W1D_SQLITE_OVER_MEMORY))  # fmt: skip
        else:
            memory = median_of(results, "w1_durable", "trio-agents", metric)
            rows.append((f"W1 durable, {how}: SQLite ≤ {W1D_SQLITE_OVER_MEMORY:.0f}× in memory (columns)",
                         f"{sqlite:,.0f} / {memory:,.0f} µs = {sqlite / memory:.2f}×",
                         sqlite <= W1D_SQLITE_OVER_MEMORY * memory))  # fmt: skip
        rows.append((f"W1 durable, {how}: SQLite ≤ 1/5 of openai-agents + SQLiteSession (file)",
                     f"{sqlite:,.0f} / {peer:,.0f} µs = {sqlite / peer:.3f}",
                     sqlite <= W1D_SQLITE_OVER_PEER * peer))  # fmt: skip
    sqlite_runs = table["trio-agents-sqlite"]
    completed = min(sqlite_runs["concurrent_completed"])
    locked = max(sqlite_runs["concurrent_locked_errors"])
    rows.append(('W1 durable: 1,000 runs at once on one SQLite file all completed, 0 "database is locked"',
                 f"{completed:,.0f} completed (min over rounds), {locked:.0f} locked (max)",
                 completed == 1000 and locked == 0))  # fmt: skip
    return rows


def _w6_targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Per format: trio-agents' CPU per chunk, through the runtime, at most W6_TARGET times the raw floor's."""
    table = results["workloads"]["w6"]
    notes = results.get("notes", {}).get("w6", {}).get("trio-agents", {})
    rows = []
    for fmt, spec in FORMATS.items():
        name = f"W6 {spec.label}: CPU per chunk ≤ {W6_TARGET}× the floor"
        metric = f"{fmt}_cpu_us_per_chunk"
        if metric not in table.get("trio-agents", {}) or metric not in table.get("raw-floor", {}):
            rows.append((name, f"not measured: {notes.get(fmt, 'no figures')}", False))
            continue
        ours = median_of(results, "w6", "trio-agents", metric)
        floor = median_of(results, "w6", "raw-floor", metric)
        alone = median_of(results, "w6", "trio-agents", f"{fmt}_model_cpu_us_per_chunk")
        rows.append((name, f"{ours:.1f} / {floor:.1f} µs = {ours / floor:.2f}× (the model alone: {alone / floor:.2f}×)",
                     ours <= W6_TARGET * floor))  # fmt: skip
    return rows


def chart(results: dict[str, Any], path: Path) -> None:
    """Bar chart of trio-agents / peer ratios for W1–W3 (log scale; lower is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [
        ("w1", "streamed_us_per_run", "W1 streamed\ntime/run"),
        ("w1", "plain_us_per_run", "W1 not streamed\ntime/run"),
        ("w2", "wall_s", "W2 wall time"),
        ("w2", "peak_rss_kib_per_run", "W2 memory/run"),
        ("w3", "cancel_ms", "W3 cancel time"),
    ]
    items = [item for item in items if item[0] in results["workloads"]]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    width = 0.38
    colors = {"openai-agents": "#10a37f", "pydantic-ai": "#e6007a"}
    for offset, peer in zip((-width / 2, width / 2), PEERS, strict=True):
        ratios = [median_of(results, w, "trio-agents", m) / median_of(results, w, peer, m) for w, m, _ in items]
        bars = ax.bar([i + offset for i in range(len(items))], ratios, width, label=f"vs {peer}", color=colors[peer])
        for bar, ratio in zip(bars, ratios, strict=True):
            ax.annotate(f"{ratio:.3f}", (bar.get_x() + bar.get_width() / 2, ratio), ha="center", va="bottom",
                        fontsize=8, xytext=(0, 2), textcoords="offset points")  # fmt: skip
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.text(len(items) - 0.5, 1.05, "parity", ha="right", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(items)), [label for _, _, label in items], fontsize=9)
    ax.set_ylabel("trio-agents / peer (log scale, lower is better)")
    ax.set_title("trio-agents relative to its peers (median of all rounds)")
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# One panel per workload of bench/standing.png: (workload, metric, title, unit, [(impl, label), ...]);
# the floor (what the work costs with no framework at all) where the workload has one.
STANDING = [
    ("w1", "streamed_us_per_run", "W1 tool-turn run, streamed", "µs/run",
     [("trio-agents", "trio-agents"), ("openai-agents", "openai-agents"), ("pydantic-ai", "pydantic-ai")]),
    ("w2", "wall_s", "W2 1,000 runs at once", "s",
     [("trio-agents", "trio-agents"), ("openai-agents", "openai-agents"), ("pydantic-ai", "pydantic-ai")]),
    ("w2", "peak_rss_kib_per_run", "W2 memory", "KiB/run",
     [("trio-agents", "trio-agents"), ("openai-agents", "openai-agents"), ("pydantic-ai", "pydantic-ai")]),
    ("w3", "cancel_ms", "W3 cancel 100 runs", "ms",
     [("trio-agents", "trio-agents"), ("openai-agents", "openai-agents"), ("pydantic-ai", "pydantic-ai")]),
    ("w4", "rss_kib_per_session", "W4 idle session", "KiB",
     [("trio-agents", "trio-agents"), ("openai-agents", "openai-agents"), ("pydantic-ai", "pydantic-ai")]),
    ("w5", "cpu_us_per_run_50", "W5 served run, server CPU (M=50)", "µs/run",
     [("trio-agents", "trio-agents"), ("pydantic-ai", "pydantic-ai stack"), ("floor", "floor")]),
    ("w6", "chat_cpu_us_per_chunk", "W6 streamed token (Chat Completions)", "µs/chunk",
     [("trio-agents", "trio-agents"), ("openai-agents", "openai-agents"), ("pydantic-ai", "pydantic-ai"),
      ("raw-floor", "floor")]),
    ("w1_durable", "fresh_us_per_run", "W1 with a store (fresh sessions)", "µs/run",
     [("trio-agents", "in memory"), ("trio-agents-sqlite", "SQLiteStore"), ("trio-agents-postgres", "PostgresStore"),
      ("openai-agents-sqlite", "openai-agents\n+ SQLiteSession")]),
]  # fmt: skip
STANDING_COLORS = {"openai-agents": "#10a37f", "pydantic-ai": "#e6007a", "floor": "#9e9e9e", "raw-floor": "#9e9e9e",
                   "openai-agents-sqlite": "#10a37f"}  # fmt: skip
OURS = "#1f5fbf"


def standing_chart(results: dict[str, Any], path: Path) -> None:
    """Each workload in a panel of its own: every implementation's median and the floor, in the workload's
    unit (log scale, shorter is better), so a reader sees where trio-agents stands at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for workload, metric, title, unit, impls in STANDING:
        table = results["workloads"].get(workload, {})
        bars = [(label, median_of(results, workload, impl, metric), impl) for impl, label in impls
                if metric in table.get(impl, {}) and table[impl][metric]]  # fmt: skip
        if bars:
            panels.append((title, unit, bars))
    columns = 2
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(11, 2.1 * rows + 0.6), dpi=100, squeeze=False)
    for ax, (title, unit, bars) in zip(axes.flat, panels, strict=False):
        labels = [label for label, _, _ in bars]
        values = [value for _, value, _ in bars]
        colors = [STANDING_COLORS.get(impl, OURS) for _, _, impl in bars]
        positions = range(len(bars))[::-1]  # the first (trio-agents) on top
        ax.barh(list(positions), values, color=colors, height=0.6)
        ax.set_yticks(list(positions), labels, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 2, max(values) * 6)
        ours = values[0]
        for y, value in zip(positions, values, strict=True):
            shown = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
            text = f"{shown} {unit}" + ("" if value == ours else f"  ({value / ours:.2g}×)")
            ax.annotate(text, (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7.5)
        ax.set_title(title, fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("Where trio-agents stands: each workload's median, peers and floor (log scale, shorter is better;"
                 " × = that bar / the first)", fontsize=9.5)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{mem_kib / 1024 / 1024:.0f} GiB"
    except OSError:
        memory = "unknown memory"
    return f"{platform.system()} {platform.release()} ({platform.machine()}), {cpu}, {os.cpu_count()} cores, {memory}"


def report(results: dict[str, Any], elapsed: float) -> str:
    """BENCHMARKS.md."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/run.py`); do not edit by hand — the profile note at the end comes from",
        "`bench/PROFILE.md`. Every figure is from the same run, implementations alternating (A B A B), each",
        "measurement a fresh process. This machine is noisy: read the ratios, not the absolute numbers.",
        "",
        f"- Date: {results['date']}; the whole run took {elapsed / 60:.1f} min",
        f"- Machine: {results.get('machine', machine())}",
        *[
            f"- {workload.upper()} was run alone on {when} (`bench/run.py --only {workload}`), on the same machine"
            for workload, when in results.get("alone", {}).items()
        ],
        *[
            f"- {impl}: " + ", ".join(f"{k} {v}" for k, v in results["versions"].get(impl, {}).items())
            for impl in IMPLS
        ],
        *[
            f"- W5 {W5_LABELS[impl]}: " + ", ".join(f"{k} {v}" for k, v in results["versions"][impl].items())
            for impl in ("pydantic-ai", "floor")
            if "w5" in results["workloads"] and impl in results["versions"]
        ],
        *(
            ["- W6 raw floor: " + ", ".join(f"{k} {v}" for k, v in results["versions"]["raw-floor"].items())]
            if "w6" in results["workloads"] and "raw-floor" in results["versions"]
            else []
        ),
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {name} | {measured} | {'yes' if met else '**no**'} |" for name, measured, met in targets(results)],
        "",
        "![trio-agents / peer ratios](bench/ratios.png)",
        "",
        "![each workload: trio-agents, its peers and the floor](bench/standing.png)",
        "",
    ]
    for workload, table in results["workloads"].items():
        lines += [f"## {TITLES[workload]}", "", _describe(workload), ""]
        if workload == "w5":
            lines += _w5_table(table)
            continue
        if workload == "w6":
            lines += _w6_table(table, results.get("notes", {}).get("w6", {}))
            continue
        if workload == "w1_durable":
            lines += _w1_durable_table(table, results.get("notes", {}).get("w1_durable", {}))
            continue
        impls = [impl for impl in IMPLS if impl in table]
        header = "| metric | " + " | ".join(f"{impl} min / median / max" for impl in impls)
        if len(impls) > 1:
            header += " | " + " | ".join(f"ratio vs {peer}" for peer in impls[1:])
        lines += [header + " |", "|---" * (2 * len(impls)) + "|"]
        for metric, label, unit, _ in METRICS[workload]:
            if metric not in table["trio-agents"]:
                continue
            cells = [" / ".join(_fmt(v) for v in stats(table[impl][metric])) for impl in impls]
            ratios = []
            for peer in impls[1:]:
                ours, theirs = statistics.median(table["trio-agents"][metric]), statistics.median(table[peer][metric])
                ratios.append(f"{ours / theirs:.3f}" if theirs else "–")
            lines.append(f"| {label} ({unit}) | " + " | ".join(cells + ratios) + " |")
        lines.append("")
    lines += [
        "Ratios are trio-agents' median over the peer's median (below 1: trio-agents uses less; for",
        "throughput, above 1 is better). Reproduce: `make bench` (`make bench-quick`: W1 alone; `make bench-served`:",
        "W5 alone; `make bench-tokens`: W6 alone; `make bench-durable`: W1 durable alone).",
        "",
    ]
    profile = BENCH / "PROFILE.md"
    if profile.exists():
        lines += [profile.read_text().rstrip(), ""]
    return "\n".join(lines)


def _w5_table(table: dict[str, dict[str, list[float]]]) -> list[str]:
    """W5's servers side by side (medians, and min–max), with each one's ratio to the floor (b)."""
    impls = [impl for impl in W5_IMPLS if impl in table]
    lines = [
        "| metric | " + " | ".join(f"{W5_LABELS[impl]} median (min–max)" for impl in impls)
        + " | trio-agents / (b) | (a) / (b) |",
        "|---" * (len(impls) + 3) + "|",
    ]  # fmt: skip
    for metric, label, unit, _ in METRICS["w5"]:
        if metric not in table.get("trio-agents", {}):
            continue
        cells = [_spread(table[impl][metric]) for impl in impls]
        floor = statistics.median(table["floor"][metric])
        ratios = [f"{statistics.median(table[impl][metric]) / floor:.2f}×" for impl in ("trio-agents", "pydantic-ai")]
        lines.append(f"| {label} ({unit}) | " + " | ".join(cells + ratios) + " |")
    lines.append("")
    return lines


def _w6_table(table: dict[str, dict[str, list[float]]], notes: dict[str, dict[str, str]]) -> list[str]:
    """W6 per format: each implementation's CPU per chunk (and trio-agents' model alone), over the raw floor's."""
    rows = [("raw-floor", "", "raw floor"), ("trio-agents", "", "trio-agents"),
            ("trio-agents", "model_", "trio-agents, model alone"), ("openai-agents", "", "openai-agents"),
            ("pydantic-ai", "", "pydantic-ai")]  # fmt: skip
    lines = [
        "| format | implementation | CPU per chunk (µs), median (min–max) | × the raw floor "
        "| time to first event (ms), median (min–max) |",
        "|---|---|---|---|---|",
    ]
    for fmt, spec in FORMATS.items():
        floor = table.get("raw-floor", {}).get(f"{fmt}_cpu_us_per_chunk")
        for impl, prefix, label in rows:
            figures = table.get(impl, {})
            cpu = figures.get(f"{fmt}_{prefix}cpu_us_per_chunk")
            if cpu is None:
                if not prefix and impl in table:
                    lines.append(f"| {spec.label} | {label} | not measured: {notes.get(impl, {}).get(fmt, '?')} | | |")
                continue
            ratio = f"{statistics.median(cpu) / statistics.median(floor):.2f}×" if floor else "–"
            first = _spread(figures[f"{fmt}_{prefix}first_event_ms"])
            lines.append(f"| {spec.label} | {label} | {_spread(cpu)} | {ratio} | {first} |")
    lines.append("")
    return lines


RATIOED = ("fresh_us_per_run", "shared_us_per_run", "concurrent_wall_s", "concurrent_runs_per_s")
PAIRED = {"fresh_over_memory": "fresh_us_per_run", "shared_over_memory": "shared_us_per_run"}
"""The paired ratios, and the column figure each stands beside."""


def _w1_durable_table(table: dict[str, dict[str, list[float]]], notes: dict[str, dict[str, str]]) -> list[str]:
    """W1 durable's columns side by side (medians, and min–max), with the ratios the targets name."""
    impls = [impl for impl in W1D_IMPLS if impl in table or impl in notes]
    lines = [
        "| metric | " + " | ".join(f"{W1D_LABELS[impl]} median (min–max)" for impl in impls)
        + " | SQLite / in memory | SQLite / openai-agents | PostgreSQL / in memory |",
        "|---" * (len(impls) + 4) + "|",
    ]  # fmt: skip

    def ratio(impl: str, over: str, metric: str) -> str:
        if metric in PAIRED and over == "trio-agents" and metric in table.get(impl, {}):
            return f"{statistics.median(table[impl][metric]):.2f}× (pairs)"
        if metric not in RATIOED or metric not in table.get(impl, {}) or metric not in table.get(over, {}):
            return "–"
        value = statistics.median(table[impl][metric]) / statistics.median(table[over][metric])
        return f"{value:.3f}" if value < 0.1 else f"{value:.2f}×"

    for metric, label, unit, _ in METRICS["w1_durable"]:
        if metric not in table.get("trio-agents-sqlite", {}):
            continue
        cells = []
        for impl in impls:
            if metric in table.get(impl, {}):
                cells.append(_spread(table[impl][metric]))
            elif impl in notes:
                cells.append(notes[impl].get("w1_durable", "not measured"))
            else:
                cells.append("–")
        ratios = [ratio("trio-agents-sqlite", "trio-agents", metric),
                  ratio("trio-agents-sqlite", "openai-agents-sqlite", metric),
                  ratio("trio-agents-postgres", "trio-agents", metric)]  # fmt: skip
        lines.append(f"| {label} ({unit}) | " + " | ".join(cells + ratios) + " |")
    lines.append("")
    return lines


def _spread(values: list[float]) -> str:
    low, mid, high = stats(values)
    return f"{_fmt(mid)} ({_fmt(low)}–{_fmt(high)})"


def _describe(workload: str) -> str:
    doc = {
        "w0": "1,000,000 items through a raw `trio.open_memory_channel` (one producer, one consumer), and the "
        "marginal cost of one streamed `TextDelta` through trio-agents (model chunk → event → channel → "
        "`RunStream` → consumer), from runs answering 1 and 2,001 words.",
        "w1": "One agent, one sync tool `add(a, b)` (each library runs it in a worker thread), a scripted offline "
        'model answering prompt k with the call `add(k, 1)`, then `"done k"`. 300 prompts one after another, '
        "each a fresh run (trio-agents: a fresh session per run, included in the time); 5 repetitions after a "
        "warm-up per process.",
        "w2": "1,000 W1 runs started at once in one process; peak RSS minus the baseline after one warm-up run.",
        "w2_50k": "W1 runs with an async tool (no worker thread: the runtime's own cost), 1,000 at once three "
        "times (median) and then 50,000 at once, in one process after a warm-up; the per-run cost should not "
        "grow with the runs in flight. Also the full (generation-2) collections of Python's cyclic collector "
        "during the 50,000 and their share of the wall time. trio-agents only.",
        "w3": "1,000 streamed runs whose model never answers, consumed in tasks owned by one block; the block is "
        "cancelled once all are parked. Time from the cancel until the block has exited, and the tasks "
        "still alive at that moment (openai-agents leaves its stream-cleanup tasks running).",
        "w4": "10,000 sessions, each with the history of one W1 run (trio-agents: a started session that ran "
        "it; openai-agents: `SQLiteSession` in memory, its lightest session; pydantic-ai: a copy of "
        "`all_messages()`), then all closed.",
        "w5": "Each server in its own process on loopback; the load from another (bench/served_client.py: trio and "
        "a minimal HTTP/1.1 client on raw sockets, the same for every server, far cheaper than any of them). M "
        "clients, one keep-alive connection each, loop: `POST /sessions`, then `POST /sessions/{id}/runs` "
        "streaming the run's events over SSE to the end of the body. 400 warm-up runs, then 1,500 measured; a "
        "fresh server per M. Server CPU per run is user + system time of the server process (all threads, from "
        "`/proc/<pid>/stat`) over the measured runs; latency runs from the first request to the end of the SSE "
        "body. trio-agents: `streams.open_server` (Hypercorn's Trio worker) serving W1's agent; (a) FastAPI + "
        "sse-starlette + uvicorn around pydantic-ai's `run_stream_events` with W1's `FunctionModel`; (b) the "
        "plumbing floor: the same stack sending the 8 messages of a trio-agents W1 run, made once at start-up, "
        "no agent. Two more take trio-agents' figure apart: the same agent with an async tool (no hop to a "
        "worker thread), and trio-agents' own plumbing (Hypercorn + Starlette + its SSE response) sending the "
        "pre-made messages with no runtime.",
        "w1_durable": "W1 (streamed; the model answers the latest prompt) with its sessions in a store, four "
        "columns in the same run, alternating: trio-agents in memory (no store: this run's reference), with "
        "`SQLiteStore` (a file in a temporary directory), with `PostgresStore` (a throwaway cluster the script "
        "starts with tests/pg.py, the tests' helper; not timed), and openai-agents with `SQLiteSession(id, "
        "db_path=FILE)` (a file, not `:memory:`). Two ways, the same for every column: a **fresh session per "
        "prompt** (a new id; for a store: claim, load, write the new session, release, all in the time, as W1 "
        "counts making a session), and **one session shared by all 300 prompts** (opened once per repetition; "
        "its history grows by 4 messages a run and goes to the model on every turn, so runs get slower in both "
        "libraries). 5 repetitions of 300 prompts after a warm-up, per process. trio-agents columns also run "
        "1,000 streamed runs at once, each its own fresh session, on one store: wall time, runs/s, runs that "
        'ended `completed`, every "database is locked" seen (raised, an `ErrorEvent`, or logged by the '
        "writer) and the store transactions they took (the writer commits every dirty session in one). A store's "
        "column also times its in-memory reference **paired**: beside each repetition on the store, the same "
        "repetition in memory in the same process (which goes first alternating), the two kept as a ratio; the "
        "targets against in memory are read from those pairs, since this VM's speed drifts from one process to "
        "the next (the columns run between leave it slower for a while) by more than a store's cost moves. "
        "Other ratios: medians over medians; below 1, the first uses less time.",
        "w6": "A loopback provider (bench/token_server.py, its own process) answers every request with one pre-built "
        "body of 5,000 one-token chunks in the provider's format (bench/token_bodies.py: Chat Completions, "
        "Anthropic Messages, Responses, Gemini `streamGenerateContent?alt=sse`), chunked transfer encoding, one "
        "HTTP chunk per SSE event, sent as fast as the client reads. CPU per chunk is the client process's user + "
        "system time (`time.process_time`) from just before the request to the end of the stream, over 5,000; "
        "time to first event is the wall time from the request to the first text piece. The raw floor: "
        "`httpx.AsyncClient` under Trio, httpx-sse's `aiter_sse` and `json.loads` of every event, the cheapest "
        "client there is to build on. trio-agents: the provider's model through the runtime (`Agent`, "
        "`open_runtime`, `session.run`, every `TextDelta` consumed), and the model alone (`model.stream`, every "
        "`TextChunk`). openai-agents: `OpenAIChatCompletionsModel` / `OpenAIResponsesModel` on an `AsyncOpenAI` "
        "client, `Runner.run_streamed`. pydantic-ai: its OpenAI chat / Responses, Anthropic and Google models, "
        "`run_stream_events`. Each process: one warm-up request per path and 3 measured, on a kept-alive "
        "connection; the text received is checked.",
    }
    return doc[workload]


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="W1 only; leave BENCHMARKS.md alone")
    parser.add_argument("--report", action="store_true", help="rewrite BENCHMARKS.md from bench/results.json only")
    parser.add_argument("--only", choices=[w for w, _, _ in FULL_PLAN], help="one workload, merged into results.json")
    args = parser.parse_args()
    if args.report:
        results = json.loads((BENCH / "results.json").read_text())
        chart(results, BENCH / "ratios.png")
        standing_chart(results, BENCH / "standing.png")
        (ROOT / "BENCHMARKS.md").write_text(report(results, results["elapsed_s"]))
        return
    started = time.monotonic()
    peers_python = ensure_peers()
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    if args.only:
        plan = [step for step in FULL_PLAN if step[0] == args.only]
    log(f"[bench] {'W1 only' if args.quick else args.only.upper() if args.only else 'W0–W6'}")
    results = run_plan(plan, peers_python)
    elapsed = time.monotonic() - started
    if args.only and (BENCH / "results.json").exists():
        previous = json.loads((BENCH / "results.json").read_text())
        previous["workloads"][args.only] = results["workloads"][args.only]
        previous.setdefault("notes", {})[args.only] = results.get("notes", {}).get(args.only, {})
        previous["versions"].update(results["versions"])
        previous.setdefault("alone", {})[args.only] = (
            f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} min"
        )
        for name, measured, met in targets(previous):
            log(f"  {'ok  ' if met else 'MISS'} {name}: {measured}")
        (BENCH / "results.json").write_text(json.dumps(previous, indent=1))
        chart(previous, BENCH / "ratios.png")
        standing_chart(previous, BENCH / "standing.png")
        (ROOT / "BENCHMARKS.md").write_text(report(previous, previous["elapsed_s"]))
        log(f"\n[bench] {args.only} done in {elapsed / 60:.1f} min; merged into results.json, wrote BENCHMARKS.md")
        return
    results.update(
        elapsed_s=elapsed, machine=machine(), date=f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    log("")
    for name, measured, met in targets(results):
        log(f"  {'ok  ' if met else 'MISS'} {name}: {measured}")
    if args.quick:
        (BENCH / "results-quick.json").write_text(json.dumps(results, indent=1))
        log(f"\n[bench] done in {elapsed / 60:.1f} min; results in bench/results-quick.json")
        return
    (BENCH / "results.json").write_text(json.dumps(results, indent=1))
    chart(results, BENCH / "ratios.png")
    standing_chart(results, BENCH / "standing.png")
    (ROOT / "BENCHMARKS.md").write_text(report(results, elapsed))
    log(f"\n[bench] done in {elapsed / 60:.1f} min; wrote BENCHMARKS.md, bench/ratios.png and bench/standing.png")


if __name__ == "__main__":
    main()
