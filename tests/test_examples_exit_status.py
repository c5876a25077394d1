"""Every example that runs an agent exits non-zero when its run ends in error, saying why; given a bad flag
or a port it cannot have, it says so in a line, not a traceback."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import trio

from agents import Agent, ScriptedModel, ServerError, ToolCall, tool
from streams import open_server
from tests.processes import ROOT

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import ModuleType

    from agents import ModelRequest
    from agents.models import Turn

    RunExample = Callable[..., subprocess.CompletedProcess[str]]

OVERLOADED = "provider: HTTP 503: overloaded"


def _overloaded(request: ModelRequest) -> Turn:
    raise ServerError(OVERLOADED, status=503, provider="provider")


def failing_agent(*args: object) -> Agent:
    """An agent whose model is down for good (a ``make_agent`` stand-in: any arguments)."""
    return Agent(name="down", model=ScriptedModel(itertools.repeat(_overloaded)))


@pytest.mark.parametrize(
    ("example", "argv"),
    [
        ("quickstart", []),
        ("typed_output", []),
        ("approval", ["--yes"]),
        ("subagents", []),
        ("transcript", None),  # its argument: the transcript's path
        ("durable", ["--db", "{tmp}/sessions.db"]),
    ],
)
async def test_an_example_whose_run_ends_in_error_returns_1(
    example: str,
    argv: list[str] | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    load_example: Callable[[str], ModuleType],
) -> None:
    """With its model failing, each example's main returns 1 and prints the model's error."""
    module = load_example(example)
    monkeypatch.setattr(module, "make_agent", failing_agent)
    with trio.fail_after(20):
        arguments = [str(tmp_path / "transcript.jsonl")] if argv is None else argv
        status = await module.main([argument.replace("{tmp}", str(tmp_path)) for argument in arguments])
    captured = capsys.readouterr()
    assert status == 1, captured
    assert OVERLOADED in captured.out + captured.err


async def test_the_transcript_example_exits_0_and_writes_its_transcript(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], load_example: Callable[[str], ModuleType]
) -> None:
    """Its two questions answered, the transcript holds every event, and main returns 0."""
    path = tmp_path / "transcript.jsonl"
    with trio.fail_after(20):
        assert await load_example("transcript").main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "Lisbon is in Portugal." in out
    assert path.read_text().count('"type": "RunFinished"') == 2


def run_transcript(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python examples/transcript.py *args`` in ``cwd`` (where a transcript path that is not one would land)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "transcript.py"), *args],
        cwd=cwd,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=60,
        env={"PATH": "", "PYTHONWARNINGS": "error", "PYTHONPATH": str(ROOT)},
        check=False,
    )


def test_the_transcript_example_answers_help_without_running(tmp_path: Path) -> None:
    """``--help`` ran the agent and wrote a transcript named ``--help``: now it prints the usage, exit 0,
    and writes nothing."""
    completed = run_transcript(tmp_path, "--help")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("usage: transcript.py [-h] [path]")
    assert "> Where is Lisbon?" not in completed.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_transcript_example_refuses_a_path_it_cannot_write_with_usage(tmp_path: Path) -> None:
    """A transcript in a missing directory was a FileNotFoundError traceback: now the usage and the reason,
    exit 2, before any run."""
    completed = run_transcript(tmp_path, str(tmp_path / "missing" / "t.jsonl"))
    assert completed.returncode == 2, completed.stderr
    assert "transcript.py: error: cannot write the transcript: [Errno 2] No such file or directory" in (
        completed.stderr
    )
    assert "Traceback" not in completed.stderr
    assert completed.stdout == ""


async def test_the_webhook_bot_selftest_exits_1_when_its_agent_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], load_example: Callable[[str], ModuleType]
) -> None:
    """The bot's self-test fails (exit status 1) when the agent's runs end in error."""
    module = load_example("webhook_bot")
    monkeypatch.setattr(module, "make_agent", failing_agent)
    with trio.fail_after(20):
        assert await module.main(["--port", "0", "--selftest"]) == 1
    assert "[FAILED] wait for the reply" in capsys.readouterr().out


@tool
def noop() -> str:
    """Do nothing."""
    return "ok"


async def test_the_remote_client_exits_1_when_the_remote_run_ends_in_error(
    capsys: pytest.CaptureFixture[str], load_example: Callable[[str], ModuleType]
) -> None:
    """``remote_client.py --once`` against a served agent whose model fails prints the error and returns 1.

    A real server on loopback: the real clock, bounded by ``fail_after``.
    """
    client = load_example("remote_client")
    agent = Agent(name="served", model=ScriptedModel([ToolCall("noop"), _overloaded]), tools=[noop])
    with trio.fail_after(20):
        async with open_server(agent) as server:
            status = await client.attach(server.url, "s1", "go", once=True)
    captured = capsys.readouterr()
    assert status == 1, captured
    assert OVERLOADED in captured.out
    assert "error: the run ended with error" in captured.err


def assert_one_line_error(completed: subprocess.CompletedProcess[str], status: int, says: str) -> None:
    """The script exited with ``status``, its error saying ``says``, and no traceback."""
    assert completed.returncode == status, completed.stderr
    assert says in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    ("example", "argv", "says"),
    [
        (example, argv, says)
        for example in ("serve", "inspector")
        for argv, says in [
            (["--token", ""], "argument --token: must not be empty"),
            (["--token", "a b"], "argument --token: must not be empty nor hold spaces"),
            (["--port", "70000"], "argument --port: must be 0 to 65535, not 70000"),
            (["--host", "0.0.0.0"], "or pass allow_unauthenticated_remote=True (--allow-unauthenticated-remote)"),
        ]
    ]
    + [
        ("webhook_bot", ["--secret", ""], "error: --secret: the secret is empty"),
        ("webhook_bot", ["--secret", "a b"], "error: --secret: the secret holds spaces"),
        ("webhook_bot", ["--port", "70000"], "argument --port: must be 0 to 65535, not 70000"),
    ],
)
def test_a_served_example_refuses_a_bad_flag_in_a_line_with_exit_2(
    run_example: RunExample, example: str, argv: list[str], says: str
) -> None:
    """An empty or spaced token, a port past 65535, or a non-loopback host with no token ended in a
    ValueError, OverflowError or UnsafeBindError traceback: now an ``error:`` line and exit 2."""
    assert_one_line_error(run_example(example, *argv), 2, says)


@pytest.mark.parametrize("example", ["serve", "inspector", "webhook_bot"])
def test_a_served_example_on_a_port_in_use_says_so_in_a_line_with_exit_1(run_example: RunExample, example: str) -> None:
    """A port another socket listens on ended the inspector and the webhook bot in an OSError traceback:
    now, as for serve.py, an ``error:`` line naming the port, and exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = run_example(example, "--port", str(port))
    assert_one_line_error(completed, 1, "error: cannot ")
    assert f"127.0.0.1:{port}: " in completed.stderr.splitlines()[0]
