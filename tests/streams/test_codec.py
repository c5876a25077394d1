"""The wire codec against what a peer can send: every field validated, unknown types tolerated, every event
class round-tripped."""

from __future__ import annotations

import inspect
import json
import math
import types
import typing
from typing import Any, Final

import attrs
import pydantic
import pytest
from hypothesis import given, settings, strategies as st

from runtime import events
from runtime.events import (
    FINISH_REASONS,
    STOP_REASONS,
    AgentSwitched,
    CustomEvent,
    ElicitationRequest,
    ErrorEvent,
    Event,
    FinalOutput,
    ModelFallback,
    ModelStopped,
    OutputDelta,
    ReasoningDelta,
    Refusal,
    RunFinished,
    RunStarted,
    ServerToolUse,
    SubAgentEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
    Usage,
)
from streams import MalformedMessageError, StreamError, UnknownEvent, event_from_json, event_to_json
from streams._codec import dumps, escape_surrogates, utf8
from streams._sse import encode

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


NUMBERS: Final = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
"""What a ``float`` field holds: finite (``report_progress`` refuses others), and ints, which it takes too."""


@attrs.frozen
class Deployed(CustomEvent):
    """A user's event, as ``ctx.emit`` sends it."""

    url: str
    attempts: int
    details: Any = None


class City(pydantic.BaseModel):
    """A typed output."""

    name: str
    population: int


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
    if hint is float:
        return NUMBERS
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
    assert event_from_json(wire) == _decoded(event, wire)


def _decoded(event: Event, wire: dict[str, Any]) -> Event | UnknownEvent:
    """What ``wire``, made of ``event``, decodes to: the event, but a custom event (even wrapped) is unknown."""
    if isinstance(event, CustomEvent):
        return UnknownEvent("CustomEvent", wire)
    if isinstance(event, SubAgentEvent) and isinstance(event.innermost()[1], CustomEvent):
        return UnknownEvent("SubAgentEvent", wire)
    return event


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
    wire = {"type": "SubAgentEvent", "agent": "billing", "event": {"type": "FutureEvent", "delta": "x"}}
    assert event_from_json(wire) == UnknownEvent("SubAgentEvent", wire)


def _nested(depth: int, inner: dict[str, Any]) -> dict[str, Any]:
    for level in range(depth):
        inner = {"type": "SubAgentEvent", "agent": f"a{level}", "event": inner}
    return inner


def test_sub_agent_events_nested_as_deep_as_the_wire_allows_decode_and_deeper_is_malformed() -> None:
    """Nesting is unwrapped in a loop: 64 levels decode (far beyond Agent.max_depth), one more is a
    MalformedMessageError. Decoded by recursion, a peer's ~985 levels raised a bare RecursionError out of
    RemoteSession.run, which promises MalformedMessageError."""
    event = event_from_json(_nested(64, {"type": "TextDelta", "text": "x"}))
    assert isinstance(event, SubAgentEvent)
    path, inner = event.innermost()
    assert (len(path), inner) == (64, TextDelta("x"))
    with pytest.raises(MalformedMessageError, match="nested more than 64 deep"):
        event_from_json(_nested(65, {"type": "TextDelta", "text": "x"}))
    with pytest.raises(MalformedMessageError):
        event_from_json(_nested(5_000, {"type": "TextDelta", "text": "x"}))


@pytest.mark.parametrize("reason", sorted(FINISH_REASONS))
def test_every_finish_reason_decodes(reason: str) -> None:
    assert event_from_json({"type": "RunFinished", "reason": reason}) == RunFinished(reason)  # type: ignore[arg-type]


@pytest.mark.parametrize("reason", sorted(STOP_REASONS))
def test_every_stop_reason_decodes(reason: str) -> None:
    assert event_from_json({"type": "ModelStopped", "reason": reason}) == ModelStopped(reason)  # type: ignore[arg-type]


# -- custom events, typed output, progress ---------------------------------------


