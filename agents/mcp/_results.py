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

    Images the model can take also go to it as images (:meth:`content_parts`),
    where its provider allows images in tool results.
    """

    parts: tuple[str | dict[str, Any], ...]
    """Each content block in order: text as a ``str``; anything else as a dict with its ``type``
    (``image``, ``audio``, ``resource``, ``resource_link``), its media type and its data
    (``data``, base64, for images and audio; ``text`` or ``blob`` for a resource)."""
    structured: Any
    """The server's ``structuredContent`` (``None`` if it sent none)."""

    def __new__(cls, text: str, parts: tuple[str | dict[str, Any], ...] = (), structured: Any = None) -> MCPResult:
        result = super().__new__(cls, text)
        result.parts = parts
        result.structured = structured
        return result

    def content_parts(self) -> tuple[ContentPart, ...]:
        """What the model is sent when the result holds images it can take (PNG, JPEG, GIF, WebP): the
        text, then each image as an :class:`~agents.ImagePart`; ``()`` (the text alone) otherwise.

        A provider whose tool results are text only sends the text and a placeholder per image.
        """
        images = [
            part
            for part in self.parts
            if isinstance(part, dict) and part.get("type") == "image" and part.get("media_type") in IMAGE_MEDIA_TYPES
        ]
        if not images:
            return ()
        texts = [part for part in self.parts if isinstance(part, str)]
        built: list[ContentPart] = [TextPart(_TEXT_JOIN.join(texts))] if texts else []
        for image in images:
            try:
                built.append(ImagePart(data=base64.b64decode(image["data"]), media_type=image["media_type"]))
            except (ValueError, TypeError):  # data that is not base64: the placeholder in the text stays
                return ()
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
    texts: list[str] = []
    parts: list[str | dict[str, Any]] = []
    plain = True
    for block in content:
        if isinstance(block, types.TextContent):
            texts.append(block.text)
            parts.append(block.text)
            continue
        plain = False
        if isinstance(block, types.ImageContent | types.AudioContent):
            texts.append(f"[{block.type}: {block.mime_type}, {_size(block.data)}]")
            parts.append({"type": block.type, "media_type": block.mime_type, "data": block.data})
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            media = resource.mime_type or "unknown type"
            if isinstance(resource, types.TextResourceContents):
                texts.append(f"[resource {resource.uri} ({media})]\n{resource.text}")
                parts.append({"type": "resource", "uri": resource.uri, "media_type": media, "text": resource.text})
            else:
                texts.append(f"[resource {resource.uri}: {media}, {_size(resource.blob)}]")
                parts.append({"type": "resource", "uri": resource.uri, "media_type": media, "blob": resource.blob})
        elif isinstance(block, types.ResourceLink):
            about = f": {block.description}" if block.description else ""
            texts.append(f"[resource link {block.name} <{block.uri}>{about}]")
            parts.append({"type": "resource_link", "uri": block.uri, "name": block.name, "media_type": block.mime_type})
        else:  # a content type newer than this module
            kind = getattr(block, "type", type(block).__name__)
            texts.append(f"[{kind} content]")
            parts.append({"type": kind, "value": block.model_dump(mode="json", by_alias=True)})
    return texts, parts, plain


def _size(base64_data: str) -> str:
    size = len(base64_data) * 3 // 4 - base64_data[-2:].count("=")
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"
