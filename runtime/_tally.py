"""UsageTally: what a run, or a session, has spent so far (counted live, for usage limits)."""

from __future__ import annotations

from agents import RunUsage


class UsageTally:
    """Mutable counters; :meth:`snapshot` is the public, frozen form."""

    __slots__ = ("input_tokens", "output_tokens", "requests", "tool_calls")

    def __init__(self) -> None:
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.tool_calls = 0

    def snapshot(self) -> RunUsage:
        """The counts now."""
        return RunUsage(self.requests, self.input_tokens, self.output_tokens, self.tool_calls)
