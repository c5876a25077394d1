"""The README's tracing example runs as written (in a process of its own: it sets the global tracer provider)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_tracing_example_prints_the_span_tree() -> None:
    """The "Tracing" example prints the user's span, the run's under it, and the run's chat and tool spans."""
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Tracing\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PYTHONWARNINGS": "error", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "handle request\n  invoke_agent calculator\n    chat scripted\n    execute_tool add\n    chat scripted\n"
    )
