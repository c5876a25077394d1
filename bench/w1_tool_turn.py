"""W1 tool turn: sequential one-tool runs, streamed and not; µs per run.

One agent, one tool ``add(a: int, b: int) -> int``, an offline scripted model
that answers prompt k first with the tool call ``add(k, 1)``, then, after the
tool result, with the text ``"done k"``. ``--prompts`` prompts run one after
another, each a fresh run, consuming the streamed events (and, separately,
not streamed). A warm-up pass, then ``--reps`` repetitions: µs per run each.
"""

from __future__ import annotations

from _harness import emit, load, parse, quiet_gc


def main() -> None:
    args = parse(__doc__ or "", prompts=300, reps=5)
    module = load(args.impl)
    metrics: dict[str, list[float]] = {}
    for streamed, key in ((True, "streamed_us_per_run"), (False, "plain_us_per_run")):
        module.w1(max(args.prompts // 3, 1), streamed=streamed)  # warm-up
        values = []
        for _ in range(args.reps):
            quiet_gc()
            values.append(module.w1(args.prompts, streamed=streamed) / args.prompts * 1e6)
        metrics[key] = values
    emit("w1", args.impl, module, metrics)


if __name__ == "__main__":
    main()
