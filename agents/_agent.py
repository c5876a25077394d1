"""Agent: what to run — instructions, a model, tools and hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import attrs

from ._context import RunContext
from ._exceptions import AgentDefinitionError
from ._hooks import Hooks
from ._tools import Tool, ToolLike, Toolset, as_tool
from .models._resolve import resolve_model

if TYPE_CHECKING:
    from .models._protocol import Model

TRANSFER_TOOL: Final = "transfer_task"
"""The name of the tool that hands a task to a sub-agent."""

Instructions: TypeAlias = str | Callable[[RunContext[Any]], str | Awaitable[str]]
"""A system prompt, or a (sync or async) function of the run's context returning one."""


def _convert_tools(items: Sequence[ToolLike]) -> tuple[Tool | Toolset, ...]:
    converted: list[Tool | Toolset] = []
    for item in items:
        if isinstance(item, Tool | Toolset):
            converted.append(item)
        elif callable(item):
            converted.append(as_tool(item))
        else:
            raise AgentDefinitionError(f"{item!r} is not a tool, a toolset or a function")
    names = [item.name for item in converted if isinstance(item, Tool)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise AgentDefinitionError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
    return tuple(converted)


def _convert_agents(items: Sequence[Agent]) -> tuple[Agent, ...]:
    return tuple(items)


def _convert_hooks(items: Sequence[Hooks]) -> tuple[Hooks, ...]:
    hooks = tuple(items)
    for item in hooks:
        if not isinstance(item, Hooks):
            raise AgentDefinitionError(f"{item!r} is not a Hooks instance")
    return hooks


def _positive_or_none(instance: Agent, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        raise AgentDefinitionError(f"{attribute.name} must be positive or None, not {value!r}")


@attrs.frozen(kw_only=True)
class Agent:
    """An agent definition: immutable, and safe to share between sessions.

    Example::

        agent = Agent(
            name="calculator",
            instructions="You add numbers.",
            model=ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"]),
            tools=[add],
        )
    """

    name: str
    """Shown in events and logs."""
    model: Model = attrs.field(converter=resolve_model)
    """Answers each turn; see :class:`Model`. A model string works too: ``"openai:gpt-4o-mini"``."""
    instructions: Instructions = ""
    """The system prompt, or a function of the :class:`RunContext` returning it."""
    tools: tuple[Tool | Toolset, ...] = attrs.field(default=(), converter=_convert_tools)
    """Tools, toolsets (opened when a run starts), or plain functions (made tools)."""
    hooks: tuple[Hooks, ...] = attrs.field(default=(), converter=_convert_hooks)
    """Called at fixed points of every run, in order."""
    max_turns: int = attrs.field(default=10)
    """Model calls a run may make before it ends with ``max_turns``."""
    tool_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds one tool call may take; past it, the model gets an error result."""
    run_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds a whole run may take; past it, the run ends with ``timeout``."""
    model_idle_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds the model may go without sending a chunk; past it, the run ends with ``timeout``."""
    sub_agents: tuple[Agent, ...] = attrs.field(default=(), converter=_convert_agents)
    """Agents this one may hand tasks to: the model gets a ``transfer_task(agent, task)`` tool."""
    max_depth: int = attrs.field(default=3)
    """How deep sub-agents may nest below a run of this agent; past it, the transfer is an error result."""

    @max_turns.validator
    def _check_max_turns(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < 1:
            raise AgentDefinitionError(f"max_turns must be at least 1, not {value!r}")

    @max_depth.validator
    def _check_max_depth(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < 0:
            raise AgentDefinitionError(f"max_depth must be at least 0, not {value!r}")

    @sub_agents.validator
    def _check_sub_agents(self, attribute: attrs.Attribute[tuple[Agent, ...]], value: tuple[Agent, ...]) -> None:
        if not all(isinstance(agent, Agent) for agent in value):
            raise AgentDefinitionError("sub_agents must be Agent instances")
        names = [agent.name for agent in value]
        if len(set(names)) != len(names):
            raise AgentDefinitionError(f"sub-agent names must be unique: {names}")
        if TRANSFER_TOOL in {t.name for t in self.tools if isinstance(t, Tool)} and value:
            raise AgentDefinitionError(f"a tool named {TRANSFER_TOOL!r} clashes with the sub-agent transfer tool")
