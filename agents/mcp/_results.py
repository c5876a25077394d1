"""What an MCP tool's result becomes: the text the model reads, and the parts for the program."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Final

import mcp_types as types

from .._content import IMAGE_MEDIA_TYPES, ContentPart, ImagePart, TextPart
from ._exceptions import MCPToolError

if TYPE_CHECKING:
    from collections.abc import Sequence

_TEXT_JOIN: Final = "\n"


class MCPResult(str):
    """An MCP tool's result that holds more than plain text.

    It *is* the text the model reads (a ``str``): the text parts, an embedded
    text resource with its URI, and a short placeholder for each image, audio
    clip, binary resource or resource link (``[image: image/png, 1.2 kB]``),
    never their bytes. The rest is kept for the program, which sees this
    value in ``ToolCallFinished.result`` and ``RunResult.tool_calls``.

    Images the model can take go to it as images in place of their
    placeholders (:meth:`content_parts`), where its provider allows images in
    tool results; the rest of the text goes beside them.
    """

    parts: tuple[str | dict[str, Any], ...]
    """Each content block in order: text as a ``str``; anything else as a dict with its ``type``
    (``image``, ``audio``, ``resource``, ``resource_link``), its media type and its data
    (``data``, base64, for images and audio; ``text`` or ``blob`` for a resource; ``name`` and
    ``description`` for a link)."""
    structured: Any
    """The server's ``structuredContent`` (``None`` if it sent none)."""

    def __new__(cls, text: str, parts: tuple[str | dict[str, Any], ...] = (), structured: Any = None) -> MCPResult:
        result = super().__new__(cls, text)
        result.parts = parts
        result.structured = structured
        return result

    def content_parts(self) -> tuple[ContentPart, ...]:
        """What the model is sent when the result holds images it can take (PNG, JPEG, GIF, WebP): the
        text as ``str()`` shows it, in order, with each of those images as an :class:`~agents.ImagePart`
        where its placeholder was; ``()`` (the text alone) otherwise.

        A provider whose tool results are text only sends the text and a placeholder per image.
        """
        built: list[ContentPart] = []
        texts: list[str] = []
        for part in self.parts:
            if isinstance(part, dict) and part.get("type") == "image" and part.get("media_type") in IMAGE_MEDIA_TYPES:
                try:
                    image = ImagePart(data=base64.b64decode(part["data"]), media_type=part["media_type"])
                except (ValueError, TypeError):  # data that is not base64: the placeholder in the text stays
                    return ()
                if texts:
                    built.append(TextPart(_TEXT_JOIN.join(texts)))
                    texts = []
                built.append(image)
            else:
                texts.append(part if isinstance(part, str) else _describe(part))
        if not built:  # no image it can take: the text alone
            return ()
        if texts:
            built.append(TextPart(_TEXT_JOIN.join(texts)))
        return tuple(built)

    def __reduce__(self) -> tuple[Any, ...]:
        return (MCPResult, (str(self), self.parts, self.structured))


def to_value(server: str, tool: str, result: types.CallToolResult) -> str:
    """The value of a tool call: plain text as a ``str``, anything more as an :class:`MCPResult`.

    Raises:
        MCPToolError: the result is an error (``isError``): its text is the message the model sees.
    """
    texts, parts, plain = _render(result.content)
    text = _TEXT_JOIN.join(texts)
    if result.is_error:
        raise MCPToolError(server, tool, text or f"the tool {tool!r} failed (the server gave no message)")
    structured = result.structured_content
    if structured is not None and not text:
        text = json.dumps(structured, ensure_ascii=False)
    if plain and structured is None:
        return text
    return MCPResult(text, tuple(parts), structured)


def _render(content: Sequence[types.ContentBlock]) -> tuple[list[str], list[str | dict[str, Any]], bool]:
    """The texts the model reads, the parts kept, and whether all of it was plain text."""
    parts: list[str | dict[str, Any]] = []
    plain = True
    for block in content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
            continue
        plain = False
        if isinstance(block, types.ImageContent | types.AudioContent):
            parts.append({"type": block.type, "media_type": block.mime_type, "data": block.data})
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            media = resource.mime_type or "unknown type"
            if isinstance(resource, types.TextResourceContents):
                parts.append({"type": "resource", "uri": resource.uri, "media_type": media, "text": resource.text})
            else:
                parts.append({"type": "resource", "uri": resource.uri, "media_type": media, "blob": resource.blob})
        elif isinstance(block, types.ResourceLink):
            parts.append(
                {
                    "type": "resource_link",
                    "uri": block.uri,
                    "name": block.name,
                    "media_type": block.mime_type,
                    "description": block.description,
                }
            )
        else:  # a content type newer than this module
            kind = getattr(block, "type", type(block).__name__)
            parts.append({"type": kind, "value": block.model_dump(mode="json", by_alias=True)})
    texts = [part if isinstance(part, str) else _describe(part) for part in parts]
    return texts, parts, plain


def _describe(part: dict[str, Any]) -> str:
    """What the model reads for a part that is not text: a placeholder, or a text resource with its URI."""
    kind = part["type"]
    if kind in ("image", "audio"):
        return f"[{kind}: {part['media_type']}, {_size(part['data'])}]"
    if kind == "resource":
        if "text" in part:
            return f"[resource {part['uri']} ({part['media_type']})]\n{part['text']}"
        return f"[resource {part['uri']}: {part['media_type']}, {_size(part['blob'])}]"
    if kind == "resource_link":
        about = f": {part['description']}" if part["description"] else ""
        return f"[resource link {part['name']} <{part['uri']}>{about}]"
    return f"[{kind} content]"


def _size(base64_data: str) -> str:
    size = len(base64_data) * 3 // 4 - base64_data[-2:].count("=")
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"
