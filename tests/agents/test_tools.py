"""The ``tool`` decorator: schemas, docstrings, validation, and how tools run."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import threading
from typing import TYPE_CHECKING, Any, cast

import pydantic
import pytest
import trio
import trio.testing
from hypothesis import given, strategies as st

from agents import (
    Agent,
    AgentDefinitionError,
    ScriptedModel,
    SessionLike,
    Tool,
    ToolArgumentsError,
    ToolContext,
    ToolSpec,
    tool,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

# Types used in tool signatures live at module level: with postponed
# annotations, `tool` resolves hints in the function's module namespace.


@dataclasses.dataclass
class Point:
    """A dataclass argument."""

    x: int
    y: int


class Filter(pydantic.BaseModel):
    """A pydantic model argument."""

    field: str
    limit: int = 10


class Opaque:
    """A class pydantic cannot describe."""


class Color(enum.Enum):
    """An Enum field of a strict model."""

    RED = "red"


class StrictQuery(pydantic.BaseModel):
    """A strict pydantic model argument: JSON forms only in JSON mode."""

    model_config = pydantic.ConfigDict(strict=True)

    color: Color
    day: datetime.date
    span: tuple[int, int]
    count: int = 0


@tool
def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


NO_SESSION = cast("SessionLike", None)
"""These tools never touch their session: they are called outside any runtime."""


def _context(call_id: str = "call_1", tool_name: str = "t", deps: Any = None) -> ToolContext[Any]:
    agent = Agent(name="tester", model=ScriptedModel([]))
    return ToolContext(deps=deps, agent=agent, session=NO_SESSION, run_id="run_1", call_id=call_id, tool_name=tool_name)


def test_tool_schema_from_int_and_str_hints() -> None:
    """Int and str parameters become required integer and string properties of an object schema."""

    @tool
    def greet(times: int, who: str) -> str:
        return who * times

    assert isinstance(greet, Tool)
    schema = dict(greet.parameters)
    assert schema["type"] == "object"
    assert schema["properties"]["times"]["type"] == "integer"
    assert schema["properties"]["who"]["type"] == "string"
    assert sorted(schema["required"]) == ["times", "who"]
    assert schema["additionalProperties"] is False
    assert "title" not in schema


def test_tool_schema_optional_and_defaults() -> None:
    """Optional and defaulted parameters are not required and carry their defaults."""

    @tool
    def search(query: str, limit: int = 5, language: str | None = None) -> str:
        return query

    properties = search.parameters["properties"]
    assert search.parameters["required"] == ["query"]
    assert properties["limit"]["type"] == "integer"
    assert properties["limit"]["default"] == 5
    assert properties["language"]["default"] is None
    assert {"type": "string"} in properties["language"]["anyOf"]
    assert {"type": "null"} in properties["language"]["anyOf"]


def test_tool_schema_lists() -> None:
    """A ``list[int]`` parameter becomes an array of integers."""

    @tool
    def total(values: list[int], labels: list[str] | None = None) -> int:
        return sum(values)

    properties = total.parameters["properties"]
    assert properties["values"]["type"] == "array"
    assert properties["values"]["items"] == {"type": "integer"}
    assert {"type": "array", "items": {"type": "string"}} in properties["labels"]["anyOf"]


def test_tool_schema_pydantic_able_types() -> None:
    """Dataclass and pydantic-model parameters are described in ``$defs`` and validated into instances."""

    @tool
    def plot(point: Point, where: Filter) -> str:
        return "ok"

    schema = plot.parameters
    assert schema["properties"]["point"] == {"$ref": "#/$defs/Point"}
    assert schema["properties"]["where"] == {"$ref": "#/$defs/Filter"}
    assert schema["$defs"]["Point"]["properties"]["x"]["type"] == "integer"
    assert schema["$defs"]["Filter"]["properties"]["limit"]["default"] == 10
    validated = plot.validate({"point": {"x": 1, "y": "2"}, "where": {"field": "name"}})
    assert validated == {"point": Point(1, 2), "where": Filter(field="name", limit=10)}


def test_tool_validate_coerces_and_fills_defaults() -> None:
    """``validate`` coerces to the declared types and fills in defaults."""

    @tool
    def search(query: str, limit: int = 5, language: str | None = None) -> str:
        return query

    assert search.validate({"query": "trio", "limit": "7"}) == {"query": "trio", "limit": 7, "language": None}
    assert search.validate({"query": "trio"}) == {"query": "trio", "limit": 5, "language": None}


def test_tool_description_from_docstring() -> None:
    """The tool's description is the docstring's summary and body, without the ``Args:`` section."""

    @tool
    def lookup(key: str) -> str:
        """Look a key up.

        The store is read-only.

        Args:
            key: Which key.
        """
        return key

    assert lookup.name == "lookup"
    assert lookup.description == "Look a key up.\n\nThe store is read-only."


def test_tool_argument_descriptions_from_args_section() -> None:
    """Each argument's description comes from the ``Args:`` section, multi-line ones joined."""

    @tool
    def move(distance: int, unit: str, fast: bool = False) -> str:
        """Move somewhere.

        Args:
            distance: How far to go,
                counted in units
                of ``unit``.
            unit (str): The unit of distance.
            fast: Whether to hurry.
        """
        return unit

    properties = move.parameters["properties"]
    assert properties["distance"]["description"] == "How far to go, counted in units of ``unit``."
    assert properties["unit"]["description"] == "The unit of distance."
    assert properties["fast"]["description"] == "Whether to hurry."


