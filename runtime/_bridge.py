"""ElicitationBridge: routes a tool's question to the consumer of the run it belongs to."""

from __future__ import annotations

import copy
import datetime
import functools
import math
import re
import secrets
from collections.abc import Callable, Hashable, Mapping
from contextvars import ContextVar, Token
from typing import Any, Final, Protocol, cast

import attrs
import pydantic
import trio

from agents import ElicitationResult, ElicitationTimeout, ElicitationUnavailable

from ._exceptions import InvalidElicitationResponse
from .events import ElicitationRequest


class ElicitationTarget(Protocol):
    """Where questions go: the innermost run of the current task (a run, or a sub-agent's nested run)."""

    @property
    def pending(self) -> dict[str, PendingElicitation]:
        """Questions waiting for the consumer's answer, by id."""
        ...

    """Requests waiting for an answer, shared by a top-level run and its nested runs."""

    def can_answer(self) -> bool:
        """Whether a consumer is there to answer (it streams the run and has not left)."""
        ...

    async def deliver(self, request: ElicitationRequest) -> None:
        """Send the request on the run's stream (block policy, bounded by the run's scope)."""
        ...

    async def answered(self, request_id: str) -> None:
        """The request was answered: a durable run writes that it no longer waits before the tool gets the
        answer (raising :class:`ElicitationUnavailable` if it cannot)."""
        ...


# The target is task-local: set with a `with` block by each run (and each
# nested run) around its body, so every exit path restores the previous one,
# and concurrent tools, or concurrent sub-agents, never see each other's.
_TARGET: ContextVar[ElicitationTarget | None] = ContextVar("trio_agents_elicitation_target", default=None)


def clear_target() -> None:
    """Forget the current task's target: for a task that serves no run, though a run's task started it."""
    _TARGET.set(None)


class TargetScope:
    """``with bridge.target(run):`` sets the task's target, and restores the previous one on every exit."""

    __slots__ = ("_target", "_token")

    def __init__(self, target: ElicitationTarget) -> None:
        self._target = target
        self._token: Token[ElicitationTarget | None] | None = None

    def __enter__(self) -> None:
        self._token = _TARGET.set(self._target)

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _TARGET.reset(self._token)


@attrs.define(eq=False)
class PendingElicitation:
    """One question waiting for its answer."""

    id: str
    validate: Callable[[Any], Any]
    answered: trio.Event = attrs.field(factory=trio.Event)
    result: ElicitationResult | None = None

    def answer(self, action: str, content: Any) -> None:
        """Validate and deliver an answer (raises InvalidElicitationResponse, leaving it open)."""
        if action not in ("accept", "decline", "cancel"):
            raise InvalidElicitationResponse(f"action must be 'accept', 'decline' or 'cancel', not {action!r}")
        if action == "accept":
            try:
                content = self.validate(content)
            except (ValueError, TypeError) as exc:  # pydantic.ValidationError is a ValueError
                if isinstance(exc, pydantic.ValidationError):
                    reason = "; ".join(error["msg"] for error in exc.errors(include_url=False))
                else:
                    reason = str(exc)
                raise InvalidElicitationResponse(
                    f"the answer to {self.id} does not match its schema: {reason}"
                ) from None
        else:
            content = None
        self.result = ElicitationResult(action, content)  # type: ignore[arg-type]
        self.answered.set()


class ElicitationBridge:
    """A session's bridge between tools that ask and the consumer who answers.

    ``ToolContext.elicit`` goes through it: the question becomes an
    :class:`~runtime.events.ElicitationRequest` on the stream of the run the
    tool belongs to (for a sub-agent, wrapped in its parent's stream), and
    ``RunStream.respond`` delivers the answer. No lock is held at any point;
    requests travel on the run's bounded event stream.
    """

    __slots__ = ("asked",)

    def __init__(self) -> None:
        self.asked = 0
        """Questions delivered so far."""

    @staticmethod
    def target(target: ElicitationTarget) -> TargetScope:
        """Route this task's questions (and its child tasks') to ``target`` inside a ``with`` block."""
        return TargetScope(target)

    async def elicit(
        self,
        message: str,
        *,
        schema: type[Any] | Mapping[str, Any] | None,
        timeout: float | None,
        agent: str,
        request_id: str | None = None,
    ) -> ElicitationResult:
        """Ask the consumer of the current run; see ``ToolContext.elicit``.

        Its id is made up (unique across processes and restarts: a durable session keeps it) unless given.

        Raises:
            ValueError: ``timeout`` is negative or NaN (before anything is asked).
            TypeError: ``schema`` is no type, typing form or mapping pydantic can make a schema of (before anything
                is asked).
        """
        if timeout is not None and not timeout >= 0:  # NaN fails every comparison
            raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
        target = _TARGET.get()
        if target is None or not target.can_answer():
            raise ElicitationUnavailable(
                "no consumer can answer: the run is not streamed to anyone (ask()), or its consumer left"
            )
        json_schema, validate = compile_schema(schema)
        pending = PendingElicitation(request_id or f"elicitation-{secrets.token_hex(8)}", validate)
        target.pending[pending.id] = pending
        try:
            # The timeout covers delivery too: a consumer that stopped reading
            # must not hold the tool past it. (A cancelled send is withdrawn.)
            with trio.move_on_after(math.inf if timeout is None else timeout):
                try:
                    await target.deliver(ElicitationRequest(pending.id, message, json_schema, agent))
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    raise ElicitationUnavailable("no consumer can answer: the run's stream is closed") from None
                self.asked += 1
                await pending.answered.wait()
            if pending.result is None:
                raise ElicitationTimeout(f"{pending.id} was not answered within {timeout}s")
            await target.answered(pending.id)  # outside the timeout: an answer given is kept, or an error
        finally:
            target.pending.pop(pending.id, None)
        assert pending.result is not None
        return pending.result


