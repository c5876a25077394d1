"""Where one W1 run's time goes: W1 (trio-agents, streamed) under cProfile, grouped by what the code does.

    .venv/bin/python bench/profile_w1.py            # this tree
    PYTHONPATH=/path/to/old/checkout .venv/bin/python bench/profile_w1.py   # another revision

Each function's own time (tottime) is put in one group by the file it lives
in. cProfile slows everything down, so read the shares, not the µs.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import impl_trio_agents

GROUPS = [  # (group, substrings of the file path), first match wins
    ("waiting in epoll (includes the tool thread's run)", ("method 'poll' of 'select.epoll'",)),
    (
        "thread hop (sync tool)",
        (
            "trio/_threads.py",
            "trio/_core/_thread_cache.py",
            "threading.py",
            "_thread.",
            "_wakeup_socketpair",
            "'recv' of '_socket",
            "'send' of '_socket",
        ),
    ),
    ("trio scheduler", ("trio/_core/", "trio._core", "outcome/", "outcome._impl", "_contextvars.Context")),
    ("model (ScriptedModel)", ("agents/models/",)),
    (
        "events (emit, pipe/channel, RunStream)",
        (
            "runtime/_pipe.py",
            "runtime/_stream.py",
            "trio/_channel.py",
            "runtime.events",
            "runtime/events.py",
            "trio._channel",
        ),
    ),
    ("tool (validation, call)", ("agents/_tools.py", "runtime/_threads.py", "pydantic", "functools")),
    ("bench harness", ("bench/",)),
]


def group_of(filename: str) -> str:
    for group, needles in GROUPS:
        if any(needle in filename for needle in needles):
            return group
    return "bookkeeping (loop, session, runtime, history)"


def main() -> None:
    prompts = 1000
    impl_trio_agents.w1(100, streamed=True)
    profiler = cProfile.Profile()
    profiler.enable()
    impl_trio_agents.w1(prompts, streamed=True)
    profiler.disable()
    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {}
    for (filename, _, name), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = group_of(f"{filename}:{name}")
        totals[key] = totals.get(key, 0.0) + tottime
    whole = sum(totals.values())
    print(f"W1 streamed, {prompts} runs under cProfile: {whole / prompts * 1e6:,.0f} µs/run (profiled)")
    for key, value in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"  {key:<52} {value / prompts * 1e6:7,.0f} µs  {value / whole:6.1%}")
    if "-v" in sys.argv:
        rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])  # type: ignore[attr-defined]
        for (filename, line, name), (_, _, tottime, _, _) in rows[:40]:
            group = group_of(f"{filename}:{name}")[:12]
            print(f"{tottime / prompts * 1e6:7.1f} µs  {group:<12} {filename}:{line} {name}")


if __name__ == "__main__":
    main()
