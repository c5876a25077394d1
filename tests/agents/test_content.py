"""Content parts: their validation, how user input and tool results become parts, and their text."""

from __future__ import annotations

import base64
from typing import Any, Final

import pytest

from agents import (
    DocumentPart,
    ImagePart,
    ModelError,
    TextPart,
    ToolResultMessage,
    UnsupportedContentError,
    UserMessage,
)
from agents._content import content_text, tool_content, user_content

PNG: Final = b"\x89PNG\r\n\x1a\n-not-really-a-png"
PDF: Final = b"%PDF-1.4 not really a pdf"


def test_user_content_keeps_a_string_as_it_is() -> None:
    """Text input stays a plain string (the common case costs nothing)."""
    assert user_content("hello") == "hello"


def test_user_content_makes_a_sequence_a_tuple_of_parts() -> None:
    """Plain strings in a sequence become text parts; parts stay as they are; a list becomes a tuple."""
    image = ImagePart(url="https://example.com/cat.jpg")
    document = DocumentPart(data=PDF)
    assert user_content(["Look:", image, TextPart("and"), document]) == (
        TextPart("Look:"),
        image,
        TextPart("and"),
        document,
    )
    assert user_content((image,)) == (image,)
    assert user_content(["only text"]) == (TextPart("only text"),)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([1], "not int"),
        (["ok", {"type": "image"}], "not dict"),
        ({"text": "hi"}, "not dict"),
        (b"bytes", "not int"),
        (None, "not NoneType"),
    ],
)
def test_user_content_refuses_what_is_not_text_or_parts(given: Any, message: str) -> None:
    """Anything but a str or a sequence of str and parts is a TypeError saying what it was."""
    with pytest.raises(TypeError, match=message):
        user_content(given)


def test_user_content_refuses_an_empty_sequence() -> None:
    """A message of no parts cannot be sent: a ValueError at once."""
    with pytest.raises(ValueError, match="empty sequence"):
        user_content([])


@pytest.mark.parametrize("given", [[""], ["", TextPart("")]])
def test_user_content_refuses_only_empty_text(given: list[Any]) -> None:
    """Parts that are all empty text are no message either (Anthropic's body would have content []): a ValueError
    at once; one empty part beside content is kept."""
    with pytest.raises(ValueError, match="only empty text"):
        user_content(given)
    assert user_content(["", "hi"]) == (TextPart(""), TextPart("hi"))


def test_image_part_by_url_or_by_bytes() -> None:
    """An image is a URL (media type optional), or bytes with their media type (normalised to lower case)."""
    by_url = ImagePart(url="https://example.com/a.png")
    assert (by_url.url, by_url.data, by_url.media_type) == ("https://example.com/a.png", None, None)
    by_bytes = ImagePart(data=bytearray(PNG), media_type=" Image/PNG ")
    assert by_bytes.data == PNG
    assert type(by_bytes.data) is bytes
    assert by_bytes.media_type == "image/png"
    assert by_bytes.base64() == base64.b64encode(PNG).decode()
    assert by_bytes.data_url() == "data:image/png;base64," + base64.b64encode(PNG).decode()
    for media_type in ("image/jpeg", "image/gif", "image/webp"):
        assert ImagePart(data=PNG, media_type=media_type).media_type == media_type


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of url= or data="),
        ({"url": "https://x", "data": PNG, "media_type": "image/png"}, "exactly one of url= or data="),
        ({"data": PNG}, "needs its media_type"),
        ({"data": PNG, "media_type": "application/pdf"}, "'application/pdf' is not one of"),
        ({"url": "https://x", "media_type": "image/svg+xml"}, "'image/svg\\+xml' is not one of"),
        ({"url": "  "}, "url is empty"),
        ({"data": b"", "media_type": "image/png"}, "data is empty"),
    ],
)
def test_image_part_validation(fields: dict[str, Any], message: str) -> None:
    """An image has exactly one source, and bytes have a supported image media type."""
    with pytest.raises(ValueError, match=message):
        ImagePart(**fields)


