"""Images and documents in a request: each provider's format, as the loopback server received it."""

from __future__ import annotations

import base64
import json
from typing import Any, Final

import pytest
import trio

from agents import (
    Agent,
    AnthropicModel,
    DocumentPart,
    GeminiModel,
    ImagePart,
    ModelRequest,
    OpenAIChatModel,
    OpenAIResponsesModel,
    RetryPolicy,
    TextPart,
    ToolResultMessage,
    UnsupportedContentError,
    UserContent,
    UserMessage,
    tool,
)
from runtime import RunFailedError, open_runtime
from runtime.events import ErrorEvent, Event, RunFinished, ToolCallFinished

NO_RETRY: Final = RetryPolicy(max_attempts=1)
PNG: Final = b"\x89PNG\r\n\x1a\n-a-tiny-png"
JPEG: Final = b"\xff\xd8\xff\xe0-a-tiny-jpeg"
PDF: Final = b"%PDF-1.4 a tiny pdf"
PNG_B64: Final = base64.b64encode(PNG).decode()
JPEG_B64: Final = base64.b64encode(JPEG).decode()
PDF_B64: Final = base64.b64encode(PDF).decode()
IMAGE_URL: Final = "https://example.com/cat.jpg"
PDF_URL: Final = "https://example.com/report.pdf"
PDF_DATA_URL: Final = f"data:application/pdf;base64,{PDF_B64}"
ALL_PARTS: Final[list[str | TextPart | ImagePart | DocumentPart]] = [
    "Compare these:",
    ImagePart(url=IMAGE_URL),
    ImagePart(data=PNG, media_type="image/png"),
    DocumentPart(data=PDF, filename="report.pdf"),
    DocumentPart(data=PDF),
]


def _openai_sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks) + b"data: [DONE]\n\n"


OPENAI_TEXT: Final = _openai_sse({"choices": [{"delta": {"content": "Seen."}, "finish_reason": "stop"}]})
_SNAP_CALL: Final = {"index": 0, "id": "call_1", "function": {"name": "snap", "arguments": "{}"}}
OPENAI_TOOL_CALL: Final = _openai_sse(
    {"choices": [{"delta": {"tool_calls": [_SNAP_CALL]}, "finish_reason": "tool_calls"}]}
)


def _anthropic_sse(*events: dict[str, Any]) -> bytes:
    return (
        b"".join(
            f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            for event in [{"type": "message_start", "message": {"usage": {"input_tokens": 1}}}, *events]
        )
        + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


ANTHROPIC_TEXT: Final = _anthropic_sse(
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Seen."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
)
ANTHROPIC_TOOL_CALL: Final = _anthropic_sse(
    {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "snap", "input": {}},
    },
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 1}},
)


@tool
def snap() -> list[str | ImagePart]:
    """Take a picture."""
    return ["Here it is:", ImagePart(data=JPEG, media_type="image/jpeg")]


def _openai(server: Any) -> OpenAIChatModel:
    return OpenAIChatModel("gpt-test", base_url=server.base_url, api_key="k", retry=NO_RETRY)


def _anthropic(server: Any) -> AnthropicModel:
    return AnthropicModel("claude-test", base_url=server.base_url, api_key="k", retry=NO_RETRY)


async def _run(agent: Agent, *inputs: UserContent) -> list[list[Event]]:
    """Each input run in turn in one session; the events of each run."""
    runs: list[list[Event]] = []
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            for user_input in inputs:
                async with session.run(user_input) as stream:
                    runs.append([event async for event in stream])
    return runs


def _sent(server: Any, index: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(server.requests[index].body)
    return body


# -- OpenAI Chat Completions ---------------------------------------------------


async def test_openai_user_parts_become_content_parts(provider_server: Any) -> None:
    """Text, an image by URL and by bytes, and PDFs by bytes reach Chat Completions as content parts."""
    provider_server.serve(OPENAI_TEXT)
    [events] = await _run(Agent(name="a", model=_openai(provider_server)), ALL_PARTS)
    assert events[-1] == RunFinished("completed")
    [user] = _sent(provider_server)["messages"]
    assert user == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Compare these:"},
            {"type": "image_url", "image_url": {"url": IMAGE_URL}},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
            {"type": "file", "file": {"filename": "report.pdf", "file_data": PDF_DATA_URL}},
            {"type": "file", "file": {"filename": "document.pdf", "file_data": PDF_DATA_URL}},
        ],
    }


