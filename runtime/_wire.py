"""Events, content and messages as JSON: the one form they take outside a process (a stream, a store).

``streams`` sends events in this form and decodes what peers send (with
validation, in ``streams._codec``); a :class:`~runtime.SessionStore` keeps a
session's history and its runs' logs in it.
"""

from __future__ import annotations

import base64
import decimal
import json
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
from pydantic_core import PydanticSerializationError, to_json, to_jsonable_python

from agents import (
    AssistantMessage,
    DocumentPart,
    ImagePart,
    ReasoningBlock,
    TextPart,
    ToolCallChunk,
    ToolResultMessage,
    UserMessage,
)
from agents._exceptions import describe

from .events import CustomEvent, SubAgentEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    from agents import ContentPart, Message
    from agents._content import Content

    from .events import Event

_CUSTOM: Final = CustomEvent.__name__

_ASCII_DUMPS: Final[Callable[[Any], str]] = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
"""``json.dumps`` without NaN and Infinity, every non-ASCII character escaped. One encoder made once:
``json.dumps`` with arguments builds a new one per call."""


def dumps(value: Any) -> str:
    """Compact JSON text, one line, of a value already in JSON form: what every stream sends and a store keeps.

    pydantic-core's encoder, several times faster than ``json``'s (every event goes through it). A
    number JSON cannot hold (infinite or NaN: a tool's ``float("inf")``, a custom event's field) is
    written ``null``, as JavaScript's ``JSON.stringify`` does, never ``Infinity`` or ``NaN``, which no
    JSON parser need take. An integer of over 4,300 digits (a tool's ``math.factorial(2000)``) is written
    as its decimal string: Python's ``json`` refuses to read a longer number (``sys.int_max_str_digits``),
    so a client, or the store's own recovery, could not read the event back. A string holding a lone
    surrogate (valid JSON's ``"\\ud800"``, from a client, a model or a tool) is written as that escape:
    pydantic-core, and UTF-8, refuse the character itself.
    """
    try:
        text = to_json(value, inf_nan_mode="null").decode()
    except PydanticSerializationError:  # a lone surrogate, or nested deeper than pydantic-core goes
        pass
    else:
        # A run of digits that long may be a number no reader takes (or only a string's): walk it then.
        if len(text) <= _MAX_DIGITS or _LONG_DIGITS.search(text) is None:
            return text
        return to_json(_readable(value), inf_nan_mode="null").decode()
    try:
        return _ASCII_DUMPS(value)
    except ValueError:  # and a number JSON cannot hold: the only time the value is walked first
        return _ASCII_DUMPS(_readable(value))


_MAX_DIGITS: Final = 4300
"""The longest integer, in decimal digits, Python's ``json`` reads by default (``sys.int_max_str_digits``)."""
_TOO_LONG: Final = 10**_MAX_DIGITS
_LONG_DIGITS: Final = re.compile(rf"(?<!\d)\d{{{_MAX_DIGITS + 1}}}")  # anchored: not retried inside a run


