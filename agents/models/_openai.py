"""OpenAIChatModel: any OpenAI-compatible Chat Completions endpoint, streamed."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any, Final

from .._messages import (
    AssistantMessage,
    ModelChunk,
    ModelRequest,
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
from ._http import HTTPModel, error_chunk
from ._sse import SSEStream, json_object

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    import httpx


DEFAULT_BASE_URL = "https://api.openai.com/v1"
STOP_REASONS: Final[Mapping[str, StopReason]] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",  # the pre-tools API's name, still sent by some servers
    "length": "max_tokens",
    "content_filter": "content_filter",
}
"""``finish_reason`` values as stop reasons; any other is ``"other"``."""


class OpenAIChatModel(HTTPModel):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    OpenAI, Ollama, vLLM, llama.cpp's server, LM Studio, OpenRouter, DeepSeek,
    Groq ...: streams text, reasoning (``reasoning_content`` or
    ``reasoning`` deltas), refusals, tool calls (their argument fragments as
    they come, then each whole call), why the response stopped
    (``finish_reason``) and usage (it asks for
    ``stream_options.include_usage``). A native structured output is asked
    for as a ``json_schema`` ``response_format``, not strict (OpenAI's strict
    mode refuses many schemas pydantic writes); the runtime validates the answer.

    Args:
        model: The provider's model name, e.g. ``"gpt-4o-mini"``.
        base_url: Defaults to ``OPENAI_BASE_URL``, else OpenAI's.
        api_key: Defaults to ``OPENAI_API_KEY``. With neither, a server on this machine gets none, and any
            other fails with :class:`~agents.MissingAPIKeyError` (``api_key=""``: it needs none).
        retry: Retries of 429, 5xx and connection errors (default: 4 tries, waits of at most 8 s).
        **settings: Sent with every request (``temperature``, ``max_tokens`` ...).

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
        headers = {"accept": "text/event-stream"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        return headers

    def parse(self, response: httpx.Response) -> AsyncGenerator[ModelChunk, None]:
        """The chunks of a Chat Completions stream."""
        return _chunks(response)

    def body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of a request."""
        messages: list[dict[str, Any]] = []
        if request.instructions:
            messages.append({"role": "system", "content": request.instructions})
        for message in request.messages:
            if isinstance(message, UserMessage):
                messages.append({"role": "user", "content": message.content})
            elif isinstance(message, AssistantMessage):
                # Null content only beside tool calls: an assistant turn of neither (a refusal's) is rejected.
                content = message.text or (None if message.tool_calls else "")
                entry: dict[str, Any] = {"role": "assistant", "content": content}
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
        if request.output is not None:
            schema: dict[str, Any] = {"name": request.output.name, "schema": dict(request.output.schema)}
            if request.output.description:
                schema["description"] = request.output.description
            schema["strict"] = False
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        return body


def _arguments_text(arguments: Mapping[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


async def _chunks(response: httpx.Response) -> AsyncGenerator[ModelChunk, None]:
    """Map the SSE stream to chunks; tool calls are complete, and the stop reason known, only when it ends."""
    calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]
    usage: dict[str, Any] | None = None
    finish: str | None = None
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
                elif delta.get("refusal"):  # never beside content: a text delta pays no extra lookup
                    yield RefusalChunk(str(delta["refusal"]))
                for fragment in delta.get("tool_calls") or ():
                    call = calls.setdefault(fragment.get("index", len(calls)), ["", "", ""])
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
    for _, (call_id, name, arguments) in sorted(calls.items()):
        yield ToolCallChunk(call_id, name, arguments)
    if finish is not None:
        yield StopChunk(STOP_REASONS.get(finish, "other"), finish)
    if usage is not None:
        yield _usage_chunk(usage)


def _usage_chunk(usage: dict[str, Any]) -> UsageChunk:
    return UsageChunk(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
