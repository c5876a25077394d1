"""What a run tells the code it calls: instructions callables, tools and hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

if TYPE_CHECKING:
    from ._agent import Agent

DepsT = TypeVar("DepsT")


@attrs.frozen
class RunContext(Generic[DepsT]):
    """The run that is calling: given to instructions callables and hooks."""

    deps: DepsT
    """Whatever the caller passed as ``deps`` to ``Session.run``."""
    agent: Agent = attrs.field(repr=False)
    """The agent being run."""
    session: Any = attrs.field(repr=False)
    """The ``runtime.Session`` the run belongs to."""
    run_id: str
    """The run's id, as in its ``RunStarted`` event."""


@attrs.frozen
class ToolContext(RunContext[DepsT]):
    """Given to a tool that declares a parameter annotated ``ToolContext``.

    Example::

        @tool
        async def whoami(ctx: ToolContext[User]) -> str:
            return ctx.deps.name
    """

    call_id: str
    """The id of the tool call being served."""
    tool_name: str
    """The name the tool was called by."""
