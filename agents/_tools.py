"""Tools: Python functions a model may call, with arguments validated by pydantic."""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar, overload, runtime_checkable

import attrs
import pydantic
import pydantic_core
import trio

from ._context import ElicitationResult, Elicitor, RunContext, ToolContext
from ._exceptions import AgentDefinitionError, ElicitationUnavailable, ToolArgumentsError
from ._messages import ToolSpec

if typing.TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from pydantic_core import ErrorDetails

F = TypeVar("F", bound=Callable[..., Any])

_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*$")
# The type in parentheses may hold parentheses itself, `(tuple(int, int))`: it ends at the first `):`.
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(\(.*?\))?\s*:\s*(.*)$")
_SECTION = re.compile(r"^\s*[A-Z]\w*( \w+)?::?\s*$")

MAX_REPORTED_ERRORS: Final = 10
"""Validation problems a tool's arguments error names (the rest are counted): a model sending
100,000 unexpected arguments gets a short answer, quickly."""
_MAX_LOCATION: Final = 100
_MAX_PROBLEM: Final = 200


@attrs.frozen(eq=False)
class Tool:
    """A function a model may call. Make one with :func:`tool`."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    """The JSON schema of the arguments."""
    function: Callable[..., Any] = attrs.field(repr=False)
    _arguments: pydantic.TypeAdapter[Any] = attrs.field(repr=False, alias="arguments")
    _context_parameter: str | None = attrs.field(repr=False, alias="context_parameter")
    _is_async: bool = attrs.field(repr=False, alias="is_async")
    requires_approval: bool | Callable[[dict[str, Any]], bool] = False
    """Whether the human must approve a call first: a bool, or a predicate of the validated arguments."""

    def needs_approval(self, arguments: dict[str, Any]) -> bool:
        """Whether a call with these (validated) arguments must be approved first."""
        check = self.requires_approval
        return bool(check(arguments)) if callable(check) else check

    @property
    def runs_in_thread(self) -> bool:
        """Whether :meth:`invoke` runs the function in a worker thread (a sync function does)."""
        return not self._is_async

    @property
    def spec(self) -> ToolSpec:
        """How this tool is described to a model."""
        return ToolSpec(self.name, self.description, self.parameters)

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``arguments`` against the schema, returning the coerced values.

        They are checked as JSON (pydantic's JSON mode) where Python mode
        refuses them, so a strict model (``ConfigDict(strict=True)``) takes
        the JSON forms a model sends: ``"red"`` for an Enum, ``"2024-05-01"``
        for a date, ``[1, 2]`` for a tuple.

        The error names at most :data:`MAX_REPORTED_ERRORS` problems (each
        clipped) and counts the rest, however many arguments a model sent:
        its message goes back to the model.

        Raises:
            ToolArgumentsError: they do not match.
        """
        known = self.parameters.get("properties", {})
        values: dict[str, Any] = {}
        unexpected = 0
        for key, value in arguments.items():
            if key in known:
                values[key] = value
            else:
                unexpected += 1
                if unexpected <= MAX_REPORTED_ERRORS:  # enough for pydantic to name; the rest are counted
                    values[key] = value
        try:
            model = self._validate(values)
        except pydantic.ValidationError as exc:
            errors = exc.errors(include_url=False)[:MAX_REPORTED_ERRORS]
            more = exc.error_count() - len(errors) + max(0, unexpected - MAX_REPORTED_ERRORS)
            raise ToolArgumentsError(
                self.name, f"invalid arguments for tool {self.name!r}: {_summarize(errors, more)}", errors
            ) from None
        return {info.alias: getattr(model, field) for field, info in type(model).model_fields.items()}

    def _validate(self, values: dict[str, Any]) -> Any:
        try:
            return self._arguments.validate_python(values)
        except pydantic.ValidationError as exc:
            refused = exc
        # A model's arguments are JSON: in JSON mode a strict model (ConfigDict(strict=True)) takes
        # "red" for an Enum, "2024-05-01" for a date, [1, 2] for a tuple, which Python mode refuses.
        # Tried only once Python mode has refused, so valid calls pay nothing for it.
        try:
            text = pydantic_core.to_json(values)
        except (ValueError, RecursionError):  # not JSON (a caller's Python objects): Python mode's answer
            raise refused from None
        return self._arguments.validate_json(text)

    async def call(self, ctx: ToolContext[Any], arguments: Mapping[str, Any]) -> Any:
        """Validate ``arguments``, then run the tool with them.

        Raises:
            ToolArgumentsError: the arguments do not match the schema.
        """
        return await self.invoke(ctx, self.validate(arguments))

    async def invoke(
        self, ctx: ToolContext[Any], validated: dict[str, Any], *, limiter: ThreadLimiter | None = None
    ) -> Any:
        """Run the tool with arguments that :meth:`validate` returned.

        A sync function runs in a worker thread, taken from ``limiter`` (the
        runtime passes its own; ``None``: trio's default thread limiter). If
        the call is cancelled, the thread is abandoned (its result discarded)
        so cancellation is prompt, but it holds its place in ``limiter`` until
        its function returns; when the call ends, a question the thread
        asks (``trio.from_thread.run(ctx.elicit, ...)``) is withdrawn, and
        ``elicit`` raises :exc:`ElicitationUnavailable` in the thread.
        """
        kwargs = validated  # not changed: both calls below copy it
        bound = None
        if self._context_parameter is not None:
            if not self._is_async and ctx.elicitor is not None:
                bound = _CallElicitor(ctx.elicitor)
                ctx = attrs.evolve(ctx, elicitor=bound)
            kwargs = {**validated, self._context_parameter: ctx}
        if self._is_async:
            return await self.function(**kwargs)
        try:
            return await trio.to_thread.run_sync(
                functools.partial(self.function, **kwargs),
                abandon_on_cancel=True,
                # trio documents the limiter as any object with these two methods;
                # its annotation names only CapacityLimiter.
                limiter=typing.cast("trio.CapacityLimiter | None", limiter),
            )
        finally:
            if bound is not None:
                bound.end()


