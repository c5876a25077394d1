"""What every HTTP model shares: the client, retries with backoff, and typed errors."""

from __future__ import annotations

import abc
import contextlib
import email.utils
import functools
import hashlib
import ipaddress
import itertools
import json
import os
import time
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Final

import httpx
import trio

from .._exceptions import (
    AuthenticationError,
    BadRequestError,
    MalformedStreamError,
    MissingAPIKeyError,
    ModelConnectionError,
    ProviderError,
    RateLimitError,
    ServerError,
    describe,
)
from .._json import loads_untrusted
from .._messages import ErrorChunk
from .._retry import RetryPolicy
from ._sse import BROKEN_STREAM

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

    from .._exceptions import ModelError
    from .._messages import ModelChunk, ModelRequest

MAX_RETRY_AFTER: Final = 60.0
"""Longest wait a provider's Retry-After may ask for; longer asks fail at once."""


DEFAULT_RETRY: Final = RetryPolicy(maximum=8.0, max_attempts=4)
"""What a model retries with unless given a policy: 4 tries, waits up to 8 s."""

_SHAPE_ERRORS: Final = (AttributeError, TypeError, ValueError, KeyError, IndexError, OverflowError)
"""What a parser raises on valid JSON of the wrong shape (a string where an object goes, ``int("many")`` ...)."""


@asynccontextmanager
async def http_client(given: httpx.AsyncClient | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """``given`` as it is (not closed on exit), or a new client of our own, closed on exit.

    The runtime opens its shared client with this; a model used outside a
    runtime opens one per call (``request.http_client`` is then ``None``).

    Example::

        async with http_client(request.http_client) as client:
            response = await client.post(url, json=body)
    """
    if given is not None:
        yield given
        return
    async with httpx.AsyncClient(verify=_ssl_context(), timeout=httpx.Timeout(60.0, connect=10.0)) as client:
        yield client


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~100 ms; one context serves every client.
    return httpx.create_ssl_context()


@asynccontextmanager
async def stream_chunks(
    request: ModelRequest,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    provider: str,
    retry: RetryPolicy,
    parse: Callable[[httpx.Response], AsyncGenerator[ModelChunk, None]],
) -> AsyncIterator[AsyncIterator[ModelChunk]]:
    """What a provider's ``stream`` is: POST ``body``, then the chunks ``parse`` reads, all closed on every path.

    Retries 429, 5xx and connection errors as ``retry`` says, before any of
    the stream is read; other errors raise at once, and so do a
    ``Retry-After`` over :data:`MAX_RETRY_AFTER`, a URL that is not
    ``http(s)://``, and a header that is not valid HTTP (never quoted: it may be a key).

    Raises:
        ProviderError: (a subclass for each kind) the provider answered with an error.
        ModelConnectionError: the provider could not be reached, or the stream broke (a corrupt gzip too).
        MalformedStreamError: the stream is not the provider's protocol (a chunk ``parse`` cannot read, an
            answer that is not an event stream).
    """
    async with http_client(request.http_client) as client:
        response = await _send_with_retries(client, url, headers, body, provider, retry)
        try:
            async with contextlib.aclosing(_parsed(parse(response), provider)) as chunks:
                yield chunks
        except BROKEN_STREAM as exc:
            raise ModelConnectionError(f"{provider}: the stream broke: {describe(exc)}") from exc
        finally:
            await response.aclose()


async def _parsed(chunks: AsyncGenerator[ModelChunk, None], provider: str) -> AsyncGenerator[ModelChunk, None]:
    """``chunks``, with what their parser raised on an event of the wrong shape as :class:`MalformedStreamError`.

    Only the parser's own errors are mapped: the consumer's code between two
    chunks runs outside this generator, and the provider's error events are
    chunks, not exceptions.
    """
    async with contextlib.aclosing(chunks):
        while True:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except _SHAPE_ERRORS as exc:
                # The exception's text may quote what the model wrote: it is the sample, kept out of the summary.
                raise MalformedStreamError(
                    f"{provider}: an event of an unexpected shape ({type(exc).__name__})", str(exc)[:200]
                ) from exc
            yield chunk


async def _send_with_retries(
    client: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    provider: str,
    retry: RetryPolicy,
) -> httpx.Response:
    content = json.dumps(body).encode()
    for attempt in itertools.count():
        last = not retry.allows(attempt + 1)
        try:
            request = client.build_request("POST", url, headers={**headers, "content-type": "application/json"},
                                           content=content)  # fmt: skip
        except httpx.InvalidURL as exc:
            raise ModelConnectionError(f"{provider}: cannot send to {url}: {describe(exc)}") from exc
        except UnicodeEncodeError as exc:  # a header that is not ASCII; its text would quote it
            raise ModelConnectionError(f"{provider}: cannot send to {url}: a header is not ASCII") from exc
        try:
            response = await client.send(request, stream=True)
        except httpx.UnsupportedProtocol as exc:  # a URL without http(s)://: no retry makes one
            raise ModelConnectionError(f"{provider}: cannot send to {url}: {describe(exc)}") from exc
        except httpx.LocalProtocolError as exc:
            # Our own request is not valid HTTP: no retry fixes it, and the text would quote the header (a key).
            raise ModelConnectionError(f"{provider}: cannot send to {url}: the request is not valid HTTP") from exc
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.ConnectError) and is_loopback(url) and _refused(exc):
                # Nothing to wait for: a local server that is not running does not start by itself.
                hint = " (start it with `ollama serve`)" if provider == "ollama" else ""
                raise ModelConnectionError(
                    f"{provider}: nothing is listening at {url}; is the server running?{hint}"
                ) from exc
            if last:
                raise ModelConnectionError(f"{provider}: cannot reach {url}: {describe(exc)}") from exc
            await trio.sleep(retry.delay(attempt))
            continue
        if response.status_code == 200:
            kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if kind == "text/event-stream":
                return response
            try:  # e.g. a proxy that ignored "stream": an answer we cannot read as a stream
                body_read = await _read_body(response)
            finally:
                await response.aclose()
            # The body is only a sample: the content type already says what is wrong, read or not.
            sample = None if body_read is None else body_read[:200]
            raise MalformedStreamError(f"{provider}: expected text/event-stream, got {kind!r}", sample)
        try:
            error = await _error_of(response, provider)
        finally:
            await response.aclose()
        if not isinstance(error, RateLimitError | ServerError) or last:
            raise error
        if error.retry_after is None:
            await trio.sleep(retry.delay(attempt))
        elif error.retry_after > MAX_RETRY_AFTER:
            raise error
        else:  # as asked, but no sooner than the policy would: "Retry-After: 0" must not make a loop spin
            await trio.sleep(max(error.retry_after, retry.min_delay(attempt)))
    raise AssertionError("unreachable")  # pragma: no cover


