"""Content parts: what a user's message or a tool's result may hold besides text.

A user's input is a string, or a sequence of strings and parts (each plain
string is a :class:`TextPart`)::

    await session.ask(["What is in this picture?", ImagePart(data=png, media_type="image/png")])

Each model maps the parts to its provider's format when it builds a
request, and raises :class:`~agents.UnsupportedContentError` before
sending anything if its provider cannot take one of them.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Final, TypeAlias

import attrs

IMAGE_MEDIA_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""The image types every provider we talk to takes."""
DOCUMENT_MEDIA_TYPES: Final = frozenset({"application/pdf"})
"""The document types: PDF."""
TEXT_SEPARATOR: Final = "\n"
"""What joins the text parts of a content into one string (for hooks, word counts, placeholders)."""


def _to_bytes(value: bytes | bytearray | memoryview | None) -> bytes | None:
    # bytearray and memoryview are bytes too; anything else is left for the validator to refuse.
    return bytes(value) if isinstance(value, bytearray | memoryview) else value


def _lower(value: str | None) -> str | None:
    return value.strip().lower() if isinstance(value, str) else value


def _lower_str(value: str) -> str:
    return value.strip().lower() if isinstance(value, str) else value


def _bytes_repr(value: bytes | None) -> str:
    # The bytes of an image in a repr (and an error message, a log line) say nothing and cost a lot.
    return "None" if value is None else f"<{len(value)} bytes>"


_optional_str = attrs.validators.optional(attrs.validators.instance_of(str))


@attrs.frozen
class TextPart:
    """Text, among other parts.

    A plain ``str`` in a sequence of parts is one: ``["Look:", image]`` is
    ``(TextPart("Look:"), image)``.
    """

    text: str = attrs.field(validator=attrs.validators.instance_of(str))


class _Source:
    """What an image and a document share: a URL, or bytes with their media type."""

    __slots__ = ()

    url: str | None
    data: bytes | None
    media_type: str | None

    def base64(self) -> str:
        """The bytes as base64 text (what a provider's JSON carries).

        Raises:
            ValueError: the part is given by URL.
        """
        if self.data is None:
            raise ValueError(f"{type(self).__name__} is given by URL: it has no bytes")
        return base64.b64encode(self.data).decode("ascii")

    def data_url(self) -> str:
        """The bytes as a ``data:`` URL (``data:image/png;base64,...``).

        Raises:
            ValueError: the part is given by URL.
        """
        return f"data:{self.media_type};base64,{self.base64()}"


def _check_source(part: ImagePart | DocumentPart, allowed: frozenset[str]) -> None:
    name = type(part).__name__
    if (part.url is None) == (part.data is None):
        raise ValueError(f"{name} takes exactly one of url= or data=")
    if part.url is not None and not part.url.strip():
        raise ValueError(f"{name}: url is empty")
    if part.data is not None:
        if not part.data:
            raise ValueError(f"{name}: data is empty")
        if part.media_type is None:
            raise ValueError(f"{name}(data=...) needs its media_type, one of {', '.join(sorted(allowed))}")
    if part.media_type is not None and part.media_type not in allowed:
        raise ValueError(f"{name}: media_type {part.media_type!r} is not one of {', '.join(sorted(allowed))}")


@attrs.frozen(kw_only=True)
class ImagePart(_Source):
    """An image: by URL, or its bytes with their media type.

    Example::

        ImagePart(url="https://example.com/cat.jpg")
        ImagePart(data=await trio.Path("chart.png").read_bytes(), media_type="image/png")

    Raises:
        ValueError: neither or both of ``url`` and ``data``; empty; ``data`` without
            a ``media_type``; a media type other than PNG, JPEG, GIF or WebP.
        TypeError: a field of the wrong type.
    """

    url: str | None = attrs.field(default=None, validator=_optional_str)
    """Where the provider fetches it (``http(s)://``)."""
    data: bytes | None = attrs.field(
        default=None,
        converter=_to_bytes,  # bytearray and memoryview become bytes; the rest is validated
        validator=attrs.validators.optional(attrs.validators.instance_of(bytes)),
        repr=_bytes_repr,
    )
    """The image itself."""
    media_type: str | None = attrs.field(default=None, converter=_lower, validator=_optional_str)
    """``image/png``, ``image/jpeg``, ``image/gif`` or ``image/webp``: required with ``data``, optional with ``url``."""

    def __attrs_post_init__(self) -> None:
        _check_source(self, IMAGE_MEDIA_TYPES)


