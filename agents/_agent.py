"""Agent: what to run — instructions, a model, tools and hooks."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias

import attrs
from typing_extensions import TypeVar

from ._context import RunContext
from ._exceptions import AgentDefinitionError
from ._hooks import Hooks
from ._output import OutputMode, OutputSpec, output_spec
from ._tools import Tool, ToolLike, Toolset, as_tool
from ._usage import UsageLimits
from .models._resolve import resolve_model

if TYPE_CHECKING:
    import types

    from .models._protocol import Model

TRANSFER_TOOL: Final = "transfer_task"
"""The name of the tool that hands a task to a sub-agent."""

AgentDepsT = TypeVar("AgentDepsT", default=Any)
"""The type of ``deps`` an agent's tools, hooks and instructions receive."""
OutputT = TypeVar("OutputT", default=str)
"""The type of an agent's output: ``str`` unless ``output_type`` says otherwise."""

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


def _convert_agents(items: Sequence[Agent[Any, Any]]) -> tuple[Agent[Any, Any], ...]:
    return tuple(items)


def _convert_hooks(items: Sequence[Hooks]) -> tuple[Hooks, ...]:
    if isinstance(items, Hooks):
        raise AgentDefinitionError(f"hooks is a list of Hooks instances: hooks=[{items!r}]")
    hooks = tuple(items)
    for item in hooks:
        if not isinstance(item, Hooks):
            raise AgentDefinitionError(f"{item!r} is not a Hooks instance")
        for method in _HOOK_METHODS:
            # The runtime awaits what a hook returns: a sync override ran, then failed every call it guards.
            if not inspect.iscoroutinefunction(inspect.unwrap(getattr(item, method))):  # a decorator's too
                raise AgentDefinitionError(f"{type(item).__qualname__}.{method} must be an async def")
    return hooks


_HOOK_METHODS: Final = ("on_user_prompt", "before_tool", "after_tool", "on_run_end")


