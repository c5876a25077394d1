"""Quickstart: an agent with two tools answers one question, streaming every event.

Runs offline on ScriptedModel (no key, no network):

    python examples/quickstart.py

or against a real model, with nothing else changed (any model string of the
README's "Real models" table):

    OPENAI_API_KEY=... python examples/quickstart.py --model openai:gpt-4o-mini
    ANTHROPIC_API_KEY=... python examples/quickstart.py --model anthropic:claude-sonnet-4-5
    GEMINI_API_KEY=... python examples/quickstart.py --model google:gemini-2.5-flash
    GROQ_API_KEY=... python examples/quickstart.py --model groq:llama-3.3-70b-versatile
    python examples/quickstart.py --model ollama:llama3.2      # a local Ollama

It exits 1 when the run ends otherwise than completed (a missing key, a
server that is not running ...), saying why; 2 for a model string it does
not know.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import trio

from agents import Agent, AgentDefinitionError, ScriptedModel, ToolCall, resolve_model, tool
from runtime import open_runtime
from runtime.events import (
    ErrorEvent,
    ReasoningDelta,
    RunFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)

if TYPE_CHECKING:
    from agents.models import Turn

FORECASTS = {"paris": (18, "light rain"), "lisbon": (24, "sunny")}


@tool
async def get_weather(city: str) -> dict[str, object]:
    """Look up today's weather.

    Args:
        city: The city, e.g. "Paris".
    """
    await trio.sleep(0.05)  # stands in for an HTTP call
    celsius, sky = FORECASTS.get(city.lower(), (20, "unknown"))
    return {"city": city, "celsius": celsius, "sky": sky}


@tool
def to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from Celsius to Fahrenheit (a sync tool: it runs in a worker thread).

    Args:
        celsius: Degrees Celsius.
    """
    return round(celsius * 9 / 5 + 32, 1)


def make_agent(model: str = "scripted") -> Agent:
    """The agent; by default its scripted model answers like an LLM would."""
    script: list[Turn] = [
        # Turn 1: two tool calls at once; the runtime runs them concurrently.
        [ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_weather", {"city": "Lisbon"})],
        # Turn 2: one more tool call, using what came back.
        ToolCall("to_fahrenheit", {"celsius": 24}),
        # Turn 3: the answer, streamed word by word.
        "Lisbon is the warmer one today: sunny and 24 °C (75.2 °F), while Paris has light rain at 18 °C.",
    ]
    return Agent(
        name="weather",
        instructions="You compare the weather in cities. Use the tools.",
        model=resolve_model(model, scripted=ScriptedModel(script)),
        tools=[get_weather, to_fahrenheit],
    )


async def main(argv: list[str] | None = None) -> int:
    """Ask one question and print the run as it streams; returns the exit status."""
    parser = argparse.ArgumentParser(description="An agent with two tools answers one question.")
    parser.add_argument("--model", default="scripted", help="scripted (default), openai:<model>, groq:<model> ...")
    options = parser.parse_args(argv or [])
    try:
        agent = make_agent(options.model)
    except AgentDefinitionError as exc:
        parser.error(str(exc))  # exits with status 2
    question = "Which is warmer today, Paris or Lisbon?"
    print(f"> {question}\n")
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run(question) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    print(event.text, end="", flush=True)
                elif isinstance(event, ReasoningDelta):
                    print(f"\x1b[2m{event.text}\x1b[0m", end="", flush=True)
                elif isinstance(event, ToolCallStarted):
                    args = ", ".join(f"{k}={v!r}" for k, v in event.arguments.items())
                    print(f"  -> {event.name}({args})")
                elif isinstance(event, ToolCallFinished):
                    outcome = f"error: {event.error}" if event.error else repr(event.result)
                    print(f"  <- {event.name}: {outcome}")
                elif isinstance(event, ErrorEvent):
                    print(f"\n[{event.kind} error] {event.message}")
                elif isinstance(event, RunFinished):
                    print(f"\n\n[run finished: {event.reason}]")
        usage = stream.result.usage
        print(f"[usage: {usage.input_tokens} input + {usage.output_tokens} output tokens]")
    return 0 if stream.result.reason == "completed" else 1


if __name__ == "__main__":
    sys.exit(trio.run(main, sys.argv[1:]))