@attrs.frozen(kw_only=True)
class DocumentPart(_Source):
    """A document (a PDF): by URL, or its bytes.

    Example::

        DocumentPart(data=await trio.Path("report.pdf").read_bytes(), filename="report.pdf")

    Raises:
        ValueError: neither or both of ``url`` and ``data``; empty; a media type other than PDF.
        TypeError: a field of the wrong type.
    """

    url: str | None = attrs.field(default=None, validator=_optional_str)
    """Where the provider fetches it (``http(s)://``)."""
    data: bytes | None = attrs.field(
        default=None,
        converter=_to_bytes,
        validator=attrs.validators.optional(attrs.validators.instance_of(bytes)),
        repr=_bytes_repr,
    )
    """The document itself."""
    media_type: str = attrs.field(
        default="application/pdf", converter=_lower_str, validator=attrs.validators.instance_of(str)
    )
    """``application/pdf``, the one document type."""
    filename: str | None = attrs.field(default=None, validator=_optional_str)
    """Its name, if it has one (OpenAI's ``filename``, Anthropic's ``title``)."""

    def __attrs_post_init__(self) -> None:
        _check_source(self, DOCUMENT_MEDIA_TYPES)


ContentPart: TypeAlias = TextPart | ImagePart | DocumentPart
"""One part of a user's message or a tool's result."""

UserContent: TypeAlias = str | Sequence[str | ContentPart]
"""What ``Session.run`` and ``Session.ask`` take: text, or text and parts (a plain ``str`` item is a text part)."""

Content: TypeAlias = str | tuple[ContentPart, ...]
"""Content as history holds it: a string, or a tuple of parts."""

_PARTS: Final = (TextPart, ImagePart, DocumentPart)
_ITEMS: Final = (str, *_PARTS)


def user_content(content: UserContent) -> Content:
    """``content`` as history holds it: a string as it is, a sequence as a tuple of parts.

    Raises:
        TypeError: ``content`` is neither a string nor a sequence, or an item is not a string or a part.
        ValueError: an empty sequence, or one of empty text parts alone (a message of no parts cannot be sent,
            and providers drop or refuse empty text).
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, Sequence):
        raise TypeError(f"user input is a str or a sequence of str and content parts, not {type(content).__name__}")
    parts = tuple(_part(item) for item in content)
    if not parts:
        raise ValueError("user input is an empty sequence: give a str or at least one content part")
    if all(isinstance(part, TextPart) and not part.text for part in parts):
        raise ValueError("user input holds only empty text: give some text or at least one image or document")
    return parts


def _part(item: object) -> ContentPart:
    if isinstance(item, str):
        return TextPart(item)
    if isinstance(item, _PARTS):
        return item
    raise TypeError(f"a content part is a str, TextPart, ImagePart or DocumentPart, not {type(item).__name__}")


def tool_content(value: Any) -> tuple[ContentPart, ...] | None:
    """A tool's return value as parts, if it is a part or a list or tuple holding one (else ``None``).

    A list of strings alone is not: it is JSON, as before parts existed. A value with a
    ``content_parts()`` method (``agents.mcp.MCPResult``) gives what that returns, if anything.
    """
    content_parts = getattr(value, "content_parts", None)
    if callable(content_parts):
        given = content_parts()
        return tuple(given) if given else None
    if isinstance(value, _PARTS):
        return (value,)
    if isinstance(value, list | tuple) and any(isinstance(item, _PARTS) for item in value):
        if all(isinstance(item, _ITEMS) for item in value):
            return tuple(_part(item) for item in value)
    return None


def content_text(content: Content) -> str:
    """The text of ``content``: a string as it is, the text parts of parts joined by newlines."""
    if isinstance(content, str):
        return content
    return TEXT_SEPARATOR.join(part.text for part in content if isinstance(part, TextPart))


def describe_part(part: object) -> str:
    """A part in a few words, for an error message: ``"an image by URL"``, ``"a PDF document of 1234 bytes"``."""
    if isinstance(part, TextPart):
        return "a text part"
    if isinstance(part, ImagePart | DocumentPart):
        kind = "an image" if isinstance(part, ImagePart) else "a document"
        if part.data is None:
            return f"{kind} by URL"
        return f"{kind} ({part.media_type}, {len(part.data)} bytes)"
    return f"a {type(part).__name__}"


TOOL_RESULT_PLACEHOLDER: Final = "[the tool returned {kind}, not shown: tool results here are text only]"
"""What stands, for a provider whose tool results are text only, in place of each image or document."""


def text_only(content: Content) -> str:
    """``content`` for a provider that takes only text in a tool result: its text parts, and a placeholder
    for each image or document."""
    if isinstance(content, str):
        return content
    return TEXT_SEPARATOR.join(
        part.text
        if isinstance(part, TextPart)
        else TOOL_RESULT_PLACEHOLDER.format(kind="an image" if isinstance(part, ImagePart) else "a document")
        for part in content
    )