def test_tool_argument_type_with_parentheses_in_it_starts_its_own_entry() -> None:
    """``window (tuple(int, int)): ...`` is the entry of ``window``, not a line of the previous argument's."""

    @tool
    def search(query: str, window: tuple[int, int] = (0, 1)) -> str:
        """Search the index.

        Args:
            query: What to look for.
            window (tuple(int, int)): The (start, end) range: both included.
        """
        return query

    properties = search.parameters["properties"]
    assert properties["query"]["description"] == "What to look for."
    assert properties["window"]["description"] == "The (start, end) range: both included."


@pytest.mark.parametrize("header", ["Keyword Args:", "Keyword Arguments:", "Other Parameters:"])
def test_tool_argument_descriptions_from_keyword_args_section(header: str) -> None:
    """Arguments described under ``Keyword Args:`` (and its other Napoleon names) get their descriptions too."""

    def search(query: str, *, limit: int = 10) -> str:
        return query

    search.__doc__ = f"""Search the index.

    Args:
        query: What to look for.

    {header}
        limit: At most this many hits.
    """
    made = tool(search)
    assert made.parameters["properties"]["limit"]["description"] == "At most this many hits."
    assert made.parameters["properties"]["query"]["description"] == "What to look for."
    assert made.description == "Search the index."


def test_tool_description_excludes_returns_raises_and_example_sections() -> None:
    """``Returns:``, ``Raises:`` and ``Example:`` sections are left out of the description."""

    @tool
    def divide(a: int, b: int) -> float:
        """Divide a by b.

        Returns:
            The quotient, as a float.

        Raises:
            ZeroDivisionError: b is zero.

        Example:
            divide(6, 3) == 2.0

        Args:
            a: The dividend.
            b: The divisor.
        """
        return a / b

    assert divide.description == "Divide a by b."
    assert divide.parameters["properties"]["a"]["description"] == "The dividend."
    assert divide.parameters["properties"]["b"]["description"] == "The divisor."
    for leaked in ("quotient", "ZeroDivisionError", "divide(6, 3)"):
        assert leaked not in divide.description
        assert leaked not in str(divide.parameters)


def test_tool_without_docstring_has_empty_description() -> None:
    """A tool without a docstring has an empty description and no argument descriptions."""

    @tool
    def bare(a: int) -> int:
        return a

    assert bare.description == ""
    assert "description" not in bare.parameters["properties"]["a"]


