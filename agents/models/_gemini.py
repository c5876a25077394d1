"""GeminiModel: Google's Gemini API (``streamGenerateContent``), streamed as server-sent events."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

from .._content import Content, ContentPart, DocumentPart, ImagePart, TextPart, text_only
from .._exceptions import MalformedStreamError, MissingAPIKeyError, UnsupportedContentError
from .._json import loads_untrusted
from .._messages import (
    AssistantMessage,
    ModelChunk,
    ModelRequest,
    ReasoningChunk,
    StopChunk,
    StopReason,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolResultMessage,
    UsageChunk,
    UserMessage,
)
from ._http import DEFAULT_RETRY, HTTPModel, error_chunk
from ._sse import SSEStream, json_object, text_field

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Mapping

    import httpx

    from .._exceptions import AuthenticationError
    from .._retry import RetryPolicy

DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com/v1beta"
SKIP_SIGNATURE: Final = "c2tpcF90aG91Z2h0X3NpZ25hdHVyZV92YWxpZGF0b3I="
"""base64 of ``skip_thought_signature_validator``: Google's documented stand-in for a thought signature.

Gemini 3 answers 400 to a history whose function call has no ``thoughtSignature``;
the history keeps no signatures, so each model turn's first function call is
sent with this one (the model then reasons without its earlier thoughts)."""
_REQUEST_FIELDS: Final = frozenset(
    {"safetySettings", "safety_settings", "toolConfig", "tool_config", "cachedContent", "cached_content"}
)
"""Settings that belong to the request itself; every other setting goes into ``generationConfig``."""
_CONTENT_FILTER: Final = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
"""Finish reasons that mean a filter withheld the answer."""


class GeminiModel(HTTPModel):
    """A Gemini model behind Google's Gemini API (``models/<model>:streamGenerateContent``).

    Streams text, thought summaries (as reasoning, when ``thinkingConfig``
    asks for them), function calls (each arrives whole; its id is the one
    Gemini sent, else ``"<name>-<n>"``, n counting the response's calls),
    the stop reason and usage (output tokens include the thinking tokens, also
    counted as reasoning; cached prompt tokens are counted as cache reads).
    Answers ``output_mode="native"`` with ``responseJsonSchema``.

    The API key is sent in the ``x-goog-api-key`` header only, never in the
    URL, where it would end up in error messages and logs.

    Args:
        model: The model name, e.g. ``"gemini-2.5-flash"`` (a name with a ``/``,
            such as ``"tunedModels/my-model"``, is used as the resource path as it is).
        base_url: Defaults to ``GEMINI_BASE_URL``, else Google's (``.../v1beta``).
        api_key: Defaults to ``GOOGLE_API_KEY``, else ``GEMINI_API_KEY`` (Google's SDKs read them in that
            order). With none, a server on this machine gets none, and any other fails with
            :class:`~agents.MissingAPIKeyError` naming both (``api_key=""``: it needs none).
        retry: Retries of 429, 5xx and connection errors (default: 4 tries, waits of at most 8 s).
        **settings: Sent in ``generationConfig`` (``temperature``, ``maxOutputTokens``,
            ``thinkingConfig`` ...), except ``safetySettings``, ``toolConfig`` and
            ``cachedContent``, which are fields of the request itself.

    Example::

        agent = Agent(name="helper", model=GeminiModel("gemini-2.5-flash", temperature=0.2))
    """

    provider = "google"  # as its model strings name it ("google:gemini-2.5-flash")
    DEFAULT_BASE_URL = DEFAULT_BASE_URL
    BASE_URL_ENV = "GEMINI_BASE_URL"
    API_KEY_ENV = "GEMINI_API_KEY"
    PATH = ":streamGenerateContent?alt=sse"
    native_output = True
    """It answers ``output_mode="native"`` (``responseMimeType`` and ``responseJsonSchema``)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        provider: str | None = None,
        api_key_env: str | None = None,
        **settings: Any,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("GOOGLE_API_KEY") or None  # else GEMINI_API_KEY, read by HTTPModel
        super().__init__(
            model,
            base_url=base_url,
            api_key=api_key,
            retry=retry,
            provider=provider,
            api_key_env=api_key_env,
            **settings,
        )

    def _check_key(self, *, from_env: bool) -> Callable[[], AuthenticationError] | None:
        """As every model's, but a missing key names ``GOOGLE_API_KEY`` too: either variable serves."""
        error = super()._check_key(from_env=from_env)
        if error is None or self._api_key:  # no error, or a key that cannot be sent: that error stands
            return error
        return functools.partial(
            MissingAPIKeyError,
            f"{self.provider}: no API key: set {self.api_key_env} or GOOGLE_API_KEY (or pass api_key=...)",
            provider=self.provider,
            variable=self.api_key_env,
        )

    def url(self) -> str:
        """``{base_url}/models/{model}:streamGenerateContent?alt=sse``: the model is part of the path."""
        name = self.model if "/" in self.model else f"models/{self.model}"
        return f"{self.base_url}/{urllib.parse.quote(name, safe='/')}{self.PATH}"

    def headers(self, request: ModelRequest) -> dict[str, str]:
        """The key, when there is one, in ``x-goog-api-key``."""
        headers = {"accept": "text/event-stream"}
        if self._api_key:
            headers["x-goog-api-key"] = self._api_key
        return headers

    def parse(self, response: httpx.Response) -> AsyncGenerator[ModelChunk, None]:
        """The chunks of a ``streamGenerateContent`` stream."""
        return _chunks(response)

    def body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of a request."""
        contents: list[dict[str, Any]] = []
        results: list[dict[str, Any]] | None = None  # the functionResponse parts of the open user content
        for message in request.messages:
            if isinstance(message, ToolResultMessage):
                if results is None:
                    results = []
                    contents.append({"role": "user", "parts": results})
                key = "error" if message.is_error else "result"
                value = text_only(message.content)
                response = {"id": message.call_id, "name": message.name, "response": {key: value}}
                results.append({"functionResponse": response})
                continue
            results = None
            if isinstance(message, UserMessage):
                contents.append({"role": "user", "parts": _parts(message.content)})
            elif isinstance(message, AssistantMessage):
                parts: list[dict[str, Any]] = [{"text": message.text}] if message.text else []
                for i, call in enumerate(message.tool_calls):
                    part: dict[str, Any] = {
                        "functionCall": {"id": call.call_id, "name": call.name, "args": _args(call.arguments)}
                    }
                    if i == 0:
                        part["thoughtSignature"] = SKIP_SIGNATURE
                    parts.append(part)
                if parts:  # the API refuses a content with no parts
                    contents.append({"role": "model", "parts": parts})
        body: dict[str, Any] = {"contents": contents}
        if request.instructions:
            body["systemInstruction"] = {"parts": [{"text": request.instructions}]}
        if request.tools:
            # parametersJsonSchema takes full JSON schema ($defs, anyOf, additionalProperties ...);
            # the older "parameters" takes an OpenAPI subset that refuses some of it.
            body["tools"] = [
                {
                    "functionDeclarations": [
                        {"name": t.name, "description": t.description, "parametersJsonSchema": dict(t.parameters)}
                        for t in request.tools
                    ]
                }
            ]
        config = {key: value for key, value in self.settings.items() if key not in _REQUEST_FIELDS}
        if request.output is not None:
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = dict(request.output.schema)
        if config:
            body["generationConfig"] = config
        body.update({key: value for key, value in self.settings.items() if key in _REQUEST_FIELDS})
        return body


def _args(arguments: Mapping[str, Any] | str) -> dict[str, Any]:
    """A call's arguments as the object ``functionCall.args`` must be ({} if they are not one)."""
    if not isinstance(arguments, str):
        return dict(arguments)
    try:
        value = loads_untrusted(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _stop(reason: str, called: bool) -> StopChunk:
    kind: StopReason
    if reason == "STOP":
        kind = "tool_use" if called else "end_turn"
    elif reason == "MAX_TOKENS":
        kind = "max_tokens"
    elif reason in _CONTENT_FILTER:
        kind = "content_filter"
    else:
        kind = "other"
    return StopChunk(kind, reason)


def _usage(usage: dict[str, Any]) -> UsageChunk:
    """The usage of a response: ``promptTokenCount`` includes the cached tokens, and the thinking tokens,
    counted apart from ``candidatesTokenCount``, are output (reasoning) as the other providers count them."""
    thoughts = int(usage.get("thoughtsTokenCount") or 0)
    return UsageChunk(
        int(usage.get("promptTokenCount") or 0),
        int(usage.get("candidatesTokenCount") or 0) + thoughts,
        cache_read_tokens=int(usage.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def _candidate(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """The first candidate (index 0): the answer; more come only when ``candidateCount`` asks."""
    candidates = chunk.get("candidates")
    if not isinstance(candidates, list):
        return None
    for candidate in candidates:
        if isinstance(candidate, dict) and not candidate.get("index"):
            return candidate
    return None


def _call_chunks(call: object, number: int) -> list[ModelChunk]:
    """A function call part's chunks: its whole arguments as one delta (if they print as JSON), then the call."""
    if not isinstance(call, dict):
        return []
    name = str(call.get("name") or "")
    call_id = str(call.get("id") or f"{name}-{number}")
    args = call.get("args", {})
    try:
        text = json.dumps(args)
    except (ValueError, RecursionError):  # nested too deep to print: the runtime reports it to the model
        return [ToolCallChunk(call_id, name, args if isinstance(args, dict) else {})]
    # Anything but an object goes on as its JSON text, which the runtime refuses with a clear error.
    return [
        ToolCallDeltaChunk(call_id, name, text),
        ToolCallChunk(call_id, name, args if isinstance(args, dict) else text),
    ]


def _parts(content: Content) -> list[dict[str, Any]]:
    """A user message's content as Gemini parts."""
    if isinstance(content, str):
        return [{"text": content}]
    # An empty text part (an attachment's empty caption) is left out, as Anthropic's adapter does: Gemini reads
    # {"text": ""} as a part with no data, and refuses the request.
    return [_part(part) for part in content if not (isinstance(part, TextPart) and not part.text)]


def _part(part: ContentPart) -> dict[str, Any]:
    """A part as a Gemini ``Part``: text, ``inlineData`` (bytes) or ``fileData`` (a URL, with its media type).

    Raises:
        UnsupportedContentError: an image by URL without a ``media_type`` (Gemini needs one), or a kind of
            part this model does not know.
    """
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ImagePart | DocumentPart):
        media_type = part.media_type
        if part.data is not None:
            return {"inlineData": {"mimeType": media_type, "data": part.base64()}}
        if media_type is None:
            raise UnsupportedContentError(
                part,
                provider=GeminiModel.provider,
                reason="Gemini takes a file URL only with its type: ImagePart(url=..., media_type='image/png')",
            )
        return {"fileData": {"mimeType": media_type, "fileUri": part.url}}
    raise UnsupportedContentError(part, provider=GeminiModel.provider, reason="the Gemini API has no such part")


async def _chunks(response: httpx.Response) -> AsyncGenerator[ModelChunk, None]:
    """Map the SSE stream to chunks: content as it comes, then the stop reason and the last usage seen.

    Raises:
        MalformedStreamError: it ended with neither a finishReason nor a blocked prompt (it was cut off).
        httpx.HTTPError: the connection broke (``stream_chunks`` maps it), after the usage counted so far.
    """
    usage: dict[str, Any] | None = None
    finish: str | None = None
    blocked: str | None = None
    calls = 0
    async with contextlib.aclosing(SSEStream(response)) as stream:
        while events := await stream.read_or_end():  # one await per network read, not per event
            for event in events:
                data = event.data.strip()
                if event.event == "error":
                    if usage is not None:
                        yield _usage(usage)
                    yield error_chunk(data)
                    return
                if not data:
                    continue
                chunk = json_object(data, "google: a chunk")
                if isinstance(chunk.get("usageMetadata"), dict):
                    usage = chunk["usageMetadata"]
                if chunk.get("error"):
                    if usage is not None:  # tokens spent before the error still count
                        yield _usage(usage)
                    yield error_chunk(chunk["error"])
                    return
                candidate = _candidate(chunk)
                if candidate is None:
                    feedback = chunk.get("promptFeedback")
                    if isinstance(feedback, dict) and feedback.get("blockReason"):
                        blocked = str(feedback["blockReason"])  # the prompt itself was refused
                    continue
                content = candidate.get("content")
                parts = content.get("parts") if isinstance(content, dict) else None
                for part in parts if isinstance(parts, list) else ():
                    if not isinstance(part, dict):
                        continue
                    if "functionCall" in part:
                        for call_chunk in _call_chunks(part["functionCall"], calls):
                            yield call_chunk
                        calls += 1
                    elif part.get("text"):
                        text = text_field(part, "text")
                        yield ReasoningChunk(text) if part.get("thought") else TextChunk(text)
                    # A part with only a thoughtSignature, code execution, inline data ...: nothing to stream.
                if candidate.get("finishReason"):
                    finish = str(candidate["finishReason"])
    if stream.broken is not None:
        if usage is not None:  # the tokens were spent (and billed) all the same
            yield _usage(usage)
        raise stream.broken  # the connection broke: that is the error (the model maps it)
    if finish is not None:
        yield _stop(finish, calls > 0)
    elif blocked is not None:
        yield StopChunk("content_filter", blocked)
    else:
        # Closed before the end (a dropped connection, a proxy's timeout): the answer may be cut off, and a
        # call of a later chunk never sent. Gemini's last chunk always carries the finishReason.
        if usage is not None:  # the tokens were spent (and billed) all the same
            yield _usage(usage)
        raise MalformedStreamError("google: the stream ended before a finishReason")
    if usage is not None:
        yield _usage(usage)
