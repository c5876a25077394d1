"""Agent: an immutable definition whose tools and limits are checked when it is made."""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from agents import (
    Agent,
    AgentDefinitionError,
    Hooks,
    RunContext,
    ScriptedModel,
    Tool,
    Toolset,
    tool,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def fetch(url: str) -> str:
    """Fetch a URL."""
    return url


class StaticToolset:
    """A toolset that opens to a fixed list of tools."""

    def __init__(self, *tools: Tool) -> None:
        self._tools = tools

    @asynccontextmanager
    async def open_tools(self, ctx: RunContext[Any]) -> AsyncIterator[Sequence[Tool]]:
        """Open the toolset for one run."""
        yield self._tools


def _agent(**kwargs: Any) -> Agent:
    return Agent(name="tester", model=ScriptedModel([]), **kwargs)


def test_agent_defaults() -> None:
    """An agent made with only a name and a model has no tools, no hooks and no timeouts."""
    agent = _agent()
    assert agent.instructions == ""
    assert agent.tools == ()
    assert agent.hooks == ()
    assert agent.max_turns == 10
    assert agent.tool_timeout is None
    assert agent.run_timeout is None
    assert agent.model_idle_timeout is None


def test_agent_plain_functions_become_tools() -> None:
    """Sync and async functions in ``tools`` are made ``Tool``s, in order, in a tuple."""
    agent = _agent(tools=[add, fetch])
    assert isinstance(agent.tools, tuple)
    assert [type(item) for item in agent.tools] == [Tool, Tool]
    assert [item.name for item in agent.tools if isinstance(item, Tool)] == ["add", "fetch"]
    first = agent.tools[0]
    assert isinstance(first, Tool)
    assert first.function is add
    assert first.description == "Add two numbers."


def test_agent_tools_are_kept_as_given() -> None:
    """A ``Tool`` in ``tools`` is kept as the same object."""
    add_tool = tool(add)
    agent = _agent(tools=[add_tool])
    assert agent.tools == (add_tool,)
    assert agent.tools[0] is add_tool


def test_agent_toolsets_are_kept() -> None:
    """A toolset (an object with ``open_tools``) is kept as is, next to tools and functions."""
    toolset = StaticToolset(tool(fetch))
    assert isinstance(toolset, Toolset)
    agent = _agent(tools=[add, toolset])
    assert len(agent.tools) == 2
    assert isinstance(agent.tools[0], Tool)
    assert agent.tools[1] is toolset


def test_agent_duplicate_tool_names_are_a_definition_error() -> None:
    """Two tools with the same name raise ``AgentDefinitionError`` naming it."""
    with pytest.raises(AgentDefinitionError, match=r"unique.*\badd\b"):
        _agent(tools=[add, tool(add)])


def test_agent_duplicate_renamed_tool_is_a_definition_error() -> None:
    """A tool renamed to clash with another tool's name is a duplicate too."""
    with pytest.raises(AgentDefinitionError, match=r"\bfetch\b"):
        _agent(tools=[fetch, tool(name="fetch")(add)])


def test_agent_distinct_names_from_one_function_are_allowed() -> None:
    """The same function under two different tool names is not a duplicate."""
    agent = _agent(tools=[add, tool(name="plus")(add)])
    assert [item.name for item in agent.tools if isinstance(item, Tool)] == ["add", "plus"]


@pytest.mark.parametrize("entry", [42, "add", None, b"tool", {"name": "add"}])
def test_agent_non_tool_entry_is_a_definition_error(entry: Any) -> None:
    """An entry of ``tools`` that is not a tool, a toolset or a function raises ``AgentDefinitionError``."""
    with pytest.raises(AgentDefinitionError, match="is not a tool, a toolset or a function"):
        _agent(tools=[add, entry])


def test_agent_function_that_cannot_be_a_tool_is_a_definition_error() -> None:
    """A function in ``tools`` that cannot be made a tool raises ``AgentDefinitionError``."""

    def spread(*numbers: int) -> int:
        return sum(numbers)

    with pytest.raises(AgentDefinitionError, match=r"\*args"):
        _agent(tools=[spread])


@pytest.mark.parametrize("max_turns", [0, -1])
def test_agent_max_turns_below_one_is_a_definition_error(max_turns: int) -> None:
    """``max_turns`` below 1 raises ``AgentDefinitionError``."""
    with pytest.raises(AgentDefinitionError, match="max_turns must be at least 1"):
        _agent(max_turns=max_turns)


@pytest.mark.parametrize("model", [None, ScriptedModel], ids=["None", "a-model-class"])
def test_agent_model_that_is_not_a_model_is_a_definition_error(model: Any) -> None:
    """``Agent(model=None)`` (an unset environment variable) or a model class is refused when the agent is made."""
    with pytest.raises(AgentDefinitionError, match="model must be a model"):
        Agent(name="tester", model=model)


@pytest.mark.parametrize("field", ["max_turns", "max_depth", "output_retries"])
@pytest.mark.parametrize("value", [2.5, 3.0, math.nan, math.inf, True, "3", None])
def test_agent_non_int_limit_is_a_definition_error(field: str, value: Any) -> None:
    """``max_turns``, ``max_depth`` and ``output_retries`` that are not an int (a float, NaN, a bool, a string)
    raise ``AgentDefinitionError`` naming the field when the agent is made, not a TypeError in each run."""
    with pytest.raises(AgentDefinitionError, match=rf"{field} must be an int, not "):
        _agent(**{field: value})


def test_agent_max_turns_of_one_is_allowed() -> None:
    """``max_turns=1`` is the smallest valid limit."""
    assert _agent(max_turns=1).max_turns == 1


@pytest.mark.parametrize("field", ["tool_timeout", "run_timeout", "model_idle_timeout"])
@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, math.nan, -math.inf])
def test_agent_non_positive_timeout_is_a_definition_error(field: str, value: float) -> None:
    """A timeout of zero or less, or NaN, raises ``AgentDefinitionError`` naming the field."""
    with pytest.raises(AgentDefinitionError, match=rf"{field} must be positive"):
        _agent(**{field: value})