def test_tool_name_and_description_override() -> None:
    """``@tool(name=..., description=...)`` replaces the function's name and docstring."""

    @tool(name="web-search", description="Search the web.")
    def search(query: str) -> str:
        """Something the model should not see."""
        return query

    assert search.name == "web-search"
    assert search.description == "Search the web."
    assert search.spec == ToolSpec("web-search", "Search the web.", search.parameters)


def test_tool_spec_describes_the_tool() -> None:
    """``Tool.spec`` carries the tool's name, description and schema."""
    assert add.spec == ToolSpec("add", "Add two numbers.", add.parameters)
    assert add.parameters["properties"]["a"]["description"] == "The first number."


def test_tool_context_parameter_is_excluded_from_schema() -> None:
    """A ``ToolContext`` parameter is not in the schema and the model cannot pass it."""

    @tool
    def whoami(ctx: ToolContext[str], greeting: str) -> str:
        return f"{greeting}, {ctx.deps}"

    assert list(whoami.parameters["properties"]) == ["greeting"]
    assert whoami.parameters["required"] == ["greeting"]
    with pytest.raises(ToolArgumentsError, match="ctx"):
        whoami.validate({"greeting": "hi", "ctx": "forged"})


async def test_tool_call_passes_the_context() -> None:
    """``Tool.call`` passes the run's ``ToolContext`` to the parameter that declares it."""
    seen: list[ToolContext[Any]] = []

    @tool
    async def whoami(greeting: str, ctx: ToolContext[str]) -> str:
        seen.append(ctx)
        return f"{greeting}, {ctx.deps}"

    ctx = _context(deps="ada")
    assert await whoami.call(ctx, {"greeting": "hi"}) == "hi, ada"
    assert seen == [ctx]
    assert seen[0] is ctx


async def test_tool_call_passes_the_context_to_sync_tools() -> None:
    """A sync tool gets the ``ToolContext`` too."""

    @tool
    def call_id(ctx: ToolContext[None]) -> str:
        return ctx.call_id

    assert await call_id.call(_context(call_id="call_42"), {}) == "call_42"


def test_tool_validate_bad_type_names_the_field() -> None:
    """An argument of the wrong type raises ``ToolArgumentsError`` naming the tool and the field."""
    with pytest.raises(ToolArgumentsError) as info:
        add.validate({"a": 1, "b": "two"})
    message = str(info.value)
    assert "'add'" in message
    assert "b:" in message
    assert "a:" not in message
    assert info.value.tool_name == "add"
    assert [error["loc"] for error in info.value.errors] == [("b",)]


def test_tool_validate_takes_the_json_forms_of_a_strict_models_enum_date_and_tuple() -> None:
    """A strict model's Enum, date and tuple fields take their JSON forms from the model's JSON arguments
    (pydantic's JSON mode), and the model stays strict: "3" for an int is still refused."""

    @tool
    def find(q: StrictQuery) -> str:
        return "found"

    arguments = json.loads('{"q": {"color": "red", "day": "2024-01-02", "span": [1, 2]}}')
    assert find.validate(arguments) == {"q": StrictQuery(color=Color.RED, day=datetime.date(2024, 1, 2), span=(1, 2))}
    with pytest.raises(ToolArgumentsError, match=r"q\.count: Input should be a valid integer"):
        find.validate({"q": {**arguments["q"], "count": "3"}})
    # A caller's Python objects still validate as they are.
    given_objects = {"q": StrictQuery(color=Color.RED, day=datetime.date(2024, 1, 2), span=(1, 2))}
    assert find.validate(given_objects) == given_objects


def test_tool_validate_missing_field_names_the_field() -> None:
    """A missing required argument raises ``ToolArgumentsError`` naming it."""
    with pytest.raises(ToolArgumentsError, match=r"b: Field required") as info:
        add.validate({"a": 1})
    assert [error["type"] for error in info.value.errors] == ["missing"]


def test_tool_validate_rejects_extra_fields() -> None:
    """An argument the tool does not declare is rejected, by name."""
    with pytest.raises(ToolArgumentsError, match=r"c: Extra inputs are not permitted") as info:
        add.validate({"a": 1, "b": 2, "c": 3})
    assert [error["loc"] for error in info.value.errors] == [("c",)]


