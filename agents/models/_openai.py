"""OpenAIChatModel: any OpenAI-compatible Chat Completions endpoint, streamed."""

from __future__ import annotations

import contextlib
import json
import os
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from .._messages import (
    AssistantMessage,
    ModelChunk,
    ModelRequest,
    ReasoningChunk,
    TextChunk,
    ToolCallChunk,
    ToolResultMessage,
    UsageChunk,
    UserMessage,
)
from ._http import DEFAULT_RETRY, error_chunk, stream_chunks
from ._sse import SSEStream, json_object

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Mapping

    import httpx

    from .._retry import RetryPolicy

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIChatModel:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    OpenAI, Ollama, vLLM, llama.cpp's server, LM Studio, OpenRouter, DeepSeek,
    Groq ...: streams text, reasoning (``reasoning_content`` or
    ``reasoning`` deltas), tool calls assembled from their fragments, and
    usage (it asks for ``stream_options.include_usage``).

    Args:
        model: The provider's model name, e.g. ``"gpt-4o-mini"``.
        base_url: Defaults to ``OPENAI_BASE_URL``, else OpenAI's.
        api_key: Defaults to ``OPENAI_API_KEY`` (none is sent if neither is set).
        retry: Retries of 429, 5xx and connection errors.
        **settings: Sent with every request (``temperature``, ``max_tokens`` ...).

    Example::

        agent = Agent(name="helper", model=OpenAIChatModel("gpt-4o-mini"))
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        **settings: Any,
    ) -> None:
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.retry = retry
        self.settings = settings

    def __repr__(self) -> str:
        return f"OpenAIChatModel({self.model!r}, base_url={self.base_url!r})"

    def stream(self, request: ModelRequest) -> AbstractAsyncContextManager[AsyncIterator[ModelChunk]]:
        """Send one request; its chunks stream until the block exits (which closes the response)."""
        headers = {"accept": "text/event-stream"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        return stream_chunks(
            request,
            f"{self.base_url}/chat/completions",
            headers=headers,
            body=self.body(request),
            provider=self.provider,
            retry=self.retry,
            parse=_chunks,
        )

    def body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of a request."""
        messages: list[dict[str, Any]] = []
        if request.instructions:
            messages.append({"role": "system", "content": request.instructions})
        for message in request.messages:
            if isinstance(message, UserMessage):
                messages.append({"role": "user", "content": message.content})
            elif isinstance(message, AssistantMessage):
                entry: dict[str, Any] = {"role": "assistant", "content": message.text or None}
                if message.tool_calls:
                    entry["tool_calls"] = [
                        {
                            "id": call.call_id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": _arguments_text(call.arguments)},
                        }
                        for call in message.tool_calls
                    ]
                messages.append(entry)
            elif isinstance(message, ToolResultMessage):
                messages.append({"role": "tool", "tool_call_id": message.call_id, "content": message.content})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.settings,
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": dict(t.parameters)},
                }
                for t in request.tools
            ]
        return body


def _arguments_text(arguments: Mapping[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


async def _chunks(response: httpx.Response) -> AsyncGenerator[ModelChunk, None]:
    """Map the SSE stream to chunks; tool calls are complete only when the stream ends."""
    calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]
    usage: dict[str, Any] | None = None
    async with contextlib.aclosing(SSEStream(response)) as events:
        async for event in events:
            if event.event == "error":
                if usage is not None:
                    yield _usage_chunk(usage)
                yield error_chunk(event.data)
                return
            data = event.data.strip()
            if not data:
                continue
            if data == "[DONE]":
                break
            chunk = json_object(data, "openai: a chunk")
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("error"):
                if usage is not None:  # tokens spent before the error still count
                    yield _usage_chunk(usage)
                yield error_chunk(chunk["error"])
                return
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning:
                    yield ReasoningChunk(reasoning)
                if delta.get("content"):
                    yield TextChunk(delta["content"])
                for fragment in delta.get("tool_calls") or ():
                    call = calls.setdefault(fragment.get("index", len(calls)), ["", "", ""])
                    function = fragment.get("function") or {}
                    call[0] = fragment.get("id") or call[0]
                    name = function.get("name") or ""
                    if name and name != call[1]:  # fragments add up; a repeat of the whole name does not
                        call[1] += name
                    call[2] += function.get("arguments") or ""
    for _, (call_id, name, arguments) in sorted(calls.items()):
        yield ToolCallChunk(call_id, name, arguments)
    if usage is not None:
        yield _usage_chunk(usage)


def _usage_chunk(usage: dict[str, Any]) -> UsageChunk:
    return UsageChunk(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
