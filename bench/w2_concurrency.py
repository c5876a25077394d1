"""W2 concurrency: ``--runs`` W1 runs at once in one process.

Wall time, runs/s, and peak RSS minus the baseline (after one warm-up run)
per run. One measurement per process, so the peak is this workload's own.
"""

from __future__ import annotations

from _harness import emit, load, parse


def main() -> None:
    args = parse(__doc__ or "", runs=1000)
    module = load(args.impl)
    result = module.w2(args.runs)
    result["runs_per_s"] = args.runs / result["wall_s"]
    emit("w2", args.impl, module, result)


if __name__ == "__main__":
    main()
