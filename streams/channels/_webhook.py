"""WebhookChannel: chat messages over plain HTTP POSTs, served by Hypercorn's Trio worker."""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.routing import Route

from agents._json import loads_untrusted
from runtime import ClosedBusError, InboundMessage, PublishTimeoutError

from .._error_shape import JSONResponse, error_response, json_errors
from .._hypercorn import serve_app
from .._requests import (
    Exposure,
    ExposureGuard,
    RequestRejected,
    bearer_token_matches,
    check_bind,
    check_positive,
    check_token,
    read_body,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from starlette.requests import Request

    from runtime import MessageBus, OutboundMessage

logger = logging.getLogger("streams.webhook")

MAX_PROGRESS: Final = 100
"""Progress notes kept per waiting request; later ones are dropped."""


@attrs.frozen
class WebhookStatistics:
    """What :meth:`WebhookChannel.statistics` returns."""

    accepted: int
    """Messages published to the bus."""
    rejected: int
    """Requests answered with an error status (4xx or 5xx)."""
    publishing: int
    """Requests waiting for room on the bus now."""
    pending: int
    """Requests waiting for their reply now (``wait_for_response``)."""
    unclaimed: int
    """Replies that arrived with no request waiting for them (202 requests, timed out or gone)."""


@attrs.define(eq=False)
class _Waiter:
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: OutboundMessage | None = None
    progress: list[str] = attrs.field(factory=list)


class _Rejected(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class WebhookChannel:
    """A :class:`runtime.Channel` that takes chat messages as ``POST /messages`` requests.

    The body is JSON ``{"chat_id": str, "text": str, "wait_for_response":
    bool}``. The answer is ``202 {"message_id"}`` once the message is on the
    bus, or with ``wait_for_response`` ``200 {"message_id", "reply", "kind",
    "progress"}`` once the agent replied. Errors are JSON ``{"error": {"type",
    "message"}}`` (every type is in PROTOCOL.md): 400 ``bad_request`` (a
    Content-Length that is not a number, under an ASGI server that lets it
    through: Hypercorn answers it with an empty 400 first), 401 ``unauthorized`` (``secret``
    set and no matching ``Authorization: Bearer``, the scheme in any case),
    403 (an ``Origin`` or ``Host`` not allowed), 408 (the body took over
    ``body_timeout`` seconds), 413 ``too_large`` (body over ``max_body``
    bytes), 415 (a body not sent as ``application/json``), 422 ``bad_json``
    (not JSON, or nested too deep) and ``bad_request`` (not the object
    above), 503 ``bus_full`` (no room on the bus within ``publish_timeout``
    seconds) and ``shutting_down``, 504 ``no_reply`` (no reply within
    ``response_timeout`` seconds).

    It is protected as ``streams.open_server`` is, with the same options:
    ``allowed_origins`` (none by default: same-origin and non-browser
    clients only), ``allowed_hosts`` (the loopback names when bound to
    loopback), ``write_timeout`` (a client that reads nothing for that long
    is disconnected), ``backlog``, and a non-loopback ``host`` needs a
    ``secret`` or ``allow_unauthenticated_remote=True``
    (:class:`~streams.UnsafeBindError` otherwise). An empty ``secret``, or one
    with spaces, is refused with ``ValueError``, and so is a ``max_body``,
    ``backlog`` or timeout that is not above zero (``graceful_timeout``: below
    zero).

    Hypercorn runs inside ``run``'s own nursery. Cancelling ``run`` first
    answers every request still waiting on the bus with 503, then stops
    Hypercorn (at most ``graceful_timeout`` seconds for responses in flight).

    Example::

        async with open_runtime() as runtime, open_gateway(runtime, agent, [WebhookChannel(port=8080)]) as gw:
            await gw.wait_ready("webhook")
            await trio.sleep_forever()
    """

    def __init__(
        self,
        *,
        name: str = "webhook",
        host: str = "127.0.0.1",
        port: int = 0,
        secret: str | None = None,
        max_body: int = 64 * 1024,
        publish_timeout: float = 2.0,
        response_timeout: float = 60.0,
        graceful_timeout: float = 1.0,
        allowed_origins: Iterable[str] = (),
        allowed_hosts: Iterable[str] | None = None,
        write_timeout: float = 10.0,
        body_timeout: float = 10.0,
        backlog: int = 1024,
        allow_unauthenticated_remote: bool = False,
    ) -> None:
        check_positive(
            max_body=max_body,
            publish_timeout=publish_timeout,
            response_timeout=response_timeout,
            write_timeout=write_timeout,
            body_timeout=body_timeout,
            backlog=backlog,
        )
        if not graceful_timeout >= 0:
            raise ValueError(f"graceful_timeout must be 0 or more, not {graceful_timeout!r}")
        check_token(secret, "the secret")
        check_bind(
            host,
            authenticated=secret is not None,
            allow_unauthenticated_remote=allow_unauthenticated_remote,
            what="a secret",
        )
        self.name = name
        self.host = host
        self.port = port
        """The port requested; once ``run`` has started, the port really listened on."""
        self.secret = secret
        self.max_body = max_body
        self.publish_timeout = publish_timeout
        self.response_timeout = response_timeout
        self.graceful_timeout = graceful_timeout
        self.allowed_origins = tuple(allowed_origins)
        self.allowed_hosts = None if allowed_hosts is None else tuple(allowed_hosts)
        self.write_timeout = write_timeout
        self.body_timeout = body_timeout
        self.backlog = backlog
        self.allow_unauthenticated_remote = allow_unauthenticated_remote
        self._bus: MessageBus | None = None
        self._pending: dict[str, _Waiter] = {}
        self._request_scopes: set[trio.CancelScope] = set()
        self._closing = False
        self._accepted = 0
        self._rejected = 0
        self._publishing = 0
        self._unclaimed = 0
        self.app = json_errors(Starlette(routes=[Route("/messages", self._handle, methods=["POST"])]))
        """The ASGI app (served by ``run``)."""

    def statistics(self) -> WebhookStatistics:
        """The counters, at any time."""
        return WebhookStatistics(self._accepted, self._rejected, self._publishing, len(self._pending), self._unclaimed)

    async def run(self, bus: MessageBus, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the port with ``task_status.started(port)`` once listening."""
        if self._bus is not None:
            raise RuntimeError(f"channel {self.name!r} is already running")
        check_bind(
            self.host,
            authenticated=self.secret is not None,
            allow_unauthenticated_remote=self.allow_unauthenticated_remote,
            what="a secret",
        )
        exposure = Exposure(self.host, allowed_origins=self.allowed_origins, allowed_hosts=self.allowed_hosts)
        app = ExposureGuard(self.app, exposure, self._count_refusal)
        self._bus = bus
        self._closing = False
        outbound = bus.outbound(self.name)
        config = Config()
        config.bind = [f"{self.host}:{self.port}"]
        config.graceful_timeout = self.graceful_timeout
        config.backlog = self.backlog
        config.errorlog = logger
        config.accesslog = None
        shutdown = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver, outbound, name=f"{self.name} deliver")
                try:
                    # serve_app is shielded (cancelling ``run`` cannot kill a request
                    # handler before it has answered) and bounds its own shutdown.
                    serving = functools.partial(serve_app, app, config, shutdown, write_timeout=self.write_timeout)
                    binds: list[str] = await nursery.start(serving)
                    self.port = int(binds[0].rsplit(":", 1)[1])
                    task_status.started(self.port)
                    await trio.sleep_forever()
                finally:
                    # Synchronous, so it runs even while ``run`` is being cancelled.
                    self._closing = True
                    for scope in self._request_scopes:
                        scope.cancel()  # blocked publishes and waits answer 503
                    shutdown.set()  # Hypercorn stops listening, then drains
        finally:
            self._bus = None

    async def _deliver(self, outbound: trio.MemoryReceiveChannel[OutboundMessage]) -> None:
        async for message in outbound:
            waiter = self._pending.get(message.reply_to) if message.reply_to is not None else None
            if waiter is None or waiter.done.is_set():
                if message.kind in ("reply", "error"):
                    self._unclaimed += 1
                continue
            if message.kind in ("reply", "error"):
                waiter.reply = message
                waiter.done.set()
            elif message.kind == "progress" and len(waiter.progress) < MAX_PROGRESS:
                waiter.progress.append(message.text)

    def _count_refusal(self) -> None:
        self._rejected += 1

    @contextmanager
    def _cancelled_on_shutdown(self) -> Iterator[trio.CancelScope]:
        scope = trio.CancelScope()
        if self._closing:
            scope.cancel()
        self._request_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._request_scopes.discard(scope)

    async def _handle(self, request: Request) -> JSONResponse:
        try:
            return await self._accept(request)
        except _Rejected as rejected:
            self._rejected += 1
            return error_response(rejected.status, rejected.kind, str(rejected))

    async def _accept(self, request: Request) -> JSONResponse:
        bus = self._bus
        if self._closing or bus is None:
            raise _Rejected(503, "shutting_down", "shutting down")
        self._check_auth(request)
        chat_id, text, wait = self._parse(await self._read_body(request))
        message = InboundMessage(self.name, chat_id, text)
        waiter = _Waiter()
        if wait:  # registered before publishing: the reply may come before publish returns
            self._pending[message.message_id] = waiter
        try:
            await self._publish(bus, message)
            if not wait:
                return JSONResponse({"message_id": message.message_id}, status_code=202)
            gone = await self._wait_for_reply(request, waiter)
            reply = waiter.reply
            if reply is not None:
                body = {"message_id": message.message_id, "reply": reply.text, "kind": reply.kind}
                return JSONResponse({**body, "progress": waiter.progress})
            if self._closing:
                raise _Rejected(503, "shutting_down", "shutting down")
            if gone:
                raise _Rejected(499, "client_closed", "client closed the request")  # nobody reads it
            raise _Rejected(504, "no_reply", f"no reply within {self.response_timeout}s")
        finally:
            self._pending.pop(message.message_id, None)

    def _check_auth(self, request: Request) -> None:
        if not bearer_token_matches(request, None if self.secret is None else self.secret.encode()):
            raise _Rejected(401, "unauthorized", "missing or wrong bearer token")

    async def _read_body(self, request: Request) -> bytes:
        try:
            return await read_body(request, limit=self.max_body, timeout=self.body_timeout)
        except RequestRejected as rejected:
            raise _Rejected(rejected.status, rejected.kind, str(rejected)) from None

    @staticmethod
    def _parse(body: bytes) -> tuple[str, str, bool]:
        try:
            data: Any = loads_untrusted(body)
        except ValueError as exc:  # UnicodeDecodeError and a body nested too deep too
            raise _Rejected(422, "bad_json", f"body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise _Rejected(422, "bad_json", "body must be a JSON object")
        chat_id, text, wait = data.get("chat_id"), data.get("text"), data.get("wait_for_response", False)
        if not isinstance(chat_id, str) or not chat_id:
            raise _Rejected(422, "bad_request", '"chat_id" must be a non-empty string')
        if not isinstance(text, str):
            raise _Rejected(422, "bad_request", '"text" must be a string')
        if not isinstance(wait, bool):
            raise _Rejected(422, "bad_request", '"wait_for_response" must be a boolean')
        return chat_id, text, wait

    async def _publish(self, bus: MessageBus, message: InboundMessage) -> None:
        # No lock is held here (ironclaw #905): shutdown cancels this wait through its scope.
        published = False
        self._publishing += 1
        try:
            with self._cancelled_on_shutdown() as scope:
                published = await bus.publish_inbound(message, policy=self.publish_timeout)
        except PublishTimeoutError:
            raise _Rejected(503, "bus_full", f"no room on the bus within {self.publish_timeout}s") from None
        except ClosedBusError:
            raise _Rejected(503, "shutting_down", "shutting down") from None
        finally:
            self._publishing -= 1
        if scope.cancelled_caught:
            raise _Rejected(503, "shutting_down", "shutting down")
        if not published:
            raise _Rejected(503, "bus_full", "the bus dropped the message")
        self._accepted += 1

    async def _wait_for_reply(self, request: Request, waiter: _Waiter) -> bool:
        """Wait for the reply, the timeout, shutdown or the client going away; True if the client went."""
        gone = False

        async def watch_disconnect(cancel_scope: trio.CancelScope) -> None:
            nonlocal gone
            while (await request.receive())["type"] != "http.disconnect":
                pass
            gone = True
            cancel_scope.cancel()

        with self._cancelled_on_shutdown():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_disconnect, nursery.cancel_scope)
                with trio.move_on_after(self.response_timeout):
                    await waiter.done.wait()
                nursery.cancel_scope.cancel()
        return gone
