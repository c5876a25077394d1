"""loads_untrusted: JSON from a model, a peer or a client, parsed with a depth limit and nothing but JSON."""

from __future__ import annotations

import json

import pytest

from agents._json import MAX_JSON_DEPTH, loads_untrusted


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", '{"id": NaN}', '[1, {"x": Infinity}]'])
def test_the_constants_json_loads_takes_are_not_json(text: str) -> None:
    """NaN and Infinity are refused (json.loads takes them, and json.dumps would send them back, as no
    strict parser, a browser's JSON.parse included, reads them)."""
    with pytest.raises(ValueError, match="is not JSON"):
        loads_untrusted(text)
    with pytest.raises(ValueError, match="is not JSON"):
        loads_untrusted(text.encode())


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
def test_bytes_are_read_in_the_encoding_json_detects(encoding: str) -> None:
    """Bytes in any of JSON's encodings parse as json.loads parses them."""
    text = '{"name": "Zoë", "n": [1, 2.5, true, null]}'
    assert loads_untrusted(text.encode(encoding)) == json.loads(text)


def test_nesting_past_the_limit_and_bad_bytes_are_value_errors() -> None:
    """Too deep (however deep: never RecursionError) and undecodable bytes are ValueError."""
    with pytest.raises(ValueError, match="nested deeper"):
        loads_untrusted("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    with pytest.raises(ValueError, match="nested deeper"):
        loads_untrusted("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UnicodeDecodeError):  # a ValueError
        loads_untrusted(b'{"a": "\xff"}')
    assert loads_untrusted("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None


@pytest.mark.parametrize("text", ["1e400", "-1e400", '{"x": 1E309}', "[1, " + "9" * 400 + ".0]"])
def test_a_number_too_large_for_a_float_is_refused(text: str) -> None:
    """A number json.loads would make infinite is refused as NaN is (else every encoder would have an
    infinity to write, which is not JSON); large finite numbers, and integers of any size, are kept."""
    with pytest.raises(ValueError, match="out of range"):
        loads_untrusted(text)
    with pytest.raises(ValueError, match="out of range"):
        loads_untrusted(text.encode())
    assert loads_untrusted("[1.7976931348623157e308, -5e-324, 1" + "0" * 400 + "]") == [
        1.7976931348623157e308,
        -5e-324,
        10**400,
    ]
