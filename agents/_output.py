"""Typed output: how an agent's answer is asked for, parsed while it streams, and validated."""

from __future__ import annotations

import itertools
import json
import re
import types
import typing
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import pydantic
import pydantic_core

from ._exceptions import AgentDefinitionError
from ._json import MAX_JSON_DEPTH, loads_untrusted, nested_deeper_than
from ._messages import OutputSchema, ToolSpec

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

OutputMode: TypeAlias = Literal["tool", "native", "prompted"]
"""How the model gives a typed answer: by calling a ``final_result`` tool, with the provider's native
JSON-schema response format, or as JSON text asked for in the instructions."""

OUTPUT_MODES: Final = frozenset(typing.get_args(OutputMode))

FINAL_RESULT_TOOL: Final = "final_result"
"""The tool a model calls to answer in ``output_mode="tool"`` (``final_result_<Member>`` per member of a union,
each character but a letter, digit, ``_`` or ``-`` made ``_``, cut to 64 characters)."""

_WRAPPER: Final = "response"
"""The one property a non-object output type is wrapped in (tool arguments and native schemas are objects)."""

_BRACKET: Final = re.compile(r"[{[]")
_MAX_STARTS: Final = 32  # the brackets tried as where a text answer's JSON begins


class OutputValidationError(Exception):
    """The model's answer is not a valid output; the message is what the model is told, to retry."""


class _Target:
    """One shape the answer may take: a type, its adapter, and its (object) schema."""

    __slots__ = ("adapter", "description", "name", "schema", "wrapped")

    def __init__(self, output_type: Any, name: str) -> None:
        try:
            self.adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(output_type)
            schema = self.adapter.json_schema()
        except (pydantic.PydanticSchemaGenerationError, pydantic.errors.PydanticUserError, TypeError) as exc:
            raise AgentDefinitionError(
                f"output_type {output_type!r} is not something pydantic can validate: {exc}"
            ) from None
        self.name = name
        self.description = str(schema.pop("description", "") or f"The final answer, as {_type_name(output_type)}.")
        self.wrapped = schema.get("type") != "object"
        if self.wrapped:
            defs = schema.pop("$defs", None)
            schema = {"type": "object", "properties": {_WRAPPER: schema}, "required": [_WRAPPER]}
            if defs:
                schema["$defs"] = defs  # refs are "#/$defs/...": they resolve from the new root
        self.schema: dict[str, Any] = schema

    def validate(self, value: Any) -> Any:
        if self.wrapped:
            if not isinstance(value, dict) or _WRAPPER not in value:
                raise OutputValidationError(f'the answer must be a JSON object {{"{_WRAPPER}": ...}}')
            value = value[_WRAPPER]
        try:
            # The answer is JSON, so it is checked in JSON mode (as ``model_validate_json`` would): a
            # strict model takes "2024-05-01" for a date, "red" for an Enum and [1, 2] for a tuple there.
            return self.adapter.validate_json(pydantic_core.to_json(value))
        except pydantic.ValidationError as exc:
            errors = json.dumps(exc.errors(include_url=False, include_context=False), default=str)
            raise OutputValidationError(f"the answer did not validate: {errors}") from None
        except pydantic_core.PydanticSerializationError as exc:  # a lone surrogate ("\ud83d": JSON, not Unicode)
            raise OutputValidationError(f"the answer is not valid Unicode text: {exc}") from None

    def unwrap(self, partial: Any) -> Any:
        return partial.get(_WRAPPER) if self.wrapped and isinstance(partial, dict) else partial


