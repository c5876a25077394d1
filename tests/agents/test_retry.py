"""RetryPolicy: the one backoff policy, its bounds, its jitter, and a model retrying forever with it."""

from __future__ import annotations

import itertools
import math
from typing import Final

import httpx
import pytest
import trio
from hypothesis import given, strategies as st

from agents import ModelRequest, OpenAIChatModel, RetryPolicy, TextChunk, UserMessage

SUCCESS: Final = b'data: {"choices": [{"index": 0, "delta": {"content": "at last"}}]}\n\ndata: [DONE]\n\n'


def _bound(policy: RetryPolicy, attempt: int) -> float:
    return min(policy.maximum, policy.initial * policy.multiplier ** min(attempt, 64))


@given(
    initial=st.floats(min_value=0.0, max_value=10),
    maximum=st.floats(min_value=0.0, max_value=100),
    multiplier=st.floats(min_value=1, max_value=10),
    attempt=st.integers(min_value=0, max_value=100_000),
)
def test_retry_policy_delay_is_between_half_and_all_of_its_bound(
    initial: float, maximum: float, multiplier: float, attempt: int
) -> None:
    """Every delay lies in [bound / 2, bound], the bound being ``min(maximum, initial * multiplier ** attempt)``."""
    policy = RetryPolicy(initial=initial, maximum=maximum, multiplier=multiplier)
    delay = policy.delay(attempt)
    bound = _bound(policy, attempt)
    assert 0 <= delay <= maximum
    assert bound / 2 * (1 - 1e-9) <= delay <= bound * (1 + 1e-9)


def test_retry_policy_delay_survives_a_huge_multiplier() -> None:
    """A multiplier whose powers overflow a float gives the maximum's bounds, not an OverflowError."""
    policy = RetryPolicy(initial=1.0, maximum=5.0, multiplier=1e300)
    assert 2.5 <= policy.delay(50) <= 5.0


def test_retry_policy_delay_is_zero_when_initial_is_zero_even_with_an_infinite_multiplier() -> None:
    """``initial=0`` waits 0 at every attempt with ``multiplier=inf`` too (0 * inf is NaN, not the maximum)."""
    policy = RetryPolicy(initial=0, multiplier=math.inf)
    assert [policy.delay(attempt) for attempt in (0, 1, 2, 100)] == [0.0, 0.0, 0.0, 0.0]
    assert policy.min_delay(1) == 0.0


def test_retry_policy_delay_is_jittered() -> None:
    """Delays of the same attempt differ, so clients that failed together spread out."""
    policy = RetryPolicy(initial=1.0, maximum=8.0)
    assert len({policy.delay(3) for _ in range(20)}) > 1


def test_retry_policy_delay_grows_until_the_cap() -> None:
    """Later attempts wait longer, up to the cap: the largest first delay is below the smallest capped one."""
    policy = RetryPolicy(initial=0.5, maximum=8.0)
    first = [policy.delay(0) for _ in range(50)]
    capped = [policy.delay(30) for _ in range(50)]
    assert max(first) <= 0.5
    assert max(capped) <= 8.0
    assert min(capped) > max(first)


def test_retry_policy_max_attempts_bounds_the_tries_and_none_never_does() -> None:
    """``max_attempts=3`` allows tries 0, 1 and 2 only; ``None`` (the default) allows any try."""
    three = RetryPolicy(max_attempts=3)
    assert [three.allows(n) for n in range(5)] == [True, True, True, False, False]
    assert RetryPolicy().max_attempts is None
    assert RetryPolicy().allows(10**9)


@pytest.mark.parametrize("fields", [{"max_attempts": 0}, {"initial": -1.0}, {"maximum": -1.0}, {"multiplier": 0.5}])
def test_retry_policy_rejects_impossible_fields(fields: dict[str, float]) -> None:
    """No tries at all, a negative wait, or a shrinking bound is refused when the policy is made."""
    with pytest.raises(ValueError, match=next(iter(fields))):
        RetryPolicy(**fields)  # type: ignore[arg-type]


async def test_retry_policy_without_max_attempts_retries_a_model_call_until_it_works(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A model with ``max_attempts=None`` retries 40 failures in a row, each wait within the policy's jitter bounds."""
    failures = 40
    policy = RetryPolicy(initial=1.0, maximum=16.0, max_attempts=None)
    times: list[float] = []

    def provider(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if len(times) <= failures:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=SUCCESS)

    model = OpenAIChatModel("m", base_url="http://provider.invalid", api_key="k", retry=policy)
    async with httpx.AsyncClient(transport=httpx.MockTransport(provider)) as client:
        request = ModelRequest("", (UserMessage("hi"),), http_client=client)
        async with model.stream(request) as chunks:
            received = [chunk async for chunk in chunks]
    assert received == [TextChunk("at last")]
    assert len(times) == failures + 1
    for attempt, (before, after) in enumerate(itertools.pairwise(times)):
        bound = _bound(policy, attempt)
        assert bound / 2 - 1e-6 <= after - before <= bound + 1e-6, (attempt, after - before)


async def test_retry_policy_retry_after_zero_still_waits_the_policys_least(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 429 saying ``Retry-After: 0`` (or less than the policy's wait) under ``max_attempts=None`` waits at least
    the policy's shortest wait each time: it cannot spin; a longer ``Retry-After`` is waited as asked."""
    failures = 10
    policy = RetryPolicy(initial=1.0, maximum=16.0, max_attempts=None)
    times: list[float] = []

    def provider(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if len(times) <= failures:
            wait = "0" if len(times) < failures else "60"
            return httpx.Response(429, headers={"retry-after": wait}, json={"error": {"message": "slow down"}})
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=SUCCESS)

    model = OpenAIChatModel("m", base_url="http://provider.invalid", api_key="k", retry=policy)
    async with httpx.AsyncClient(transport=httpx.MockTransport(provider)) as client:
        request = ModelRequest("", (UserMessage("hi"),), http_client=client)
        async with model.stream(request) as chunks:
            received = [chunk async for chunk in chunks]
    assert received == [TextChunk("at last")]
    gaps = [after - before for before, after in itertools.pairwise(times)]
    assert [gap >= policy.min_delay(attempt) - 1e-6 for attempt, gap in enumerate(gaps)] == [True] * failures
    assert gaps[-1] == pytest.approx(60)