def _readable(value: Any) -> Any:
    """``value`` with every infinite or NaN number made ``None``, and every integer too long to read back its
    decimal string (``str`` refuses it: ``Decimal``'s does not)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool) and not -_TOO_LONG < value < _TOO_LONG:
        return str(decimal.Decimal(value))
    if isinstance(value, dict):
        return {key: _readable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_readable(item) for item in value]
    return value


_PLAIN: Final = frozenset({str, int, float, bool, type(None)})
"""Values that are their own JSON form: no conversion needed."""
_SHAPES: Final[dict[type[Any], tuple[str, str | None, tuple[str, ...]]]] = {}
"""Each event class's wire ``type``, ``name`` (a custom event's) and field names, once looked up."""


def event_to_json(event: Event) -> dict[str, Any]:
    """``{"type": <class name>, <field>: <value>, ...}``; values that are not JSON become their ``str``, a value
    JSON cannot hold (bytes that are not UTF-8) its ``str`` as a whole, as a tool's result reaches the model,
    and a value nested too deep for even that, or with no ``str`` (its ``__str__``, or a pydantic computed
    field, raises), a short placeholder saying so (the event is still sent, and written).

    Any value (a typed output, a custom event's field) goes through pydantic's JSON conversion: a
    pydantic model becomes its dict. A :class:`~runtime.events.CustomEvent` (a subclass of it) is
    ``{"type": "CustomEvent", "name": <class name>, <field>: <value>, ...}``; a field of it named
    ``type`` or ``name`` is left out, so that those two always say what the event is.
    """
    if isinstance(event, SubAgentEvent):
        return {"type": "SubAgentEvent", "agent": event.agent, "event": event_to_json(event.event)}
    cls = type(event)
    shape = _SHAPES.get(cls)
    if shape is None:
        shape = _SHAPES[cls] = _shape(cls)
    kind, custom_name, names = shape
    data: dict[str, Any] = {"type": kind}
    if custom_name is not None:
        data["name"] = custom_name
    for name in names:
        value = getattr(event, name)
        data[name] = value if type(value) in _PLAIN else _jsonable(value)
    return data


def _shape(cls: type[Any]) -> tuple[str, str | None, tuple[str, ...]]:
    names = tuple(field.name for field in attrs.fields(cls))
    if issubclass(cls, CustomEvent):  # the wire form's own keys win over fields of those names
        return _CUSTOM, cls.__name__, tuple(name for name in names if name not in ("type", "name"))
    return cls.__name__, None, names


def _jsonable(value: Any) -> Any:
    # As the model gets a tool's result (runtime._loop._to_content): what JSON cannot hold, bytes that are not
    # UTF-8 say, as the str of the whole value; a placeholder only for what has no str either. Never raises:
    # an event is written by the runtime's one store writer and sent by the server, for every session.
    try:
        return to_jsonable_python(value, fallback=str)
    except Exception:  # bytes that are not UTF-8, too deep, or a __str__ / computed field that raises
        try:
            return str(value)
        except RecursionError:
            return f"<{type(value).__name__} nested too deep to send as JSON>"
        except Exception as exc:
            return f"<{type(value).__name__} that could not be converted to JSON: {describe(exc)}>"


# -- a run's input: text, or text and content parts ------------------------------


def content_to_json(content: Content) -> str | list[dict[str, Any]]:
    """A run's input on the wire: a string as it is; parts as ``{"type": "text" | "image" | "document", ...}``
    objects, bytes as base64 ``data`` (what :func:`content_from_json` reads)."""
    if isinstance(content, str):
        return content
    wire: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            wire.append({"type": "text", "text": part.text})
            continue
        item: dict[str, Any] = {"type": "image" if isinstance(part, ImagePart) else "document"}
        if part.url is not None:
            item["url"] = part.url
        else:
            item["data"] = part.base64()
        if part.media_type is not None:
            item["media_type"] = part.media_type
        if isinstance(part, DocumentPart) and part.filename is not None:
            item["filename"] = part.filename
        wire.append(item)
    return wire


_PART_FIELDS: Final = {
    "text": frozenset({"text"}),
    "image": frozenset({"url", "data", "media_type"}),
    "document": frozenset({"url", "data", "media_type", "filename"}),
}


def content_from_json(value: Any) -> Content:
    """A run's input from the wire: a string, or a list of parts (see :func:`content_to_json`).

    Raises:
        ValueError: not a string or a non-empty list of parts; a part of an unknown
            ``type``, with an unknown or mistyped field, bad base64, or that fails the part's own
            validation (no source, an unsupported media type ...).
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise ValueError("'input' must be a string or a non-empty list of content parts")
    return tuple(_part_from_json(index, item) for index, item in enumerate(value))


def _part_from_json(index: int, item: Any) -> ContentPart:
    where = f"'input' part {index}"
    if isinstance(item, str):
        return TextPart(item)
    kind = item.get("type") if isinstance(item, dict) else None
    fields = _PART_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise ValueError(f"{where} must be a string or an object of type text, image or document")
    values = {name: value for name, value in item.items() if name != "type"}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{where} ({kind}) has unknown fields {unknown}")
    mistyped = sorted(name for name, value in values.items() if not isinstance(value, str))
    if mistyped:
        raise ValueError(f"{where} ({kind}): {mistyped} must be strings")
    if "data" in values:
        try:
            values["data"] = base64.b64decode(values["data"], validate=True)
        except ValueError:
            raise ValueError(f"{where} ({kind}): 'data' is not base64") from None
    try:
        if kind == "text":
            return TextPart(**values)
        return ImagePart(**values) if kind == "image" else DocumentPart(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


# -- the conversation: history messages --------------------------------------------


def message_to_json(message: Message) -> dict[str, Any]:
    """A history message as ``{"role": "user" | "assistant" | "tool", ...}`` (what :func:`message_from_json` reads)."""
    if isinstance(message, UserMessage):
        return {"role": "user", "content": content_to_json(message.content)}
    if isinstance(message, AssistantMessage):
        data: dict[str, Any] = {"role": "assistant", "text": message.text}
        if message.tool_calls:
            data["tool_calls"] = [
                {
                    "id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments if isinstance(call.arguments, str) else _jsonable(call.arguments),
                }
                for call in message.tool_calls
            ]
        if message.reasoning:
            data["reasoning"] = [
                {"text": block.text, "signature": block.signature, "redacted": block.redacted}
                for block in message.reasoning
            ]
        return data
    data = {"role": "tool", "id": message.call_id, "name": message.name, "content": content_to_json(message.content)}
    if message.is_error:
        data["is_error"] = True
    return data


def message_from_json(data: Any) -> Message:
    """The message :func:`message_to_json` made.

    Raises:
        ValueError: ``data`` is not such a message.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a message is a JSON object, not {type(data).__name__}")
    role = data.get("role")
    try:
        if role == "user":
            return UserMessage(content_from_json(data["content"]))
        if role == "assistant":
            calls = tuple(
                ToolCallChunk(str(call["id"]), str(call["name"]), call["arguments"])
                for call in data.get("tool_calls", ())
            )
            reasoning = tuple(
                ReasoningBlock(str(block["text"]), str(block.get("signature", "")), bool(block.get("redacted")))
                for block in data.get("reasoning", ())
            )
            return AssistantMessage(str(data["text"]), calls, reasoning)
        if role == "tool":
            return ToolResultMessage(
                str(data["id"]), str(data["name"]), content_from_json(data["content"]), bool(data.get("is_error"))
            )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed {role} message: {exc!r}") from None
    raise ValueError(f"unknown message role {role!r}")