async def test_openai_plain_text_input_is_still_a_string(provider_server: Any) -> None:
    """A str input is sent as a string content, as before parts existed."""
    provider_server.serve(OPENAI_TEXT)
    await _run(Agent(name="a", model=_openai(provider_server)), "hi")
    assert _sent(provider_server)["messages"] == [{"role": "user", "content": "hi"}]


async def test_openai_document_by_url_fails_before_any_request(provider_server: Any) -> None:
    """Chat Completions takes no document by URL: the run ends with a model error and nothing is sent."""
    provider_server.serve(OPENAI_TEXT)
    [events] = await _run(Agent(name="a", model=_openai(provider_server)), ["Read:", DocumentPart(url=PDF_URL)])
    errors = [event for event in events if isinstance(event, ErrorEvent)]
    assert errors == [
        ErrorEvent(
            "model",
            "openai: cannot send a document by URL: Chat Completions takes a document only as bytes: "
            "DocumentPart(data=...)",
        )
    ]
    assert events[-1] == RunFinished("error", errors[0].message)
    assert provider_server.requests == []


async def test_openai_model_alone_raises_unsupported_content_before_sending(provider_server: Any) -> None:
    """Used without a runtime, the model raises the typed error when its stream is opened; no request is made."""
    model = _openai(provider_server)
    part = DocumentPart(url=PDF_URL)
    request = ModelRequest("", (UserMessage((TextPart("Read:"), part)),))
    with pytest.raises(UnsupportedContentError) as caught:
        async with model.stream(request):
            pytest.fail("the stream opened")  # pragma: no cover
    assert (caught.value.part, caught.value.provider) == (part, "openai")
    assert provider_server.requests == []


async def test_openai_ask_with_an_unsupported_part_is_a_run_failed_error(provider_server: Any) -> None:
    """``ask`` raises RunFailedError of kind "model" for a part the provider cannot take."""
    provider_server.serve(OPENAI_TEXT)
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=_openai(provider_server))) as s:
        with pytest.raises(RunFailedError, match="cannot send a document by URL") as caught:
            await s.ask([DocumentPart(url=PDF_URL)])
    assert caught.value.kind == "model"
    assert provider_server.requests == []


async def test_openai_tool_image_is_a_placeholder_in_the_tool_message(provider_server: Any) -> None:
    """A tool message is text only in Chat Completions: its text parts, and a placeholder for the image."""
    provider_server.queue(OPENAI_TOOL_CALL)
    provider_server.queue(OPENAI_TEXT)
    await _run(Agent(name="a", model=_openai(provider_server), tools=[snap]), "Take a picture.")
    *_, result = _sent(provider_server, 1)["messages"]
    assert result == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "Here it is:\n[the tool returned an image, not shown: tool results here are text only]",
    }


async def test_openai_parts_stay_in_history_for_the_next_run(provider_server: Any) -> None:
    """The parts of the first run's input are sent again, as parts, with the second run's request."""
    provider_server.serve(OPENAI_TEXT)
    image = ImagePart(data=PNG, media_type="image/png")
    await _run(Agent(name="a", model=_openai(provider_server)), ["What is this?", image], "And now?")
    first, answer, second = _sent(provider_server, 1)["messages"]
    assert first == _sent(provider_server, 0)["messages"][0]
    assert first["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}
    assert answer == {"role": "assistant", "content": "Seen."}
    assert second == {"role": "user", "content": "And now?"}


# -- Anthropic Messages --------------------------------------------------------


async def test_anthropic_user_parts_become_content_blocks(provider_server: Any) -> None:
    """Text, images by URL and base64, and documents by base64 (titled) and URL reach Anthropic as blocks."""
    provider_server.serve(ANTHROPIC_TEXT)
    parts = [*ALL_PARTS, DocumentPart(url=PDF_URL)]
    [events] = await _run(Agent(name="a", model=_anthropic(provider_server)), parts)
    assert events[-1] == RunFinished("completed")
    [user] = _sent(provider_server)["messages"]
    pdf = {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}
    assert user == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Compare these:"},
            {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
            {"type": "document", "source": pdf, "title": "report.pdf"},
            {"type": "document", "source": pdf},
            {"type": "document", "source": {"type": "url", "url": PDF_URL}},
        ],
    }