class _CallElicitor:
    """A sync tool's ``ctx.elicit``, bound to its call: withdrawn when the call ends.

    The thread asks with ``trio.from_thread.run(ctx.elicit, ...)``, which
    trio runs in a system task (the call's thread is abandoned on cancel),
    outside the call's cancel scope. So each question runs in a scope of its
    own that the call cancels when it ends (timeout, cancel, its run
    ending); a question asked after that fails at once.
    """

    __slots__ = ("_elicitor", "_ended", "_scopes")

    def __init__(self, elicitor: Elicitor) -> None:
        self._elicitor = elicitor
        self._scopes: set[trio.CancelScope] = set()
        self._ended = False

    async def elicit(
        self, message: str, *, schema: type[Any] | Mapping[str, Any] | None, timeout: float | None, agent: str
    ) -> ElicitationResult:
        if not self._ended:
            scope = trio.CancelScope()
            self._scopes.add(scope)
            try:
                with scope:
                    return await self._elicitor.elicit(message, schema=schema, timeout=timeout, agent=agent)
            finally:
                self._scopes.discard(scope)
        raise ElicitationUnavailable("no consumer can answer: the tool call has ended (its question is withdrawn)")

    def end(self) -> None:
        """The call has ended: withdraw its pending questions, and refuse new ones."""
        self._ended = True
        for scope in self._scopes:
            scope.cancel()


class ThreadLimiter(Protocol):
    """What bounds the worker threads of sync tools, as ``trio.to_thread.run_sync`` takes it.

    ``trio.CapacityLimiter`` is one; the runtime passes its own.
    """

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Wait for a thread for ``borrower``."""
        ...

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give back the thread ``borrower`` held."""
        ...


@runtime_checkable
class Toolset(Protocol):
    """A source of tools opened when a run starts (the seam for MCP servers).

    ``open_tools`` returns an async context manager: the tools are usable
    while it is open, and it is closed when the run ends, on every path.
    """

    def open_tools(self, ctx: RunContext[Any]) -> AbstractAsyncContextManager[Sequence[Tool]]:
        """Open the toolset for one run."""
        ...


