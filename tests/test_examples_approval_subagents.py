"""The approval and sub-agent examples run offline and show what they promise."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import trio

from tests import processes
from tests.processes import ROOT

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from types import ModuleType

    import pytest

    RunExample = Callable[..., subprocess.CompletedProcess[str]]

DELETE_PROMPT = "? Allow assistant to run delete_file(path='build/cache.tmp')? [y/N] "
PAY_PROMPT = "? Allow assistant to run send_payment(to='Globex Consulting', amount=250.0)? [y/N] "


async def test_approval_with_yes_approves_every_call_without_asking(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, load_example: Callable[[str], ModuleType]
) -> None:
    """With --yes every approval is accepted without reading input, and every tool runs."""

    def no_input(prompt: str = "") -> str:
        raise AssertionError(f"--yes must not ask: {prompt!r}")

    monkeypatch.setattr("builtins.input", no_input)
    approval = load_example("approval")
    assert await approval.main(["--yes"]) == 0
    out = capsys.readouterr().out
    assert f"  {DELETE_PROMPT}y (--yes)\n" in out
    assert f"  {PAY_PROMPT}y (--yes)\n" in out
    assert out.count("? Allow") == 2  # the 40 EUR payment is under the predicate's limit
    assert "  <- delete_file: 'deleted build/cache.tmp'\n" in out
    assert "  <- send_payment: 'paid 40.00 EUR to Acme Hosting'\n" in out
    assert "  <- send_payment: 'paid 250.00 EUR to Globex Consulting'\n" in out
    assert "declined" not in out
    assert "[run finished: completed]" in out


async def test_approval_asks_the_human_and_a_declined_call_does_not_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, load_example: Callable[[str], ModuleType]
) -> None:
    """Answering y runs the call; answering n gives the model "declined by user" and it carries on."""
    prompts: list[str] = []

    def answer(prompt: str = "") -> str:
        prompts.append(prompt)
        return "n" if "send_payment" in prompt else "y"

    monkeypatch.setattr("builtins.input", answer)
    approval = load_example("approval")
    assert await approval.main([]) == 0
    out = capsys.readouterr().out
    assert prompts == [f"  {DELETE_PROMPT}", f"  {PAY_PROMPT}"]
    assert "  <- delete_file: 'deleted build/cache.tmp'\n" in out
    assert "  <- send_payment: 'paid 40.00 EUR to Acme Hosting'\n" in out
    assert "  <- send_payment: error: declined by user\n" in out
    assert "paid 250.00 EUR" not in out  # the declined payment never ran
    assert "You declined send_payment(to='Globex Consulting', amount=250.0), so I left that alone." in out
    assert "[run finished: completed]" in out


async def test_approval_treats_end_of_input_as_no(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, load_example: Callable[[str], ModuleType]
) -> None:
    """With no input left, every question is declined and the run still completes."""

    def eof(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", eof)
    approval = load_example("approval")
    assert await approval.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("(no input: declined)") == 2
    assert "  <- delete_file: error: declined by user\n" in out
    assert "  <- send_payment: error: declined by user\n" in out
    assert "Done: send_payment(to='Acme Hosting', amount=40.0)." in out
    assert "[run finished: completed]" in out


def test_approval_runs_as_a_script_with_yes(run_example: RunExample) -> None:
    """`python examples/approval.py --yes` exits 0 unattended, with no network and no key."""
    completed = run_example("approval", "--yes")
    assert completed.returncode == 0, completed.stderr
    assert "  <- delete_file: 'deleted build/cache.tmp'\n" in completed.stdout
    assert "  <- send_payment: 'paid 250.00 EUR to Globex Consulting'\n" in completed.stdout
    assert "[run finished: completed]" in completed.stdout


async def test_approval_ctrl_c_at_the_prompt_stops_at_once() -> None:
    """Ctrl-C while the script waits at its [y/N] prompt prints "stopped" and exits 130 at once, with no
    traceback and no abort on the stdin its reading thread still holds."""
    with trio.fail_after(60):
        example = str(ROOT / "examples" / "approval.py")
        async with processes.running(example, env={"PYTHONPATH": str(ROOT)}, stdin_pipe=True) as child:
            await child.wait_for(re.compile(r"\[y/N\] $", re.MULTILINE))  # at the prompt, reading
            status = await child.interrupt()
    assert status == 130, child.describe()
    assert child.stdout.endswith("\nstopped (Ctrl-C): nothing more runs\n"), child.describe()
    assert child.stderr == ""


async def test_subagents_prints_each_agent_indented_and_total_usage(
    capsys: pytest.CaptureFixture[str], load_example: Callable[[str], ModuleType]
) -> None:
    """Each specialist's events are indented under its name, hand-overs are headers, and usage adds up."""
    subagents = load_example("subagents")
    assert await subagents.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    for header in (
        "── coordinator → researcher",
        "── researcher → coordinator",
        "── coordinator → writer",
        "── writer → coordinator",
    ):
        assert header in lines
    assert (
        "coordinator: -> transfer_task(agent='researcher', task='Who made Trio, when, and what is a nursery?')" in lines
    )
    assert "    researcher: -> search_notes(topic='trio')" in lines
    assert "    researcher: -> search_notes(topic='nurseries')" in lines
    assert "    researcher: [finished: completed]" in lines
    assert "    writer: <- count_words: 13" in lines
    assert "    writer: Concurrency you can read top to bottom, where no task is ever forgotten." in lines
    assert "    writer: [finished: completed]" in lines
    # Each sub-agent's lines come between its two headers.
    for name in ("researcher", "writer"):
        own = [i for i, line in enumerate(lines) if line.startswith(f"    {name}: ")]
        assert lines.index(f"── coordinator → {name}") < own[0]
        assert own[-1] < lines.index(f"── {name} → coordinator")
    final = next(line for line in lines if line.startswith("coordinator: Concurrency you can read"))
    assert "Nathaniel J. Smith in 2017" in final
    assert "[run finished: completed]" in lines
    by_agent = next(line for line in lines if line.startswith("[usage by agent: "))
    counts = {name: (int(i), int(o)) for name, i, o in re.findall(r"(\w+) (\d+) \+ (\d+)", by_agent)}
    assert set(counts) == {"coordinator", "researcher", "writer"}
    total = re.fullmatch(r"\[usage: (\d+) input \+ (\d+) output tokens, sub-agents included\]", lines[-1])
    assert total is not None
    assert int(total[1]) == sum(i for i, _ in counts.values())
    assert int(total[2]) == sum(o for _, o in counts.values())


def test_subagents_runs_as_a_script(run_example: RunExample) -> None:
    """`python examples/subagents.py` exits 0 with no network and no key."""
    completed = run_example("subagents")
    assert completed.returncode == 0, completed.stderr
    assert "── coordinator → researcher" in completed.stdout
    assert "    writer: [finished: completed]" in completed.stdout
    assert "[run finished: completed]" in completed.stdout
    assert "sub-agents included]" in completed.stdout
