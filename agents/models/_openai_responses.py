"""OpenAIResponsesModel: OpenAI's Responses API (``/responses``), streamed."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Final

import attrs

from .._content import Content, ContentPart, DocumentPart, ImagePart, TextPart
from .._exceptions import MalformedStreamError, UnsupportedContentError
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
from ._http import HTTPModel, arguments_text, bearer_headers, digest, error_chunk
from ._sse import SSEStream, json_object, text_field

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    import httpx

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
INCOMPLETE_REASONS: Final[dict[str, StopReason]] = {
    "max_output_tokens": "max_tokens",
    "content_filter": "content_filter",
}
"""``incomplete_details.reason`` values as stop reasons; any other is ``"other"``."""
_REASONING_DELTAS: Final = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
"""OpenAI streams reasoning summaries; open-weight servers (vLLM, gpt-oss) stream the reasoning itself."""


class OpenAIResponsesModel(HTTPModel):
    """A model behind OpenAI's Responses API (``POST /responses``).

    Streams text, reasoning summaries (as reasoning; ask for them with
    ``reasoning={"summary": "auto"}``), refusals, function calls (their
    argument fragments as they come, then each whole call), why the response
    stopped and usage. Nothing is stored at OpenAI (``store: false``): every
    request carries the whole history. A native structured output is asked
    for as a ``json_schema`` text format, not strict (OpenAI's strict mode
    refuses many schemas pydantic writes); the runtime validates the answer.

    Args:
        model: The model name, e.g. ``"gpt-4.1-mini"`` or ``"o4-mini"``.
        base_url: Defaults to ``OPENAI_BASE_URL``, else OpenAI's.
        api_key: Defaults to ``OPENAI_API_KEY``. With neither, a server on this machine gets none, and any
            other fails with :class:`~agents.MissingAPIKeyError` (``api_key=""``: it needs none).
        retry: Retries of 429, 5xx and connection errors (default: 4 tries, waits of at most 8 s).
        **settings: Sent with every request (``max_output_tokens``, ``reasoning``, ``temperature`` ...).

    Example::

        agent = Agent(name="helper", model=OpenAIResponsesModel("gpt-4.1-mini"))
    """

    provider = "openai-responses"  # as its model strings name it
    DEFAULT_BASE_URL = DEFAULT_BASE_URL
    BASE_URL_ENV = "OPENAI_BASE_URL"
    API_KEY_ENV = "OPENAI_API_KEY"
    PATH = "/responses"
    native_output = True

    def headers(self, request: ModelRequest) -> dict[str, str]:
        """Bearer authentication, when there is a key (the same for every request)."""
        return bearer_headers(self._api_key)

    def parse(self, response: httpx.Response) -> AsyncGenerator[ModelChunk, None]:
        """The chunks of a Responses stream."""
        return _chunks(response)

    def body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of a request."""
        items: list[dict[str, Any]] = []
        for message in request.messages:
            if isinstance(message, UserMessage):
                items.append({"role": "user", "content": _content(message.content)})
            elif isinstance(message, AssistantMessage):
                if message.text:  # a turn of tool calls alone has no message item
                    items.append({"role": "assistant", "content": message.text})
                items += [
                    {
                        "type": "function_call",
                        "call_id": _call_id(call.call_id),
                        "name": call.name,
                        "arguments": arguments_text(call.arguments),
                    }
                    for call in message.tool_calls
                ]
            elif isinstance(message, ToolResultMessage):
                output = _content(message.content)
                items.append({"type": "function_call_output", "call_id": _call_id(message.call_id), "output": output})
        body: dict[str, Any] = {"model": self.model}
        if request.instructions:
            body["instructions"] = request.instructions
        body["input"] = items
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.parameters),
                    "strict": False,
                }
                for t in request.tools
            ]
        body["stream"] = True
        body["store"] = False
        body.update(self.settings)
        if request.output is not None:
            schema: dict[str, Any] = {"type": "json_schema", "name": request.output.name}
            if request.output.description:
                schema["description"] = request.output.description
            schema["schema"] = dict(request.output.schema)
            schema["strict"] = False
            text = body.get("text")
            # Beside a ``text`` setting (e.g. ``{"verbosity": "low"}``), not instead of it.
            body["text"] = {**(text if isinstance(text, dict) else {}), "format": schema}
        return body


def _call_id(call_id: str) -> str:
    """A tool call's id as the Responses API takes it (64 characters at most): another provider's longer one
    (Gemini's made of a long tool name) as a digest, the same for the call and its output."""
    return call_id if len(call_id) <= 64 else "call_" + digest(call_id, 24)


@attrs.define
class _Call:
    """A function call item while its arguments stream in."""

    call_id: str
    name: str
    fragments: list[str] = attrs.field(factory=list)
    finished: bool = False


class _Calls:
    """The function call items of one response, found by item id or output index."""

    __slots__ = ("_by_id", "_by_index", "order")

    def __init__(self) -> None:
        self._by_id: dict[str, _Call] = {}
        self._by_index: dict[int, _Call] = {}
        self.order: list[_Call] = []

    def add(self, payload: dict[str, Any], item: dict[str, Any]) -> _Call:
        call = _Call(str(item.get("call_id") or item.get("id") or ""), str(item.get("name") or ""))
        if item.get("id"):
            self._by_id[str(item["id"])] = call
        if isinstance(payload.get("output_index"), int):
            self._by_index[payload["output_index"]] = call
        self.order.append(call)
        return call

    def find(self, payload: dict[str, Any]) -> _Call | None:
        call = self._by_id.get(str(payload.get("item_id") or ""))
        if call is None and isinstance(payload.get("output_index"), int):
            call = self._by_index.get(payload["output_index"])
        return call

    def get(self, payload: dict[str, Any], kind: str) -> _Call:
        call = self.find(payload)
        if call is None:
            raise MalformedStreamError(f"openai: {kind} for an item that is not a function call")
        return call


