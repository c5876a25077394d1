"""UsageTally: what a run, or a session, has spent so far (counted live, for usage limits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents import RunUsage

if TYPE_CHECKING:
    from agents import UsageLimits


class UsageTally:
    """Mutable counters; :meth:`snapshot` is the public, frozen form."""

    __slots__ = (
        "_up",
        "cache_read_tokens",
        "cache_write_tokens",
        "input_tokens",
        "limits",
        "output_tokens",
        "reasoning_tokens",
        "requests",
        "tool_calls",
    )

    def __init__(self, limits: UsageLimits | None = None) -> None:
        self.limits = limits
        """What the total may reach (``Agent.session_usage_limits``)."""
        self._up: UsageTally | None = None  # the top of a run's counting chain
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.tool_calls = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0

    def snapshot(self) -> RunUsage:
        """The counts now."""
        return RunUsage(self.requests, self.input_tokens, self.output_tokens, self.tool_calls)