class OutputSpec:
    """What ``Agent(output_type=..., output_mode=...)`` asks of the model, and how its answer is checked.

    ``str`` (the default) is plain text: the run's output is the last
    response's text, as it always was.
    """

    __slots__ = ("_by_tool", "_targets", "accepts_text", "is_text", "mode", "output_type")

    def __init__(self, output_type: Any, mode: OutputMode) -> None:
        if mode not in OUTPUT_MODES:
            raise AgentDefinitionError(f"output_mode must be one of {sorted(OUTPUT_MODES)}, not {mode!r}")
        self.output_type = output_type
        self.mode = mode
        self.is_text = output_type is str
        members = _union_members(output_type)
        # In tool mode a union may include str: a plain-text answer is then that member.
        self.accepts_text = self.is_text or (mode == "tool" and str in members)
        self._targets: list[_Target] = []
        if self.is_text:
            self._by_tool: dict[str, _Target] = {}
            return
        if mode == "tool":
            structured = [member for member in members if member is not str]
            targets = [_Target(member, FINAL_RESULT_TOOL) for member in structured]
            if len(targets) > 1 and not any(target.wrapped for target in targets):
                # A union of objects (models, dataclasses, TypedDicts): one tool each, which models pick well.
                names = [_provider_name(f"{FINAL_RESULT_TOOL}_{_type_name(member)}") for member in structured]
                if len(set(names)) != len(names):
                    raise AgentDefinitionError(
                        f"output_type {output_type!r}: union members need distinct names "
                        f"(as tool names: {FINAL_RESULT_TOOL}_<Name>, cut to 64 characters)"
                    )
                self._targets = [_Target(member, name) for member, name in zip(structured, names, strict=True)]
            else:
                # One type, or a union with scalars (``int | None``): one tool for the whole of it.
                rest = structured[0] if len(structured) == 1 else typing.Union[tuple(structured)]  # noqa: UP007
                self._targets = [_Target(rest, FINAL_RESULT_TOOL)]
        else:
            self._targets = [_Target(output_type, FINAL_RESULT_TOOL)]
        self._by_tool = {target.name: target for target in self._targets} if mode == "tool" else {}

    # -- what the model is asked -------------------------------------------------

    def tool_specs(self) -> tuple[ToolSpec, ...]:
        """The output tools (``output_mode="tool"``), to offer with the agent's own tools."""
        return tuple(ToolSpec(target.name, target.description, target.schema) for target in self._by_tool.values())

    def is_output_tool(self, name: str) -> bool:
        """Whether a call of ``name`` is an answer, not a tool to run."""
        return name in self._by_tool

    def request_output(self) -> OutputSchema | None:
        """The schema for the provider's native structured output (``output_mode="native"``)."""
        if self.mode != "native" or self.is_text:
            return None
        target = self._targets[0]
        return OutputSchema(_schema_name(self.output_type), target.schema, target.description)

    def instructions(self, instructions: str) -> str:
        """The instructions, with the schema appended in ``output_mode="prompted"``."""
        if self.mode != "prompted" or self.is_text:
            return instructions
        schema = json.dumps(self._targets[0].schema)
        prompt = (
            "Answer with a single JSON value matching this JSON schema, and nothing else "
            f"(no prose, no code fences):\n{schema}"
        )
        return f"{instructions}\n\n{prompt}" if instructions else prompt

    def text_retry(self) -> str:
        """What the model is told when it answered in text where a tool call was required."""
        names = " or ".join(self._by_tool)
        return f"Plain text is not accepted as the answer: answer by calling {names} with the result."

    # -- checking the answer -----------------------------------------------------

    def validate_call(self, name: str, arguments: Mapping[str, Any] | str) -> Any:
        """The validated output from a call of output tool ``name``.

        Raises:
            OutputValidationError: the arguments are not valid JSON, or do not validate.
        """
        target = self._by_tool[name]
        if isinstance(arguments, str):
            try:
                value = loads_untrusted(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise OutputValidationError(f"the arguments are not valid JSON: {exc}") from None
        else:
            value = dict(arguments)
            if nested_deeper_than(value, MAX_JSON_DEPTH):  # as a string's would be refused by loads_untrusted
                raise OutputValidationError(f"the arguments are nested deeper than {MAX_JSON_DEPTH} levels")
        return target.validate(value)

    def validate_text(self, text: str) -> Any:
        """The validated output from a text answer (``native`` and ``prompted`` modes): its JSON value,
        in a code fence or not, any prose before or after it ignored.

        Raises:
            OutputValidationError: the text is not valid JSON, or does not validate.
        """
        # Prose before the value may hold brackets ("Here it is [as asked]: {...}"): each start is tried in
        # turn, but none inside a value that decoded (its inner object is not the answer). The error told
        # is the last value's that decoded and did not validate (the answer comes after the prose), else
        # the first start's.
        not_json: OutputValidationError | None = None
        invalid: OutputValidationError | None = None
        invalid_at = 0
        begun = end = 0  # the last value that decoded
        inside: set[int] = set()  # the brackets inside values that did not decode
        for start in list(_json_starts(text)) or [0]:  # no start: json's own error says so
            if begun <= start < end or start in inside:
                continue
            try:
                value, end = _decode_answer(text, start)
            except ValueError as exc:
                not_json = not_json or OutputValidationError(f"the answer is not valid JSON: {exc}")
                inside |= _brackets_inside(text, start, exc)  # an object inside a broken value is not the answer
                continue
            begun = start
            try:
                return self._targets[0].validate(value)
            except OutputValidationError as exc:
                if invalid is None or start > invalid_at:  # the last in the text, not the last tried
                    invalid, invalid_at = exc, start
        refused = invalid or not_json
        assert refused is not None  # at least one start was tried
        try:
            raise refused
        finally:  # held by this frame, which its traceback holds: a cycle only the collector would free
            refused = invalid = not_json = None

    def partial(self, text: str, tool: str | None = None) -> Any:
        """The JSON value ``text`` (an answer still being written) holds so far; ``None`` if nothing yet."""
        target = self._targets[0] if tool is None else self._by_tool[tool]
        begun = end = 0
        skipped: dict[str, Any] | None = None  # a complete object that did not validate ("Example {} then")
        inside: set[int] = set()
        for start in _json_starts(text):  # as validate_text tries them
            if begun <= start < end or start in inside:
                continue
            body = text[start:]
            # A number that ends the text may be cut short (1 of 1999): left out until it is followed.
            if body[-1:].isdigit() and not _ends_in_string(body):
                body = _TRAILING_NUMBER.sub("", body)
            try:
                value = pydantic_core.from_json(body, allow_partial="trailing-strings")
            except ValueError as exc:
                inside |= _brackets_inside(text, start, exc)  # as validate_text: not inside a broken value
                continue
            try:  # complete, the value is passed over as validate_text passes it over; else it is the answer
                complete, end = _decode_answer(text, start)
            except ValueError:
                return target.unwrap(value) if isinstance(value, dict) else None
            begun = start
            if isinstance(value, dict):  # the answer is a JSON object
                try:
                    target.validate(complete)
                except OutputValidationError:
                    skipped = value
                    continue
                return target.unwrap(value)
        return None if skipped is None else target.unwrap(skipped)

    def to_json(self, value: Any) -> str:
        """The output as JSON text (a sub-agent's output, as its parent's tool result)."""
        if self.is_text and isinstance(value, str):
            return value
        return pydantic_core.to_json(value, fallback=str).decode()


def output_spec(output_type: Any, mode: OutputMode) -> OutputSpec:
    """The spec for an agent's output settings (the shared one for plain text)."""
    if output_type is str:
        if mode not in OUTPUT_MODES:
            raise AgentDefinitionError(f"output_mode must be one of {sorted(OUTPUT_MODES)}, not {mode!r}")
        return TEXT_OUTPUT
    return OutputSpec(output_type, mode)


def _union_members(output_type: Any) -> tuple[Any, ...]:
    if typing.get_origin(output_type) in (typing.Union, types.UnionType):
        return typing.get_args(output_type)
    return (output_type,)


def _type_name(output_type: Any) -> str:
    name = getattr(output_type, "__name__", None)
    if isinstance(name, str) and typing.get_origin(output_type) is None:
        return name
    return re.sub(r"\W+", "_", str(output_type)).strip("_") or "output"


def _schema_name(output_type: Any) -> str:
    return _provider_name(_type_name(output_type))


def _provider_name(name: str) -> str:
    # Providers take tool and schema names of [a-zA-Z0-9_-]{1,64} (Page[Cat] is Page_Cat_).
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64]


