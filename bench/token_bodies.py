"""W6's provider formats: the SSE events each provider streams for one answer of N one-token chunks.

One entry per format in ``FORMATS``: where it is POSTed, how the loopback
server (bench/token_server.py) builds the answer's events, and how the raw
floor reads the text out of one event's JSON. The events are shaped as the
providers send them (field for field the common ones), so every client parses
what it would parse in production:

- ``chat``: OpenAI Chat Completions, one ``choices[0].delta.content`` chunk
  per token (the first also carries the role), a ``finish_reason`` chunk, a
  usage chunk (``stream_options.include_usage``), then ``[DONE]``;
- ``anthropic``: Anthropic Messages, ``message_start``,
  ``content_block_start``, one ``text_delta`` ``content_block_delta`` per
  token, ``content_block_stop``, ``message_delta`` (stop reason, usage),
  ``message_stop``;
- ``responses``: OpenAI Responses, ``response.created`` ... one
  ``response.output_text.delta`` per token ... ``response.completed`` (which
  repeats the whole answer, as the API does);
- ``gemini``: Gemini ``streamGenerateContent?alt=sse``, one chunk per token
  of ``candidates[0].content.parts[0].text``, the last with ``finishReason``
  and the full ``usageMetadata``.

Stdlib only: the server runs it with any interpreter, and so do the clients.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

WORDS = (" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".")
PROMPT_TOKENS = 12


def tokens(chunks: int) -> list[str]:
    """The answer: ``chunks`` one-token pieces (the same for every format)."""
    return [WORDS[i % len(WORDS)] for i in range(chunks)]


def _sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {text}\n\n".encode()


def _chat(pieces: list[str]) -> list[bytes]:
    head = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_bench",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**head, "choices": [choice], "usage": None})

    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": len(pieces),
        "total_tokens": PROMPT_TOKENS + len(pieces),
    }
    return [
        chunk({"role": "assistant", "content": pieces[0], "refusal": None}),
        *(chunk({"content": piece}) for piece in pieces[1:]),
        chunk({}, "stop"),
        _sse({**head, "choices": [], "usage": usage}),
        _sse("[DONE]"),
    ]


def _anthropic(pieces: list[str]) -> list[bytes]:
    message = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1},
    }

    def delta(piece: str) -> bytes:
        return _sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            "content_block_delta",
        )

    return [
        _sse({"type": "message_start", "message": message}, "message_start"),
        _sse(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        ),
        *(delta(piece) for piece in pieces),
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(pieces)},
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]


def _responses(pieces: list[str]) -> list[bytes]:
    text = "".join(pieces)
    ids = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}

    def response(status: str, output: list[Any], usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": "resp_bench",
            "object": "response",
            "created_at": 1_700_000_000,
            "status": status,
            "model": "gpt-4o-mini",
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "temperature": 1.0,
            "top_p": 1.0,
            "text": {"format": {"type": "text"}},
            "usage": usage,
        }

    def item(status: str, content: list[Any]) -> dict[str, Any]:
        return {"id": "msg_bench", "type": "message", "status": status, "role": "assistant", "content": content}

    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    usage = {
        "input_tokens": PROMPT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": len(pieces),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": PROMPT_TOKENS + len(pieces),
    }
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response("in_progress", [], None)},
        {"type": "response.in_progress", "response": response("in_progress", [], None)},
        {"type": "response.output_item.added", "output_index": 0, "item": item("in_progress", [])},
        {"type": "response.content_part.added", **ids, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **ids, "delta": piece, "logprobs": []} for piece in pieces),
        {"type": "response.output_text.done", **ids, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **ids, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item("completed", [part])},
        {"type": "response.completed", "response": response("completed", [item("completed", [part])], usage)},
    ]
    return [_sse({**event, "sequence_number": n}, event["type"]) for n, event in enumerate(events)]


def _gemini(pieces: list[str]) -> list[bytes]:
    def chunk(piece: str, last: bool) -> bytes:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
        usage: dict[str, Any] = {"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": PROMPT_TOKENS}
        if last:
            candidate["finishReason"] = "STOP"
            usage = {
                "promptTokenCount": PROMPT_TOKENS,
                "candidatesTokenCount": len(pieces),
                "totalTokenCount": PROMPT_TOKENS + len(pieces),
            }
        return _sse(
            {
                "candidates": [candidate],
                "usageMetadata": usage,
                "modelVersion": "gemini-2.5-flash",
                "responseId": "bench",
            }
        )

    return [chunk(piece, i == len(pieces) - 1) for i, piece in enumerate(pieces)]


def _chat_text(data: dict[str, Any]) -> str | None:
    choices = data.get("choices")
    return choices[0]["delta"].get("content") if choices else None


def _anthropic_text(data: dict[str, Any]) -> str | None:
    return data["delta"].get("text") if data["type"] == "content_block_delta" else None


def _responses_text(data: dict[str, Any]) -> str | None:
    return data["delta"] if data["type"] == "response.output_text.delta" else None


def _gemini_text(data: dict[str, Any]) -> str | None:
    return data["candidates"][0]["content"]["parts"][0].get("text")


@dataclass(frozen=True)
class Format:
    label: str
    path: str
    """What the raw floor POSTs to, after the server's origin (the server routes on ``route`` alone)."""
    route: str
    """How the server recognises the format: the request path (query left out) ends with it."""
    request: dict[str, Any]
    """The JSON body the raw floor sends (the server ignores bodies)."""
    events: Callable[[list[str]], list[bytes]]
    """The SSE events of an answer made of these pieces, each framed (``data: ...\\n\\n``)."""
    text_of: Callable[[dict[str, Any]], str | None]
    """The raw floor's reader: the text piece in one event's parsed JSON, if it has one."""


_MESSAGES = [{"role": "user", "content": "go"}]
FORMATS = {
    "chat": Format(
        label="Chat Completions",
        path="/v1/chat/completions",
        route="/chat/completions",
        request={
            "model": "gpt-4o-mini",
            "messages": _MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        events=_chat,
        text_of=_chat_text,
    ),
    "anthropic": Format(
        label="Anthropic Messages",
        path="/v1/messages",
        route="/messages",
        request={"model": "claude-sonnet-4-5", "max_tokens": 8192, "messages": _MESSAGES, "stream": True},
        events=_anthropic,
        text_of=_anthropic_text,
    ),
    "responses": Format(
        label="Responses API",
        path="/v1/responses",
        route="/responses",
        request={"model": "gpt-4o-mini", "input": "go", "stream": True},
        events=_responses,
        text_of=_responses_text,
    ),
    "gemini": Format(
        label="Gemini",
        path="/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        route=":streamGenerateContent",
        request={"contents": [{"role": "user", "parts": [{"text": "go"}]}]},
        events=_gemini,
        text_of=_gemini_text,
    ),
}
