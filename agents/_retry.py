"""RetryPolicy: the one backoff policy, for model calls and for reconnecting streams."""

from __future__ import annotations

import random

import attrs


@attrs.frozen
class RetryPolicy:
    """How many tries, and how long to wait between them: capped exponential backoff with jitter.

    The wait before try ``n + 1`` (``n`` counts from 0) is drawn between half
    and all of ``min(maximum, initial * multiplier ** n)`` seconds ("equal
    jitter"): clients that failed together spread out, and no wait is ever
    near zero, so a client that retries forever cannot spin. Every wait is a
    ``trio.sleep`` in the caller's cancel scope, so closing the run or the
    session ends it at once.

    The HTTP models retry 429, 5xx and connection errors with it (honouring
    ``Retry-After``, but never waiting less than :meth:`min_delay`, and
    raising at once one that asks for over 60 s, whatever the policy; by
    default 4 tries, waits capped at 8 s: their own policy, not this
    class's defaults, which are no limit on tries and waits up to 30 s);
    ``streams.RemoteSession`` reconnects with it (by default forever).
    ``streams.Backoff`` is this class.

    Example::

        model = OpenAIChatModel("gpt-4o-mini", retry=RetryPolicy(initial=1.0, max_attempts=6))
        remote = RemoteSession(url, "s1", backoff=RetryPolicy(initial=1.0, maximum=60.0))
    """

    initial: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    """The first wait's upper bound, in seconds."""
    maximum: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    """No wait is longer than this, in seconds."""
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    """How much the bound grows from one wait to the next."""
    max_attempts: int | None = attrs.field(
        default=None, kw_only=True, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    """Tries in all, the first included (1: no retry); ``None``: try until cancelled."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait after try number ``attempt`` (0 for the first) failed."""
        bound = self._bound(attempt)
        return bound / 2 + random.uniform(0, bound / 2)

    def min_delay(self, attempt: int) -> float:
        """The shortest wait :meth:`delay` gives after try number ``attempt``: half its bound.

        A server's ``Retry-After`` shorter than this (``0``) is waited this
        long instead, so that retrying it cannot spin either.
        """
        return self._bound(attempt) / 2

    def _bound(self, attempt: int) -> float:
        if self.initial == 0:  # 0 * inf is NaN, which min() would turn into the maximum
            return 0.0
        try:
            return min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        except OverflowError:  # a huge multiplier: the cap is what is left
            return self.maximum if self.initial > 0 else 0.0

    def allows(self, attempt: int) -> bool:
        """Whether try number ``attempt`` (0 for the first) may be made."""
        return self.max_attempts is None or attempt < self.max_attempts
