"""The wire codec against what a peer can send: every field validated, unknown types tolerated, every event
class round-tripped."""

from __future__ import annotations

import inspect
import json
import types
import typing
from typing import Any, Final

import attrs
import pytest
from hypothesis import given, settings, strategies as st

from runtime import events
from runtime.events import (
    FINISH_REASONS,
    AgentSwitched,
    ElicitationRequest,
    ErrorEvent,
    Event,
    ReasoningDelta,
    RunFinished,
    RunStarted,
    ServerToolUse,
    SubAgentEvent,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
)
from streams import MalformedMessageError, StreamError, UnknownEvent, event_from_json, event_to_json
from streams._codec import dumps

EVENT_CLASSES: Final = sorted(
    (
        obj
        for obj in vars(events).values()
        if inspect.isclass(obj) and attrs.has(obj) and obj.__module__ == events.__name__
    ),
    key=lambda cls: cls.__name__,
)
"""Every event class runtime.events defines, found by looking, so a new one is covered without a test edit."""

JSON: Final = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=8,
)


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(events))


def _values(hint: Any, depth: int) -> st.SearchStrategy[Any]:
    """Values of a field's type, as an event may hold them; events nest at most ``depth`` deep."""
    if hint is Any:
        return JSON
    if hint == Event:  # a nested event (SubAgentEvent's): any class, but only classes that nest no further at the end
        nesting = [cls for cls in EVENT_CLASSES if depth > 0 or Event not in _hints(cls).values()]
        return st.one_of(*(_events(cls, depth - 1) for cls in nesting))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is dict:
        return st.dictionaries(st.text(), _values(args[1], depth), max_size=3)
    if origin is typing.Union or origin is types.UnionType:
        return st.one_of(*(_values(arg, depth) for arg in args))
    if hint is type(None):
        return st.none()
    return st.from_type(hint)


def _events(cls: type[Any], depth: int = 2) -> st.SearchStrategy[Any]:
    hints = _hints(cls)
    return st.builds(cls, **{field.name: _values(hints[field.name], depth) for field in attrs.fields(cls)})


def test_every_event_class_is_an_event_the_codec_knows() -> None:
    """A class added to runtime.events but not to its Event union would be unknown on the wire."""
    assert len(EVENT_CLASSES) >= 12
    assert set(EVENT_CLASSES) == set(typing.get_args(Event))


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__name__)
@settings(deadline=None)  # the first example of a class builds its validators (pydantic schemas)
@given(data=st.data())
def test_every_event_class_round_trips_through_json(cls: type[Any], data: st.DataObject) -> None:
    """Any value of every event class comes back equal from event_to_json, JSON text, and event_from_json."""
    event = data.draw(_events(cls))
    wire = json.loads(dumps({"run_id": "s1-r1", **event_to_json(event)}))  # the wire adds a run_id
    assert event_from_json(wire) == event


@given(
    kind=st.text(min_size=1).filter(lambda kind: kind not in {cls.__name__ for cls in EVENT_CLASSES}),
    fields=st.dictionaries(st.text().filter(lambda key: key != "type"), JSON, max_size=4),
)
def test_an_unknown_event_type_decodes_to_unknown_event_and_back(kind: str, fields: dict[str, Any]) -> None:
    """A type this version does not know (a newer server's) is an UnknownEvent holding the object, which
    encodes back to the same object."""
    wire = json.loads(dumps({**fields, "type": kind}))
    event = event_from_json(wire)
    assert event == UnknownEvent(kind, wire)
    assert event_to_json(event) == wire


def test_a_sub_agent_event_wrapping_an_unknown_event_is_unknown() -> None:
    wire = {"type": "SubAgentEvent", "agent": "billing", "event": {"type": "OutputDelta", "delta": "x"}}
    assert event_from_json(wire) == UnknownEvent("SubAgentEvent", wire)


