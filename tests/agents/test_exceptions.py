"""The errors of the agents package: how an exception is described to the model and the user."""

from __future__ import annotations

import httpx
import pytest
import trio

from agents import ModelConnectionError
from agents._exceptions import describe


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (ModelConnectionError("openai: cannot reach it"), "openai: cannot reach it"),
        (KeyError("x"), "KeyError: 'x'"),
        (httpx.ReadTimeout(""), "ReadTimeout"),
    ],
)
def test_describe_writes_ours_plainly_and_others_with_their_type(error: BaseException, text: str) -> None:
    """Our errors are their message; a foreign one gets its type name in front, or alone when it has no message."""
    assert describe(error) == text


def test_errors_have_one_describer() -> None:
    """The HTTP layer and the runtime's loop describe exceptions with the same function."""
    import agents.models._http as http
    import runtime._loop as loop

    assert vars(http)["describe"] is vars(loop)["describe"] is describe


async def test_describe_names_the_errors_inside_a_nursery_not_the_group() -> None:
    """A tool's nursery failing is described by the error of its child, not as "Exceptions from Trio nursery"."""

    async def fetch(url: str) -> None:
        raise ValueError(f"404 Not Found: {url}")

    with pytest.RaisesGroup(ValueError) as caught:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch, "https://x/a")
    assert describe(caught.value) == "ValueError: 404 Not Found: https://x/a"


def test_describe_names_the_first_three_leaves_of_nested_groups_and_counts_the_rest() -> None:
    """Nested groups are flattened in order; past three errors, the rest are counted."""
    group = ExceptionGroup(
        "outer",
        [
            KeyError("a"),
            ExceptionGroup("inner", [ModelConnectionError("b"), ValueError()]),
            ExceptionGroup("inner 2", [OSError("c"), TypeError("d")]),
        ],
    )
    assert describe(group) == "KeyError: 'a'; b; ValueError; and 2 more"


def test_describe_survives_an_exception_whose_str_raises() -> None:
    """An exception whose ``__str__`` raises is described by its type name, not by raising in turn."""

    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    assert describe(BadStr()) == "BadStr: <str() failed>"
    assert describe(ExceptionGroup("g", [BadStr()])) == "BadStr: <str() failed>"
