"""AnthropicModel: Anthropic's Messages API, streamed."""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING, Any, Final

import attrs

from .._content import Content, ContentPart, DocumentPart, ImagePart, TextPart
from .._exceptions import MalformedStreamError, UnsupportedContentError
from .._json import loads_untrusted
from .._messages import (
    AssistantMessage,
    ModelChunk,
    ModelRequest,
    ReasoningBlock,
    ReasoningChunk,
    ServerToolChunk,
    StopChunk,
    StopReason,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolResultMessage,
    UsageChunk,
    UserMessage,
)
from ._http import DEFAULT_RETRY, HTTPModel, digest, error_chunk
from ._sse import SSEStream, json_object, text_field

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    import httpx

    from .._retry import RetryPolicy

DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
API_VERSION: Final = "2023-06-01"
STRUCTURED_OUTPUTS_BETA: Final = "structured-outputs-2025-11-13"
"""The ``anthropic-beta`` feature that ``output_format`` (native structured output) needs."""
STOP_REASONS: Final[Mapping[str, StopReason]] = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
}
"""``stop_reason`` values as stop reasons; any other is ``"other"``."""
_SERVER_TOOL_BLOCKS: Final = frozenset({"server_tool_use", "mcp_tool_use"})
"""Content blocks of tools the provider runs itself: reported, never run by us."""
_UNSUPPORTED_KEYWORDS: Final = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "discriminator",
    }
)
"""Schema keywords structured outputs refuse (a 400), or may (``pattern``: only simple regexes; ``minItems``
is kept only as 0 or 1): moved into the description."""
_STRING_FORMATS: Final = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
"""The string ``format`` values structured outputs take; any other is moved into the description."""


