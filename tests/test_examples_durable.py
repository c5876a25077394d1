"""``examples/durable.py`` as real processes: one stopped while its approval waits, the next one resuming it.

The first process is stopped the hard way (``SIGKILL``, or Ctrl-C at its
prompt, which the example turns into an immediate exit), right after it
printed that it waits: the test reads that line, never sleeps. Each process
has the real clock and a generous ``fail_after``; whatever is still running
is killed on the way out.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import trio

from tests import processes
from tests.processes import ROOT, Child

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

EXAMPLE = str(ROOT / "examples" / "durable.py")
WAITING = re.compile(r"^waiting for approval: (.*) \(question (\S+)\)$", re.MULTILINE)
TIMEOUT = 60


def running(*args: str) -> AbstractAsyncContextManager[Child]:
    """Run the example with ``args`` for the block, its stdin a pipe the test holds open (nobody answers)."""
    return processes.running(EXAMPLE, *args, env={"PYTHONPATH": str(ROOT)}, stdin_pipe=True)


async def run_to_end(*args: str) -> tuple[int, str, str]:
    """Run the example with ``args`` to its end: (exit status, stdout, stderr)."""
    async with running(*args) as child:
        status = await child.finish()
    return status, child.stdout, child.stderr


async def stop_while_waiting(db: Path, how: signal.Signals) -> tuple[str, str]:
    """Start a first run that asks at its prompt; once it says it waits, send ``how``. Returns the question."""
    async with running("--db", str(db), "--ask") as child:
        waiting = await child.wait_for(WAITING)
        await child.wait_for(re.compile(r"approve\? \[y/N\] $", re.MULTILINE))  # at the prompt, reading
        child.process.send_signal(how)
        status = await child.finish()
    assert status == (-signal.SIGKILL if how == signal.SIGKILL else 0), (status, child.stdout, child.stderr)
    assert "[run finished" not in child.stdout  # it never got to finish the run
    return waiting[1], waiting[2]


async def test_durable_resumes_the_approval_of_a_killed_process_and_the_tool_runs_once(tmp_path: Path) -> None:
    """Killed with SIGKILL while its approval waits, the next run finds the interrupted run and the
    pending approval, approves it and resumes: the tool runs exactly once and the run completes."""
    db = tmp_path / "sessions.db"
    deployments = tmp_path / "sessions.db.deployments"
    with trio.fail_after(TIMEOUT):
        message, question = await stop_while_waiting(db, signal.SIGKILL)
        assert message == "Allow ops to run deploy(version='2.0')?"
        assert not deployments.exists()  # not approved: the tool never ran
        status, out, err = await run_to_end("--db", str(db), "--approve")
    assert status == 0, (out, err)
    lines = out.splitlines()
    assert "session deploy-demo in " + str(db) + ": 1 run(s) so far" in lines
    # The history as the killed process left it: the user's message and the call waiting for its answer.
    assert lines[lines.index("history: 2 message(s)") + 1 :][:2] == [
        "  user: Deploy version 2.0 to production.",
        "  assistant: -> deploy(version='2.0')",
    ]
    assert "interrupted run found: deploy-demo-r1 stopped while it waited for an answer" in lines
    assert f"pending approval: {message} (question {question})" in lines
    assert "resuming deploy-demo-r1 (approve)" in lines
    assert "[run deploy-demo-r2 started, resuming deploy-demo-r1]" in lines
    assert "waiting for" not in out  # answered up front: not asked again
    assert "  <- deploy: 'deployed 2.0 (deployment #1)'" in lines
    assert "Done: deployed 2.0 (deployment #1)." in lines
    assert "[run finished: completed]" in lines
    assert deployments.read_text() == "2.0\n"  # the tool ran once


async def test_durable_after_the_resumed_run_nothing_is_pending_and_the_history_is_whole(tmp_path: Path) -> None:
    """A third run finds the whole conversation in the store and nothing pending, and asks anew."""
    db = tmp_path / "sessions.db"
    with trio.fail_after(TIMEOUT):
        await stop_while_waiting(db, signal.SIGKILL)
        status, out, err = await run_to_end("--db", str(db), "--approve")
        assert status == 0, (out, err)
        status, out, err = await run_to_end("--db", str(db), "--interrupt")
    assert status == 0, (out, err)
    lines = out.splitlines()
    assert "session deploy-demo in " + str(db) + ": 2 run(s) so far" in lines
    assert lines[lines.index("history: 4 message(s)") + 1 :][:4] == [
        "  user: Deploy version 2.0 to production.",
        "  assistant: -> deploy(version='2.0')",
        "  tool deploy: deployed 2.0 (deployment #1)",
        "  assistant: Done: deployed 2.0 (deployment #1).",
    ]
    assert "nothing pending" in lines
    assert "interrupted run found" not in out
    assert "> Deploy version 2.0 to production." in lines
    assert WAITING.search(out) is not None
    assert "stopped while waiting (--interrupt): the approval stays pending; run again to answer it" in lines


async def test_durable_ctrl_c_at_the_prompt_keeps_the_approval_and_a_decline_never_deploys(tmp_path: Path) -> None:
    """Ctrl-C at the prompt stops the process with the approval still pending; declining it next time
    resumes the run, the tool never runs, and the model hears it was declined."""
    db = tmp_path / "sessions.db"
    with trio.fail_after(TIMEOUT):
        message, question = await stop_while_waiting(db, signal.SIGINT)
        status, out, err = await run_to_end("--db", str(db), "--decline")
    assert status == 0, (out, err)
    lines = out.splitlines()
    assert f"pending approval: {message} (question {question})" in lines
    assert "[run deploy-demo-r2 started, resuming deploy-demo-r1]" in lines
    assert "  <- deploy: error: declined by user" in lines
    assert "The deployment did not happen (declined by user)." in lines
    assert "[run finished: completed]" in lines
    assert not (tmp_path / "sessions.db.deployments").exists()


def test_readme_durable_sessions_example_finds_the_first_process_history(tmp_path: Path) -> None:
    """The README's durable-sessions script, run twice in one directory: the second process opens the
    first one's session by its id, with its two messages and its run."""
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Durable sessions\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PYTHONWARNINGS": "error", "PYTHONPATH": str(ROOT)}
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs == ["history: 0 messages, runs: 0\nNoted.\n", "history: 2 messages, runs: 1\nNoted.\n"]
    assert (tmp_path / "sessions.db").exists()