def test_a_value_json_cannot_hold_is_sent_as_its_str_and_only_a_too_deep_one_as_a_placeholder() -> None:
    """Bytes that are not UTF-8 in a value are sent as the str of the whole value, what the model reads for
    that tool result (they used to be called "nested too deep"); a value too deep for str too is a placeholder
    saying so."""
    raw = ToolCallFinished("call_1", "raw", {"raw": b"\xff"})
    assert event_to_json(raw)["result"] == "{'raw': b'\\xff'}"
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert event_to_json(ToolCallFinished("call_2", "deep", deep))["result"] == "<list nested too deep to send as JSON>"


def test_a_custom_event_travels_as_custom_event_with_its_class_name() -> None:
    """A CustomEvent subclass is sent as type CustomEvent, its class name and its fields (JSON-converted)."""
    event = Deployed("https://example.com", 2, details=City(name="Paris", population=2))
    assert event_to_json(event) == {
        "type": "CustomEvent",
        "name": "Deployed",
        "url": "https://example.com",
        "attempts": 2,
        "details": {"name": "Paris", "population": 2},
    }


def test_a_custom_event_decodes_as_unknown_and_encodes_back_unchanged() -> None:
    """The receiver cannot know the sender's class: it gets an UnknownEvent holding the object, which
    passes through a relay unchanged."""
    wire = json.loads(dumps({**event_to_json(Deployed("u", 1)), "run_id": "s1-r1"}))
    decoded = event_from_json(wire)
    assert decoded == UnknownEvent("CustomEvent", wire)
    assert event_to_json(decoded) == wire


@pytest.mark.parametrize("name", ["RunFinished", "TextDelta", "SubAgentEvent", "CustomEvent"])
def test_a_custom_event_named_like_a_built_in_event_is_never_one(name: str) -> None:
    """A user's class named RunFinished (say) stays a CustomEvent on the wire and an UnknownEvent off it."""
    impostor = attrs.frozen(type(name, (CustomEvent,), {"__annotations__": {"reason": "str"}}))
    data = event_to_json(impostor(reason="completed"))
    assert data == {"type": "CustomEvent", "name": name, "reason": "completed"}
    assert event_from_json(data) == UnknownEvent("CustomEvent", data)


def test_custom_event_fields_named_type_or_name_cannot_change_what_it_is() -> None:
    """Fields named like the wire form's own keys are left out: the event stays a CustomEvent of its class."""

    @attrs.frozen
    class Clash(CustomEvent):
        type: str
        name: str
        other: int

    assert event_to_json(Clash("RunFinished", "completed", 3)) == {"type": "CustomEvent", "name": "Clash", "other": 3}


def test_a_sub_agent_custom_event_is_unknown_and_keeps_its_wire_form() -> None:
    event = SubAgentEvent("billing", Deployed("u", 1))
    wire = event_to_json(event)
    assert wire["event"] == {"type": "CustomEvent", "name": "Deployed", "url": "u", "attempts": 1, "details": None}
    assert event_from_json(wire) == UnknownEvent("SubAgentEvent", wire)


def test_a_typed_output_is_sent_as_its_json_data_and_decodes_as_plain_data() -> None:
    """FinalOutput's pydantic model goes on the wire as a dict, and comes back as that dict."""
    data = event_to_json(FinalOutput(City(name="Paris", population=2_100_000)))
    assert data == {"type": "FinalOutput", "output": {"name": "Paris", "population": 2_100_000}}
    assert event_from_json(json.loads(dumps(data))) == FinalOutput({"name": "Paris", "population": 2_100_000})


def test_progress_sent_as_ints_decodes_as_floats() -> None:
    """report_progress(1, total=2) sends ints; they decode as the floats the field holds."""
    data = json.loads(dumps(event_to_json(ToolProgress("c1", 1, 2, "half"))))
    assert data == {"type": "ToolProgress", "call_id": "c1", "progress": 1, "total": 2, "message": "half"}
    decoded = event_from_json(data)
    assert isinstance(decoded, ToolProgress)
    assert (type(decoded.progress), type(decoded.total)) == (float, float)
    assert decoded == ToolProgress("c1", 1.0, 2.0, "half")