def _positive_or_none(instance: Agent[Any, Any], attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:  # written so that NaN is refused too
        raise AgentDefinitionError(f"{attribute.name} must be positive or None, not {value!r}")


def _limits(instance: Agent[Any, Any], attribute: attrs.Attribute[Any], value: object) -> None:
    # A dict or a number failed only in the first run, as an "internal" error.
    if value is not None and not isinstance(value, UsageLimits):
        raise AgentDefinitionError(f"{attribute.name} must be a UsageLimits or None, not {value!r}")


def _check_int_at_least(name: str, value: object, minimum: int) -> None:
    # A float (2.5, NaN) passes a bare comparison and fails only in each run, in range(); True is a mistake too.
    if not isinstance(value, int) or isinstance(value, bool):
        raise AgentDefinitionError(f"{name} must be an int, not {value!r}")
    if value < minimum:
        raise AgentDefinitionError(f"{name} must be at least {minimum}, not {value!r}")


@attrs.frozen(kw_only=True)
class Agent(Generic[AgentDepsT, OutputT]):
    """An agent definition: immutable, and safe to share between sessions.

    Generic in the ``deps`` its code receives and in its output type, so
    ``RunResult.output`` and ``Session.ask`` are typed: ``Agent(...,
    output_type=Weather)`` is an ``Agent[Any, Weather]``. (mypy cannot infer
    a union: annotate, ``Agent[None, Cat | Dog](..., output_type=Cat | Dog)``.)

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
    """Answers each turn; see :class:`Model`. A model string works too: ``"openai:gpt-4o-mini"``. Anything
    else (``None``, a model class rather than an instance) is an :class:`AgentDefinitionError`."""
    instructions: Instructions = ""
    """The system prompt, or a function of the :class:`RunContext` returning it."""
    tools: tuple[Tool | Toolset, ...] = attrs.field(default=(), converter=_convert_tools)
    """Tools, toolsets (opened when a run starts), or plain functions (made tools)."""
    hooks: tuple[Hooks, ...] = attrs.field(default=(), converter=_convert_hooks)
    """Called at fixed points of every run, in order."""
    max_turns: int = attrs.field(default=10)
    """Model calls a run may make before it ends with ``max_turns``: an int, at least 1."""
    tool_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds one tool call may take; past it, the model gets an error result. It bounds the tool's own
    work, not the wait for a ``requires_approval`` tool's approval before it (``run_timeout`` bounds that),
    nor a sync tool's wait for a worker thread: the trio run shares 40 among all its sessions, and a thread
    abandoned past its timeout holds its place until its function returns."""
    run_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds a whole run may take; past it, the run ends with ``timeout``."""
    model_idle_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds the model may go without sending a chunk; past it, the run ends with ``timeout``."""
    sub_agents: tuple[Agent[Any, Any], ...] = attrs.field(default=(), converter=_convert_agents)
    """Agents this one may hand tasks to: the model gets a ``transfer_task(agent, task)`` tool."""
    max_depth: int = attrs.field(default=3)
    """How deep sub-agents may nest below a run of this agent (an int, at least 0); past it, the transfer is an
    error result."""
    output_type: type[OutputT] | types.UnionType = attrs.field(default=str)  # type: ignore[assignment]
    """What a run returns: ``str`` (the last response's text), or anything pydantic validates (a
    ``BaseModel``, a dataclass, a ``TypedDict``, ``list[...]``, a union of those)."""
    output_mode: OutputMode = "tool"
    """How the model answers with a typed output: ``"tool"`` (it calls ``final_result``; every model),
    ``"native"`` (the provider's JSON-schema response format) or ``"prompted"`` (JSON text, schema in
    the instructions)."""
    output_retries: int = attrs.field(default=1)
    """Answers that fail validation the model may correct (an int, at least 0; each a turn, counted in
    ``max_turns``)."""
    usage_limits: UsageLimits | None = attrs.field(default=None, validator=_limits)
    """What one run may spend (its sub-agents' runs included)."""
    session_usage_limits: UsageLimits | None = attrs.field(default=None, validator=_limits)
    """What all runs of one session may spend together."""
    output: OutputSpec = attrs.field(init=False, repr=False, eq=False)
    """How the output is asked for and validated (made from ``output_type`` and ``output_mode``)."""

    def __attrs_post_init__(self) -> None:
        spec = output_spec(self.output_type, self.output_mode)
        if spec.mode == "native" and not spec.is_text and not getattr(self.model, "native_output", False):
            raise AgentDefinitionError(
                f"{type(self.model).__name__} has no native structured output; use output_mode='tool' or 'prompted'"
            )
        answers = {tool_spec.name for tool_spec in spec.tool_specs()}
        clashing = answers & {t.name for t in self.tools if isinstance(t, Tool)}
        if clashing:
            raise AgentDefinitionError(
                f"a tool named {sorted(clashing)[0]!r} clashes with the tool the model answers with "
                f"(output_mode='tool'): rename the tool"
            )
        object.__setattr__(self, "output", spec)

    @output_retries.validator
    def _check_output_retries(self, attribute: attrs.Attribute[int], value: int) -> None:
        _check_int_at_least(attribute.name, value, 0)

    @max_turns.validator
    def _check_max_turns(self, attribute: attrs.Attribute[int], value: int) -> None:
        _check_int_at_least(attribute.name, value, 1)

    @max_depth.validator
    def _check_max_depth(self, attribute: attrs.Attribute[int], value: int) -> None:
        _check_int_at_least(attribute.name, value, 0)

    @sub_agents.validator
    def _check_sub_agents(
        self, attribute: attrs.Attribute[tuple[Agent[Any, Any], ...]], value: tuple[Agent[Any, Any], ...]
    ) -> None:
        if not all(isinstance(agent, Agent) for agent in value):
            raise AgentDefinitionError("sub_agents must be Agent instances")
        names = [agent.name for agent in value]
        if len(set(names)) != len(names):
            raise AgentDefinitionError(f"sub-agent names must be unique: {names}")
        if TRANSFER_TOOL in {t.name for t in self.tools if isinstance(t, Tool)} and value:
            raise AgentDefinitionError(f"a tool named {TRANSFER_TOOL!r} clashes with the sub-agent transfer tool")
