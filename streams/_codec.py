"""Runtime events as JSON objects, and back: the wire format of every stream.

Decoding is for data from a peer: every field of a known event is
validated (strictly: a ``str`` field takes a string, a finish reason is one
of :data:`~runtime.events.FINISH_REASONS`, a stop reason one of
:data:`~runtime.events.STOP_REASONS`, a ``float`` a finite number), and an
event type this version does not know becomes an :class:`UnknownEvent`, so a
client keeps working against a newer server.

A user's :class:`~runtime.events.CustomEvent` travels as ``{"type":
"CustomEvent", "name": <its class name>, <field>: <value>, ...}`` and always
decodes as an :class:`UnknownEvent` of type ``CustomEvent``: the receiving
process cannot know the sender's class, and a ``name`` that happens to be a
built-in event's never makes it one.

A run's input travels here too: a string, or a list of content parts
(:func:`content_to_json`, :func:`content_from_json`).

Every JSON text the servers send goes out through :func:`utf8` (or, for a
WebSocket text frame, :func:`escape_surrogates`): ``"\\ud800"`` is valid JSON,
so a string from a client, a model or a tool may hold a lone surrogate, which
UTF-8 cannot encode; it is sent as that escape again.
"""

from __future__ import annotations

import functools
import re
import typing
from typing import TYPE_CHECKING, Any, Final, cast

import attrs
import pydantic
from attrs import AttrsInstance

from agents._content import user_content
from agents._json import MAX_JSON_DEPTH
from runtime import events
from runtime._wire import (
    content_from_json as _content_from_json,
    content_to_json as content_to_json,
    dumps as dumps,
    event_to_json as _event_to_json,
)
from runtime.events import FINISH_REASONS, STOP_REASONS, CustomEvent, Event, ModelStopped, RunFinished, SubAgentEvent

from ._exceptions import MalformedMessageError

if TYPE_CHECKING:
    from agents._content import Content

_TYPES: Final[dict[str, type[AttrsInstance]]] = {cls.__name__: cls for cls in typing.get_args(Event)}
"""Every event class, by the ``type`` it has on the wire (all of :data:`runtime.events.Event`)."""
_STRICT: Final = pydantic.ConfigDict(strict=True, allow_inf_nan=False)
"""Decoding config: no coercion; and no NaN or infinity, which ``report_progress`` refuses to send."""
_CUSTOM: Final = CustomEvent.__name__
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


@attrs.frozen
class UnknownEvent:
    """An event this version cannot represent: a type it does not know (a newer server's), a user's
    :class:`~runtime.events.CustomEvent` (``type`` ``"CustomEvent"``, its class name in ``data["name"]``,
    its fields beside it), or a :class:`~runtime.events.SubAgentEvent` wrapping one of those.

    Encoding it gives ``data`` back, so it passes through unchanged.
    """

    type: str
    """The event's ``type`` on the wire."""
    data: dict[str, Any]
    """The JSON object as it came (``type`` included)."""


def event_to_json(event: Event | UnknownEvent) -> dict[str, Any]:
    """``{"type": <class name>, <field>: <value>, ...}`` (see :func:`runtime._wire.event_to_json`); an
    :class:`UnknownEvent` gives its ``data`` back."""
    if isinstance(event, UnknownEvent):
        return dict(event.data)
    return _event_to_json(event)


def event_from_json(data: Any) -> Event | UnknownEvent:
    """The event :func:`event_to_json` made, every field validated (extra keys, such as ``run_id`` on
    the wire, are ignored); an :class:`UnknownEvent` for a type this version does not know.

    A ``CustomEvent`` is always an ``UnknownEvent("CustomEvent", data)`` (its ``name`` must be a string):
    the user's class lives in the sending process, and this one cannot know it. ``Any`` values
    (``FinalOutput.output``, ``OutputDelta.partial``) come back as plain JSON data, never as the typed
    value the sender had. A ``RunFinished`` reason this version does not know (a newer server's) is
    ``RunFinished("error", <what it was>)``, so the run still ends; a ``ModelStopped`` one is ``"other"``
    with the unknown reason as ``raw``.

    Raises:
        MalformedMessageError: ``data`` is not an event: not a JSON object, no string ``type``, or a
            known type with a missing or invalid field (``RunFinished(reason=5)``,
            ``TextDelta(text={...})``, ``ToolProgress(progress=NaN)``, a ``CustomEvent`` without a
            string ``name``). It is also a ``ValueError``.
    """
    if not isinstance(data, dict):
        raise MalformedMessageError(f"an event is a JSON object, not {type(data).__name__}")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise MalformedMessageError(f"not an event: type {kind!r}")
    cls = _TYPES.get(kind)
    if cls is None:
        return UnknownEvent(kind, data)
    if cls is CustomEvent:
        if not isinstance(data.get("name"), str):
            raise MalformedMessageError("malformed CustomEvent event: 'name' is missing or not a string")
        return UnknownEvent(kind, data)
    known = _KNOWN_REASONS.get(kind)
    if known is not None:
        reason = data.get("reason")
        if isinstance(reason, str) and reason not in known:
            return _unknown_reason(cls, reason, data)
    if cls is SubAgentEvent:
        # Unwrapped in a loop, not by recursion: a peer's nesting, however deep, is a typed error, never a
        # RecursionError (a sub-agent nests at most Agent.max_depth deep: the limit is far above any real one).
        agents: list[str] = []
        wrapped: Any = data
        while isinstance(wrapped, dict) and wrapped.get("type") == "SubAgentEvent":
            if len(agents) == MAX_JSON_DEPTH:
                raise MalformedMessageError(f"a SubAgentEvent nested more than {MAX_JSON_DEPTH} deep")
            agents.append(_field(cls, "agent", wrapped))
            wrapped = wrapped.get("event")
        inner = event_from_json(wrapped)
        if isinstance(inner, UnknownEvent):
            return UnknownEvent(kind, data)
        for agent in reversed(agents):
            inner = SubAgentEvent(agent=agent, event=inner)
        return inner
    values = {name: _field(cls, name, data) for name in _validators(cls) if name in data or _required(cls, name)}
    return cast("Event", cls(**values))


