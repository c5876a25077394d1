"""The errors of the agents package: how an exception is described to the model and the user."""

from __future__ import annotations

import httpx
import pytest

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
