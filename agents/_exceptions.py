"""Exceptions raised by :mod:`agents`.

The tree::

    AgentsError
    ├── AgentDefinitionError      an Agent or a tool is defined wrongly
    ├── ToolArgumentsError        a model gave a tool arguments that fail validation
    ├── ModelError                a model could not produce a response
    │   ├── ScriptExhaustedError  a ScriptedModel has no turns left
    │   ├── ModelConnectionError  the provider could not be reached (after retries)
    │   ├── MalformedStreamError  the provider sent something that is not its protocol
    │   ├── UnsupportedContentError  the provider cannot take a content part (nothing was sent)
    │   └── ProviderError         the provider answered with an HTTP error
    │       ├── AuthenticationError   401, 403: a missing or wrong API key
    │       │   └── MissingAPIKeyError  no key at all: refused before any request
    │       ├── RateLimitError        429 (after retries); ``retry_after`` if given
    │       ├── BadRequestError       400, 404, 413, 422: the request was refused
    │       └── ServerError           5xx (after retries)
    ├── ElicitationError          asking the human did not work
    │   ├── ElicitationUnavailable  no consumer can receive the question
    │   └── ElicitationTimeout      nobody answered in time
    └── MCPServerError            an MCP server could not serve a call (agents.mcp, with the mcp extra)
"""

from __future__ import annotations

from typing import Any, Final

from ._content import describe_part


class AgentsError(Exception):
    """Root of every exception :mod:`agents` raises."""


class AgentDefinitionError(AgentsError):
    """An :class:`~agents.Agent` or a tool is defined in a way that cannot work."""


class ToolArgumentsError(AgentsError):
    """The arguments a model gave a tool do not match the tool's schema.

    Attributes:
        tool_name: The tool that was called.
        errors: The validation errors, as pydantic reports them.
    """

    def __init__(self, tool_name: str, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.tool_name = tool_name
        self.errors = errors or []


class ModelError(AgentsError):
    """A model could not produce a response."""


class ScriptExhaustedError(ModelError):
    """A :class:`~agents.ScriptedModel` was asked for more turns than its script has."""


class ModelConnectionError(ModelError):
    """The provider could not be reached, or the connection broke, after the retries."""


class MalformedStreamError(ModelError):
    """The provider sent a chunk that is not valid for its protocol.

    Attributes:
        summary: What was wrong, without the sample of what it sent that the message quotes (which may
            hold the model's output: traces without content show this).
        sample: That sample, cut short (``None`` if the message quotes none).
    """

    def __init__(self, summary: str, sample: str | bytes | None = None) -> None:
        super().__init__(summary if sample is None else f"{summary}: {sample!r}")
        self.summary = summary
        self.sample = sample


class UnsupportedContentError(ModelError):
    """A content part (an image, a document ...) that the model's provider cannot take.

    Raised when the request is built, before anything is sent: e.g. a
    document by URL to Chat Completions, which takes documents only as bytes.

    Attributes:
        part: The part.
        provider: Which provider ("openai", "anthropic" ...).
        reason: Why it cannot be sent, and what would work instead.
    """

    def __init__(self, part: object, *, provider: str, reason: str) -> None:
        super().__init__(f"{provider}: cannot send {describe_part(part)}: {reason}")
        self.part = part
        self.provider = provider
        self.reason = reason


class ProviderError(ModelError):
    """The provider answered with an HTTP error.

    Attributes:
        status: The HTTP status code.
        provider: Which provider ("openai", "anthropic" ...).
        provider_message: The provider's own error message, if it sent one.
    """

    def __init__(self, message: str, *, status: int, provider: str, provider_message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.provider = provider
        self.provider_message = provider_message


class AuthenticationError(ProviderError):
    """401 or 403: the API key is missing, wrong, or not allowed this model."""


class MissingAPIKeyError(AuthenticationError):
    """The provider needs an API key and the model has none: raised on entering ``stream``, before any request.

    Its message names the environment variable to set. ``status`` is 401,
    what the provider would have answered; nothing was sent.

    Attributes:
        variable: The environment variable the key is read from (``"OPENAI_API_KEY"`` ...).
    """

    def __init__(self, message: str, *, provider: str, variable: str) -> None:
        super().__init__(message, status=401, provider=provider)
        self.variable = variable


class _RetryAfterError(ProviderError):
    """An error a provider may answer with a Retry-After (429, 503 ...).

    Attributes:
        retry_after: Seconds the provider asked to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        provider: str,
        provider_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, provider=provider, provider_message=provider_message)
        self.retry_after = retry_after


class RateLimitError(_RetryAfterError):
    """429, still after the retries; ``retry_after`` is what the provider last asked for."""


class BadRequestError(ProviderError):
    """400, 404, 413 or 422: the provider refused the request (bad model name, parameter ...)."""


class ServerError(_RetryAfterError):
    """5xx, still after the retries; ``retry_after`` if the provider sent one."""


class ElicitationError(AgentsError):
    """A tool's question to the human (``ToolContext.elicit``) could not be answered."""


class ElicitationUnavailable(ElicitationError):
    """No consumer can receive the question: the run's stream is gone, or nobody streams it (``ask``)."""


class ElicitationTimeout(ElicitationError):
    """The question was not answered within its timeout."""


_MAX_LEAVES: Final = 3  # errors of a group that describe() names; the rest are counted


def describe(exc: BaseException) -> str:
    """An exception as one line, for an error event or a tool's error result.

    One of ours (an :class:`AgentsError`) is its message, written to be read;
    any other gets its type name in front (``KeyError: 'x'`` says more than
    ``'x'``), or is its type name alone if it has no message. An exception
    group (a nursery's) is the errors in it: the first three, then how many
    more. An exception whose ``str()`` fails is its type name and
    ``<str() failed>``.
    """
    if isinstance(exc, BaseExceptionGroup):
        leaves = _leaves(exc)
        shown = [describe(leaf) for leaf in leaves[:_MAX_LEAVES]]
        if len(leaves) > _MAX_LEAVES:
            shown.append(f"and {len(leaves) - _MAX_LEAVES} more")
        return "; ".join(shown)
    try:
        text = str(exc)
    except Exception:  # its __str__ is broken: the call it came from still gets an error result
        text = "<str() failed>"
    if isinstance(exc, AgentsError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions in ``group`` and its nested groups that are not groups, in order (no recursion:
    nesting may be deep)."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    return leaves
