"""What a run tells the code it calls: instructions callables, tools and hooks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeAlias, TypeVar, cast

import attrs
import trio

from ._exceptions import ElicitationUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable, Mapping
    from contextlib import AbstractAsyncContextManager

    from ._agent import Agent
    from ._messages import Message

DepsT = TypeVar("DepsT")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

ElicitationAction: TypeAlias = Literal["accept", "decline", "cancel"]
"""How the human answered: accepted (with content), declined, or dismissed the question."""


@attrs.frozen
class ElicitationResult:
    """The human's answer to ``ToolContext.elicit``."""

    action: ElicitationAction
    content: Any = None
    """The answer, validated against the schema (``None`` unless accepted)."""

    @property
    def accepted(self) -> bool:
        """Whether the human accepted (and so ``content`` holds the answer)."""
        return self.action == "accept"


class Elicitor(Protocol):
    """What delivers a tool's question to the human: the runtime's elicitation bridge."""

    async def elicit(
        self, message: str, *, schema: type[Any] | Mapping[str, Any] | None, timeout: float | None, agent: str
    ) -> ElicitationResult:
        """Ask, and wait for the answer."""
        ...


class EventSink(Protocol):
    """Where ``ctx.emit`` and ``ctx.report_progress`` send: the run's event stream (set by the runtime)."""

    def progress(self, call_id: str, progress: float, total: float | None, message: str | None) -> None:
        """Send a ``ToolProgress`` event if there is room; drop and count it if not."""
        ...

    async def emit(self, event: Any) -> None:
        """Send a ``CustomEvent``, in order with the run's other events (waits for room)."""
        ...


class SessionResourceLike(Protocol[T_co]):
    """A resource the session owns, as ``SessionLike.resource`` returns it (``runtime.SessionResource`` is one).

    Its async context manager was entered by a task of the session and is
    exited by that same task when the resource or the session closes.
    """

    @property
    def value(self) -> T_co:
        """What the manager's ``__aenter__`` returned."""
        ...

    @property
    def closed(self) -> bool:
        """Whether it is closing or closed."""
        ...

    @property
    def error(self) -> Exception | None:
        """What its manager raised while open or while closing, if anything."""
        ...

    def close(self) -> None:
        """Ask for it to be closed, without waiting (the next ``resource()`` with its key opens a fresh one)."""
        ...

    async def aclose(self) -> None:
        """Close it and wait until its manager has exited."""
        ...


class SessionLike(Protocol):
    """What code a run calls (tools, hooks, instructions) may use of the run's session: ``ctx.session``.

    ``runtime.Session`` is one. A tool may read the conversation and start
    tasks that the session owns (they outlive the tool call, not the
    session). Running the session again from inside its own run is not
    offered: it could only fail (``runtime.ReentrantRunError``).

    Example::

        @tool
        async def remind_later(ctx: ToolContext[None], minutes: float) -> str:
            ctx.session.start_soon(send_reminder, minutes)
            return "scheduled"
    """

    @property
    def id(self) -> str:
        """The session's id."""
        ...

    @property
    def history(self) -> tuple[Message, ...]:
        """The conversation so far, oldest first."""
        ...

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None) -> None:
        """Start a task owned by the session (cancelled when it closes)."""
        ...

    async def start(self, async_fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None) -> Any:
        """Start a task owned by the session and wait for its ``task_status.started()`` value."""
        ...

    async def resource(
        self,
        key: Hashable,
        opener: Callable[[], AbstractAsyncContextManager[T]],
        *,
        name: str | None = None,
        close_timeout: float = ...,
    ) -> SessionResourceLike[T]:
        """The session's resource ``key``, opened (entered in a task of the session) if none is open.

        See ``runtime.Session.resource``: the manager is entered and exited by
        one task the session owns, and closed when the session closes.
        """
        ...