class AnthropicModel(HTTPModel):
    """A Claude model behind Anthropic's Messages API (``/v1/messages``).

    Streams text, extended thinking (as reasoning: each thinking block, signed,
    or redacted, is also kept with the response and sent back with the
    history, which the API requires once a tool's result follows), tool calls assembled from
    their ``input_json_delta`` fragments (each fragment also streamed as it
    comes), the tools Anthropic runs itself (web search, tool search ...:
    reported as server tool use, never run here), why the response stopped
    (``stop_reason``: a ``refusal`` is how Claude declines) and usage. A
    native structured output is asked for with ``output_format`` and the
    ``structured-outputs-2025-11-13`` beta, its schema made what the API takes
    (``additionalProperties: false`` on every object, the constraints it refuses
    moved into descriptions; the answer is still validated against all of them).

    Args:
        model: The model name, e.g. ``"claude-sonnet-4-5"``.
        base_url: Defaults to ``ANTHROPIC_BASE_URL``, else Anthropic's.
        api_key: Defaults to ``ANTHROPIC_API_KEY``. With neither, a server on this machine gets none, and any
            other fails with :class:`~agents.MissingAPIKeyError` (``api_key=""``: it needs none).
        retry: Retries of 429, 5xx and connection errors (default: 4 tries, waits of at most 8 s).
        max_tokens: The most tokens one response may take (the API requires it).
        cache_prompt: Mark the system prompt and the tool definitions with ``cache_control``
            (``ephemeral``), so Anthropic caches them between calls; ``Usage`` then reports the
            tokens written to the cache and, on later calls, read from it.
        **settings: Sent with every request (``temperature``, ``thinking`` ...).

    Example::

        agent = Agent(name="helper", model=AnthropicModel("claude-sonnet-4-5"))
    """

    provider = "anthropic"
    DEFAULT_BASE_URL = DEFAULT_BASE_URL
    BASE_URL_ENV = "ANTHROPIC_BASE_URL"
    API_KEY_ENV = "ANTHROPIC_API_KEY"
    PATH = "/v1/messages"
    native_output = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_tokens: int = 4096,
        cache_prompt: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__(model, base_url=base_url, api_key=api_key, retry=retry, **settings)
        self.max_tokens = max_tokens
        self.cache_prompt = cache_prompt

    def headers(self, request: ModelRequest) -> dict[str, str]:
        """The API version, the key when there is one, and the beta a native structured output needs."""
        headers = {"accept": "text/event-stream", "anthropic-version": API_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        if request.output is not None:
            headers["anthropic-beta"] = _with_beta(request.http_client, STRUCTURED_OUTPUTS_BETA)
        return headers

    def parse(self, response: httpx.Response) -> AsyncGenerator[ModelChunk, None]:
        """The chunks of a Messages stream."""
        return _chunks(response)

    def body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of a request."""
        messages: list[dict[str, Any]] = []
        results: list[dict[str, Any]] | None = None  # the tool_result blocks of the open user message
        for message in request.messages:
            if isinstance(message, ToolResultMessage):
                if results is None:
                    results = []
                    messages.append({"role": "user", "content": results})
                results.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": _call_id(message.call_id),
                        "content": _content(message.content),
                        "is_error": message.is_error,
                    }
                )
                continue
            results = None
            if isinstance(message, UserMessage):
                messages.append({"role": "user", "content": _content(message.content)})
            elif isinstance(message, AssistantMessage):
                # Its signed thinking first: with thinking on, a tool's result must follow it (else a 400).
                # Unsigned reasoning (another provider's, before a fallback) would be refused: left out.
                content: list[dict[str, Any]] = [
                    {"type": "redacted_thinking", "data": block.text}
                    if block.redacted
                    else {"type": "thinking", "thinking": block.text, "signature": block.signature}
                    for block in message.reasoning
                    if block.redacted or block.signature
                ]
                if message.text:  # the API refuses empty text blocks
                    content.append({"type": "text", "text": message.text})
                content += [
                    {
                        "type": "tool_use",
                        "id": _call_id(call.call_id),
                        "name": call.name,
                        "input": _input(call.arguments),
                    }
                    for call in message.tool_calls
                ]
                if content:  # nor does it take an assistant turn with no content
                    messages.append({"role": "assistant", "content": content})
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens}
        if request.instructions:
            body["system"] = request.instructions
        body["messages"] = messages
        if request.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
                for t in request.tools
            ]
        if self.cache_prompt:
            _mark_cache(body)
        if request.output is not None:
            body["output_format"] = {"type": "json_schema", "schema": _output_schema(request.output.schema)}
        body["stream"] = True
        body.update(self.settings)
        if "thinking" in body and _unsigned_tool_turn(messages):
            # The turn the model goes on from asked for tools without a signed thinking block (another
            # provider's, before a fallback, or a session reopened with this model): with thinking on the API
            # refuses it, so this one request goes without thinking; the next turn has its own.
            del body["thinking"]
        return body


def _unsigned_tool_turn(messages: list[dict[str, Any]]) -> bool:
    """Whether the history ends in a tool loop (assistant turns asking for tools, each answered by its results)
    whose first assistant turn does not begin with a thinking block: the API checks that one (Claude thinks
    at a loop's start; its later steps may not)."""
    first = None
    at = len(messages) - 1
    while at >= 1 and _only_tool_results(messages[at]) and messages[at - 1]["role"] == "assistant":
        first = messages[at - 1]
        at -= 2
    return first is not None and first["content"][0]["type"] not in ("thinking", "redacted_thinking")


def _only_tool_results(message: dict[str, Any]) -> bool:
    content = message["content"]
    return (
        message["role"] == "user"
        and isinstance(content, list)
        and bool(content)
        and all(block.get("type") == "tool_result" for block in content)
    )


def _output_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` as Anthropic's structured outputs take it (the runtime still validates the answer
    against the whole of it).

    Every object gets ``additionalProperties: false`` (required), in ``$defs`` too; the constraints
    the API refuses (``minimum``, ``maxLength``, ``pattern``, ``minItems`` above 1, a ``format`` it
    does not know ...) are moved into the description, where the model still reads them; ``oneOf``
    becomes ``anyOf``. A map (``dict[str, X]``, ``additionalProperties`` a schema) and a recursive
    schema are sent as they are: the API refuses them, rather than our answering ``{}`` for a map.
    """
    out: dict[str, Any] = {}
    moved: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: _output_schema(sub) if isinstance(sub, dict) else sub for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _output_schema(value)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            out["anyOf" if key == "oneOf" else key] = [
                _output_schema(sub) if isinstance(sub, dict) else sub for sub in value
            ]
        elif (
            key in _UNSUPPORTED_KEYWORDS
            or (key == "minItems" and value not in (0, 1))
            or (key == "format" and value not in _STRING_FORMATS)
        ):
            moved[key] = value
        else:
            out[key] = value
    # Closed where nothing is said, and a model's extra fields (extra="allow": its declared ones are the answer);
    # a map with nothing declared (dict[str, Any]) is sent as it is, for the API's clear 400: closed, the only
    # answer constrained decoding allows is {}.
    opened = out.get("additionalProperties", None)
    if (out.get("type") == "object" or "properties" in out) and (
        opened is None or (opened is True and "properties" in out)
    ):
        out["additionalProperties"] = False
    if moved:
        note = "{" + ", ".join(f"{key}: {json.dumps(value)}" for key, value in moved.items()) + "}"
        out["description"] = f"{out['description']}\n\n{note}" if out.get("description") else note
    return out


def _mark_cache(body: dict[str, Any]) -> None:
    """Cache breakpoints after the system prompt (a list of one text block) and after the last tool."""
    if body.get("system"):
        body["system"] = [{"type": "text", "text": body["system"], "cache_control": {"type": "ephemeral"}}]
    if body.get("tools"):
        body["tools"][-1]["cache_control"] = {"type": "ephemeral"}


def _content(content: Content) -> str | list[dict[str, Any]]:
    """A user message's or a tool result's content: a string, or content blocks (empty text left out:
    the API refuses an empty text block)."""
    if isinstance(content, str):
        return content
    return [_block(part) for part in content if not isinstance(part, TextPart) or part.text]


def _block(part: ContentPart) -> dict[str, Any]:
    """A part as a Messages API content block (in a user message or a ``tool_result``).

    Raises:
        UnsupportedContentError: a kind of part this model does not know.
    """
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "image", "source": _source(part)}
    if isinstance(part, DocumentPart):
        block: dict[str, Any] = {"type": "document", "source": _source(part)}
        if part.filename:
            block["title"] = part.filename
        return block
    raise UnsupportedContentError(part, provider="anthropic", reason="the Messages API has no such content block")


def _source(part: ImagePart | DocumentPart) -> dict[str, Any]:
    if part.url is not None:
        return {"type": "url", "url": part.url}
    return {"type": "base64", "media_type": part.media_type, "data": part.base64()}


def _with_beta(client: httpx.AsyncClient | None, beta: str) -> str:
    """``beta`` added to the betas the client already sends: a request's header would replace the client's."""
    betas = [] if client is None else client.headers.get_list("anthropic-beta", split_commas=True)
    return ",".join(betas if beta in betas else [*betas, beta])


def _input(arguments: Mapping[str, Any] | str) -> dict[str, Any]:
    """A tool call's arguments as the object ``tool_use.input`` must be ({} if they are not one)."""
    if not isinstance(arguments, str):
        return dict(arguments)
    try:
        value = loads_untrusted(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@attrs.define
class _ToolBlock:
    """A tool_use (or server tool) content block while its input streams in."""

    kind: str
    call_id: str
    name: str
    start_input: dict[str, Any]
    fragments: list[str] = attrs.field(factory=list)


@attrs.define
class _ThinkingBlock:
    """A thinking (or redacted_thinking) block while it streams: sent back, signed, with the history."""

    pieces: list[str]
    signature: str = ""
    redacted: bool = False


def _call_id(call_id: str) -> str:
    """A tool call's id as Anthropic takes it (letters, digits, ``_`` and ``-``): another provider's
    (OpenRouter's ``llm_version:0``, a FallbackModel's history) with the rest replaced, and a digest of the
    original so that two ids stay two; the same for the call and its result."""
    if _TOOL_ID.fullmatch(call_id):
        return call_id
    return f"{_NOT_IN_A_TOOL_ID.sub('_', call_id)[:48]}_{digest(call_id, 8)}"


_TOOL_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NOT_IN_A_TOOL_ID: Final = re.compile(r"[^A-Za-z0-9_-]")


async def _chunks(response: httpx.Response) -> AsyncGenerator[ModelChunk, None]:
    """Map the SSE stream to chunks; each tool call is complete when its content block stops.

    Raises:
        MalformedStreamError: it ended before message_stop (it was cut off), a content block started at the
            index of one still open, or message_stop came with a block still open.
        httpx.HTTPError: the connection broke (``stream_chunks`` maps it), after the usage counted so far.
    """
    blocks: dict[int, _ToolBlock | _ThinkingBlock] = {}
    open_blocks: set[int] = set()  # the index of every block started and not yet stopped, of any type
    usage: dict[str, Any] = {}
    stop_reason: str | None = None
    stopped = False
    async with contextlib.aclosing(SSEStream(response)) as stream:
        while not stopped and (events := await stream.read_or_end()):  # one await per network read, not per event
            for event in events:
                data = event.data.strip()
                if event.event == "error":
                    if usage:  # tokens spent before the error still count
                        yield _usage_chunk(usage)
                    yield error_chunk(data)
                    return
                if not data:
                    continue
                payload = json_object(data, "anthropic: an event")
                kind = payload.get("type") or event.event
                if kind == "error":
                    if usage:
                        yield _usage_chunk(usage)
                    yield error_chunk(payload)
                    return
                if kind == "message_start":
                    message = payload.get("message")
                    if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                        usage.update(message["usage"])
                elif kind == "content_block_start":
                    index = _index(payload)
                    if index in open_blocks:  # it would replace a block (a tool call) never finished
                        raise MalformedStreamError(f"anthropic: content block {index} started again before it stopped")
                    open_blocks.add(index)
                    chunk = _block_start(blocks, payload)
                    if chunk is not None:
                        yield chunk
                elif kind == "content_block_delta":
                    chunk = _block_delta(blocks, payload)
                    if chunk is not None:
                        yield chunk
                elif kind == "content_block_stop":
                    index = _index(payload)
                    open_blocks.discard(index)
                    block = blocks.pop(index, None)
                    if block is not None:
                        yield _block_stop(block)
                elif kind == "message_delta":
                    if isinstance(payload.get("usage"), dict):
                        usage.update(payload["usage"])
                    delta = payload.get("delta")
                    if isinstance(delta, dict) and delta.get("stop_reason"):
                        stop_reason = text_field(delta, "stop_reason")
                elif kind == "message_stop":
                    if open_blocks:  # a tool call in it would be lost: the stream is broken, not the answer whole
                        raise MalformedStreamError(
                            f"anthropic: message_stop came before content_block_stop of block {min(open_blocks)}"
                        )
                    stopped = True
                    break
                # "ping", and event types added to the API later, are skipped.
    if not stopped:
        if usage:  # the tokens were spent (and billed) all the same, as before an error event
            yield _usage_chunk(usage)
        if stream.broken is not None:  # the connection broke: that is the error (the model maps it)
            raise stream.broken
        raise MalformedStreamError("anthropic: the stream ended before message_stop")
    if stop_reason is not None:
        yield StopChunk(STOP_REASONS.get(stop_reason, "other"), stop_reason)
    if usage:
        yield _usage_chunk(usage)


def _usage_chunk(usage: dict[str, Any]) -> UsageChunk:
    """The usage of a call: Anthropic's ``input_tokens`` excludes the cache reads and writes counted beside it."""
    details = usage.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    return UsageChunk(
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
        cache_write_tokens=int(usage.get("cache_creation_input_tokens") or 0),
        reasoning_tokens=int(thinking or 0),
    )


def _index(payload: dict[str, Any]) -> int:
    index = payload.get("index")
    if not isinstance(index, int):
        raise MalformedStreamError(f"anthropic: a {payload.get('type')} event has no index")
    return index


def _block_start(blocks: dict[int, _ToolBlock | _ThinkingBlock], payload: dict[str, Any]) -> ModelChunk | None:
    block = payload.get("content_block")
    if not isinstance(block, dict):
        raise MalformedStreamError("anthropic: a content_block_start event has no content_block")
    kind = block.get("type")
    if kind == "tool_use" or kind in _SERVER_TOOL_BLOCKS:
        start = block.get("input")
        blocks[_index(payload)] = _ToolBlock(
            str(kind),
            text_field(block, "id"),
            text_field(block, "name"),
            start if isinstance(start, dict) else {},
        )
    elif kind == "text":
        text = text_field(block, "text")
        return TextChunk(text) if text else None
    elif kind == "thinking":
        thinking = text_field(block, "thinking")
        blocks[_index(payload)] = _ThinkingBlock([thinking], text_field(block, "signature"))
        return ReasoningChunk(thinking) if thinking else None
    elif kind == "redacted_thinking":  # nothing to show, but it goes back with the history
        blocks[_index(payload)] = _ThinkingBlock([text_field(block, "data")], redacted=True)
    # Server tool results (web_search_tool_result ...) carry nothing for us.
    return None


def _block_delta(blocks: dict[int, _ToolBlock | _ThinkingBlock], payload: dict[str, Any]) -> ModelChunk | None:
    delta = payload.get("delta")
    if not isinstance(delta, dict):
        raise MalformedStreamError("anthropic: a content_block_delta event has no delta")
    kind = delta.get("type")
    if kind == "text_delta":
        text = text_field(delta, "text")
        return TextChunk(text) if text else None
    if kind == "thinking_delta" or kind == "signature_delta":
        thinking = blocks.get(_index(payload))
        if not isinstance(thinking, _ThinkingBlock) or thinking.redacted:
            raise MalformedStreamError(f"anthropic: {kind} for a block that is not a thinking block")
        if kind == "signature_delta":
            thinking.signature += text_field(delta, "signature")
            return None
        text = text_field(delta, "thinking")
        thinking.pieces.append(text)
        return ReasoningChunk(text) if text else None
    if kind == "input_json_delta":
        block = blocks.get(_index(payload))
        if not isinstance(block, _ToolBlock):
            raise MalformedStreamError("anthropic: input_json_delta for a block that is not a tool call")
        fragment = text_field(delta, "partial_json")
        block.fragments.append(fragment)
        if fragment and block.kind == "tool_use":  # a server tool's input is reported whole, when it stops
            return ToolCallDeltaChunk(block.call_id, block.name, fragment)
    # citations_delta ...: nothing to stream.
    return None


def _block_stop(block: _ToolBlock | _ThinkingBlock) -> ModelChunk:
    if isinstance(block, _ThinkingBlock):
        return ReasoningBlock("".join(block.pieces), block.signature, block.redacted)
    text = "".join(block.fragments)
    if block.kind == "tool_use":
        # The raw JSON text, as the model wrote it; the runtime reports bad JSON to the model.
        return ToolCallChunk(block.call_id, block.name, text if text.strip() else dict(block.start_input))
    if not text.strip():
        return ServerToolChunk(block.call_id, block.name, dict(block.start_input))
    try:
        value = loads_untrusted(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise MalformedStreamError(f"anthropic: the input of server tool {block.name!r} is not a JSON object")
    return ServerToolChunk(block.call_id, block.name, value)