async def _error_of(response: httpx.Response, provider: str) -> ProviderError:
    status = response.status_code
    message = error_message((await _read_body(response) or b"")[:65536])
    text = f"{provider}: HTTP {status}" + (f": {message}" if message else "")
    retry_after = _retry_after(response.headers.get("retry-after"))
    return provider_error(text, status=status, provider=provider, message=message, retry_after=retry_after)


def provider_error(
    text: str, *, status: int, provider: str, message: str | None, retry_after: float | None = None
) -> ProviderError:
    """The error for an HTTP ``status`` (or an error inside a stream that stands for one): a subclass of
    :class:`ProviderError` for each kind, as :class:`FallbackModel` and the retries tell them apart."""
    if status == 429:
        return RateLimitError(text, status=status, provider=provider, provider_message=message, retry_after=retry_after)
    if status >= 500:
        return ServerError(text, status=status, provider=provider, provider_message=message, retry_after=retry_after)
    kind: type[ProviderError]
    if status in (401, 403):
        kind = AuthenticationError
    elif status in (400, 404, 409, 413, 422):
        kind = BadRequestError
    else:
        kind = ProviderError
    return kind(text, status=status, provider=provider, provider_message=message)


async def _read_body(response: httpx.Response) -> bytes | None:
    """The whole body, decoded (gzip ...); ``None`` if it cannot be read (the connection broke, a corrupt gzip).

    Not ``aread``: a decoding error there abandons the generators under it, and each warns when collected.
    A read error rises through every one of them and ends them.
    """
    if response.is_stream_consumed:  # read already (a transport that reads whole bodies): decoded in memory
        return response.content
    try:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
        decoder = response._get_content_decoder()
        return decoder.decode(raw) + decoder.flush()
    except httpx.HTTPError:
        return None