def test_image_part_fields_of_the_wrong_type_are_type_errors() -> None:
    """A str as data, or a number as a URL, is a TypeError."""
    with pytest.raises(TypeError):
        ImagePart(data="not bytes", media_type="image/png")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ImagePart(url=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        TextPart(b"bytes")  # type: ignore[arg-type]


def test_document_part_is_a_pdf_by_bytes_or_url() -> None:
    """A document is a PDF: bytes (with an optional filename) or a URL; any other media type is refused."""
    document = DocumentPart(data=PDF, filename="report.pdf")
    assert (document.media_type, document.filename) == ("application/pdf", "report.pdf")
    assert document.data_url().startswith("data:application/pdf;base64,")
    assert DocumentPart(url="https://example.com/r.pdf").data is None
    with pytest.raises(ValueError, match="'text/plain' is not one of application/pdf"):
        DocumentPart(data=b"plain", media_type="text/plain")
    with pytest.raises(ValueError, match="exactly one of url= or data="):
        DocumentPart()
    with pytest.raises(ValueError, match="has no bytes"):
        DocumentPart(url="https://example.com/r.pdf").base64()


def test_parts_are_positional_only_for_text() -> None:
    """An image or a document names its source (``url=`` / ``data=``): a positional one is a TypeError."""
    with pytest.raises(TypeError):
        ImagePart("https://example.com/a.png")  # type: ignore[call-arg]


def test_a_parts_repr_shows_the_size_of_its_bytes_not_the_bytes() -> None:
    """A repr (in a log line, an error) never holds the image itself."""
    image = ImagePart(data=PNG * 1000, media_type="image/png")
    assert repr(image) == f"ImagePart(url=None, data=<{len(PNG) * 1000} bytes>, media_type='image/png')"
    assert "PDF" not in repr(DocumentPart(data=PDF))


def test_parts_are_values() -> None:
    """Equal parts are equal and hash alike; they are frozen."""
    assert ImagePart(data=PNG, media_type="image/png") == ImagePart(data=bytearray(PNG), media_type="image/png")
    assert len({TextPart("a"), TextPart("a")}) == 1
    with pytest.raises(AttributeError):
        TextPart("a").text = "b"  # type: ignore[misc]


def test_content_text_joins_the_text_parts() -> None:
    """The text of parts is their text parts joined by newlines; images and documents add nothing."""
    parts = (TextPart("Look at"), ImagePart(url="https://x/a.png"), TextPart("this."), DocumentPart(data=PDF))
    assert content_text(parts) == "Look at\nthis."
    assert content_text("plain") == "plain"
    assert content_text((ImagePart(url="https://x/a.png"),)) == ""
    assert UserMessage(parts).text == "Look at\nthis."
    assert UserMessage("hi").text == "hi"
    assert ToolResultMessage("c1", "shoot", parts).text == "Look at\nthis."


def test_tool_content_takes_parts_and_leaves_the_rest_to_json() -> None:
    """A part, or a list or tuple holding one, is parts; a list of strings alone or anything else is not."""
    image = ImagePart(data=PNG, media_type="image/png")
    assert tool_content(image) == (image,)
    assert tool_content(["Here it is:", image]) == (TextPart("Here it is:"), image)
    assert tool_content((image, TextPart("x"))) == (image, TextPart("x"))
    assert tool_content(TextPart("t")) == (TextPart("t"),)
    assert tool_content(["a", "b"]) is None
    assert tool_content([]) is None
    assert tool_content({"image": "no"}) is None
    assert tool_content([image, 3]) is None  # not all text or parts: JSON, as any other value


def test_unsupported_content_error_is_a_model_error_that_names_the_part() -> None:
    """The error says which provider, which part (never its bytes) and why; it carries them as attributes."""
    part = DocumentPart(data=PDF)
    error = UnsupportedContentError(part, provider="acme", reason="no documents here")
    assert isinstance(error, ModelError)
    assert str(error) == f"acme: cannot send a document (application/pdf, {len(PDF)} bytes): no documents here"
    assert (error.part, error.provider, error.reason) == (part, "acme", "no documents here")
    url_error = UnsupportedContentError(ImagePart(url="https://x/a.png"), provider="p", reason="r")
    assert str(url_error) == "p: cannot send an image by URL: r"