@pytest.mark.parametrize("field", ["tool_timeout", "run_timeout", "model_idle_timeout"])
def test_agent_positive_or_none_timeout_is_allowed(field: str) -> None:
    """A positive timeout (infinity: no limit), or ``None``, is accepted as given."""
    assert getattr(_agent(**{field: 0.25}), field) == 0.25
    assert getattr(_agent(**{field: math.inf}), field) == math.inf
    assert getattr(_agent(**{field: None}), field) is None


def test_agent_is_frozen() -> None:
    """An agent cannot be changed once made."""
    agent = _agent(tools=[add])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        agent.name = "other"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        agent.max_turns = 0  # type: ignore[misc]
    assert agent.name == "tester"
    assert isinstance(agent.tools, tuple)


def test_agent_evolve_checks_again() -> None:
    """``attrs.evolve`` makes a new agent and checks it like the constructor does."""
    agent = _agent(tools=[add])
    assert attrs.evolve(agent, max_turns=3).max_turns == 3
    assert agent.max_turns == 10
    with pytest.raises(AgentDefinitionError):
        attrs.evolve(agent, max_turns=0)
    with pytest.raises(AgentDefinitionError):
        attrs.evolve(agent, run_timeout=0)


def test_agent_hooks_are_stored_as_a_tuple() -> None:
    """``hooks`` given as a list is stored as a tuple, in order."""
    first, second = Hooks(), Hooks()
    agent = _agent(hooks=[first, second])
    assert agent.hooks == (first, second)
    assert isinstance(agent.hooks, tuple)


@pytest.mark.parametrize("entry", [None, "hooks", object(), add])
def test_agent_non_hooks_entry_is_a_definition_error(entry: Any) -> None:
    """An entry of ``hooks`` that is not a ``Hooks`` instance raises ``AgentDefinitionError``."""
    with pytest.raises(AgentDefinitionError, match="is not a Hooks instance"):
        _agent(hooks=[Hooks(), entry])


def test_agent_hooks_with_a_sync_method_or_not_in_a_list_are_a_definition_error() -> None:
    """A hook method written without async (the runtime awaits what it returns: it ran, then every call it
    guards failed with "NoneType can't be used in 'await' expression"), or one Hooks not in a list (an
    untyped TypeError), raises AgentDefinitionError when the agent is made."""

    class Audit(Hooks):
        def before_tool(self, ctx: Any, arguments: dict[str, Any]) -> None:  # type: ignore[override]
            pass

    with pytest.raises(AgentDefinitionError, match=r"Audit.before_tool must be an async def"):
        _agent(hooks=[Audit()])
    with pytest.raises(AgentDefinitionError, match=r"hooks is a list of Hooks instances"):
        _agent(hooks=Hooks())


@pytest.mark.parametrize("entry", ["helper", None, object()])
def test_agent_non_agent_sub_agent_is_a_definition_error(entry: Any) -> None:
    """An entry of ``sub_agents`` that is not an ``Agent`` raises ``AgentDefinitionError``, whatever it lacks."""
    with pytest.raises(AgentDefinitionError, match="sub_agents must be Agent instances"):
        _agent(sub_agents=[_agent(), entry])
