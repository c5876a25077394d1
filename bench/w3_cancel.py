"""W3 cancel: ``--runs`` runs parked in a model that never answers, cancelled together.

ms from the cancel until the block that owns them has exited, and the number
of tasks still alive at that moment (beyond the measuring task and the
event loop's own).
"""

from __future__ import annotations

from _harness import emit, load, parse


def main() -> None:
    args = parse(__doc__ or "", runs=1000)
    module = load(args.impl)
    emit("w3", args.impl, module, module.w3(args.runs))


if __name__ == "__main__":
    main()
