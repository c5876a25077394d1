"""The typed-output example runs offline and shows the form filling in, then the validated value."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from types import ModuleType

    import pytest
    import trio.testing


async def test_typed_output_fills_in_live_then_prints_the_validated_forecast(
    capsys: pytest.CaptureFixture[str],
    load_example: Callable[[str], ModuleType],
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Progress of the tool, partial forms growing day by day, then a real ``Forecast``."""
    example = load_example("typed_output")
    assert await example.main() == 0
    out = capsys.readouterr().out
    assert "-> get_forecast({'city': 'Lisbon', 'days': 3})" in out
    assert "day 2: 2/3" in out  # ToolProgress from the tool
    partials = [line for line in out.splitlines() if line.startswith("  ~ ")]
    # The form fills in: each day appears before the whole answer is written.
    assert any("days=[sunny 19°]" in line for line in partials)
    assert any("days=[sunny 19°, cloudy 17°]" in line for line in partials)
    assert partials.index(next(p for p in partials if "sunny 19°]" in p)) < len(partials) - 1
    assert "Forecast for Lisbon:" in out
    assert "day 3: showers  10–16 °C" in out
    assert "umbrella: yes" in out
    assert out.rstrip().endswith("[run finished: completed]")


async def test_the_example_agent_is_typed_and_validates(load_example: Callable[[str], ModuleType]) -> None:
    """``make_agent`` asks for a ``Forecast`` through the ``final_result`` tool."""
    example = load_example("typed_output")
    agent = example.make_agent()
    assert agent.output_type is example.Forecast
    (spec,) = agent.output.tool_specs()
    assert spec.name == "final_result"
    assert spec.parameters["required"] == ["city", "days", "umbrella"]


def test_typed_output_runs_as_a_script(run_example: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """`python examples/typed_output.py` exits 0 with no network and no key."""
    completed = run_example("typed_output")
    assert completed.returncode == 0, completed.stderr
    assert "umbrella: yes" in completed.stdout
