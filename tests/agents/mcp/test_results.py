"""An MCP tool result as the model reads it (text, placeholders) and as the program gets it (parts)."""

from __future__ import annotations

import base64
import pickle

import mcp_types as types
import pytest

from agents import Agent, ImagePart, ScriptedModel, TextPart, ToolCall, ToolResultMessage, tool
from agents._content import tool_content
from agents.mcp import MCPResult, MCPToolError
from agents.mcp._results import to_value
from runtime import open_runtime

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(2040)).decode()


def test_results_plain_text_is_a_plain_string() -> None:
    """Text parts alone are joined into a str, nothing more."""
    result = types.CallToolResult(content=[types.TextContent(text="one"), types.TextContent(text="two")])
    value = to_value("srv", "t", result)
    assert value == "one\ntwo"
    assert type(value) is str


def test_results_image_is_a_placeholder_for_the_model_and_data_for_the_program() -> None:
    """An image is a short placeholder in the text, never its bytes; its data is in ``parts``."""
    result = types.CallToolResult(
        content=[types.TextContent(text="Here it is:"), types.ImageContent(data=PNG, mime_type="image/png")]
    )
    value = to_value("srv", "t", result)
    assert isinstance(value, MCPResult)
    assert value == "Here it is:\n[image: image/png, 2.0 kB]"
    assert PNG not in value
    assert value.parts == ("Here it is:", {"type": "image", "media_type": "image/png", "data": PNG})
    image = value.parts[1]
    assert isinstance(image, dict)
    assert base64.b64decode(image["data"]).startswith(b"\x89PNG")


def test_results_embedded_resources_and_links() -> None:
    """A text resource is read with its URI; a binary one and a link are placeholders."""
    blob = base64.b64encode(b"x" * 10).decode()
    result = types.CallToolResult(
        content=[
            types.EmbeddedResource(
                resource=types.TextResourceContents(uri="demo://a", mime_type="text/plain", text="hello")
            ),
            types.EmbeddedResource(resource=types.BlobResourceContents(uri="demo://b", blob=blob)),
            types.ResourceLink(name="readme", uri="file:///readme.md", description="The readme"),
            types.AudioContent(data=blob, mime_type="audio/wav"),
        ]
    )
    value = to_value("srv", "t", result)
    assert value.splitlines() == [
        "[resource demo://a (text/plain)]",
        "hello",
        "[resource demo://b: unknown type, 10 bytes]",
        "[resource link readme <file:///readme.md>: The readme]",
        "[audio: audio/wav, 10 bytes]",
    ]
    assert isinstance(value, MCPResult)
    assert [part["type"] for part in value.parts if isinstance(part, dict)] == [
        "resource",
        "resource",
        "resource_link",
        "audio",
    ]


def test_results_structured_content_is_kept_and_shown_when_there_is_no_text() -> None:
    """Structured content rides along; with no text part, the model reads it as JSON."""
    with_text = to_value(
        "srv", "t", types.CallToolResult(content=[types.TextContent(text="21 °C")], structured_content={"c": 21})
    )
    assert with_text == "21 °C"
    assert isinstance(with_text, MCPResult)
    assert with_text.structured == {"c": 21}
    alone = to_value("srv", "t", types.CallToolResult(content=[], structured_content={"c": 21}))
    assert alone == '{"c": 21}'
    assert isinstance(alone, MCPResult)
    assert alone.structured == {"c": 21}


def test_results_is_error_raises_with_the_servers_text() -> None:
    """An isError result raises MCPToolError whose message is what the server said."""
    result = types.CallToolResult(content=[types.TextContent(text="no such city")], is_error=True)
    with pytest.raises(MCPToolError, match=r"^no such city$") as caught:
        to_value("weather", "forecast", result)
    assert caught.value.server == "weather"
    assert caught.value.tool == "forecast"
    with pytest.raises(MCPToolError, match="gave no message"):
        to_value("weather", "forecast", types.CallToolResult(content=[], is_error=True))


