"""JSON from someone we do not trust (a model, a peer, a client): parsed with a depth limit.

``json.loads`` raises ``RecursionError``, not ``ValueError``, on input nested
a thousand deep, which every ``except ValueError`` misses; and a value nested
a few hundred deep that did parse still breaks what handles it next
(pydantic's serializer refuses depths over a few hundred, ``json.dumps``
recurses). :func:`loads_untrusted` turns both into one ``ValueError`` at the
edge. ``runtime`` and ``streams`` use it too: it lives here, in the package
both import.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

MAX_JSON_DEPTH: Final = 64
"""How deep untrusted JSON may nest (``[]`` and ``{}`` are depth 1, ``[[1]]`` is 2)."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads takes NaN and Infinity, and json.dumps gives them back


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: JSON, but not a float, and no encoder may write what it becomes
        raise ValueError(f"the number {text[:32]} is out of range")
    return value


_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def loads_untrusted(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(text)``, refusing text nested deeper than ``max_depth``.

    Costs about what parsing costs: the depth is checked on the parsed value
    (skipped when the text has too few brackets to be that deep).

    Raises:
        ValueError: not JSON (``json.JSONDecodeError``, ``UnicodeDecodeError``; ``NaN`` and
            ``Infinity`` too, which ``json.loads`` takes), a number too large for a float
            (``1e400``, which ``json.loads`` makes infinite), or nested deeper than ``max_depth``;
            never ``RecursionError``.
    """
    try:
        if isinstance(text, bytes):
            value = _DECODER.decode(text.decode(json.detect_encoding(text), "surrogatepass"))  # as json.loads
        else:
            value = _DECODER.decode(text)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    brackets = text.count(b"[") + text.count(b"{") if isinstance(text, bytes) else text.count("[") + text.count("{")
    if brackets > max_depth and nested_deeper_than(value, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return value


def nested_deeper_than(value: Any, max_depth: int) -> bool:
    """Whether ``value`` (lists and dicts, as JSON gives them) nests deeper than ``max_depth``.

    Level by level, so any depth is fine and the walk stops at the first level too deep.
    """
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 1
    while level:
        if depth > max_depth:
            return True
        below: list[Any] = []
        for item in level:
            for child in item.values() if type(item) is dict else item:
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level = below
        depth += 1
    return False
