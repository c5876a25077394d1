"""W1 against an earlier revision: this tree's µs per run over another commit's, in the same run.

For a change that must not slow the default path ("W1 stays within 5 %"):
the baseline revision is checked out into a temporary git worktree, and W1
(bench/w1_tool_turn.py, the same script for both, from this tree) runs
alternately in fresh processes against each tree's packages (A B A B ...),
with this tree's interpreter. Reported: the median µs per run of each and
their ratio, streamed and not.

    .venv/bin/python bench/w1_compare.py --rev 8094c21 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "w1_tool_turn.py"


def measure(tree: Path, prompts: int) -> dict[str, float]:
    """One fresh process running W1 on ``tree``'s packages: the median µs per run of its repetitions."""
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT / 'bench'}"}
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--prompts", str(prompts), "--reps", "5"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT / "bench",
        check=True,
    )
    metrics = json.loads(completed.stdout.strip().splitlines()[-1])["metrics"]
    return {key: statistics.median(values) for key, values in metrics.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rev", required=True, help="the baseline commit")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), args.rev], check=True)
        try:
            runs: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
            for i in range(args.rounds):
                for name, tree in (("base", base), ("this", ROOT)) if i % 2 == 0 else (("this", ROOT), ("base", base)):
                    runs[name].append(measure(tree, args.prompts))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=True)
    print(f"W1, this tree against {args.rev}, {args.rounds} rounds alternating, median of medians:")
    for key in ("streamed_us_per_run", "plain_us_per_run"):
        before = statistics.median(run[key] for run in runs["base"])
        after = statistics.median(run[key] for run in runs["this"])
        print(f"  {key:<22} {before:7.1f} -> {after:7.1f} µs  ({after / before - 1:+.1%})")


if __name__ == "__main__":
    main()
