"""Typed output: the agent answers with a validated ``Forecast``, filled in live as the model writes it.

Runs offline on ScriptedModel (no key, no network), paced like a real model:

    python examples/typed_output.py

or against a real model (the default ``output_mode="tool"`` works with every model):

    OPENAI_API_KEY=... python examples/typed_output.py --model openai:gpt-4o-mini
    ANTHROPIC_API_KEY=... python examples/typed_output.py --model anthropic:claude-sonnet-4-5

It exits 1 when the run ends otherwise than completed, saying why.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import pydantic
import trio

from agents import Agent, AgentDefinitionError, ScriptedModel, ToolCall, ToolContext, resolve_model, tool
from runtime import open_runtime
from runtime.events import (
    ErrorEvent,
    FinalOutput,
    ModelStopped,
    OutputDelta,
    RunFinished,
    ToolCallStarted,
    ToolProgress,
)

if TYPE_CHECKING:
    from agents.models import Turn

TODAY = {"lisbon": [(19, 12, "sunny"), (17, 11, "cloudy"), (16, 10, "showers")]}


class Day(pydantic.BaseModel):
    """One day of the forecast."""

    day: int = pydantic.Field(description="1 for tomorrow, 2 for the day after ...")
    sky: str
    high_c: float
    low_c: float


class Forecast(pydantic.BaseModel):
    """A city's forecast for the next days, and whether to pack an umbrella."""

    city: str
    days: list[Day]
    umbrella: bool


@tool
async def get_forecast(ctx: ToolContext[None], city: str, days: int = 3) -> list[dict[str, Any]]:
    """Look up the forecast, one day at a time.

    Args:
        city: The city, e.g. "Lisbon".
        days: How many days ahead.
    """
    found = TODAY.get(city.lower(), [(20, 10, "unknown")] * days)[:days]
    forecast = []
    for number, (high, low, sky) in enumerate(found, start=1):
        await trio.sleep(0.1)  # stands in for one HTTP call per day
        forecast.append({"day": number, "sky": sky, "high_c": high, "low_c": low})
        await ctx.report_progress(number, total=len(found), message=f"day {number}")
    return forecast


def make_agent(model: str = "scripted") -> Agent[Any, Forecast]:
    """The agent; by default its scripted model answers like an LLM would, a few characters at a time."""
    answer = {
        "city": "Lisbon",
        "days": [
            {"day": 1, "sky": "sunny", "high_c": 19, "low_c": 12},
            {"day": 2, "sky": "cloudy", "high_c": 17, "low_c": 11},
            {"day": 3, "sky": "showers", "high_c": 16, "low_c": 10},
        ],
        "umbrella": True,
    }
    script: list[Turn] = [ToolCall("get_forecast", {"city": "Lisbon", "days": 3}), ToolCall("final_result", answer)]
    scripted = ScriptedModel(script, stream_arguments=True, chunk_delay=0.02)
    return Agent(
        name="forecaster",
        instructions="You give three-day forecasts. Look them up with get_forecast.",
        model=resolve_model(model, scripted=scripted),
        tools=[get_forecast],
        output_type=Forecast,
    )


def render(partial: Any) -> str:
    """One line showing how much of the form is filled in."""
    if not isinstance(partial, dict):
        return repr(partial)
    days = partial.get("days") or []
    shown = ", ".join(f"{d.get('sky', '…')} {d.get('high_c', '…')}°" for d in days if isinstance(d, dict))
    umbrella = partial.get("umbrella", "…")
    return f"city={partial.get('city', '…')!s:<8} days=[{shown}] umbrella={umbrella}"


def show(forecast: Forecast) -> None:
    """The validated answer: a real ``Forecast``, not a dict."""
    print(f"\nForecast for {forecast.city}:")
    for day in forecast.days:
        print(f"  day {day.day}: {day.sky:<8} {day.low_c:g}–{day.high_c:g} °C")
    print(f"  umbrella: {'yes' if forecast.umbrella else 'no'}")


async def main(argv: list[str] | None = None) -> int:
    """Ask for a forecast and show the typed answer filling in; returns the exit status."""
    parser = argparse.ArgumentParser(description="An agent answers with a validated Forecast.")
    parser.add_argument("--model", default="scripted", help="scripted (default), openai:<model>, ...")
    options = parser.parse_args(argv or [])
    try:
        agent = make_agent(options.model)
    except AgentDefinitionError as exc:
        parser.error(str(exc))  # exits with status 2
    question = "What's the weather in Lisbon for the next three days? Do I need an umbrella?"
    print(f"> {question}\n")
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run(question) as stream:
            async for event in stream:
                if isinstance(event, ToolCallStarted) and event.name == "get_forecast":
                    print(f"  -> {event.name}({event.arguments})")
                elif isinstance(event, ToolProgress):
                    print(f"     {event.message}: {event.progress:g}/{event.total:g}")
                elif isinstance(event, OutputDelta):
                    print(f"  ~ {render(event.partial)}")
                elif isinstance(event, ModelStopped):
                    print(f"  [model stopped: {event.reason}]")
                elif isinstance(event, FinalOutput):
                    show(event.output)
                elif isinstance(event, ErrorEvent):
                    print(f"\n[{event.kind} error] {event.message}")
                elif isinstance(event, RunFinished):
                    print(f"\n[run finished: {event.reason}]")
    return 0 if stream.result.reason == "completed" else 1


if __name__ == "__main__":
    sys.exit(trio.run(main, sys.argv[1:]))
