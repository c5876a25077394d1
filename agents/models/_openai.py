"""OpenAIChatModel: any OpenAI-compatible Chat Completions endpoint, streamed."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Final

import httpx

from .._content import Content, ContentPart, DocumentPart, ImagePart, TextPart, text_only
from .._exceptions import MalformedStreamError, UnsupportedContentError
from .._messages import (
    AssistantMessage,
    ModelChunk,
    ModelRequest,
    ReasoningBlock,
    ReasoningChunk,
    RefusalChunk,
    StopChunk,
    StopReason,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolResultMessage,
    UsageChunk,
    UserMessage,
)
from ._http import HTTPModel, arguments_text, bearer_headers, digest, error_chunk
from ._sse import SSEStream, json_object, text_field

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Mapping


DEFAULT_BASE_URL = "https://api.openai.com/v1"
STOP_REASONS: Final[Mapping[str, StopReason]] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",  # the pre-tools API's name, still sent by some servers
    "length": "max_tokens",
    "content_filter": "content_filter",
}
"""``finish_reason`` values as stop reasons; any other is ``"other"``."""
REASONING_BACK_HOSTS: Final = frozenset({"api.deepseek.com", "api.moonshot.ai", "api.moonshot.cn"})
"""Servers whose thinking models want each assistant turn's ``reasoning_content`` back: without it, a
request after a tool call is a 400 (DeepSeek, Kimi). Others may refuse the field (OpenAI, Cerebras)."""


class OpenAIChatModel(HTTPModel):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    OpenAI, Ollama, vLLM, llama.cpp's server, LM Studio, OpenRouter, DeepSeek,
    Groq ...: streams text, reasoning (``reasoning_content`` or
    ``reasoning`` deltas, or Mistral's ``thinking`` content parts), refusals,
    tool calls (their argument fragments as they come, then each whole call;
    calls sharing an ``index`` but not an ``id``, as Ollama sends them, are
    told apart), why the response stopped (``finish_reason``) and usage, with
    cached and reasoning tokens (it asks for ``stream_options.include_usage``;
    Groq's ``x_groq.usage`` serves too). A native structured output is asked
    for as a ``json_schema`` ``response_format``, not strict (OpenAI's strict
    mode refuses many schemas pydantic writes); the runtime validates the answer.

    DeepSeek's and Moonshot's (Kimi's) thinking models want their reasoning
    back with the history once they have called a tool: for the ``deepseek``
    provider, or a base URL on :data:`REASONING_BACK_HOSTS`, a response's
    reasoning is kept (a :class:`~agents.ReasoningBlock`) and every assistant
    turn is sent with its ``reasoning_content`` (``""`` if it has none). Other
    servers get no such field.

    Args:
        model: The provider's model name, e.g. ``"gpt-4o-mini"``.
        base_url: Defaults to ``OPENAI_BASE_URL``, else OpenAI's.
        api_key: Defaults to ``OPENAI_API_KEY``. With neither, a server on this machine gets none, and any
            other fails with :class:`~agents.MissingAPIKeyError` (``api_key=""``: it needs none).
        retry: Retries of 429, 5xx and connection errors (default: 4 tries, waits of at most 8 s).
        **settings: Sent with every request (``temperature``, ``max_tokens`` ...); a ``stream_options``
            is merged into ``{"include_usage": True}``.

    Example::

        agent = Agent(name="helper", model=OpenAIChatModel("gpt-4o-mini"))
    """

    provider = "openai"
    DEFAULT_BASE_URL = DEFAULT_BASE_URL
    BASE_URL_ENV = "OPENAI_BASE_URL"
    API_KEY_ENV = "OPENAI_API_KEY"
    PATH = "/chat/completions"
    native_output = True

    def headers(self, request: ModelRequest) -> dict[str, str]:
        """Bearer authentication, when there is a key."""
        return bearer_headers(self._api_key)

    def parse(self, response: httpx.Response) -> AsyncGenerator[ModelChunk, None]:
        """The chunks of a Chat Completions stream."""
        return _chunks(response, keep_reasoning=self._reasoning_back())

    def _reasoning_back(self) -> bool:
        """Whether the server wants each assistant turn's ``reasoning_content`` back (DeepSeek, Kimi)."""
        if self.provider == "deepseek":
            return True
        try:
            return httpx.URL(self.base_url).host in REASONING_BACK_HOSTS
        except httpx.InvalidURL:  # sending to it says so
            return False

    def _host(self) -> str | None:
        try:
            return httpx.URL(self.base_url).host
        except httpx.InvalidURL:  # sending to it says so
            return None

    def body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of a request."""
        messages: list[dict[str, Any]] = []
        reasoning_back = self._reasoning_back()
        host = self._host()
        # Mistral's stricter rules (tool call ids, the order of turns), and OpenAI's own 40-character ids; any
        # other server's ids go as they are (Kimi's own are longer, and it relies on their form).
        mistral = self.provider == "mistral" or host == "api.mistral.ai"
        wire_id: Callable[[str], str] = _mistral_call_id if mistral else _same
        if not mistral and (host == "api.openai.com" or (host or "").endswith(".openai.azure.com")):
            wire_id = _call_id
        if request.instructions:
            messages.append({"role": "system", "content": request.instructions})
        for message in request.messages:
            if isinstance(message, UserMessage):
                if mistral and messages and messages[-1]["role"] == "tool":
                    # Mistral refuses a user message right after tool results (a run that ended after its tools:
                    # max_turns, a timeout, an interrupted run repaired): an empty assistant turn between them.
                    messages.append({"role": "assistant", "content": "OK."})  # not empty: Mistral refuses that
                messages.append({"role": "user", "content": _user_content(message.content, self.provider)})
            elif isinstance(message, AssistantMessage):
                # Null content only beside tool calls: an assistant turn of neither (a refusal's) is rejected.
                content = message.text or (None if message.tool_calls else "")
                entry: dict[str, Any] = {"role": "assistant", "content": content}
                if message.tool_calls:
                    entry["tool_calls"] = [
                        {
                            "id": wire_id(call.call_id),
                            "type": "function",
                            "function": {"name": call.name, "arguments": arguments_text(call.arguments)},
                        }
                        for call in message.tool_calls
                    ]
                if reasoning_back:  # "" too: a turn with tool calls and no reasoning_content is a 400
                    entry["reasoning_content"] = "".join(b.text for b in message.reasoning if not b.redacted)
                messages.append(entry)
            elif isinstance(message, ToolResultMessage):
                messages.append(
                    {"role": "tool", "tool_call_id": wire_id(message.call_id), "content": text_only(message.content)}
                )
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True, **self.settings}
        # Merged, not replaced: a stream_options setting (include_obfuscation ...) must not turn usage off.
        options = self.settings.get("stream_options")
        body["stream_options"] = {"include_usage": True, **(options if isinstance(options, dict) else {})}
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": dict(t.parameters)},
                }
                for t in request.tools
            ]
        if request.output is not None:
            schema: dict[str, Any] = {"name": request.output.name, "schema": dict(request.output.schema)}
            if request.output.description:
                schema["description"] = request.output.description
            schema["strict"] = False
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        return body


def _same(call_id: str) -> str:
    return call_id


def _call_id(call_id: str) -> str:
    """A tool call's id as OpenAI takes it (40 characters at most): another provider's longer one (vLLM's are
    46, a FallbackModel's history, a session reopened with another model) as a digest, the same for the call
    and its result."""
    return call_id if len(call_id) <= 40 else "call_" + digest(call_id, 24)


def _mistral_call_id(call_id: str) -> str:
    """A tool call's id as Mistral takes it: exactly 9 letters or digits (Anthropic's or OpenAI's as a digest)."""
    if len(call_id) == 9 and call_id.isascii() and call_id.isalnum():
        return call_id
    return digest(call_id, 9)


def _user_content(content: Content, provider: str) -> str | list[dict[str, Any]]:
    return content if isinstance(content, str) else [_part(part, provider) for part in content]


def _part(part: ContentPart, provider: str) -> dict[str, Any]:
    """A part of a user message as a Chat Completions content part (``provider``: whose server, for errors).

    Raises:
        UnsupportedContentError: a document by URL (Chat Completions takes a file only as its bytes or an
            uploaded file's id), or a kind of part this model does not know.
    """
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": part.url if part.url is not None else part.data_url()}}
    if isinstance(part, DocumentPart) and part.data is not None:
        return {"type": "file", "file": {"filename": part.filename or "document.pdf", "file_data": part.data_url()}}
    if isinstance(part, DocumentPart):
        raise UnsupportedContentError(
            part, provider=provider, reason="Chat Completions takes a document only as bytes: DocumentPart(data=...)"
        )
    raise UnsupportedContentError(part, provider=provider, reason="Chat Completions has no such content part")


async def _chunks(response: httpx.Response, *, keep_reasoning: bool = False) -> AsyncGenerator[ModelChunk, None]:
    """Map the SSE stream to chunks; tool calls are complete, and the stop reason known, only when it ends.

    With ``keep_reasoning``, the reasoning deltas are also one :class:`ReasoningBlock` at the end, for the
    history (a server that wants it back).

    Raises:
        MalformedStreamError: it ended with neither a finish_reason nor ``[DONE]`` (it was cut off).
        httpx.HTTPError: the connection broke (``stream_chunks`` maps it), after the usage counted so far.
    """
    calls: list[tuple[int, list[str]]] = []  # (index, [id, name, arguments so far]), in the order they began
    open_calls: dict[int, list[str]] = {}  # index -> the call its fragments now add to
    usage: dict[str, Any] | None = None
    finish: str | None = None
    thoughts: list[str] | None = [] if keep_reasoning else None
    done = False
    async with contextlib.aclosing(SSEStream(response)) as stream:
        while not done and (events := await stream.read_or_end()):  # one await per network read, not per event
            for event in events:
                if event.event == "error":
                    if usage is not None:
                        yield _usage_chunk(usage)
                    yield error_chunk(event.data)
                    return
                data = event.data.strip()
                if not data:
                    continue
                if data == "[DONE]":
                    done = True
                    break
                chunk = json_object(data, "openai: a chunk")
                if chunk.get("usage"):
                    usage = chunk["usage"]
                elif "x_groq" in chunk:  # Groq, before it honoured stream_options: usage only in its own object
                    usage = _groq_usage(chunk["x_groq"]) or usage
                if chunk.get("error"):
                    if usage is not None:  # tokens spent before the error still count
                        yield _usage_chunk(usage)
                    yield error_chunk(chunk["error"])
                    return
                # Azure's first chunk has no choices (only prompt_filter_results), nor does a usage-only chunk.
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                    if reasoning:
                        if reasoning.__class__ is not str:  # its repr would pass for the model's reasoning
                            raise TypeError(f"a delta's reasoning is a {type(reasoning).__name__}, not a string")
                        yield ReasoningChunk(reasoning)
                        if thoughts is not None:
                            thoughts.append(reasoning)
                    content = delta.get("content")
                    if content:
                        if content.__class__ is str:
                            yield TextChunk(content)
                        else:  # Mistral's typed parts: thinking, then text
                            for part in _content_parts(content):
                                yield part
                    elif delta.get("refusal"):  # never beside content: a text delta pays no extra lookup
                        yield RefusalChunk(text_field(delta, "refusal"))
                    for fragment in delta.get("tool_calls") or ():
                        call = _call_for(fragment, calls, open_calls)
                        function = fragment.get("function") or {}
                        call[0] = fragment.get("id") or call[0]
                        name = function.get("name") or ""
                        if name and name != call[1]:  # fragments add up; a repeat of the whole name does not
                            call[1] += name
                        arguments = function.get("arguments")
                        if arguments:
                            call[2] += arguments
                            yield ToolCallDeltaChunk(call[0], call[1], arguments)
                    if choice.get("finish_reason"):  # a later chunk's null does not undo it
                        finish = str(choice["finish_reason"])
    if stream.broken is not None or (not done and finish is None):
        # Closed before the end (a dropped connection, a proxy's timeout): the answer may be cut off, and a
        # tool call half sent. Some servers send no [DONE] (Mistral, Azure), but a finish_reason ends theirs.
        if usage is not None:  # the tokens were spent (and billed) all the same, as before an error event
            yield _usage_chunk(usage)
        if stream.broken is not None:  # the connection broke: that is the error (the model maps it)
            raise stream.broken
        raise MalformedStreamError("openai: the stream ended before a finish_reason or [DONE]")
    if thoughts:
        yield ReasoningBlock("".join(thoughts))
    for _, (call_id, name, arguments) in sorted(calls, key=lambda entry: entry[0]):  # stable: same index, in order
        yield ToolCallChunk(call_id, name, arguments)
    if finish is not None:
        yield StopChunk(STOP_REASONS.get(finish, "other"), finish)
    if usage is not None:
        yield _usage_chunk(usage)


def _call_for(
    fragment: dict[str, Any], calls: list[tuple[int, list[str]]], open_calls: dict[int, list[str]]
) -> list[str]:
    """The call a tool-call fragment adds to, begun if it is new.

    Calls are told apart by ``index``, and by ``id`` too: Ollama 0.20 sends every parallel call with
    ``index: 0`` (ollama #15457), so a fragment bringing an id other than its index's call begins a new
    call. A fragment with no index is a whole call of its own (Ollama before 0.4.7).
    """
    index = fragment.get("index")
    if index.__class__ is not int:
        index = int(index) if isinstance(index, str) and index.isdigit() else len(calls)
    call = open_calls.get(index)
    call_id = fragment.get("id")
    if call is None or (call_id and call[0] and call_id != call[0]):
        call = open_calls[index] = ["", "", ""]
        calls.append((index, call))
    return call


def _content_parts(content: Any) -> list[ModelChunk]:
    """Chunks of a ``content`` sent as a list of typed parts (Mistral's magistral models).

    ``{"type": "thinking", "thinking": [{"type": "text", "text": ...}]}`` is reasoning, ``{"type": "text",
    "text": ...}`` is text; parts of other types carry nothing to stream.
    """
    if not isinstance(content, list):
        raise MalformedStreamError(f"openai: a delta's content is {type(content).__name__}, not text or parts")
    chunks: list[ModelChunk] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            chunks.append(TextChunk(str(part["text"])))
        elif kind == "thinking":
            thinking = part.get("thinking")
            pieces = thinking if isinstance(thinking, list) else [{"text": thinking}]
            text = "".join(str(piece.get("text") or "") for piece in pieces if isinstance(piece, dict))
            if text:
                chunks.append(ReasoningChunk(text))
    return chunks


def _groq_usage(x_groq: Any) -> dict[str, Any] | None:
    usage = x_groq.get("usage") if isinstance(x_groq, dict) else None
    return usage if isinstance(usage, dict) and usage else None


def _usage_chunk(usage: dict[str, Any]) -> UsageChunk:
    """The usage of a call: OpenAI's ``prompt_tokens`` includes the cached tokens counted beside it."""
    prompt = usage.get("prompt_tokens_details")
    completion = usage.get("completion_tokens_details")
    if isinstance(prompt, dict):
        cached = prompt.get("cached_tokens")
    else:
        cached = usage.get("prompt_cache_hit_tokens")  # DeepSeek's own name for it
    reasoning = completion.get("reasoning_tokens") if isinstance(completion, dict) else None
    return UsageChunk(
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        cache_read_tokens=int(cached or 0),
        reasoning_tokens=int(reasoning or 0),
    )
