"""W2 at scale: W1 runs (async tool) at 1,000 and at ``--runs`` (50,000) at once, in one process.

The per-run cost should not grow with the number of runs in flight: µs/run at
50,000 against µs/run at 1,000, measured in the same process (1,000 runs
``--reps`` times, median, after a warm-up), their ratio (target ≤ 1.15), the
peak RSS over the baseline per run at 50,000 (target ≤ 16 KiB), and how many
generation-2 collections of the cyclic collector ran during the 50,000 runs
and what share of the wall time they took.

The tool is async (``add`` without a worker thread), so the measure is the
runtime's own cost, not the thread pool's. trio-agents only: run with its
interpreter, ``PYTHONPATH=. .venv/bin/python bench/w2_scale.py``.
"""

from __future__ import annotations

import statistics

from _harness import emit, load, parse, quiet_gc

SMALL = 1000


def main() -> None:
    args = parse(__doc__ or "", runs=50_000, reps=3)
    module = load(args.impl)
    module.w2(SMALL, async_tool=True)  # warm-up
    small = []
    for _ in range(args.reps):
        quiet_gc()
        small.append(module.w2(SMALL, async_tool=True)["wall_s"] / SMALL * 1e6)
    quiet_gc()
    large = module.w2(args.runs, async_tool=True)
    us_small = statistics.median(small)
    us_large = large["wall_s"] / args.runs * 1e6
    metrics = {
        "us_per_run_1k": us_small,
        "us_per_run_50k": us_large,
        "ratio_50k_1k": us_large / us_small,
        "peak_rss_kib_per_run_50k": large["peak_rss_kib_per_run"],
        "gen2_collections_50k": large["gen2_collections"],
        "gen2_share_50k": large["gen2_share"] * 100,
    }
    emit("w2_50k", args.impl, module, metrics)


if __name__ == "__main__":
    main()