async def test_anthropic_leaves_out_empty_text_parts(provider_server: Any) -> None:
    """Anthropic refuses empty text blocks: an empty text part is not sent."""
    provider_server.serve(ANTHROPIC_TEXT)
    await _run(Agent(name="a", model=_anthropic(provider_server)), ["", ImagePart(url=IMAGE_URL)])
    [user] = _sent(provider_server)["messages"]
    assert user["content"] == [{"type": "image", "source": {"type": "url", "url": IMAGE_URL}}]


async def test_anthropic_tool_image_reaches_the_tool_result(provider_server: Any) -> None:
    """An image a tool returns goes into Anthropic's tool_result content, beside the tool's text."""
    provider_server.queue(ANTHROPIC_TOOL_CALL)
    provider_server.queue(ANTHROPIC_TEXT)
    [events] = await _run(Agent(name="a", model=_anthropic(provider_server), tools=[snap]), "Take a picture.")
    [finished] = [event for event in events if isinstance(event, ToolCallFinished)]
    assert finished.result == ["Here it is:", ImagePart(data=JPEG, media_type="image/jpeg")]
    assert finished.error is None
    _, _, results = _sent(provider_server, 1)["messages"]
    assert results == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [
                    {"type": "text", "text": "Here it is:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": JPEG_B64}},
                ],
                "is_error": False,
            }
        ],
    }


async def test_anthropic_history_keeps_a_tool_results_parts(provider_server: Any) -> None:
    """The tool result with its image stays in history as parts: the next run sends it again."""
    provider_server.queue(ANTHROPIC_TOOL_CALL)
    provider_server.queue(ANTHROPIC_TEXT)
    agent = Agent(name="a", model=_anthropic(provider_server), tools=[snap])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        with trio.fail_after(10):
            await session.ask("Take a picture.")
            await session.ask(["Was it sharp?", ImagePart(url=IMAGE_URL)])
        result = session.history[2]
    assert isinstance(result, ToolResultMessage)
    assert result.content == (TextPart("Here it is:"), ImagePart(data=JPEG, media_type="image/jpeg"))
    third = _sent(provider_server, 2)["messages"]
    assert third[2] == _sent(provider_server, 1)["messages"][2]
    assert third[-1]["content"][1] == {"type": "image", "source": {"type": "url", "url": IMAGE_URL}}


# -- OpenAI Responses ----------------------------------------------------------


def _responses_sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


RESPONSES_TEXT: Final = _responses_sse(
    {"type": "response.output_text.delta", "delta": "Seen."},
    {"type": "response.completed", "response": {"status": "completed", "usage": {"input_tokens": 1}}},
)
RESPONSES_TOOL_CALL: Final = _responses_sse(
    {
        "type": "response.output_item.done",
        "output_index": 0,
        "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "snap", "arguments": "{}"},
    },
    {"type": "response.completed", "response": {"status": "completed"}},
)


def _responses(server: Any) -> OpenAIResponsesModel:
    return OpenAIResponsesModel("gpt-test", base_url=server.base_url, api_key="k", retry=NO_RETRY)


async def test_responses_user_parts_become_input_items(provider_server: Any) -> None:
    """Text, images by URL and by bytes, and PDFs (bytes and URL) reach the Responses API as input items."""
    provider_server.serve(RESPONSES_TEXT)
    [events] = await _run(Agent(name="a", model=_responses(provider_server)), [*ALL_PARTS, DocumentPart(url=PDF_URL)])
    assert events[-1] == RunFinished("completed")
    [user] = _sent(provider_server)["input"]
    assert user == {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Compare these:"},
            {"type": "input_image", "image_url": IMAGE_URL},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}"},
            {"type": "input_file", "filename": "report.pdf", "file_data": PDF_DATA_URL},
            {"type": "input_file", "filename": "document.pdf", "file_data": PDF_DATA_URL},
            {"type": "input_file", "file_url": PDF_URL},
        ],
    }


