"""UsageTally: what a run, or a session, has spent so far (counted live, for usage limits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents import RunUsage

if TYPE_CHECKING:
    from agents import UsageChunk


class UsageTally:
    """Mutable counters; :meth:`snapshot` is the public, frozen form."""

    __slots__ = (
        "cache_read_tokens",
        "cache_write_tokens",
        "input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "requests",
        "tool_calls",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.tool_calls = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0

    def add(self, usage: UsageChunk) -> None:
        """Count one model call's tokens."""
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cache_read_tokens += usage.cache_read_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.reasoning_tokens += usage.reasoning_tokens

    def snapshot(self) -> RunUsage:
        """The counts now."""
        return RunUsage(self.requests, self.input_tokens, self.output_tokens, self.tool_calls)
