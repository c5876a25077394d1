"""W4 scale: ``--sessions`` idle sessions open at once, each with a short history.

RSS per session, and the time to close them all.
"""

from __future__ import annotations

from _harness import emit, load, parse


def main() -> None:
    args = parse(__doc__ or "", sessions=10_000)
    module = load(args.impl)
    emit("w4", args.impl, module, module.w4(args.sessions))


if __name__ == "__main__":
    main()
