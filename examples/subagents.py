"""Sub-agents: a coordinator hands tasks to a researcher and a writer, at the same time.

An agent with ``sub_agents=[...]`` gets a ``transfer_task(agent, task)`` tool;
each transfer runs the sub-agent's own loop, with its own model and tools,
nested in that tool call. The sub-agent's events arrive in the coordinator's
stream wrapped in ``SubAgentEvent``s (``event.innermost()`` unwraps them), and
``AgentSwitched`` marks each hand-over. The run's usage includes the
sub-agents'.

Runs offline on ScriptedModel (no key, no network):

    python examples/subagents.py

Swap each ``ScriptedModel`` for a real model to talk to an LLM; nothing else changes.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import trio

from agents import TRANSFER_TOOL, Agent, AssistantMessage, ScriptedModel, ToolCall, ToolResultMessage, tool
from runtime import open_runtime
from runtime.events import (
    AgentSwitched,
    ErrorEvent,
    RunFinished,
    SubAgentEvent,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from agents import ModelRequest
    from agents.models import Turn
    from runtime.events import Event

NOTES = {
    "trio": "Trio is a Python library for async concurrency and I/O, first released by Nathaniel J. Smith in 2017.",
    "nurseries": "A nursery owns the tasks started in it: its block exits only once every one of them has finished.",
    "cancel scopes": "A cancel scope cancels everything inside it, and timeouts are cancel scopes with a deadline.",
}


@tool
async def search_notes(topic: str) -> str:
    """Look a topic up in the research notes.

    Args:
        topic: The topic, e.g. "nurseries".
    """
    await trio.sleep(0.02)  # stands in for a search API
    return NOTES.get(topic.lower(), f"nothing on {topic!r}")


@tool
def count_words(text: str) -> int:
    """Count the words of a draft (a sync tool: it runs in a worker thread).

    Args:
        text: The draft.
    """
    return len(text.split())


HOOK = "Concurrency you can read top to bottom, where no task is ever forgotten."


def combine(request: ModelRequest) -> Turn:
    """The coordinator's final turn: the note, built from what the specialists sent back."""
    asked = {
        call.call_id: call.arguments["agent"]
        for message in request.messages
        if isinstance(message, AssistantMessage)
        for call in message.tool_calls
        if call.name == TRANSFER_TOOL and not isinstance(call.arguments, str)
    }
    answers = {
        asked[message.call_id]: message.content
        for message in request.messages
        if isinstance(message, ToolResultMessage) and message.call_id in asked
    }
    return f"{answers.get('writer', '')} {answers.get('researcher', '')}".strip()


def make_agent() -> Agent:
    """The coordinator and its two specialists; their scripted models answer like LLMs would."""
    researcher = Agent(
        name="researcher",
        instructions="You find facts in the research notes with search_notes.",
        model=ScriptedModel(
            [
                [
                    ToolCall("search_notes", {"topic": "trio"}),
                    ToolCall("search_notes", {"topic": "nurseries"}),
                ],
                f"{NOTES['trio']} {NOTES['nurseries']}",
            ]
        ),
        tools=[search_notes],
    )
    writer = Agent(
        name="writer",
        instructions="You write short, plain English.",
        model=ScriptedModel([ToolCall("count_words", {"text": HOOK}), HOOK]),
        tools=[count_words],
    )
    script: list[Turn | Callable[[ModelRequest], Turn]] = [
        # Turn 1: both specialists at once; each transfer is a tool call, and they run concurrently.
        [
            ToolCall(TRANSFER_TOOL, {"agent": "researcher", "task": "Who made Trio, when, and what is a nursery?"}),
            ToolCall(TRANSFER_TOOL, {"agent": "writer", "task": "Write a one-line hook about safe concurrency."}),
        ],
        # Turn 2: the note, from their answers.
        combine,
    ]
    return Agent(
        name="coordinator",
        instructions="You write short notes by delegating research and writing to your specialists.",
        model=ScriptedModel(script),
        sub_agents=[researcher, writer],
    )


def shorten(text: str, width: int = 60) -> str:
    """``text`` cut to ``width`` characters."""
    return text if len(text) <= width else f"{text[: width - 1]}…"


class Printer:
    """Prints each agent's events indented under its name; concurrent agents' text is kept apart."""

    def __init__(self, top: str) -> None:
        self.top = top
        self.text: dict[tuple[str, ...], list[str]] = {}
        """Text streamed so far by each agent (by path), printed as a line when its turn ends."""
        self.usage: dict[str, list[int]] = {}
        """Input and output tokens per agent."""

    def line(self, path: tuple[str, ...], text: str) -> None:
        name = path[-1] if path else self.top
        print(f"{'    ' * len(path)}{name}: {text}")

    def flush(self, path: tuple[str, ...]) -> None:
        words = self.text.pop(path, [])
        if words:
            self.line(path, "".join(words).strip())

    def show(self, event: Event) -> None:
        path: tuple[str, ...] = ()
        if isinstance(event, SubAgentEvent):
            path, event = event.innermost()
        if isinstance(event, TextDelta):
            self.text.setdefault(path, []).append(event.text)
            return
        self.flush(path)
        if isinstance(event, AgentSwitched):
            print(f"{'    ' * len(path)}── {event.from_agent} → {event.to_agent}")
        elif isinstance(event, ToolCallStarted):
            shown = ", ".join(f"{k}={shorten(repr(v), 50)}" for k, v in event.arguments.items())
            self.line(path, f"-> {event.name}({shown})")
        elif isinstance(event, ToolCallFinished):
            outcome = f"error: {event.error}" if event.error else shorten(repr(event.result))
            self.line(path, f"<- {event.name}: {outcome}")
        elif isinstance(event, Usage):
            counts = self.usage.setdefault(path[-1] if path else self.top, [0, 0])
            counts[0] += event.input_tokens
            counts[1] += event.output_tokens
        elif isinstance(event, ErrorEvent):
            self.line(path, f"[{event.kind} error] {event.message}")
        elif isinstance(event, RunFinished) and path:
            self.line(path, f"[finished: {event.reason}]")


async def main(argv: list[str] | None = None) -> int:
    """Ask the coordinator for a note and print every agent's events; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)

    agent = make_agent()
    request = "Write a two-sentence note introducing Trio to a Python developer."
    print(f"> {request}\n")
    printer = Printer(agent.name)
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run(request) as stream:
            async for event in stream:
                printer.show(event)
        result = stream.result
    print(f"\n[run finished: {result.reason}]")
    by_agent = ", ".join(f"{name} {inp} + {out}" for name, (inp, out) in printer.usage.items())
    print(f"[usage by agent: {by_agent}]")
    print(
        f"[usage: {result.usage.input_tokens} input + {result.usage.output_tokens} output tokens, sub-agents included]"
    )
    return 0 if result.reason == "completed" else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