def test_results_survive_a_copy() -> None:
    """An MCPResult pickles (and so copies) with its parts and structured content."""
    value = to_value("srv", "t", types.CallToolResult(content=[types.ImageContent(data=PNG, mime_type="image/png")]))
    copied = pickle.loads(pickle.dumps(value))
    assert copied == value
    assert isinstance(value, MCPResult)
    assert isinstance(copied, MCPResult)
    assert copied.parts == value.parts


def test_results_image_goes_to_the_model_as_an_image_part() -> None:
    """A result with an image the model can take gives the text and an ImagePart as its content parts."""
    result = types.CallToolResult(
        content=[types.TextContent(text="Here it is:"), types.ImageContent(data=PNG, mime_type="image/png")]
    )
    value = to_value("srv", "t", result)
    assert isinstance(value, MCPResult)
    assert value.content_parts() == (
        TextPart("Here it is:"),
        ImagePart(data=base64.b64decode(PNG), media_type="image/png"),
    )
    assert tool_content(value) == value.content_parts()


def test_results_image_beside_other_parts_keeps_all_their_text_for_the_model() -> None:
    """With an image, every other part still reaches the model as the text it shows, in order: a text
    resource with its URI, a link, placeholders for audio and an image of a type it can't take."""
    result = types.CallToolResult(
        content=[
            types.TextContent(text="The chart and the report."),
            types.ImageContent(data=PNG, mime_type="image/png"),
            types.EmbeddedResource(
                resource=types.TextResourceContents(uri="file:///report.txt", mime_type="text/plain", text="total=42")
            ),
            types.ResourceLink(name="big.csv", uri="file:///big.csv", description="All rows"),
            types.AudioContent(data=PNG, mime_type="audio/wav"),
            types.ImageContent(data=PNG, mime_type="image/bmp"),
            types.ImageContent(data=PNG, mime_type="image/jpeg"),
        ]
    )
    value = to_value("srv", "t", result)
    assert isinstance(value, MCPResult)
    image = base64.b64decode(PNG)
    assert value.content_parts() == (
        TextPart("The chart and the report."),
        ImagePart(data=image, media_type="image/png"),
        TextPart(
            "[resource file:///report.txt (text/plain)]\ntotal=42\n"
            "[resource link big.csv <file:///big.csv>: All rows]\n"
            "[audio: audio/wav, 2.0 kB]\n"
            "[image: image/bmp, 2.0 kB]"
        ),
        ImagePart(data=image, media_type="image/jpeg"),
    )
    shown = [
        part.text if isinstance(part, TextPart) else f"[image: {part.media_type}, 2.0 kB]"
        for part in value.content_parts()
    ]
    assert "\n".join(shown) == value


def test_results_without_an_image_the_model_can_take_have_no_parts() -> None:
    """Text with a resource, or an image of a type no provider takes, stays text (the placeholder)."""
    bmp = types.CallToolResult(content=[types.ImageContent(data=PNG, mime_type="image/bmp")])
    value = to_value("srv", "t", bmp)
    assert isinstance(value, MCPResult)
    assert value.content_parts() == ()
    assert tool_content(value) is None


async def test_results_image_reaches_the_models_history_as_parts() -> None:
    """Run through the loop: the tool result in history holds the image part, the event the MCPResult."""
    value = to_value(
        "srv",
        "t",
        types.CallToolResult(
            content=[types.TextContent(text="A dot."), types.ImageContent(data=PNG, mime_type="image/png")]
        ),
    )

    @tool
    async def snap() -> str:
        """Take a picture."""
        return value

    model = ScriptedModel([ToolCall("snap"), "Seen."])
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model, tools=[snap])) as session:
        result = await session.ask("Look.")
    (record,) = result.tool_calls
    assert record.result is value
    tool_message = model.requests[1].messages[-1]
    assert isinstance(tool_message, ToolResultMessage)
    assert tool_message.content == value.content_parts()