def _finish(call: _Call, arguments: object) -> ToolCallChunk | None:
    """The whole call, once (``function_call_arguments.done`` and ``output_item.done`` both end it)."""
    if call.finished:
        return None
    call.finished = True
    # The raw JSON text, as the model wrote it; the runtime reports bad JSON to the model.
    text = arguments if isinstance(arguments, str) else "".join(call.fragments)
    return ToolCallChunk(call.call_id, call.name, text)


def _content(content: Content) -> str | list[dict[str, Any]]:
    """A user message's or a tool output's content: a string, or input items (images and files too: a
    ``function_call_output`` takes the same list as a user message)."""
    return content if isinstance(content, str) else [_part(part) for part in content]


def _part(part: ContentPart) -> dict[str, Any]:
    """A part as a Responses API input item.

    Raises:
        UnsupportedContentError: a kind of part this model does not know.
    """
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "input_image", "image_url": part.url if part.url is not None else part.data_url()}
    if isinstance(part, DocumentPart):
        if part.url is not None:
            return {"type": "input_file", "file_url": part.url}
        return {"type": "input_file", "filename": part.filename or "document.pdf", "file_data": part.data_url()}
    raise UnsupportedContentError(
        part, provider=OpenAIResponsesModel.provider, reason="the Responses API has no such input"
    )


async def _chunks(response: httpx.Response) -> AsyncGenerator[ModelChunk, None]:
    """Map the SSE stream to chunks; each function call is whole when its arguments are done."""
    calls = _Calls()
    async with contextlib.aclosing(SSEStream(response)) as stream:
        while events := await stream.read():  # one await per network read, not per event
            for event in events:
                data = event.data.strip()
                if not data:
                    continue
                if data == "[DONE]":  # not OpenAI's, but some compatible servers end with it
                    raise MalformedStreamError("openai: the Responses stream ended before response.completed")
                payload = json_object(data, "openai: a Responses event")
                kind = payload.get("type") or event.event
                if kind == "response.output_text.delta":
                    if payload.get("delta"):
                        yield TextChunk(text_field(payload, "delta"))
                elif kind == "response.function_call_arguments.delta":
                    call = calls.get(payload, kind)
                    if payload.get("delta"):
                        delta = text_field(payload, "delta")
                        call.fragments.append(delta)
                        yield ToolCallDeltaChunk(call.call_id, call.name, delta)
                elif kind in _REASONING_DELTAS:
                    if payload.get("delta"):
                        yield ReasoningChunk(text_field(payload, "delta"))
                elif kind == "response.refusal.delta":
                    if payload.get("delta"):
                        yield RefusalChunk(text_field(payload, "delta"))
                elif kind == "response.output_item.added":
                    item = _item(payload, kind)
                    if item.get("type") == "function_call":
                        calls.add(payload, item)
                elif kind == "response.function_call_arguments.done":
                    chunk = _finish(calls.get(payload, kind), payload.get("arguments"))
                    if chunk is not None:
                        yield chunk
                elif kind == "response.output_item.done":
                    item = _item(payload, kind)
                    if item.get("type") == "function_call":
                        # A server that streams no arguments may send the whole item only here.
                        call = calls.find({**payload, "item_id": item.get("id")}) or calls.add(payload, item)
                        chunk = _finish(call, item.get("arguments"))
                        if chunk is not None:
                            yield chunk
                elif kind in ("response.completed", "response.incomplete"):
                    result = _response(payload, kind)
                    for call in calls.order:
                        chunk = _finish(call, None)
                        if chunk is not None:
                            yield chunk
                    if kind == "response.completed":
                        yield StopChunk("tool_use" if calls.order else "end_turn", "completed")
                    else:
                        details = result.get("incomplete_details")
                        reason = details.get("reason") if isinstance(details, dict) else None
                        raw = str(reason) if reason else "incomplete"
                        yield StopChunk(INCOMPLETE_REASONS.get(raw, "other"), raw)
                    usage = _usage_chunk(result)
                    if usage is not None:
                        yield usage
                    return
                elif kind == "response.failed":
                    result = _response(payload, kind)
                    usage = _usage_chunk(result)
                    if usage is not None:  # tokens spent before the failure still count
                        yield usage
                    yield error_chunk(result.get("error") or "openai: the response failed")
                    return
                elif kind == "error":
                    yield error_chunk(payload)
                    return
                # response.created, content parts, *.done of text, and event types added to the API later: skipped.
    raise MalformedStreamError("openai: the Responses stream ended before response.completed")


def _item(payload: dict[str, Any], kind: str) -> dict[str, Any]:
    item = payload.get("item")
    if not isinstance(item, dict):
        raise MalformedStreamError(f"openai: a {kind} event has no item")
    return item


def _response(payload: dict[str, Any], kind: str) -> dict[str, Any]:
    result = payload.get("response")
    if not isinstance(result, dict):
        raise MalformedStreamError(f"openai: a {kind} event has no response")
    return result


def _usage_chunk(result: dict[str, Any]) -> UsageChunk | None:
    """The usage of a response: ``input_tokens`` includes the cached ones, ``output_tokens`` the reasoning."""
    usage = result.get("usage")
    if not isinstance(usage, dict):
        return None
    inputs = usage.get("input_tokens_details")
    outputs = usage.get("output_tokens_details")
    cached = inputs.get("cached_tokens") if isinstance(inputs, dict) else None
    reasoning = outputs.get("reasoning_tokens") if isinstance(outputs, dict) else None
    return UsageChunk(
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        cache_read_tokens=int(cached or 0),
        reasoning_tokens=int(reasoning or 0),
    )