@attrs.frozen
class RunContext(Generic[DepsT]):
    """The run that is calling: given to instructions callables and hooks."""

    deps: DepsT
    """Whatever the caller passed as ``deps`` to ``Session.run``."""
    agent: Agent[Any, Any] = attrs.field(repr=False)
    """The agent being run."""
    session: SessionLike = attrs.field(repr=False)
    """The session the run belongs to (a ``runtime.Session``)."""
    run_id: str
    """The run's id, as in its ``RunStarted`` event."""
    events: EventSink | None = attrs.field(default=None, repr=False, kw_only=True)
    """Set by the runtime; ``emit`` and ``report_progress`` go through it."""

    async def emit(self, event: Any) -> None:
        """Send a user-defined event to the run's stream and its stream handlers, in order with the
        run's other events (served, to remote clients too).

        Args:
            event: An instance of a frozen attrs subclass of ``runtime.events.CustomEvent``.

        Raises:
            TypeError: ``event`` is not an attrs ``CustomEvent``, or has a field named ``type`` or ``name``.
            runtime.ClosedRunStreamError: the run has ended (a task that outlived it still holds the context),
                or, for a tool's context, its call has; or the run was cancelled before it started (an
                ``on_run_end`` hook then has no stream to send to: it is ``RunFinished`` alone).

        Example::

            await ctx.emit(Deployed(url="https://example.com"))
        """
        if self.events is not None:
            await self.events.emit(event)


@attrs.frozen
class ToolContext(RunContext[DepsT]):
    """Given to a tool that declares a parameter annotated ``ToolContext``.

    Example::

        @tool
        async def whoami(ctx: ToolContext[User]) -> str:
            return ctx.deps.name
    """

    call_id: str
    """The id of the tool call being served."""
    tool_name: str
    """The name the tool was called by."""
    elicitor: Elicitor | None = attrs.field(default=None, repr=False, kw_only=True)
    """Set by the runtime; ``elicit`` goes through it."""

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Tell the run's consumer how far this tool got: a ``ToolProgress`` event.

        Best-effort: when the stream is full, or the call has finished (a
        sync tool's thread past ``tool_timeout``), the report is dropped (and
        counted in ``RunResult.progress_dropped``); it never blocks the
        tool. Call it as often as you like.

        Raises:
            ValueError: ``progress`` or ``total`` is not a finite number.

        Example::

            for i, row in enumerate(rows):
                await ctx.report_progress(i + 1, total=len(rows), message=f"row {row.id}")
        """
        if not math.isfinite(progress) or (total is not None and not math.isfinite(total)):
            raise ValueError(f"progress and total must be finite numbers, not {progress!r} and {total!r}")
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.events is not None:
            self.events.progress(self.call_id, progress, total, message)

    async def elicit(
        self,
        message: str,
        *,
        schema: object = None,
        timeout: float | None = None,
    ) -> ElicitationResult:
        """Ask the human a question and wait for the answer.

        The question reaches the run's consumer as an ``ElicitationRequest``
        event; the consumer answers with ``await stream.respond(id, action,
        content)``.

        Args:
            message: The question.
            schema: What an accepted answer must be: a type or a typing form
                (validated by pydantic, e.g. ``int``, a model class,
                ``Literal["yes", "no"]`` or ``int | None``) or a flat JSON
                schema object (MCP's elicitation subset). ``None``: anything.
                Typed ``object``: a typing form is not a ``type`` for a type
                checker.
            timeout: Seconds to wait for the answer.

        Returns:
            The answer; check ``result.accepted`` before using ``content``.

        Raises:
            ElicitationUnavailable: no consumer can receive the question (at once),
                or, in a sync tool's thread, its call ended (timeout, cancel) and withdrew it.
            ElicitationTimeout: no answer within ``timeout``.
            ValueError: ``timeout`` is negative or NaN (raised before anything is asked).
            TypeError: ``schema`` is no type, typing form or mapping a schema can be made of (raised before
                anything is asked, when a consumer could answer).

        Example::

            answer = await ctx.elicit("Which environment?", schema=Literal["staging", "prod"])
            if not answer.accepted:
                return "cancelled by the user"
        """
        if self.elicitor is None:
            raise ElicitationUnavailable("this tool call has no consumer to ask (it is not running in a runtime)")
        # A typing form is not a type[Any] for mypy, but the runtime compiles any form pydantic takes.
        form = cast("type[Any] | Mapping[str, Any] | None", schema)
        return await self.elicitor.elicit(message, schema=form, timeout=timeout, agent=self.agent.name)
