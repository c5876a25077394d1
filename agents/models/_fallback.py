"""FallbackModel: the next model answers when one is unavailable, as long as nothing was streamed yet."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, ClassVar

import trio

from .._exceptions import (
    AgentDefinitionError,
    AuthenticationError,
    ModelConnectionError,
    ProviderError,
    RateLimitError,
    ServerError,
    describe,
)
from .._messages import ErrorChunk, ModelFallbackChunk, UsageChunk
from ._http import provider_error
from ._resolve import resolve_model

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from .._messages import ModelChunk, ModelRequest
    from ._protocol import Model


def model_name(model: Model) -> str:
    """A model's name for people: its ``name`` (``"openai:gpt-4o-mini"``), else its class's."""
    name = getattr(model, "name", None)
    return name if isinstance(name, str) else type(model).__name__


class FallbackModel:
    """Models tried in order: when one is unavailable before it has streamed anything, the next one answers.

    A model is unavailable when it raises one of ``fallback_on``, on
    entering its stream or before its first chunk, or when the first thing
    it streams is an error (:class:`~agents.ErrorChunk`) whose ``status``
    stands for one (Anthropic's ``overloaded_error`` after ``message_start``,
    an exhausted quota in a Responses stream). Usage reported before is no
    answer: it is passed on (it was billed), then the move. By default,
    ``fallback_on`` is a :class:`~agents.ModelConnectionError` (nothing reachable, the HTTP
    models having retried already; a local server not running fails at
    once), a :class:`~agents.RateLimitError` or :class:`~agents.ServerError`
    still there after the retries, and an :class:`~agents.AuthenticationError`
    (a wrong, expired or missing key: :class:`~agents.MissingAPIKeyError`).
    A bad key falls back too because, to the program running the agent, that
    model cannot answer now and the next one can: a fallback exists to keep
    answering, and the key problem is not hidden (see below). A
    :class:`~agents.BadRequestError` does not: the request itself was
    refused (a parameter, a context too long, an unknown model name), which
    the next model would most likely refuse too, and which is a mistake to
    fix rather than an outage to ride out. The last model's error is the
    call's error.

    Once a chunk has reached the consumer, the model answering is the one:
    an error after that ends the run like any model's, never switching
    silently halfway through an answer. A nested :class:`FallbackModel` is
    one model among the others: its own :class:`~agents.ModelFallbackChunk`
    passes through without committing to it, and when its last model fails
    too, the next one of this list is tried.

    Each move is visible: the stream yields a :class:`~agents.ModelFallbackChunk`
    (``failed``, ``error``, ``next``; the runtime's ``ModelFallback`` event)
    before the next model's answer, so the model that answered is the
    ``next`` of the last one, or the first model when there is none. A run
    whose first model answers streams nothing extra.

    Args:
        first: The model tried first: a model, or a model string (``"openai:gpt-4o-mini"``).
        *others: The models tried next, in order.
        fallback_on: The exceptions that mean "try the next one", exception classes in a tuple, list or any
            iterable (default :attr:`FALLBACK_ON`; e.g. ``(*FallbackModel.FALLBACK_ON, BadRequestError)`` to
            move on from a refused request too). Kept as a tuple.

    Raises:
        AgentDefinitionError: a model is neither a model nor a model string (see :func:`resolve_model`), or
            ``fallback_on`` is not exception classes.

    Example::

        model = FallbackModel("openai:gpt-4o-mini", "anthropic:claude-haiku-4-5", "ollama:llama3.2")
        agent = Agent(name="helper", model=model)
    """

    FALLBACK_ON: ClassVar[tuple[type[Exception], ...]] = (
        ModelConnectionError,
        RateLimitError,
        ServerError,
        AuthenticationError,
    )
    """What makes it move on by default: the model is unavailable, not the request wrong."""

    def __init__(
        self,
        first: Model | str,
        *others: Model | str,
        fallback_on: Iterable[type[Exception]] | None = None,
    ) -> None:
        self.models: tuple[Model, ...] = tuple(resolve_model(model) for model in (first, *others))
        """The models, in the order they are tried."""
        self.fallback_on: tuple[type[Exception], ...] = (
            self.FALLBACK_ON if fallback_on is None else _exception_classes(fallback_on)
        )
        """The exceptions that make it try the next model."""

    @property
    def name(self) -> str:
        """``"fallback(<first>, <next>, ...)"``, each model by its name."""
        return f"fallback({', '.join(model_name(model) for model in self.models)})"

    @property
    def native_output(self) -> bool:
        """Whether every one of its models has native structured output (any of them may answer)."""
        return all(getattr(model, "native_output", False) for model in self.models)

    def __repr__(self) -> str:
        return f"FallbackModel({', '.join(repr(model) for model in self.models)})"

    def stream(self, request: ModelRequest) -> _FallbackStream:
        """Answer ``request`` with the first model that is available."""
        return _FallbackStream(self, request)


def _exception_classes(fallback_on: Iterable[type[Exception]]) -> tuple[type[Exception], ...]:
    # A tuple, as isinstance needs it: a list would fail only at the first outage, as a TypeError.
    if isinstance(fallback_on, type | str) or not hasattr(fallback_on, "__iter__"):
        raise AgentDefinitionError(f"fallback_on must be exception classes, e.g. (ServerError,), not {fallback_on!r}")
    classes = tuple(fallback_on)
    for item in classes:
        if not (isinstance(item, type) and issubclass(item, Exception)):
            raise AgentDefinitionError(f"fallback_on must be exception classes, not {item!r}")
    return classes


class _FallbackStream:
    """One call of a :class:`FallbackModel`: its async context manager and its chunk iterator.

    A class rather than an async generator, so abandoning it never warns.
    Until a model's first chunk arrives, ``__anext__`` tries the models in
    turn; after it, it only passes that model's chunks on. A nested
    :class:`FallbackModel`'s own :class:`~agents.ModelFallbackChunk` is passed on
    without committing to it: it says that model is still looking for an answer.
    """

    __slots__ = ("_chunks", "_entered", "_failed", "_index", "_model", "_ready", "_request", "_trying")

    def __init__(self, model: FallbackModel, request: ModelRequest) -> None:
        self._model = model
        self._request = request
        self._index = 0
        self._entered: AbstractAsyncContextManager[AsyncIterator[ModelChunk]] | None = None
        """The stream of the model being tried, or answering; closed by ``__aexit__``."""
        self._trying: AsyncIterator[ModelChunk] | None = None
        """The chunks of the model being tried, entered, before its first answer's chunk."""
        self._chunks: AsyncIterator[ModelChunk] | None = None
        """The answering model's chunks, once it has sent its first one."""
        self._ready: collections.deque[ModelChunk] = collections.deque()
        """Chunks read while trying a model, to give before anything else: its usage, then its answer's first
        chunk or the fallback chunk that moves on."""
        self._failed: Exception | None = None
        """The call's error, raised once the usage read before it has been given."""

    async def __aenter__(self) -> _FallbackStream:
        # Entering a model's stream happens in __anext__, so a fallback is reported as it happens.
        await trio.lowlevel.checkpoint_if_cancelled()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool | None:
        entered, self._entered = self._entered, None
        if entered is None:
            return None
        return await entered.__aexit__(kind, error, traceback)

    def __aiter__(self) -> _FallbackStream:
        return self

    async def __anext__(self) -> ModelChunk:
        if self._ready:
            return self._ready.popleft()
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
        if self._chunks is not None:
            return await self._chunks.__anext__()
        await self._try_next()
        return self._ready.popleft()

    async def _try_next(self) -> None:
        """Read the current model until its answer's first chunk, or until it turns out unavailable (then the
        fallback chunk that moves on): into ``_ready``, after the usage it reported meanwhile.

        Usage is no answer: Anthropic reports the input tokens first (``message_start``), and an overloaded
        model says so only after. The usage still counts (it was billed), before the fallback.
        """
        if self._trying is None:
            try:
                stream = self._model.models[self._index].stream(self._request)
                self._trying = await stream.__aenter__()
            except Exception as exc:
                self._ready.append(self._fall_back(exc))
                return
            self._entered = stream
        chunks = self._trying
        while True:
            try:
                first = await chunks.__anext__()
            except StopAsyncIteration:  # it answered with nothing (its usage at most): that is its answer
                self._chunks = chunks
                if self._ready:
                    return
                raise
            except Exception as exc:
                # Closing the stream with the error maps what the model raised (an httpx error, say).
                entered, self._entered, self._trying = self._entered, None, None
                assert entered is not None
                try:
                    await entered.__aexit__(type(exc), exc, exc.__traceback__)
                except Exception as mapped:
                    exc = mapped
                try:
                    self._ready.append(self._fall_back(exc))
                except Exception as final:
                    if not self._ready:
                        raise
                    self._failed = final  # after the usage it reported: those tokens were billed
                return
            if isinstance(first, UsageChunk):
                self._ready.append(first)
                continue
            break
        error = self._unavailable(first)
        if error is not None:  # an error the provider reported in the stream, of a kind that moves on
            entered, self._entered, self._trying = self._entered, None, None
            assert entered is not None
            await entered.__aexit__(None, None, None)
            self._ready.append(self._fall_back(error))
            return
        if not isinstance(first, ModelFallbackChunk):  # a nested FallbackModel moving on is not an answer yet
            self._chunks = chunks
        self._ready.append(first)

    def _unavailable(self, chunk: ModelChunk) -> ProviderError | None:
        """The error an in-stream error chunk stands for (by its status) when it makes this stream move on."""
        if not isinstance(chunk, ErrorChunk) or chunk.status is None or self._index + 1 == len(self._model.models):
            return None
        model = self._model.models[self._index]
        provider = getattr(model, "provider", None)
        error = provider_error(
            chunk.message,
            status=chunk.status,
            provider=provider if isinstance(provider, str) else model_name(model),
            message=chunk.message,
        )
        return error if isinstance(error, self._model.fallback_on) else None

    def _fall_back(self, error: Exception) -> ModelFallbackChunk:
        models = self._model.models
        if not isinstance(error, self._model.fallback_on) or self._index + 1 == len(models):
            raise error
        failed = models[self._index]
        self._index += 1
        return ModelFallbackChunk(model_name(failed), describe(error), model_name(models[self._index]))
