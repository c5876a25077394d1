"""Every example that runs an agent exits non-zero when its run ends in error, saying why."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import pytest
import trio

from agents import Agent, ScriptedModel, ServerError, ToolCall, tool
from streams import open_server

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import ModuleType

    from agents import ModelRequest
    from agents.models import Turn

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