async def test_tool_call_with_bad_arguments_does_not_run_the_tool() -> None:
    """``Tool.call`` raises ``ToolArgumentsError`` before running the function."""
    ran: list[int] = []

    @tool
    def record(n: int) -> int:
        ran.append(n)
        return n

    with pytest.raises(ToolArgumentsError, match="n:"):
        await record.call(_context(), {"n": "not a number"})
    assert ran == []


async def test_tool_sync_tool_runs_in_a_worker_thread() -> None:
    """A sync tool runs in a worker thread, not in the Trio thread."""

    @tool
    def where() -> int:
        return threading.get_ident()

    assert await where.call(_context(), {}) != threading.get_ident()


class RecordingLimiter:
    """A ThreadLimiter that lets everything through and records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        self.calls.append("acquire")

    def release_on_behalf_of(self, borrower: object) -> None:
        self.calls.append("release")


async def test_tool_invoke_takes_the_sync_tools_thread_from_the_given_limiter() -> None:
    """``invoke(limiter=...)`` runs a sync tool's thread under that limiter; an async tool never touches it."""

    @tool
    def sync_tool() -> int:
        return threading.get_ident()

    @tool
    async def async_tool() -> None:
        await trio.lowlevel.checkpoint()

    limiter = RecordingLimiter()
    assert await sync_tool.invoke(_context(), {}, limiter=limiter) != threading.get_ident()
    assert limiter.calls == ["acquire", "release"]
    await async_tool.invoke(_context(), {}, limiter=limiter)
    assert limiter.calls == ["acquire", "release"]


async def test_tool_async_tool_runs_in_the_calling_task() -> None:
    """An async tool runs in the calling Trio task, on the Trio thread."""

    @tool
    async def where() -> tuple[int, trio.lowlevel.Task]:
        await trio.lowlevel.checkpoint()
        return threading.get_ident(), trio.lowlevel.current_task()

    ident, task = await where.call(_context(), {})
    assert ident == threading.get_ident()
    assert task is trio.lowlevel.current_task()


async def test_tool_sync_tool_cancellation_abandons_the_thread() -> None:
    """Cancelling a call to a blocked sync tool returns at once, leaving the thread behind."""
    release = threading.Event()
    finished = threading.Event()

    @tool
    def block() -> None:
        # Bounded, so a broken abandon fails the assertion below instead of hanging.
        release.wait(timeout=10)
        finished.set()

    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_when_blocked() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()

                nursery.start_soon(cancel_when_blocked)
                await block.call(_context(), {})
        assert scope.cancelled_caught
        assert not finished.is_set()
    finally:
        release.set()
        await trio.to_thread.run_sync(finished.wait)


def test_tool_lambda_needs_a_name() -> None:
    """A lambda cannot be a tool without an explicit name, and can be with one."""
    with pytest.raises(AgentDefinitionError, match="tool name"):
        tool(lambda: None)
    assert tool(name="noop")(lambda: None).name == "noop"


@pytest.mark.parametrize("name", ["has space", "semi;colon", "x" * 65, "ünïcode"])
def test_tool_bad_name_is_a_definition_error(name: str) -> None:
    """A tool name other than 1-64 letters, digits, '_' or '-' raises ``AgentDefinitionError``."""

    def fine(a: int) -> int:
        return a

    with pytest.raises(AgentDefinitionError, match="tool name"):
        tool(name=name)(fine)


def test_tool_generator_functions_are_a_definition_error() -> None:
    """A generator (async or not) returns no result when called: the model was sent its repr, and a sync
    one's body ran on the event loop, outside the worker thread and tool_timeout."""

    async def search_async(query: str) -> AsyncIterator[str]:
        yield query

    def search_sync(query: str) -> Iterator[str]:
        yield query

    for fn in (search_async, search_sync):
        with pytest.raises(AgentDefinitionError, match="is a generator function"):
            tool(fn)


