"""The agent the durable served tests run in real server processes (``--agent tests.streams.durable_agent:agent``).

It writes what it really did to the file ``$DURABLE_LEDGER``, one line each
(``model <n messages>``, ``pay <amount>``), so a test can tell across
processes whether a side effect or a model call happened twice. Its model
answers from the history: ``pay N`` asks for the ``pay`` tool (which needs
approval), ``stall`` for a tool that never returns, anything else is echoed;
after a tool result it answers ``done: <result>``. It also checks the history
it is given: every tool call has exactly one result, or it answers
``INVALID HISTORY``.
"""

from __future__ import annotations

import itertools
import os

import trio

from agents import Agent, AssistantMessage, ModelRequest, ScriptedModel, ToolCall, ToolResultMessage, UserMessage, tool


def _note(line: str) -> None:
    with open(os.environ["DURABLE_LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(line + "\n")


@tool(requires_approval=True)
def pay(amount: int) -> str:
    """Pay ``amount``."""
    _note(f"pay {amount}")
    return f"paid {amount}"


@tool
async def stall() -> str:
    """Never return."""
    await trio.sleep_forever()
    raise AssertionError("unreachable")


def _valid(messages: tuple[object, ...]) -> bool:
    calls = [call.call_id for m in messages if isinstance(m, AssistantMessage) for call in m.tool_calls]
    results = [m.call_id for m in messages if isinstance(m, ToolResultMessage)]
    return sorted(calls) == sorted(results)


def answer(request: ModelRequest) -> str | ToolCall:
    """See the module docstring."""
    _note(f"model {len(request.messages)}")
    if not _valid(request.messages):
        return "INVALID HISTORY"
    last = request.messages[-1]
    if isinstance(last, ToolResultMessage):
        return f"done: {last.text}"
    assert isinstance(last, UserMessage)
    words = last.text.split()
    if words[:1] == ["pay"]:
        return ToolCall("pay", {"amount": int(words[1])})
    if words[:1] == ["stall"]:
        return ToolCall("stall", {})
    return f"echo: {last.text}"


agent = Agent(name="durable", model=ScriptedModel(itertools.repeat(answer), record_requests=False), tools=[pay, stall])