_KNOWN_REASONS: Final = {"RunFinished": FINISH_REASONS, "ModelStopped": STOP_REASONS}


def _unknown_reason(cls: type[AttrsInstance], reason: str, data: dict[str, Any]) -> Event:
    """A reason a newer server added: a run's ending is still an ending (``error``), a model's stop ``other``."""
    if cls is ModelStopped:
        raw = _field(cls, "raw", data) if data.get("raw") is not None else None
        return ModelStopped("other", raw or reason)
    message = _field(cls, "message", data) if data.get("message") is not None else None
    detail = f"the run finished with {reason!r}, a reason this version does not know"
    return RunFinished("error", f"{detail}: {message}" if message else detail)


def _field(cls: type[AttrsInstance], name: str, data: dict[str, Any]) -> Any:
    if name not in data:
        raise MalformedMessageError(f"malformed {cls.__name__} event: {name!r} is missing")
    try:
        return _validators(cls)[name].validate_python(data[name])
    except pydantic.ValidationError as exc:
        problem = exc.errors()[0]["msg"] if exc.errors() else str(exc)
        raise MalformedMessageError(f"malformed {cls.__name__} event: {name!r}: {problem}") from None


def _required(cls: type[AttrsInstance], name: str) -> bool:
    return attrs.fields_dict(cls)[name].default is attrs.NOTHING


@functools.cache
def _validators(cls: type[AttrsInstance]) -> dict[str, pydantic.TypeAdapter[Any]]:
    """A strict validator per field of ``cls`` (but a sub-agent's ``event``, decoded by recursion)."""
    hints = typing.get_type_hints(cls, vars(events))
    return {
        field.name: pydantic.TypeAdapter(hints[field.name], config=_STRICT)
        for field in attrs.fields(cls)
        if not (cls is SubAgentEvent and field.name == "event")
    }


# -- a run's input: text, or text and content parts ------------------------------


def content_from_json(value: Any) -> Content:
    """A run's input from the wire: a string, or a list of parts (see :func:`content_to_json`).

    Raises:
        MalformedMessageError: not a string or a non-empty list of parts; parts that are all empty
            text (which a run refuses, with the same message); a part of an unknown ``type``, with an
            unknown or mistyped field, bad base64, or that fails the part's own validation (no source,
            an unsupported media type ...). It is also a ``ValueError``.
    """
    try:
        # user_content: what Session.run would refuse is refused here, as a malformed body, not a 500.
        return user_content(_content_from_json(value))
    except ValueError as exc:
        raise MalformedMessageError(str(exc)) from None


# -- JSON text for a client ------------------------------------------------------


def utf8(text: str) -> bytes:
    """JSON text (as :func:`dumps` makes it) in UTF-8, a lone surrogate in it written as its escape.

    ``json.loads`` gives ``"\\ud800"`` as a lone surrogate, which UTF-8
    cannot encode (``str.encode`` raises). In JSON text one can only be
    inside a string, where ``backslashreplace`` writes exactly the escape
    ``\\ud800``, which decodes back to it: nothing is lost. Text without
    one (nearly all) costs one ``encode``, as before.
    """
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


def escape_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written as its escape (``\\ud800``, six characters), so that UTF-8
    can encode it: :func:`utf8` for what must stay a ``str`` (a WebSocket text frame, a string for the MCP SDK,
    whose encoder refuses surrogates). In JSON text that is lossless; in plain text, a visible stand-in.

    ASCII text is returned at once, other text after one scan that finds no surrogate.
    """
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode()