def _decode_answer(text: str, start: int) -> tuple[Any, int]:
    """The JSON value in a text answer from ``start``, and where it ends: a closing fence or prose after
    it is ignored, as :meth:`OutputSpec.partial` ignores it.

    Raises:
        ValueError: there is no JSON value there (as :func:`loads_untrusted`).
    """
    body = text[start:]
    try:
        return loads_untrusted(body), len(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise
        return loads_untrusted(body[: exc.pos]), start + exc.pos  # json says where the value ended


_TRAILING_NUMBER: Final = re.compile(r"-?\d[\d.eE+-]*\Z")


def _brackets_inside(text: str, start: int, error: ValueError) -> set[int]:
    """The brackets inside the value from ``start`` that did not decode, up to where it went wrong, but
    those in its strings: a cut-off or malformed answer's inner object is not the answer, while a bracket of
    prose that only looked like a value's start (``["quoted] here: {...}``) swallows the real answer into
    a string of its own, which leaves that answer to be tried."""
    if not isinstance(error, json.JSONDecodeError):
        try:
            json.loads(text[start:])
        except json.JSONDecodeError as exc:
            error = exc
        except (ValueError, RecursionError):
            pass
    if not isinstance(error, json.JSONDecodeError):
        return set()
    return _scan(text, start + 1, start + error.pos)[0]


def _ends_in_string(body: str) -> bool:
    """Whether ``body``, a JSON value being written, ends inside a string (its digits are no number)."""
    return _scan(body, 0, len(body))[1]


def _scan(text: str, start: int, stop: int) -> tuple[set[int], bool]:
    """JSON text from ``start`` (outside a string) to ``stop``: where its brackets outside strings are, and
    whether it stops inside a string."""
    brackets = set()
    in_string = escaped = False
    for at in range(start, stop):
        char = text[at]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            brackets.add(at)
    return brackets, in_string


def _json_starts(text: str) -> Iterator[int]:
    """Where the JSON value may begin, likeliest first; at most :data:`_MAX_STARTS` (a hostile answer
    full of brackets stays cheap); none if it has not begun.

    Text that starts with ``{`` or ``[`` is the value (a fence inside one of its strings is no fence);
    else the value is the first after the opening of the first code fence, or, with no fence, the first
    in the text: prose before it is ignored. If that is no value (a bracket in the prose), the next
    ``{`` or ``[`` is tried, and so on; after those past the fence, those before it (the fence may be
    in prose after the value: "{...}. Wrap code in ``` fences.").
    """
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        yield len(text) - len(stripped)
        return
    fence = text.find("```")
    after = _BRACKET.finditer(text, fence + 3 if fence >= 0 else 0)
    before = _BRACKET.finditer(text, 0, fence) if fence >= 0 else iter(())
    for tried, match in enumerate(itertools.chain(after, before)):
        if tried == _MAX_STARTS:
            return
        yield match.start()


TEXT_OUTPUT: Final = OutputSpec(str, "tool")
"""The default: plain text."""