@overload
def tool(function: F, /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool | Callable[[dict[str, Any]], bool] = False,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool | Callable[[dict[str, Any]], bool] = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` of a sync or async function.

    The argument schema comes from the type hints, each argument's description
    from the ``Args:`` (or ``Keyword Args:``) section of the docstring, and
    the tool's description from the rest of the docstring. With ``requires_approval`` (``True``, or a
    predicate of the validated arguments) the runtime asks the human before
    each call; a declined call gives the model "declined by user". A
    parameter annotated :class:`ToolContext` (one at most, and not
    positional-only) receives the run's context and is not shown to the model.

    What the function returns is the result the model sees: a ``str`` as it
    is, an :class:`ImagePart` or :class:`DocumentPart` (or a list of them
    and strings) as content parts, where the provider takes them in a tool
    result (Anthropic does; Chat Completions gets the text and a placeholder
    for each image), anything else as JSON.

    Example::

        @tool
        def add(a: int, b: int) -> int:
            \"\"\"Add two numbers.

            Args:
                a: The first number.
                b: The second number.
            \"\"\"
            return a + b

    Raises:
        AgentDefinitionError: a parameter has no type hint or cannot be described.
    """

    def make(fn: Callable[..., Any]) -> Tool:
        made = _make_tool(fn, name=name, description=description)
        return attrs.evolve(made, requires_approval=requires_approval) if requires_approval else made

    if function is not None:
        return make(function)
    return make


def as_tool(item: Tool | Callable[..., Any]) -> Tool:
    """Return ``item`` if it is a :class:`Tool`, else make one of the function."""
    return item if isinstance(item, Tool) else tool(item)


def _make_tool(fn: Callable[..., Any], *, name: str | None, description: str | None) -> Tool:
    tool_name = name or getattr(fn, "__name__", None)
    if not tool_name or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tool_name):
        raise AgentDefinitionError(f"{fn!r} needs a tool name of letters, digits, '_' or '-'")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        # Called, it gives a generator, not a result: the model was sent its repr (and a sync one's body ran on
        # the event loop, outside the worker thread and tool_timeout, when its result was converted).
        raise AgentDefinitionError(
            f"tool {tool_name!r} is a generator function: a tool returns its result (collect it in a list)"
        )
    summary, arg_docs = _parse_docstring(inspect.getdoc(fn) or "")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise AgentDefinitionError(f"cannot resolve the type hints of tool {tool_name!r}: {exc}") from exc
    fields: dict[str, Any] = {}
    context_parameter = None
    for parameter in inspect.signature(fn).parameters.values():
        hint = hints.get(parameter.name)
        if hint is not None and _is_context(hint):
            # The context is passed by its name, once: checked here, not at every call.
            if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                raise AgentDefinitionError(
                    f"tool {tool_name!r}: the context parameter {parameter.name!r} must be an ordinary "
                    "or keyword-only parameter (not positional-only, *args or **kwargs)"
                )
            if context_parameter is not None:
                raise AgentDefinitionError(
                    f"tool {tool_name!r}: only one parameter may take the context, "
                    f"not both {context_parameter!r} and {parameter.name!r}"
                )
            context_parameter = parameter.name
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise AgentDefinitionError(f"tool {tool_name!r}: *args and **kwargs are not supported")
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise AgentDefinitionError(f"tool {tool_name!r}: positional-only parameters are not supported")
        if hint is None:
            raise AgentDefinitionError(f"tool {tool_name!r}: parameter {parameter.name!r} needs a type hint")
        default = ... if parameter.default is parameter.empty else parameter.default
        # Prefixed field names, aliased back, so parameters may be called
        # `json`, `schema` or `model_config` without clashing with BaseModel.
        fields[f"p_{parameter.name}"] = (
            hint,
            pydantic.Field(default, alias=parameter.name, description=arg_docs.get(parameter.name)),
        )
    try:
        model = pydantic.create_model(
            f"{tool_name}_arguments",
            __config__=pydantic.ConfigDict(extra="forbid", protected_namespaces=()),
            **fields,
        )
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(model)
        schema = adapter.json_schema()
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as exc:
        raise AgentDefinitionError(f"tool {tool_name!r}: cannot describe its arguments: {exc}") from exc
    schema.pop("title", None)
    return Tool(
        name=tool_name,
        description=description if description is not None else summary,
        parameters=schema,
        function=fn,
        arguments=adapter,
        context_parameter=context_parameter,
        is_async=inspect.iscoroutinefunction(fn),
    )


def _is_context(hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and issubclass(origin, RunContext)


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and its ``Args:`` (or ``Keyword Args:``,
    ``Other Parameters:``) entries.

    Other sections (``Returns:``, ``Raises:``, ``Example:``) are for people
    reading the code, not for the model, and are left out.
    """
    description: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    entry_indent: int | None = None
    current: str | None = None
    for line in doc.splitlines():
        indent = len(line) - len(line.lstrip())
        if indent == 0 and _SECTION.match(line):
            section = "args" if _ARGS_HEADER.match(line) else "other"
            entry_indent = current = None
            continue
        if section is None or (indent == 0 and line.strip()):
            section = None
            description.append(line)
        elif section == "args" and line.strip():
            entry_indent = indent if entry_indent is None else entry_indent
            match = _ARG_LINE.match(line)
            if indent == entry_indent and match:
                current = match.group(1).lstrip("*")
                args[current] = match.group(3).strip()
            elif current is not None:
                args[current] = f"{args[current]} {line.strip()}".lstrip()
    return "\n".join(description).strip(), args


def _summarize(errors: list[ErrorDetails], more: int) -> str:
    """The errors (each clipped), then how many ``more`` there were."""
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error["loc"]) or "arguments"
        parts.append(f"{_clip(location, _MAX_LOCATION)}: {_clip(error['msg'], _MAX_PROBLEM)}")
    if more:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


ToolLike = Tool | Toolset | Callable[..., Any] | Callable[..., Awaitable[Any]]
"""What :attr:`Agent.tools` accepts: tools, toolsets, or plain functions."""