@pytest.mark.parametrize("reason", sorted(FINISH_REASONS))
def test_every_finish_reason_decodes(reason: str) -> None:
    assert event_from_json({"type": "RunFinished", "reason": reason}) == RunFinished(reason)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        {"type": "RunFinished", "reason": "bogus"},
        {"type": "RunFinished"},
        {"type": "RunFinished", "reason": "completed", "message": 5},
        {"type": "TextDelta", "text": {"a": 1}},
        {"type": "TextDelta", "text": None},
        {"type": "TextDelta"},
        {"type": "RunStarted", "run_id": 1},
        {"type": "Usage", "input_tokens": "12", "output_tokens": 3},
        {"type": "Usage", "input_tokens": True, "output_tokens": 3},
        {"type": "ToolCallStarted", "call_id": "c", "name": "t", "arguments": [1]},
        {"type": "ToolCallStarted", "call_id": "c", "name": "t", "arguments": {1: 2}},
        {"type": "ElicitationRequest", "id": "e", "message": "m", "schema": "no", "agent": "a"},
        {"type": "SubAgentEvent", "agent": "a", "event": {"type": "TextDelta", "text": 3}},
        {"type": "SubAgentEvent", "agent": 7, "event": {"type": "TextDelta", "text": "t"}},
        {"type": "SubAgentEvent", "agent": "a"},
        {"type": "SubAgentEvent", "agent": "a", "event": "TextDelta"},
    ],
    ids=repr,
)
def test_event_from_json_rejects_a_known_event_with_a_bad_field(data: dict[str, Any]) -> None:
    """A known event with a missing or invalid field is a MalformedMessageError (a StreamError, and a ValueError
    as before), naming the event."""
    with pytest.raises(MalformedMessageError, match="event") as raised:
        event_from_json(data)
    assert isinstance(raised.value, StreamError)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("data", [{}, {"type": 5}, {"type": None}, [], "TextDelta", None])
def test_event_from_json_refuses_what_is_not_an_event(data: Any) -> None:
    """What is not a JSON object with an event type is a MalformedMessageError that says so."""
    with pytest.raises(MalformedMessageError, match="event"):
        event_from_json(data)


def test_validated_fields_keep_their_values() -> None:
    """Validation hands back the peer's values, not coerced ones."""
    assert event_from_json({"type": "TextDelta", "text": "hé"}) == TextDelta("hé")
    nested = event_from_json({"type": "SubAgentEvent", "agent": "a", "event": {"type": "TextDelta", "text": "x"}})
    assert nested == SubAgentEvent("a", TextDelta("x"))


# -- a sample of every event type ----------------------------------------------

SAMPLES: Final[list[Event]] = [
    RunStarted("s1-r1"),
    TextDelta("héllo\nworld"),
    ReasoningDelta("thinking…"),
    ToolCallStarted("call_1", "add", {"a": 1, "b": [2, 3], "c": {"d": None}}),
    ToolCallFinished("call_1", "add", {"sum": 6}),
    ToolCallFinished("call_2", "boom", None, error="it broke"),
    ServerToolUse("srv_1", "web_search", {"query": "trio"}),
    Usage(12, 34),
    ErrorEvent("model", "the model blew up"),
    ElicitationRequest("e1", "Pick a number", {"type": "integer"}, "bot"),
    ElicitationRequest("e2", "Anything?", None, "bot"),
    AgentSwitched("triage", "billing"),
    SubAgentEvent("billing", TextDelta("nested")),
    SubAgentEvent("billing", SubAgentEvent("refunds", ToolCallStarted("call_9", "refund", {"amount": 5}))),
    SubAgentEvent("billing", RunFinished("completed")),
    RunFinished("completed"),
    RunFinished("hook_stop", "stopped by a hook"),
]


def test_the_samples_cover_every_event_type() -> None:
    assert {type(sample) for sample in SAMPLES} == set(typing.get_args(Event))


@pytest.mark.parametrize("event", SAMPLES, ids=repr)
def test_event_json_round_trips(event: Event) -> None:
    """event_to_json gives a JSON object with the class name as type; event_from_json gives the event back
    (through real JSON text, and ignoring a wire run_id)."""
    data = event_to_json(event)
    assert data["type"] == type(event).__name__
    wire = json.loads(json.dumps({**data, "run_id": "s1-r1"}))
    assert event_from_json(wire) == event


def test_a_nested_sub_agent_event_has_the_documented_shape() -> None:
    event = SubAgentEvent("billing", SubAgentEvent("refunds", TextDelta("hi")))
    assert event_to_json(event) == {
        "type": "SubAgentEvent",
        "agent": "billing",
        "event": {"type": "SubAgentEvent", "agent": "refunds", "event": {"type": "TextDelta", "text": "hi"}},
    }
