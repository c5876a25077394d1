"""UsageLimits: which limit a run's spending is past, checked before each model request."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agents import Agent, AgentDefinitionError, RunUsage, ScriptedModel, UsageLimits


def test_usage_total_tokens_is_input_plus_output() -> None:
    """RunUsage.total_tokens adds input and output tokens."""
    assert RunUsage(requests=2, input_tokens=30, output_tokens=12, tool_calls=1).total_tokens == 42


def test_usage_no_limits_are_never_crossed() -> None:
    """UsageLimits() limits nothing, however much was spent."""
    assert UsageLimits().crossed(RunUsage(10**6, 10**9, 10**9, 10**6)) is None


def test_usage_requests_limit_is_reached_when_the_next_request_would_pass_it() -> None:
    """requests=N allows N requests: with N made, the next one is refused."""
    limits = UsageLimits(requests=3)
    assert limits.crossed(RunUsage(requests=2)) is None
    assert limits.crossed(RunUsage(requests=3)) == "requests limit of 3 reached: 3 model requests made"
    assert UsageLimits(requests=0).crossed(RunUsage()) == "requests limit of 0 reached: 0 model requests made"


@pytest.mark.parametrize(
    ("limit", "at_limit", "past_limit"),
    [
        ("input_tokens", RunUsage(input_tokens=100), RunUsage(input_tokens=101)),
        ("output_tokens", RunUsage(output_tokens=100), RunUsage(output_tokens=101)),
        ("total_tokens", RunUsage(input_tokens=60, output_tokens=40), RunUsage(input_tokens=60, output_tokens=41)),
        ("tool_calls", RunUsage(tool_calls=100), RunUsage(tool_calls=101)),
    ],
)
def test_usage_count_limits_are_crossed_once_exceeded(limit: str, at_limit: RunUsage, past_limit: RunUsage) -> None:
    """A token or tool-call limit of N allows spending N; past it, the message names the limit and the count."""
    limits = UsageLimits(**{limit: 100})
    assert limits.crossed(at_limit) is None
    assert limits.crossed(past_limit) == f"{limit} limit of 100 exceeded: 101 used"


def test_usage_only_the_limit_set_is_checked() -> None:
    """A limit on one count ignores every other count."""
    spent = RunUsage(requests=50, input_tokens=5000, output_tokens=5000, tool_calls=50)
    assert UsageLimits(output_tokens=5000).crossed(spent) is None
    assert UsageLimits(input_tokens=4999).crossed(spent) == "input_tokens limit of 4999 exceeded: 5000 used"


def test_usage_requests_limit_is_reported_before_token_limits() -> None:
    """With several limits crossed at once, the requests limit is the one named."""
    limits = UsageLimits(requests=1, output_tokens=1)
    assert limits.crossed(RunUsage(requests=1, output_tokens=5)) == "requests limit of 1 reached: 1 model requests made"


@pytest.mark.parametrize("field", ["requests", "input_tokens", "output_tokens", "total_tokens", "tool_calls"])
@pytest.mark.parametrize("bad", [-1, math.nan, 1.5, True, "5"])
def test_usage_a_limit_that_is_not_a_count_is_refused(field: str, bad: Any) -> None:
    """A negative limit, NaN (which was no limit at all, silently), a float, a bool or a string is a ValueError
    naming the field; 0 and None are allowed."""
    with pytest.raises(ValueError, match=f"UsageLimits.{field} must be an int of at least 0, or None"):
        UsageLimits(**{field: bad})
    assert getattr(UsageLimits(**{field: 0}), field) == 0
    assert getattr(UsageLimits(**{field: None}), field) is None


@pytest.mark.parametrize("option", ["usage_limits", "session_usage_limits"])
@pytest.mark.parametrize("bad", [{"requests": 5}, 5])
def test_usage_limits_of_an_agent_that_are_not_usage_limits_are_refused(option: str, bad: Any) -> None:
    """A dict or a number given as limits failed only in the first run, as an "internal" error."""
    with pytest.raises(AgentDefinitionError, match=f"{option} must be a UsageLimits or None"):
        options: dict[str, Any] = {option: bad}
        Agent(name="a", model=ScriptedModel([]), **options)