def compile_schema(schema: type[Any] | Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, Callable[[Any], Any]]:
    """The JSON schema to show, and the validator of accepted content."""
    if schema is None:
        return None, as_given
    if isinstance(schema, Mapping):
        # Two copies: the validator keeps the schema as the tool asked it, whatever the consumer does with
        # the one it is shown, or the tool with its own afterwards.
        flat = copy.deepcopy(dict(schema))
        return copy.deepcopy(flat), functools.partial(_validate_flat, flat)
    try:
        try:
            hash(schema)
        except TypeError:  # an unhashable type form: compiled each time
            json_schema, validate = _compile_type.__wrapped__(schema)
        else:
            json_schema, validate = _compile_type(cast("Hashable", schema))
    except pydantic.PydanticUserError as exc:  # 42, "x", object(): the tool's mistake, said in our terms
        raise TypeError(
            f"an elicitation schema is a type, a typing form or a flat JSON schema mapping; pydantic cannot make a"
            f" schema of {schema!r}: {exc}"
        ) from exc
    return copy.deepcopy(json_schema), validate  # a copy: the consumer may change what it is given


@functools.lru_cache(maxsize=256)
def _compile_type(schema: Any) -> tuple[dict[str, Any], Callable[[Any], Any]]:
    # Cached: building a TypeAdapter costs a few hundred microseconds, and
    # pydantic's schema generator leaves a reference cycle for the collector
    # each time (a dict of its own bound methods).
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(schema)
    return adapter.json_schema(), adapter.validate_python


def as_given(content: Any) -> Any:
    """The validator of a question without a schema: any content, as it is."""
    return content


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _validate_flat(schema: dict[str, Any], content: Any) -> Any:
    """Validate against a JSON schema of the flat kind MCP elicitation uses (primitive properties).

    Checked: ``type``, ``required``, ``additionalProperties: false``, ``enum``, ``minimum``/``maximum``,
    ``minLength``/``maxLength`` and the formats in ``_FORMATS``.
    """
    _check_value(schema, content, "answer")
    if schema.get("type") == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        missing = [name for name in schema.get("required", []) if name not in content]
        if missing:
            raise ValueError(f"missing required field(s): {', '.join(missing)}")
        for name, value in content.items():
            if name in properties:
                _check_value(properties[name], value, name)
            elif schema.get("additionalProperties") is False:
                raise ValueError(f"unexpected field {name!r}")
    return content


def _check_value(schema: dict[str, Any], value: Any, where: str) -> None:
    kind = schema.get("type")
    allowed = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
    if allowed is not None and (not isinstance(value, allowed) or (kind != "boolean" and isinstance(value, bool))):
        raise ValueError(f"{where}: expected {kind}, got {type(value).__name__}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{where}: must be one of {schema['enum']!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ValueError(f"{where}: minimum is {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ValueError(f"{where}: maximum is {schema['maximum']}")
    if isinstance(value, str):
        # len() counts code points, as JSON Schema's lengths do.
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise ValueError(f"{where}: at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ValueError(f"{where}: at most {schema['maxLength']} characters")
        if "format" in schema and not _has_format(value, schema["format"]):
            raise ValueError(f"{where}: not a valid {schema['format']}")


# MCP's string formats, checked by simple rules: an email has one @ with text on both sides; a uri is a
# scheme, a colon and only characters a URI may hold; date and date-time have RFC 3339's shape.
_FORMATS: Final[dict[str, re.Pattern[str]]] = {
    "email": re.compile(r"[^@\s]+@[^@\s]+"),
    "uri": re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*"),
    "date": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    "date-time": re.compile(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
    ),
}


def _has_format(value: str, name: Any) -> bool:
    pattern = _FORMATS.get(name) if isinstance(name, str) else None
    if pattern is None:
        return True  # other formats only annotate, as JSON Schema has it by default
    if pattern.fullmatch(value) is None:
        return False
    try:  # the shape is right; fromisoformat checks the numbers (no 2024-02-30)
        if name == "date":
            datetime.date.fromisoformat(value)
        elif name == "date-time":
            leap = value[17:19] == "60"  # a leap second, which Python's datetime cannot hold
            datetime.datetime.fromisoformat((value[:17] + "59" + value[19:] if leap else value).upper())
    except ValueError:
        return False
    return True
