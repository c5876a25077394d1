"""Fixtures for the runtime tests (under importlib import mode a test module cannot import this one).

``eliciting_tool``: makes a tool that asks the human one question and records what came of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from agents import ElicitationError, ElicitationResult, ToolContext, tool

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agents import Tool


@attrs.define(eq=False)
class Elicited:
    """An eliciting tool and what came of its questions."""

    tool: Tool = attrs.field(init=False)
    answers: list[ElicitationResult] = attrs.field(factory=list)
    """The answers the tool got."""
    errors: list[tuple[BaseException, float]] = attrs.field(factory=list)
    """The errors the tool caught, each with the seconds (``trio.current_time``) it had waited."""
    recorded: trio.Event = attrs.field(factory=trio.Event)
    """Set once an error is recorded."""
    cancelled: trio.Event = attrs.field(factory=trio.Event)
    """Set when the tool was cancelled while it waited for its answer."""


class ElicitingTool:
    """Makes :class:`Elicited` tools; the ``eliciting_tool`` fixture is one."""

    def __call__(
        self,
        name: str = "ask",
        message: str = "Still there?",
        *,
        schema: type[Any] | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        catch: type[Exception] = ElicitationError,
        answered: str = "answered",
        fallback: str = "not answered",
    ) -> Elicited:
        elicited = Elicited()

        async def ask(ctx: ToolContext[Any]) -> str:
            """Asks the human one question."""
            start = trio.current_time()
            try:
                answer = await ctx.elicit(message, schema=schema, timeout=timeout)
            except catch as exc:
                elicited.errors.append((exc, trio.current_time() - start))
                elicited.recorded.set()
                return fallback
            except trio.Cancelled:
                elicited.cancelled.set()
                raise
            elicited.answers.append(answer)
            return answered

        elicited.tool = tool(name=name)(ask)
        return elicited


@pytest.fixture
def eliciting_tool() -> ElicitingTool:
    """``eliciting_tool(name, message, schema=, timeout=, catch=, answered=, fallback=)``: an :class:`Elicited`
    whose tool (named ``name``) asks ``message`` once; an answer is kept and the tool returns ``answered``; an
    error of type ``catch`` is kept with the time waited and the tool returns ``fallback``; a cancellation is
    noted and goes on."""
    return ElicitingTool()
