"""The conversation: history messages, model requests and the chunks a model streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    import httpx


@attrs.frozen
class UserMessage:
    """What the user said."""

    content: str


@attrs.frozen
class ToolCallChunk:
    """A complete tool call requested by the model.

    Also the form a tool call takes in :class:`AssistantMessage`.
    """

    call_id: str
    """The model's id for this call; results refer back to it."""
    name: str
    """The tool's name."""
    arguments: Mapping[str, Any] | str
    """The arguments: a mapping, or the raw JSON text a provider sent."""


@attrs.frozen
class AssistantMessage:
    """One model response: its text and the tool calls it asked for."""

    text: str
    tool_calls: tuple[ToolCallChunk, ...] = ()


@attrs.frozen
class ToolResultMessage:
    """The result of one tool call, as the model sees it next turn."""

    call_id: str
    name: str
    content: str
    is_error: bool = False


Message: TypeAlias = UserMessage | AssistantMessage | ToolResultMessage
"""One entry of a session's history."""


@attrs.frozen
class TextChunk:
    """A piece of the response text."""

    text: str


@attrs.frozen
class ReasoningChunk:
    """A piece of the model's reasoning, streamed before or between answers."""

    text: str


@attrs.frozen
class UsageChunk:
    """Tokens used by the model call that streamed it."""

    input_tokens: int
    output_tokens: int


@attrs.frozen
class ErrorChunk:
    """An error the provider reported inside an otherwise successful stream."""

    kind: str
    message: str


@attrs.frozen
class ServerToolChunk:
    """A tool the provider ran itself (e.g. Anthropic's web search): reported, not run by us."""

    call_id: str
    name: str
    input: Mapping[str, Any]


ModelChunk: TypeAlias = TextChunk | ReasoningChunk | ToolCallChunk | UsageChunk | ErrorChunk | ServerToolChunk
"""Everything a model may yield from :meth:`Model.stream`."""


@attrs.frozen
class ToolSpec:
    """How a tool is described to a model."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    """The JSON schema of the tool's arguments (an ``object`` schema)."""


@attrs.frozen
class ModelRequest:
    """Everything a model needs for one call."""

    instructions: str
    """The system prompt."""
    messages: tuple[Message, ...]
    """The conversation so far, oldest first."""
    tools: tuple[ToolSpec, ...] = ()
    """The tools the model may call."""
    http_client: httpx.AsyncClient | None = attrs.field(default=None, eq=False, repr=False)
    """The runtime's shared HTTP client; a model used alone opens its own."""
