"""The one error shape of both HTTP servers: ``{"error": {"type": ..., "message": ...}}``, for every error.

The served runtime and the webhook channel answer their own errors in it;
:func:`json_errors` makes the rest say the same: Starlette's routing (404,
405, and an unknown WebSocket path, refused with a JSON 404 instead of a bare
403) and a bug (500 ``internal``, the traceback going to the log only).
PROTOCOL.md lists every type. Both servers answer JSON with :class:`JSONResponse`,
which no string can fail.
"""

from __future__ import annotations

import http
import json
from typing import TYPE_CHECKING, Any, Final

from starlette import responses
from starlette.exceptions import HTTPException
from starlette.websockets import WebSocket

from ._codec import utf8

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

MAX_MESSAGE: Final = 500
"""The most characters of an error's ``message`` (they may quote what the client sent)."""

_ROUTING: Final = {404: "not_found", 405: "method_not_allowed"}


class JSONResponse(responses.JSONResponse):
    """Starlette's ``JSONResponse``, but a lone surrogate in a string (a client's, a model's, a tool's text)
    is sent as its escape ``\\ud800`` (:func:`~streams._codec.utf8`) instead of failing the answer with a 500."""

    def render(self, content: Any) -> bytes:
        return utf8(json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")))


def error_json(kind: str, message: str, **extra: str | None) -> dict[str, dict[str, str | None]]:
    """``{"error": {"type": kind, "message": message, **extra}}``, ``message`` clipped to :data:`MAX_MESSAGE`
    characters (``extra``: what an error type adds, such as ``owner`` for ``session_elsewhere``)."""
    if len(message) > MAX_MESSAGE:
        message = f"{message[: MAX_MESSAGE - 1]}…"
    return {"error": {"type": kind, "message": message, **extra}}


def error_response(
    status: int,
    kind: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, str | None] | None = None,
) -> JSONResponse:
    """``status`` with the body :func:`error_json` makes."""
    return JSONResponse(
        error_json(kind, message, **(extra or {})), status_code=status, headers=dict(headers) if headers else None
    )


def json_errors(app: Starlette) -> Starlette:
    """Make ``app`` answer routing errors and bugs in the one shape; returns ``app``."""
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(Exception, _internal)  # Starlette re-raises it after answering: Hypercorn logs it
    app.router.default = _not_found
    return app


async def _http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    status = error.status_code
    if status == 404:
        message = f"no route {request.method} {request.url.path}"
    elif status == 405:
        allowed = {name.lower(): value for name, value in (error.headers or {}).items()}.get("allow", "")
        message = f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})"
    else:
        message = error.detail or http.HTTPStatus(status).phrase
    kind = _ROUTING.get(status, "bad_request" if status < 500 else "internal")
    return error_response(status, kind, message, headers=error.headers)


async def _internal(request: Request, error: Exception) -> Response:
    return error_response(500, "internal", "the server failed on this request; the error is in its log")


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        websocket = WebSocket(scope, receive, send)
        await websocket.send_denial_response(error_response(404, "not_found", f"no route {websocket.url.path}"))
        return
    raise HTTPException(404)
