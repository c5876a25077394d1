"""Runtime events as JSON objects, and back: the wire format of every stream."""

from __future__ import annotations

import json
from typing import Any, Final

import attrs
from pydantic_core import to_jsonable_python

from runtime import events
from runtime.events import Event, SubAgentEvent

_TYPES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (
        events.RunStarted,
        events.TextDelta,
        events.ReasoningDelta,
        events.ToolCallStarted,
        events.ToolCallFinished,
        events.ServerToolUse,
        events.Usage,
        events.ErrorEvent,
        events.ElicitationRequest,
        events.AgentSwitched,
        events.SubAgentEvent,
        events.RunFinished,
    )
}


def dumps(data: Any) -> str:
    """Compact JSON, one line (what every stream sends)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def event_to_json(event: Event) -> dict[str, Any]:
    """``{"type": <class name>, <field>: <value>, ...}``; values that are not JSON become their ``str``."""
    if isinstance(event, SubAgentEvent):
        return {"type": "SubAgentEvent", "agent": event.agent, "event": event_to_json(event.event)}
    fields = {field.name: getattr(event, field.name) for field in attrs.fields(type(event))}
    return {"type": type(event).__name__, **to_jsonable_python(fields, fallback=str)}


def event_from_json(data: dict[str, Any]) -> Event:
    """The event :func:`event_to_json` made (extra keys, such as ``run_id`` on the wire, are ignored).

    Raises:
        ValueError: ``data`` is not an event.
    """
    kind = data.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"not a runtime event: type {kind!r}")
    if cls is SubAgentEvent:
        return SubAgentEvent(agent=data["agent"], event=event_from_json(data["event"]))
    names = [field.name for field in attrs.fields(cls)]
    try:
        return cls(**{name: data[name] for name in names if name in data})  # type: ignore[no-any-return]
    except TypeError as exc:
        raise ValueError(f"malformed {kind} event: {exc}") from None
