"""The JSON text every stream sends and every store keeps (runtime._wire.dumps): JSON, whatever the value holds."""

from __future__ import annotations

import decimal
import json
import math
from typing import TYPE_CHECKING, Any, Final

import pytest

from runtime import _journal, _wire

if TYPE_CHECKING:
    from collections.abc import Callable


def _strict_loads(text: str) -> Any:
    """``json.loads`` refusing NaN and Infinity, as a strict parser (a browser's ``JSON.parse``) does."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("dumps", [_wire.dumps, _journal.dumps], ids=["wire", "store"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"x": math.inf, "y": [-math.inf, math.nan, 1.5]}, {"x": None, "y": [None, None, 1.5]}),
        ({"x": math.inf, "text": "\ud800"}, {"x": None, "text": "\ud800"}),  # a lone surrogate: json's encoder
        (_nested({"x": math.nan}, 300), _nested({"x": None}, 300)),  # deeper than pydantic-core goes
        ((math.inf, "é"), [None, "é"]),
    ],
    ids=["plain", "lone-surrogate", "deep", "tuple"],
)
def test_dumps_writes_null_for_a_number_json_cannot_hold(
    dumps: Callable[[Any], str], value: Any, expected: Any
) -> None:
    """An infinite or NaN number (a tool's float("inf"), a model's 1e400 taken by a lenient parser) is written
    null on every path of the encoder, never Infinity or NaN (not JSON: a strict client refuses the message,
    a PostgreSQL jsonb column the row)."""
    text = dumps(value)
    assert "Infinity" not in text
    assert "NaN" not in text
    assert _strict_loads(text) == expected


HUGE: Final = math.factorial(2000)  # 5,736 digits


@pytest.mark.parametrize("dumps", [_wire.dumps, _journal.dumps], ids=["wire", "store"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"result": HUGE}, {"result": str(decimal.Decimal(HUGE))}),
        ([-HUGE, 10**4300 - 1], [str(decimal.Decimal(-HUGE)), 10**4300 - 1]),  # 4,300 digits: read as it is
        ({"x": HUGE, "text": "\ud800", "y": math.inf}, {"x": str(decimal.Decimal(HUGE)), "text": "\ud800", "y": None}),
        ({"digits": "7" * 5000, "n": 12}, {"digits": "7" * 5000, "n": 12}),  # a long string of digits is no number
    ],
    ids=["plain", "at-the-limit", "lone-surrogate", "digits-in-a-string"],
)
def test_dumps_writes_an_integer_too_long_to_read_back_as_its_decimal_string(
    dumps: Callable[[Any], str], value: Any, expected: Any
) -> None:
    """An integer of over 4,300 digits (a tool's math.factorial(2000)) is written as its decimal string:
    Python's json refuses to read a longer number, so a client dropped the event and a store's recovery
    failed the session for good (StoreCorruptError on every open). Shorter ones stay numbers."""
    assert json.loads(dumps(value)) == expected
