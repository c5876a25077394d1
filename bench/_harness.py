"""What every workload script shares: picking the implementation, and printing one JSON result.

Stdlib only: it runs in trio-agents' virtualenv and in the peers' one.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import resource
import sys
import time
from typing import Any

IMPLS = {"trio-agents": "impl_trio_agents", "openai-agents": "impl_openai_agents", "pydantic-ai": "impl_pydantic_ai"}


def parse(description: str, **sizes: int) -> argparse.Namespace:
    """Parse ``--impl`` and one ``--<size>`` option per keyword (its default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--impl", choices=sorted(IMPLS), default="trio-agents")
    for name, default in sizes.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    return parser.parse_args()


def load(impl: str) -> Any:
    """Import ``bench/impl_<impl>.py`` (the script's folder is first on sys.path)."""
    return importlib.import_module(IMPLS[impl])


def emit(workload: str, impl: str, module: Any, metrics: dict[str, Any]) -> None:
    """Print the result as the last line of stdout, for the runner."""
    record = {"workload": workload, "impl": impl, "versions": module.VERSIONS, "metrics": metrics}
    sys.stdout.write(json.dumps(record) + "\n")


def current_rss_kib() -> float:
    """The process's resident memory now, in KiB (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1024


def quiet_gc() -> None:
    """Start a measurement from a collected heap."""
    gc.collect()


class Gen2Timer:
    """Within ``with Gen2Timer() as timer:``, how many full (generation-2) collections ran, and for how long."""

    def __init__(self) -> None:
        self.collections = 0
        self.seconds = 0.0
        self._began = 0.0

    def __enter__(self) -> Gen2Timer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.collections += 1
            self.seconds += time.perf_counter() - self._began