class HTTPModel(abc.ABC):
    """What every HTTP model shares: its settings, its ``__repr__``, and ``stream`` (POST, retries, parse).

    A provider names itself and its endpoint in class attributes, and writes
    :meth:`headers`, :meth:`body` and :meth:`parse`. One that answers
    ``output_mode="native"`` sets ``native_output = True``.

    A model needs an API key unless its base URL is on this machine
    (``localhost``, ``127.0.0.1``, ``[::1]``: Ollama, a local vLLM ...) or it
    was given one, an empty one included (``api_key=""``: a server that
    needs none). Without one, entering :meth:`stream` raises
    :class:`~agents.MissingAPIKeyError` naming the variable to set, and
    nothing is sent. A key that cannot be sent in a header (a line end left
    by a CRLF ``.env`` file, a space, a character that is not printable
    ASCII) is refused the same way, with an
    :class:`~agents.AuthenticationError` that does not quote it.

    ``provider`` and ``api_key_env`` are for a model string's provider that
    speaks another's API (``"groq:…"`` is an :class:`OpenAIChatModel` named
    ``groq`` that reads ``GROQ_API_KEY``); they default to the class's.
    """

    provider: str
    """The provider's name, as the user named it: in errors and in :attr:`name` (``"openai"``, ``"ollama"``)."""
    DEFAULT_BASE_URL: ClassVar[str]
    BASE_URL_ENV: ClassVar[str]
    """The environment variable that overrides ``DEFAULT_BASE_URL``."""
    API_KEY_ENV: ClassVar[str]
    """The environment variable the API key is read from when none is given."""
    PATH: ClassVar[str]
    """What is POSTed to, after the base URL."""
    native_output: ClassVar[bool] = False
    """Whether it answers ``output_mode="native"`` (``ModelRequest.output``) with the provider's own feature."""

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
        self.model = model
        if provider is not None:
            self.provider = provider
        self.api_key_env = api_key_env or self.API_KEY_ENV
        """The environment variable the key was read from (and is asked for when it is missing)."""
        self.base_url = (base_url or os.environ.get(self.BASE_URL_ENV) or self.DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get(self.api_key_env)
        self.retry = retry
        self.settings = settings
        # Decided once: the key and the URL are fixed from here on.
        self._key_error = self._check_key(from_env=api_key is None)

    def _check_key(self, *, from_env: bool) -> Callable[[], AuthenticationError] | None:
        """The error saying why the key cannot be used, if it cannot: missing where one is needed, or not
        sendable in a header (a new one for each call: one raised again would grow its traceback)."""
        key = self._api_key
        if not key:
            if not from_env or is_loopback(self.base_url):
                return None
            return functools.partial(
                MissingAPIKeyError,
                f"{self.provider}: no API key: set {self.api_key_env} (or pass api_key=...)",
                provider=self.provider,
                variable=self.api_key_env,
            )
        if key.isascii() and key.isprintable() and " " not in key:
            return None
        # Never quoted: the message reaches every watcher of the run. A CRLF .env file leaves a "\r".
        where = f" in {self.api_key_env}" if from_env else ""
        return functools.partial(
            AuthenticationError,
            f"{self.provider}: the API key{where} holds whitespace, a line end or a character that is not"
            " printable ASCII (a .env file with Windows line ends?); nothing was sent",
            status=401,
            provider=self.provider,
        )

    @property
    def name(self) -> str:
        """The model as a model string names it: ``"openai:gpt-4o-mini"``, ``"ollama:llama3.2"``."""
        return f"{self.provider}:{self.model}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r})"

    def stream(self, request: ModelRequest) -> AbstractAsyncContextManager[AsyncIterator[ModelChunk]]:
        """Send one request; its chunks stream until the block exits (which closes the response).

        Raises:
            MissingAPIKeyError: on entering, when the provider needs a key and there is none.
            AuthenticationError: on entering, when the key cannot be sent in a header (a line end, a space,
                a character that is not printable ASCII); the message does not quote it.
        """
        if self._key_error is not None:
            return _raise_on_enter(self._key_error())
        return stream_chunks(
            request,
            self.url(),
            headers=self.headers(request),
            body=self.body(request),
            provider=self.provider,
            retry=self.retry,
            parse=self.parse,
        )

    def url(self) -> str:
        """Where a request is POSTed: the base URL, then ``PATH`` (a provider whose path names the model
        writes its own)."""
        return self.base_url + self.PATH

    @abc.abstractmethod
    def headers(self, request: ModelRequest) -> dict[str, str]:
        """The headers of a request (the API key's among them, if there is one)."""

    @abc.abstractmethod
    def body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of a request."""

    @abc.abstractmethod
    def parse(self, response: httpx.Response) -> AsyncGenerator[ModelChunk, None]:
        """The chunks of a streamed answer."""


@asynccontextmanager
async def _raise_on_enter(error: ModelError) -> AsyncIterator[AsyncIterator[ModelChunk]]:
    raise error
    yield  # pragma: no cover  (makes this a generator)


def bearer_headers(api_key: str | None) -> dict[str, str]:
    """An SSE request's headers with ``Authorization: Bearer`` when there is a key (OpenAI's APIs)."""
    headers = {"accept": "text/event-stream"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL:  # not a URL at all: sending to it says so
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refused(exc: BaseException) -> bool:
    """Whether a connection error was a refusal (nothing listening), anywhere in its causes."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, ConnectionRefusedError):
            return True
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        pending.extend(cause for cause in (error.__cause__, error.__context__) if cause is not None)
    return False


