"""The conversation: history messages, model requests and the chunks a model streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import attrs

from ._content import Content, content_text

if TYPE_CHECKING:
    from collections.abc import Mapping

    import httpx


@attrs.frozen
class UserMessage:
    """What the user said: text, or a tuple of content parts (text, images, documents)."""

    content: Content
    """A string (the common case), or the parts ``Session.run([...])`` was given, as a tuple."""

    @property
    def text(self) -> str:
        """The text: ``content`` if it is a string, else its text parts joined by newlines."""
        return content_text(self.content)


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
class ReasoningBlock:
    """A whole block of a model's reasoning, as its provider wants it back with the history.

    Anthropic's extended thinking signs each thinking block, and a follow-up
    request (a tool's result) must send the response's thinking back, signed,
    before its tool calls. A model yields one per block, after its
    :class:`ReasoningChunk` pieces; the run keeps it in the response's
    :class:`AssistantMessage` (it is not an event). Providers that need
    nothing back yield none.
    """

    text: str
    """The reasoning's text; for a redacted block, the provider's encrypted ``data``."""
    signature: str = ""
    """The provider's signature of ``text`` (Anthropic's ``signature``)."""
    redacted: bool = False
    """Whether the provider sent it encrypted (Anthropic's ``redacted_thinking``)."""


@attrs.frozen
class AssistantMessage:
    """One model response: its text, the tool calls it asked for, and the reasoning its provider wants back."""

    text: str
    tool_calls: tuple[ToolCallChunk, ...] = ()
    reasoning: tuple[ReasoningBlock, ...] = ()
    """The response's :class:`ReasoningBlock` s, in order (empty unless its provider wants them back)."""


@attrs.frozen
class ToolResultMessage:
    """The result of one tool call, as the model sees it next turn."""

    call_id: str
    name: str
    content: Content
    """The result as text, or as parts when the tool returned any (an :class:`~agents.ImagePart` ...)."""
    is_error: bool = False

    @property
    def text(self) -> str:
        """The text: ``content`` if it is a string, else its text parts joined by newlines."""
        return content_text(self.content)


Message: TypeAlias = UserMessage | AssistantMessage | ToolResultMessage
"""One entry of a session's history."""

_Text = TypeVar("_Text")


def text_init(cls: type[_Text]) -> type[_Text]:
    """Give a frozen attrs class whose one field is ``text`` an ``__init__`` that sets the slot directly.

    For what a stream makes per token (the model's chunk, the run's event):
    attrs' own frozen ``__init__`` goes through ``object.__setattr__``, 0.23 µs
    against 0.15. Same signature, same instance; the class stays frozen.
    """
    (field,) = attrs.fields(cls)  # type: ignore[arg-type]
    if field.name != "text" or field.validator is not None or field.converter is not None:
        raise TypeError(f"text_init is for classes whose one field is a plain 'text', not {cls.__name__}")
    set_text = cls.__dict__["text"].__set__

    def __init__(self: _Text, text: str) -> None:
        set_text(self, text)

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = __init__  # type: ignore[assignment]
    return cls


@text_init
@attrs.frozen
class TextChunk:
    """A piece of the response text."""

    text: str


@text_init
@attrs.frozen
class ReasoningChunk:
    """A piece of the model's reasoning, streamed before or between answers."""

    text: str


@attrs.frozen
class ToolCallDeltaChunk:
    """A fragment of a tool call's arguments while the model writes them.

    The whole call follows as a :class:`ToolCallChunk`; the deltas are for
    watching, never for running the call.
    """

    call_id: str
    name: str
    """The tool's name as far as the model has sent it."""
    arguments_delta: str
    """The next piece of the arguments' JSON text."""


StopReason: TypeAlias = Literal[
    "end_turn", "tool_use", "max_tokens", "content_filter", "refusal", "pause_turn", "other"
]
"""Why a model stopped one response, normalised across providers."""


FinishReason: TypeAlias = Literal[
    "completed", "max_turns", "hook_stop", "timeout", "error", "cancelled", "refusal", "usage_limit", "interrupted"
]
"""Why a run ended (``RunFinished.reason``; defined here for :class:`~agents.Hooks`, re-exported by
``runtime.events``).

``interrupted``: the process running it stopped (killed, crashed) before it
ended; a durable session's log says so when it is opened again.

Consumers must accept reasons they do not know (treat one like ``error``):
later versions may add more, and a newer served runtime may send them.
"""


@attrs.frozen
class StopChunk:
    """Why the response ended: at most one per model call, after its content."""

    reason: StopReason
    raw: str | None = None
    """The provider's own value (OpenAI's ``"length"``, Anthropic's ``"stop_sequence"`` ...)."""


@attrs.frozen
class RefusalChunk:
    """A piece of a refusal (OpenAI's ``delta.refusal``): the model declined to answer."""

    text: str


@attrs.frozen
class UsageChunk:
    """Tokens used by the model call that streamed it, as the provider counts them."""

    input_tokens: int
    """The provider's own input count: OpenAI's ``prompt_tokens`` includes cached tokens, Anthropic's
    ``input_tokens`` excludes cache reads and writes."""
    output_tokens: int
    cache_read_tokens: int = 0
    """Input tokens read from the provider's prompt cache (OpenAI ``cached_tokens``, Anthropic
    ``cache_read_input_tokens``)."""
    cache_write_tokens: int = 0
    """Input tokens written to the prompt cache (Anthropic ``cache_creation_input_tokens``)."""
    reasoning_tokens: int = 0
    """Output tokens spent reasoning, when the provider says (``reasoning_tokens``); part of ``output_tokens``."""


@attrs.frozen
class ErrorChunk:
    """An error the provider reported inside an otherwise successful stream."""

    kind: str
    message: str
    status: int | None = None
    """The HTTP status the error stands for, when the provider named its kind (Anthropic's ``overloaded_error``
    is 529, Gemini's ``UNAVAILABLE`` 503, OpenAI's ``insufficient_quota`` 429): what decides whether a
    :class:`~agents.FallbackModel` moves on, as it would for that status over HTTP."""


@attrs.frozen
class ServerToolChunk:
    """A tool the provider ran itself (e.g. Anthropic's web search): reported, not run by us."""

    call_id: str
    name: str
    input: Mapping[str, Any]


@attrs.frozen
class ModelFallbackChunk:
    """A :class:`~agents.FallbackModel` moves on: ``failed`` could not answer, ``next`` is tried now.

    Sent before anything of ``next``'s answer; the model named by the last
    one of a call is the one that answered (none: the first model did).
    """

    failed: str
    """The name of the model that failed (``"openai:gpt-4o-mini"``)."""
    error: str
    """Why, as one line."""
    next: str
    """The name of the model tried next."""


ModelChunk: TypeAlias = (
    TextChunk
    | ReasoningChunk
    | ReasoningBlock
    | ToolCallChunk
    | UsageChunk
    | ErrorChunk
    | ServerToolChunk
    | ToolCallDeltaChunk
    | StopChunk
    | RefusalChunk
    | ModelFallbackChunk
)
"""Everything a model may yield from :meth:`Model.stream`."""


@attrs.frozen
class ToolSpec:
    """How a tool is described to a model."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    """The JSON schema of the tool's arguments (an ``object`` schema)."""


@attrs.frozen
class OutputSchema:
    """The JSON schema the answer must match, for a provider's native structured output.

    Set on :attr:`ModelRequest.output` only in ``output_mode="native"``;
    the schema is always an ``object`` schema (a non-object output type is
    wrapped as ``{"response": ...}``).
    """

    name: str
    schema: Mapping[str, Any]
    description: str = ""


@attrs.frozen
class ModelRequest:
    """Everything a model needs for one call."""

    instructions: str
    """The system prompt."""
    messages: tuple[Message, ...]
    """The conversation so far, oldest first."""
    tools: tuple[ToolSpec, ...] = ()
    """The tools the model may call."""
    output: OutputSchema | None = None
    """Answer in JSON matching this schema, with the provider's native structured output (``None``: free text)."""
    http_client: httpx.AsyncClient | None = attrs.field(default=None, eq=False, repr=False)
    """The runtime's shared HTTP client; a model used alone opens its own."""
