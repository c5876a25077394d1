"""A custom stream handler: every event of a session written to a JSONL transcript.

    python examples/transcript.py [transcript.jsonl]

The handler runs in a task of the session with a buffer of its own
(``overflow="drop_oldest"`` here, so a slow disk can never slow the agent);
``handler.statistics()`` says what it wrote and what it dropped. It exits 1
when a run ends in error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from agents import Agent, ScriptedModel, ToolCall, tool
from runtime import RunFailedError, open_runtime

if TYPE_CHECKING:
    from runtime.events import Event


@tool
async def lookup(city: str) -> str:
    """Look up a city's country.

    Args:
        city: The city.
    """
    return {"Paris": "France", "Lisbon": "Portugal"}.get(city, "unknown")


def to_json(event: Event) -> str:
    """One transcript line: the event's type and its fields."""
    return json.dumps({"type": type(event).__name__, **attrs.asdict(event)}, default=repr)


def make_agent() -> Agent:
    """The agent: it looks the city up, then answers."""
    return Agent(
        name="geo",
        model=ScriptedModel([ToolCall("lookup", {"city": "Lisbon"}), "Lisbon is in Portugal.", "You're welcome!"]),
        tools=[lookup],
    )


async def main(argv: list[str] | None = None) -> int:
    """Run two questions with a transcript handler attached; returns the exit status."""
    parser = argparse.ArgumentParser(description="Write every event of a session to a JSONL transcript.")
    parser.add_argument(
        "path", nargs="?", type=Path, default=Path("transcript.jsonl"), help="the transcript (default transcript.jsonl)"
    )
    path: Path = parser.parse_args(argv or []).path
    agent = make_agent()
    try:
        out = await trio.open_file(path, "w")
    except OSError as exc:
        parser.error(f"cannot write the transcript: {exc}")  # exits with status 2
    async with out:

        async def write(event: Event) -> None:
            await out.write(to_json(event) + "\n")

        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            handler = session.add_handler(write, buffer=1024, overflow="drop_oldest")
            status = 0
            for question in ("Where is Lisbon?", "Thanks!"):
                print(f"> {question}")
                try:
                    print((await session.ask(question)).output)
                except RunFailedError as exc:  # the transcript has the run's events all the same
                    print(f"error: the run ended with {exc.result.reason}: {exc}", file=sys.stderr)
                    status = 1
                    break
            await handler.drain()  # every event written before the session closes
        stats = handler.statistics()
    print(f"[transcript: {stats.handled} events in {path}, {stats.dropped} dropped]")
    return status


if __name__ == "__main__":
    sys.exit(trio.run(main, sys.argv[1:]))
