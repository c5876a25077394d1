"""W1 with OpenTelemetry installed and not configured, against W1 with tracing absent, in one process.

The target (issue 17): with ``opentelemetry-api`` installed and no SDK
configured, W1 costs at most 5 % more than without it. Modes, alternated
round by round (A B C A B C ...) so that drift hits each alike:

- ``absent``: as if ``opentelemetry-api`` were not installed (the runtime holds no tracing at all);
- ``unconfigured``: installed, the global (proxy) providers, no SDK: what a user who did nothing gets;
- ``noop-spans``: no-op providers given explicitly, so every run makes (no-op) spans and records (no-op)
  metrics: what a run would cost without the check that skips tracing on the proxy providers.

Reported: the median µs per run of each (streamed and not) and the ratios to ``absent``.

    .venv/bin/python bench/w1_tracing.py --prompts 300 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import trio
from impl_trio_agents import make_agent, run_one
from opentelemetry import metrics, trace

from runtime import _tracing, open_runtime

MODES = ("absent", "unconfigured", "noop-spans")


def w1(prompts: int, *, streamed: bool, mode: str) -> float:
    """µs per run of W1 in ``mode``."""
    agent = make_agent()
    kwargs: dict[str, Any] = {}
    saved = list(_tracing._otel)
    if mode == "absent":
        _tracing._otel[:] = [None]
    elif mode == "noop-spans":
        kwargs = {"tracer_provider": trace.NoOpTracerProvider(), "meter_provider": metrics.NoOpMeterProvider()}

    async def main() -> float:
        async with open_runtime(**kwargs) as runtime:
            assert (runtime._tracing is None) == (mode == "absent")
            start = time.perf_counter()
            for k in range(prompts):
                output = await run_one(runtime, agent, k, streamed=streamed)
            elapsed = time.perf_counter() - start
        assert output == f"done {prompts - 1}", output
        return elapsed

    try:
        return trio.run(main) / prompts * 1e6
    finally:
        _tracing._otel[:] = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {mode: {"streamed": [], "plain": []} for mode in MODES}
    for mode in MODES:  # warm-up
        w1(max(args.prompts // 3, 1), streamed=True, mode=mode)
    for _ in range(args.rounds):
        for streamed, key in ((True, "streamed"), (False, "plain")):
            for mode in MODES:
                results[mode][key].append(w1(args.prompts, streamed=streamed, mode=mode))
    medians = {mode: {key: statistics.median(values) for key, values in by.items()} for mode, by in results.items()}
    report: dict[str, Any] = {"us_per_run": medians, "ratio_to_absent": {}}
    for mode in MODES[1:]:
        report["ratio_to_absent"][mode] = {
            key: round(medians[mode][key] / medians["absent"][key], 4) for key in ("streamed", "plain")
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