def error_message(body: object) -> str | None:
    """The message of an error body, or ``None`` if it carries none: the one reader of that shape.

    Reads ``{"error": {"message": ...}}`` (OpenAI, Anthropic, and the
    ``streams`` server's one error shape), ``{"error": "..."}``, and an error
    object on its own (``{"message": ...}``). ``body`` is raw bytes or text
    (parsed as JSON; text that is not JSON is its own message, stripped, at
    most 500 characters) or an already parsed value.

    Example::

        error_message(b'{"error": {"type": "overloaded_error", "message": "Overloaded"}}')  # "Overloaded"
    """
    if isinstance(body, bytes | bytearray):
        body = bytes(body).decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            return text[:500] or None
    if not isinstance(body, dict):
        return None
    error = body.get("error", body)
    if isinstance(error, dict):
        message = error.get("message")
        return message if isinstance(message, str) and message else None
    return error if isinstance(error, str) and error else None


def digest(text: str, length: int) -> str:
    """``length`` hex digits of ``text``'s SHA-256: a provider's id made from another's (a lone surrogate
    encodes too: a model's id is any string)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def arguments_text(arguments: Mapping[str, Any] | str) -> str:
    """A past tool call's arguments as the JSON object text OpenAI-style APIs take back in the history.

    Text that is no JSON object (cut off at ``max_tokens``, or malformed: its call got an error result, which
    says so) is sent as ``{}``: vLLM, Moonshot and MiniMax parse every past call's arguments and refuse the
    whole request, every later request of the session too, as Anthropic's and Gemini's adapters already do.
    """
    if not isinstance(arguments, str):
        try:
            return json.dumps(arguments, allow_nan=False)
        except (ValueError, RecursionError):  # a mapping Gemini sent nested too deep, or holding NaN
            return "{}"
    try:
        parsed = loads_untrusted(arguments)  # NaN, 1e400 and deep nesting are no JSON a strict server takes
    except ValueError:
        return "{}"
    return arguments if isinstance(parsed, dict) else "{}"


def error_chunk(error: object) -> ErrorChunk:
    """An error the provider reported inside a stream (an ``error`` event, or an ``error`` in a chunk), with the
    HTTP status its kind stands for when it names one."""
    text = str(error).strip()[:500] if error is not None else ""
    return ErrorChunk("provider", error_message(error) or text or "the provider reported an error", _status_of(error))


_STATUS_OF_KIND: Final = {
    # Anthropic's error types (the same in a stream as in an HTTP error's body).
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
    # OpenAI's codes and types.
    "context_length_exceeded": 400,
    "invalid_api_key": 401,
    "insufficient_quota": 429,
    "rate_limit_exceeded": 429,
    "server_error": 500,
    # google.rpc.Code names (Gemini's "status").
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
"""The HTTP status an error's kind, as a provider names it inside a stream, stands for."""


def _status_of(error: object) -> int | None:
    """The HTTP status of an in-stream error: its numeric ``code`` (Gemini, llama.cpp), else the status its
    ``status``, ``type`` or ``code`` name stands for; ``None`` when it names none this knows."""
    if isinstance(error, str):
        try:
            error = json.loads(error)
        except (ValueError, RecursionError):
            return None
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    if type(code) is int and 400 <= code <= 599:
        return code
    for field in ("status", "type", "code"):
        status = _STATUS_OF_KIND.get(error[field]) if isinstance(error.get(field), str) else None
        if status is not None:
            return status
    return None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds, or an HTTP date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