async def test_responses_tool_image_reaches_the_function_call_output(provider_server: Any) -> None:
    """A function_call_output takes input items: the tool's image reaches the model."""
    provider_server.queue(RESPONSES_TOOL_CALL)
    provider_server.queue(RESPONSES_TEXT)
    await _run(Agent(name="a", model=_responses(provider_server), tools=[snap]), "Take a picture.")
    *_, output = _sent(provider_server, 1)["input"]
    assert output == {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": [
            {"type": "input_text", "text": "Here it is:"},
            {"type": "input_image", "image_url": f"data:image/jpeg;base64,{JPEG_B64}"},
        ],
    }


# -- Gemini ----------------------------------------------------------------------


def _gemini_sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n" for chunk in chunks)


GEMINI_TEXT: Final = _gemini_sse(
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Seen."}]}, "finishReason": "STOP"}]}
)
GEMINI_TOOL_CALL: Final = _gemini_sse(
    {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"functionCall": {"id": "call_1", "name": "snap", "args": {}}}]},
                "finishReason": "STOP",
            }
        ]
    }
)


def _gemini(server: Any) -> GeminiModel:
    return GeminiModel("gemini-test", base_url=server.base_url, api_key="k", retry=NO_RETRY)


async def test_gemini_user_parts_become_inline_and_file_data(provider_server: Any) -> None:
    """Bytes go as inlineData, URLs (with their media type) as fileData."""
    provider_server.serve(GEMINI_TEXT)
    parts: list[str | ImagePart | DocumentPart] = [
        "Compare these:",
        ImagePart(url=IMAGE_URL, media_type="image/jpeg"),
        ImagePart(data=PNG, media_type="image/png"),
        DocumentPart(data=PDF),
        DocumentPart(url=PDF_URL),
    ]
    [events] = await _run(Agent(name="a", model=_gemini(provider_server)), parts)
    assert events[-1] == RunFinished("completed")
    [user] = _sent(provider_server)["contents"]
    assert user == {
        "role": "user",
        "parts": [
            {"text": "Compare these:"},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": IMAGE_URL}},
            {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
            {"inlineData": {"mimeType": "application/pdf", "data": PDF_B64}},
            {"fileData": {"mimeType": "application/pdf", "fileUri": PDF_URL}},
        ],
    }


async def test_gemini_leaves_out_empty_text_parts(provider_server: Any) -> None:
    """An attachment with an empty caption: Gemini reads {"text": ""} as a part with no data and refuses the
    request, so an empty text part is not sent, as for Anthropic."""
    provider_server.serve(GEMINI_TEXT)
    await _run(Agent(name="a", model=_gemini(provider_server)), ["", ImagePart(data=PNG, media_type="image/png")])
    [user] = _sent(provider_server)["contents"]
    assert user["parts"] == [{"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]


async def test_gemini_image_url_without_a_media_type_fails_before_any_request(provider_server: Any) -> None:
    """Gemini needs a file URL's type: without one, a typed error and nothing sent."""
    provider_server.serve(GEMINI_TEXT)
    [events] = await _run(Agent(name="a", model=_gemini(provider_server)), ["Look:", ImagePart(url=IMAGE_URL)])
    [error] = [event for event in events if isinstance(event, ErrorEvent)]
    assert error.kind == "model"
    assert "media_type" in error.message
    assert provider_server.requests == []


async def test_gemini_tool_image_is_a_placeholder_in_the_function_response(provider_server: Any) -> None:
    """A function response holds text: the tool's text parts, and a placeholder for the image."""
    provider_server.queue(GEMINI_TOOL_CALL)
    provider_server.queue(GEMINI_TEXT)
    await _run(Agent(name="a", model=_gemini(provider_server), tools=[snap]), "Take a picture.")
    *_, results = _sent(provider_server, 1)["contents"]
    [part] = results["parts"]
    assert part["functionResponse"]["response"] == {
        "result": "Here it is:\n[the tool returned an image, not shown: tool results here are text only]"
    }
