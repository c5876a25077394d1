"""Agents for ``tests/streams/test_mcp_server.py``, importable by the server it starts as a process.

``python -m streams mcp --agent tests.streams.mcp_agents:agent`` (from the
repository root) serves :data:`agent`; :data:`typed_agent` has a typed output.
Their models are scripted by what they are asked, so any number of runs,
in any order, answer the same:

- ``ask``: a tool asks the human ``Go on?`` (a ``bool``), and the answer is
  ``The tool said: <what the tool returned>``;
- ``fail``: the model fails (an ``ErrorEvent``, ``RunFinished("error")``);
- anything else: ``You said: <it>``, streamed word by word.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Final

import pydantic

from agents import Agent, ErrorChunk, ScriptedModel, ToolCall, ToolContext, ToolResultMessage, UserMessage, tool

if TYPE_CHECKING:
    from agents import ModelRequest
    from agents.models import Turn

QUESTION: Final = "Go on?"
INSTRUCTIONS: Final = "Repeats what it is told.\n\nAnd asks, when told to ask."


@tool
async def confirm(ctx: ToolContext[Any]) -> str:
    """Ask the human whether to go on."""
    answer = await ctx.elicit(QUESTION, schema=bool, timeout=30)
    return f"{answer.action} {answer.content}"


def _turn(request: ModelRequest) -> Turn:
    last = request.messages[-1]
    if isinstance(last, ToolResultMessage):
        return f"The tool said: {last.content}"
    assert isinstance(last, UserMessage)
    if last.content == "ask":
        return ToolCall("confirm")
    if last.content == "fail":
        return [ErrorChunk("server_error", "the model is down")]
    return f"You said: {last.content}"


agent = Agent(
    name="echo bot",
    instructions=INSTRUCTIONS,
    model=ScriptedModel(itertools.repeat(_turn), record_requests=False),
    tools=[confirm],
)
"""Answers ``You said: ...``; asks ``Go on?`` when told ``ask``; fails when told ``fail``."""


class Weather(pydantic.BaseModel):
    """The weather in a city."""

    city: str
    celsius: float


def _weather(request: ModelRequest) -> Turn:
    last = request.messages[-1]
    assert isinstance(last, UserMessage)
    # "Infinity" validates as a float (pydantic's lax mode), which JSON has no number for.
    celsius = "Infinity" if last.content == "the sun" else 21.5
    return ToolCall("final_result", {"city": last.content, "celsius": celsius})


typed_agent = Agent(
    name="weather",
    instructions="Reports the weather in a city.",
    model=ScriptedModel(itertools.repeat(_weather), record_requests=False),
    output_type=Weather,
)
"""Answers a :class:`Weather` for the city it is given, always 21.5 °C."""