@pytest.mark.parametrize(
    "data",
    [
        {"type": "RunFinished", "reason": 5},
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
        {"type": "SubAgentEvent", "agent": "a", "event": {"type": "CustomEvent"}},
        {"type": "ModelStopped", "reason": ["end_turn"]},
        {"type": "ModelStopped", "reason": "end_turn", "raw": 1},
        {"type": "ModelStopped"},
        {"type": "ToolProgress", "call_id": "c", "progress": "1"},
        {"type": "ToolProgress", "call_id": "c", "progress": True},
        {"type": "ToolProgress", "call_id": "c", "progress": float("nan")},
        {"type": "ToolProgress", "call_id": "c", "progress": 1, "total": float("inf")},
        {"type": "ToolProgress", "call_id": "c", "progress": 1, "message": 5},
        {"type": "ToolProgress", "progress": 1},
        {"type": "ToolCallDelta", "call_id": "c", "name": "t"},
        {"type": "ToolCallDelta", "call_id": "c", "name": "t", "arguments_delta": {}},
        {"type": "Refusal"},
        {"type": "Refusal", "text": None},
        {"type": "OutputDelta"},
        {"type": "FinalOutput"},
        {"type": "CustomEvent"},
        {"type": "CustomEvent", "name": 5},
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


def test_a_usage_without_the_cache_counts_decodes_with_zeros() -> None:
    """A Usage from a peer older than the cache and reasoning counts is still a Usage: those are 0."""
    assert event_from_json({"type": "Usage", "input_tokens": 5, "output_tokens": 2}) == Usage(5, 2, 0, 0, 0)


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
    Usage(1200, 7, cache_read_tokens=1024, cache_write_tokens=5, reasoning_tokens=3),
    ErrorEvent("model", "the model blew up"),
    ElicitationRequest("e1", "Pick a number", {"type": "integer"}, "bot"),
    ElicitationRequest("e2", "Anything?", None, "bot"),
    AgentSwitched("triage", "billing"),
    SubAgentEvent("billing", TextDelta("nested")),
    SubAgentEvent("billing", SubAgentEvent("refunds", ToolCallStarted("call_9", "refund", {"amount": 5}))),
    SubAgentEvent("billing", RunFinished("completed")),
    ToolCallDelta("call_3", "final_result", '{"name": "Par'),
    ToolProgress("call_3", 1, total=2, message="half"),
    ToolProgress("call_3", 0.25),
    ModelStopped("max_tokens", "length"),
    ModelStopped("end_turn"),
    ModelFallback("openai:gpt-4o-mini", "openai: HTTP 503: overloaded", "anthropic:claude-haiku-4-5"),
    Refusal("I can't help with that"),
    OutputDelta({"name": "Par"}),
    FinalOutput({"name": "Paris", "population": 2_100_000}),
    FinalOutput(None),
    RunFinished("completed"),
    RunFinished("hook_stop", "stopped by a hook"),
    RunFinished("refusal", "I can't help with that"),
    RunFinished("usage_limit", "requests limit of 1 reached"),
]

CUSTOM_SAMPLES: Final[list[Event]] = [Deployed("https://example.com", 1), CustomEvent()]
"""Custom events: sent as type CustomEvent, received as UnknownEvent."""


def test_the_samples_cover_every_event_type() -> None:
    assert {type(sample) for sample in SAMPLES} | {CustomEvent} == set(typing.get_args(Event))
    assert all(isinstance(sample, CustomEvent) for sample in CUSTOM_SAMPLES)


@pytest.mark.parametrize("event", SAMPLES + CUSTOM_SAMPLES, ids=repr)
def test_event_json_round_trips(event: Event) -> None:
    """event_to_json gives a JSON object with the class name as type (CustomEvent, for a custom event);
    event_from_json gives the event back, an UnknownEvent for a custom one (through real JSON text, and
    ignoring a wire run_id)."""
    data = event_to_json(event)
    assert data["type"] == ("CustomEvent" if isinstance(event, CustomEvent) else type(event).__name__)
    wire = json.loads(json.dumps({**data, "run_id": "s1-r1"}))
    assert event_from_json(wire) == _decoded(event, wire)


def test_a_nested_sub_agent_event_has_the_documented_shape() -> None:
    event = SubAgentEvent("billing", SubAgentEvent("refunds", TextDelta("hi")))
    assert event_to_json(event) == {
        "type": "SubAgentEvent",
        "agent": "billing",
        "event": {"type": "SubAgentEvent", "agent": "refunds", "event": {"type": "TextDelta", "text": "hi"}},
    }


def test_a_finish_reason_this_version_does_not_know_still_ends_the_run() -> None:
    """A newer server's RunFinished reason is an ending (``error``, saying what it was), never a malformed stream."""
    decoded = event_from_json({"type": "RunFinished", "reason": "paused", "message": "waiting for approval"})
    assert decoded == RunFinished(
        "error", "the run finished with 'paused', a reason this version does not know: waiting for approval"
    )
    assert event_from_json({"type": "RunFinished", "reason": "paused"}) == RunFinished(
        "error", "the run finished with 'paused', a reason this version does not know"
    )


def test_a_stop_reason_this_version_does_not_know_is_other_with_the_reason_kept() -> None:
    """A newer server's ModelStopped reason is ``other``, the reason (or the raw value) kept in ``raw``."""
    assert event_from_json({"type": "ModelStopped", "reason": "thinking_budget"}) == ModelStopped(
        "other", "thinking_budget"
    )
    assert event_from_json({"type": "ModelStopped", "reason": "x", "raw": "X_RAW"}) == ModelStopped("other", "X_RAW")


# -- JSON text for a client --------------------------------------------------------------

ANY_TEXT: Final = st.text(st.characters() | st.integers(0xD800, 0xDFFF).map(chr))
"""Text with lone surrogates in it, often (``st.characters()`` leaves them out)."""
WIRE_JSON: Final = st.recursive(
    st.none() | st.booleans() | st.integers() | ANY_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(ANY_TEXT, children, max_size=3),
    max_leaves=8,
)


def paired(value: Any) -> Any:
    """``value`` with each high-then-low pair of surrogates in its strings made the one character they are
    in JSON (a peer's decoder reads the escapes ``\\ud83d\\ude00`` as one character)."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, dict):
        return {paired(key): paired(item) for key, item in value.items()}
    if isinstance(value, list):
        return [paired(item) for item in value]
    return value


@given(value=WIRE_JSON)
def test_json_text_for_a_client_is_utf8_and_decodes_to_what_was_sent(value: Any) -> None:
    """utf8(dumps(value)) is UTF-8 for any JSON data, lone surrogates in its strings included (each as its
    escape), and decodes back to the value; escape_surrogates does the same as a str (a WebSocket frame)."""
    encoded = utf8(dumps(value))
    text = escape_surrogates(dumps(value))
    assert text.encode() == encoded
    assert json.loads(encoded.decode()) == paired(value)


def test_json_text_without_a_lone_surrogate_is_sent_as_it_is() -> None:
    """Text UTF-8 can encode is left as it is (the common case: no copy), a lone surrogate made its escape."""
    text = dumps({"a": "caf\u00e9 \U0001f600"})
    assert escape_surrogates(text) is text
    assert utf8(text) == text.encode()
    assert utf8(dumps("\ud800")) == b'"\\ud800"'
    assert escape_surrogates(dumps(["\udfff"])) == '["\\udfff"]'


def test_an_event_holding_an_infinite_number_is_sent_as_json() -> None:
    """A tool call's arguments holding float("inf") (a model's 1e400 read by a lenient parser) reach a client
    as null in an SSE message, not as Infinity, which no strict parser takes."""
    message = encode("ToolCallStarted", event_to_json(ToolCallStarted("c1", "f", {"x": math.inf})), 1)
    data = message.decode().split("data: ", 1)[1]
    assert json.loads(data, parse_constant=lambda name: pytest.fail(f"{name} sent"))["arguments"] == {"x": None}
