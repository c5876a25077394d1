"""The quickstart example and the README's example run offline and show what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def test_quickstart_streams_tool_calls_text_and_usage(
    capsys: pytest.CaptureFixture[str], load_example: Callable[[str], ModuleType]
) -> None:
    """The quickstart prints each tool call, the streamed answer, the finish reason and usage."""
    quickstart = load_example("quickstart")
    assert await quickstart.main() == 0
    out = capsys.readouterr().out
    assert "-> get_weather(city='Paris')" in out
    assert "-> get_weather(city='Lisbon')" in out
    assert "<- to_fahrenheit: 75.2" in out
    assert "Lisbon is the warmer one today" in out
    assert "[run finished: completed]" in out
    assert "[usage: " in out


def test_quickstart_runs_as_a_script(run_example: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """`python examples/quickstart.py` exits 0 with no network and no key."""
    completed = run_example("quickstart")
    assert completed.returncode == 0, completed.stderr
    assert "[run finished: completed]" in completed.stdout


def test_readme_example_runs() -> None:
    """The README's first Python example runs as written and prints its answers."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "[add -> 5]\n2 + 3 = 5\nStill 5.\n"
