"""Usage limits: how much a run (or a session) may spend before it is stopped."""

from __future__ import annotations

from typing import Any

import attrs


def _none_or_at_least_zero(instance: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is None:
        return
    # A float, a bool or NaN passes a bare comparison: NaN would silently be no limit at all.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"UsageLimits.{attribute.name} must be an int of at least 0, or None, not {value!r}")


@attrs.frozen
class RunUsage:
    """What was spent: model requests, tokens, tool calls."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0

    @property
    def total_tokens(self) -> int:
        """Input and output tokens together."""
        return self.input_tokens + self.output_tokens


@attrs.frozen(kw_only=True)
class UsageLimits:
    """Ceilings on what a run may spend; ``None`` is no limit.

    Checked before each model request: once a count is past its limit (for
    ``requests``: once the next request would be past it), the run ends with
    ``ErrorEvent("usage_limit", ...)`` and ``RunFinished("usage_limit")``.
    A sub-agent's usage counts against its parent's limits too.

    Example::

        Agent(name="bounded", model=model, usage_limits=UsageLimits(requests=5, total_tokens=20_000))
    """

    requests: int | None = attrs.field(default=None, validator=_none_or_at_least_zero)
    input_tokens: int | None = attrs.field(default=None, validator=_none_or_at_least_zero)
    output_tokens: int | None = attrs.field(default=None, validator=_none_or_at_least_zero)
    total_tokens: int | None = attrs.field(default=None, validator=_none_or_at_least_zero)
    tool_calls: int | None = attrs.field(default=None, validator=_none_or_at_least_zero)

    def crossed(self, usage: RunUsage) -> str | None:
        """Which limit ``usage`` is past before the next model request, in words; ``None`` if none is."""
        if self.requests is not None and usage.requests >= self.requests:
            return f"requests limit of {self.requests} reached: {usage.requests} model requests made"
        checks = (
            ("input_tokens", self.input_tokens, usage.input_tokens),
            ("output_tokens", self.output_tokens, usage.output_tokens),
            ("total_tokens", self.total_tokens, usage.total_tokens),
            ("tool_calls", self.tool_calls, usage.tool_calls),
        )
        for name, limit, count in checks:
            if limit is not None and count > limit:
                return f"{name} limit of {limit} exceeded: {count} used"
        return None