def test_tool_star_args_is_a_definition_error() -> None:
    """A ``*args`` parameter raises ``AgentDefinitionError``."""

    def spread(*numbers: int) -> int:
        return sum(numbers)

    with pytest.raises(AgentDefinitionError, match=r"\*args"):
        tool(spread)


def test_tool_star_kwargs_is_a_definition_error() -> None:
    """A ``**kwargs`` parameter raises ``AgentDefinitionError``."""

    def options(**flags: bool) -> int:
        return len(flags)

    with pytest.raises(AgentDefinitionError, match=r"\*\*kwargs"):
        tool(options)


def test_tool_positional_only_is_a_definition_error() -> None:
    """A positional-only parameter raises ``AgentDefinitionError``."""

    def first(a: int, /) -> int:
        return a

    with pytest.raises(AgentDefinitionError, match="positional-only"):
        tool(first)


def test_tool_positional_only_context_parameter_is_a_definition_error() -> None:
    """A positional-only context parameter raises ``AgentDefinitionError`` when decorated, not at every call."""

    def first(ctx: ToolContext[None], /, a: int) -> int:
        return a

    with pytest.raises(AgentDefinitionError, match="context parameter 'ctx' must be an ordinary or keyword-only"):
        tool(first)


def test_tool_two_context_parameters_is_a_definition_error() -> None:
    """Two parameters annotated ``ToolContext`` raise ``AgentDefinitionError`` naming both."""

    def twice(c1: ToolContext[None], c2: ToolContext[None], a: int) -> int:
        return a

    with pytest.raises(AgentDefinitionError, match="not both 'c1' and 'c2'"):
        tool(twice)


def test_tool_keyword_only_context_parameter_is_allowed() -> None:
    """A keyword-only context parameter is passed by name, and not shown to the model."""

    def last(a: int, *, ctx: ToolContext[None]) -> int:
        return a

    assert list(tool(last).parameters["properties"]) == ["a"]


def test_tool_missing_type_hint_is_a_definition_error() -> None:
    """A parameter without a type hint raises ``AgentDefinitionError`` naming it."""

    def untyped(a: int, b) -> int:  # type: ignore[no-untyped-def]
        return a

    with pytest.raises(AgentDefinitionError, match="parameter 'b' needs a type hint"):
        tool(untyped)


def test_tool_unresolvable_type_hint_is_a_definition_error() -> None:
    """A type hint that cannot be resolved raises ``AgentDefinitionError``."""

    def later(a: int) -> int:
        return a

    later.__annotations__ = {"a": "NotDefinedAnywhere", "return": "int"}
    with pytest.raises(AgentDefinitionError, match="NotDefinedAnywhere"):
        tool(later)


def test_tool_undescribable_type_is_a_definition_error() -> None:
    """A parameter type pydantic cannot describe raises ``AgentDefinitionError``."""

    def use(thing: Opaque) -> None:
        return None

    with pytest.raises(AgentDefinitionError, match="cannot describe its arguments"):
        tool(use)


@given(a=st.integers(), b=st.integers())
def test_tool_validate_round_trips_ints(a: int, b: int) -> None:
    """Validating any two ints for ``add`` returns them unchanged."""
    validated = add.validate({"a": a, "b": b})
    assert validated == {"a": a, "b": b}
    assert type(validated["a"]) is int
    assert type(validated["b"]) is int


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_tool_invoke_leaves_the_validated_arguments_as_they_were(sync: bool) -> None:
    """The arguments ``validate`` returned are not changed by a call, with or without a context parameter."""

    def with_ctx(ctx: ToolContext[Any], a: int) -> int:
        return a + len(ctx.call_id)

    def plain(a: int) -> int:
        return a

    async def with_ctx_async(ctx: ToolContext[Any], a: int) -> int:
        return with_ctx(ctx, a)

    async def plain_async(a: int) -> int:
        return a

    for function, expected in ((with_ctx, 7), (plain, 1)) if sync else ((with_ctx_async, 7), (plain_async, 1)):
        made = tool(function)
        validated = made.validate({"a": 1})
        assert await made.invoke(_context(call_id="call_1"), validated) == expected
        assert validated == {"a": 1}
