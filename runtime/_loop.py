"""The agent loop: model call, tool calls, repeat; every outcome becomes an event."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
from collections.abc import Mapping
from contextlib import AsyncExitStack
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import attrs
import pydantic_core
import trio

from agents import (
    TRANSFER_TOOL,
    Agent,
    AssistantMessage,
    ElicitationUnavailable,
    ErrorChunk,
    MalformedStreamError,
    Message,
    ModelFallbackChunk,
    ModelRequest,
    ReasoningBlock,
    ReasoningChunk,
    RefusalChunk,
    RunContext,
    RunUsage,
    ServerToolChunk,
    StopChunk,
    StopRun,
    TextChunk,
    Tool,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolContext,
    ToolResultMessage,
    UnsupportedContentError,
    UsageChunk,
    UserMessage,
    tool,
)
from agents._content import Content, content_text, tool_content
from agents._exceptions import ToolArgumentsError, describe
from agents._json import MAX_JSON_DEPTH, loads_untrusted, nested_deeper_than
from agents._output import OutputSpec, OutputValidationError

from ._bridge import ElicitationBridge, PendingElicitation, as_given, compile_schema
from ._exceptions import ClosedRunStreamError, InvalidElicitationResponse
from ._handlers import Tee
from ._held import HeldEvents
from ._latch import Latch
from ._result import RunResult, ToolCallRecord
from ._store import StoreError
from ._threads import TimedThreads, session_threads
from ._tracing import failure
from .events import (
    AgentSwitched,
    CustomEvent,
    ElicitationRequest,
    ErrorEvent,
    Event,
    FinalOutput,
    FinishReason,
    ModelFallback,
    ModelStopped,
    OutputDelta,
    ReasoningDelta,
    Refusal,
    RunFinished,
    RunStarted,
    ServerToolUse,
    SubAgentEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
    Usage,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterable

    import httpx

    from agents import ElicitationResult, SessionLike, StopReason, ThreadLimiter
    from agents._context import Elicitor

    from ._journal import Journal, ResumedQuestion, Resumption
    from ._pipe import EventPipe
    from ._tally import UsageTally
    from ._tracing import Tracing

logger = logging.getLogger("runtime")

_NO_SCOPE: Final = contextlib.nullcontext()

# In a durable run, the top-level tool call the current task works for: its questions are stored with it.
_TOP_CALL: ContextVar[str | None] = ContextVar("trio_agents_top_call", default=None)
# A resumed top-level call's elicitor, with its run: the sub-agents it runs ask through it too, so a question
# one of them asked before the crash is answered from the resumption, or asked again with its id.
_RESUMED: ContextVar[tuple[AgentRun, Elicitor] | None] = ContextVar("trio_agents_resumed", default=None)

ON_RUN_END_GRACE: Final = 1.0
"""Seconds ``on_run_end`` hooks may take when the run was cancelled."""

OUTPUT_DELTA_INTERVAL: Final = 0.05
"""Seconds between two ``OutputDelta`` events: partial parsing is not free, and a person sees no faster."""

_ANSWERED: Final = "the final answer was given in this response: not run"
"""The tool result of a call made alongside a valid final answer."""

_CANCELLED: Final = "the tool call was cancelled"
"""The error of a call cancelled before it ended (its run ended, or its sub-agent's parent's tool_timeout)."""


class _EndRun(Exception):
    """Ends the run with an ``ErrorEvent`` and the given reason (never escapes the loop).

    ``traced``: the message without what it quotes of the run's content (the model's answer, a chunk
    it sent), for spans when ``trace_content`` is off; the message itself if it quotes none.
    """

    def __init__(self, kind: str, message: str, reason: FinishReason = "error", *, traced: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.reason = reason
        self.traced = message if traced is None else traced


class AgentRun:
    """One run of an agent: drives the loop and sends every event into ``events``.

    ``drive`` never raises, except the cancellation that stops it: every
    failure becomes an ``ErrorEvent`` followed by ``RunFinished``.
    """

    __slots__ = (
        "_agent",
        "_answered_by",
        "_bridge",
        "_consumer",
        "_consumer_left",
        "_context",
        "_deps",
        "_depth",
        "_dropped",
        "_ended",
        "_error",
        "_error_traced",
        "_held",
        "_history",
        "_http_client",
        "_journal",
        "_limited",
        "_max_depth",
        "_out",
        "_output",
        "_pending",
        "_refusal",
        "_resume",
        "_root",
        "_session",
        "_sink",
        "_stop",
        "_stream",
        "_sub_runs",
        "_text",
        "_tool_calls",
        "_tracing",
        "_unwritten_message",
        "_up",
        "_user_input",
        "cache_read_tokens",
        "cache_write_tokens",
        "cancel_scope",
        "done",
        "events",
        "final",
        "input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "requests",
        "run_id",
        "tool_calls",
    )

    def __init__(
        self,
        *,
        run_id: str,
        agent: Agent[Any, Any],
        session: SessionLike,
        user_input: Content | None,
        deps: Any,
        history: list[Message],
        http_client: httpx.AsyncClient | None,
        events: EventPipe[Event] | None = None,
        bridge: ElicitationBridge | None = None,
        consumer: EventPipe[Event] | None = None,
        parent: AgentRun | None = None,
        session_usage: UsageTally | None = None,
        journal: Journal | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """A top-level run sends into ``events``; a nested run (``parent``) forwards into its parent's stream.

        ``consumer`` is the pipe whose consumer can answer questions (``None``
        when nobody can, as with ``Session.ask``). ``session_usage`` is the
        session's running total, counted into as the run spends. A durable
        session's run writes through ``journal``. ``tracing``: the
        runtime's, if OpenTelemetry is installed (a nested run uses its parent's).
        """
        self.run_id = run_id
        self._agent = agent
        self._session = session
        self._user_input = user_input
        self._deps = deps
        self._history = history
        self._http_client = http_client
        self.events = events
        """The run's events, from its tasks to its RunStream (``None`` for a nested run)."""
        if parent is None:
            assert events is not None
            assert bridge is not None
            # Where its events go; with stream handlers, every event is copied to them too (copy_to).
            self._out: EventOut = events
            self._bridge = bridge
            self._consumer = consumer
            self._root: AgentRun | None = None  # itself: not stored, which would be a reference cycle
            self._pending: dict[str, PendingElicitation] | None = None  # made at the first question
            self._depth = 0
            self._max_depth = agent.max_depth
            # Spending is counted into this run, then up the chain: the session's total.
            self._up: AgentRun | UsageTally | None = session_usage
            self._limited = agent.usage_limits is not None or (
                session_usage is not None and session_usage.limits is not None
            )
            self._journal = journal
            self._resume: Resumption | None = None
            self._tracing = tracing
            self._held: HeldEvents | None = None
            # The user's message of a run that ended before it was written: it joins the history once it is.
            self._unwritten_message: UserMessage | None = None
        else:
            self._out = _SubAgentOut(parent._out, agent.name)
            self._bridge = parent._bridge
            self._consumer = parent._consumer
            self._root = parent._root or parent
            self._pending = None  # the root's holds its nested runs' questions too
            self._depth = parent._depth + 1
            self._max_depth = parent._max_depth
            # A sub-agent spends its parent's budget too: counted into the parent, and up from there.
            self._up = parent
            self._limited = agent.usage_limits is not None or parent._limited
            self._journal = None  # written by the top-level run: its tool call is the unit of recovery
            self._held = None
            self._unwritten_message = None
            self._resume = None
            self._tracing = parent._tracing
        self.final: RunFinished | None = None
        """Its ``RunFinished``, once its end is decided (before its end hooks run and it is sent)."""
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.tool_calls = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self._dropped = 0
        self._sub_runs = 0
        self._ended = False
        self._consumer_left = False
        self._output: Any = "" if agent.output.is_text else None
        self._text = ""
        self._stop: StopReason | None = None
        self._refusal: str | None = None
        self._tool_calls: list[ToolCallRecord] = []
        self._error: ErrorEvent | None = None
        self._error_traced: str | None = None  # _error's message as spans show it when trace_content is off
        # Made when first needed: most runs (no hooks, no toolsets, no tool asking for a context) never do.
        self._context: RunContext[Any] | None = None
        self._sink: _RunSink | None = None  # a RunContext's (hooks'): not this run, which would be a cycle
        self._stream = _NOT_STARTED  # where its stream is: what a RunContext's emit may do (its sink has it too)
        self.cancel_scope = trio.CancelScope()
        """The run task's scope: cancelling it cancels the run."""
        self.done = Latch()
        """Set by the run's task as it ends."""

    # -- ElicitationTarget: questions from this run's tools -----------------

    @property
    def pending(self) -> dict[str, PendingElicitation]:
        """Questions of this run (and its nested runs) waiting for the consumer's answer."""
        root = self._root or self
        if root._pending is None:
            root._pending = {}
        return root._pending

    def can_answer(self) -> bool:
        """Whether a consumer streams this run and is still there."""
        # Only while this run goes on, and the top-level consumer (if the run is
        # streamed at all) has not started leaving its block.
        root = self._root or self
        consumer = root._consumer
        return not self._ended and not root._consumer_left and consumer is not None and not consumer.receiver_closed

    @property
    def reason(self) -> FinishReason:
        """Why it ended (``"cancelled"`` until its end is decided)."""
        final = self.final
        return "cancelled" if final is None else final.reason

    def resume(self, resumption: Resumption) -> None:
        """Before :meth:`drive`: first call again the tool calls an interrupted run was waiting on.

        Their questions without an answer are pending from now on (a second call with it changes nothing): the
        consumer may answer any of them before its call asks it again (the session lists none while this run
        resumes them).
        """
        if self._resume is resumption:
            return
        self._resume = resumption
        if self._consumer is None:  # nobody can answer (ask())
            return
        pending = self.pending
        for questions in resumption.questions.values():
            for question in questions:
                if question.answer is None:
                    pending[question.request.id] = _ResumedPending(question)

    def _unlist(self, questions: Iterable[ResumedQuestion]) -> None:
        """Resumed questions no call asks again now: no longer answerable (one asked again is the bridge's)."""
        pending = self.pending
        for question in questions:
            if type(pending.get(question.request.id)) is _ResumedPending:
                del pending[question.request.id]

    async def answered(self, request_id: str) -> None:
        """A question of this run (or a nested one) was answered: a durable session writes that it waits no more
        before the tool acts on the answer (a process stopping after that never asks it again).

        Raises:
            ElicitationUnavailable: the answer could not be written.
        """
        journal = (self._root or self)._journal
        if journal is not None and journal.answered(request_id):
            try:
                await journal.flush()
            except StoreError as exc:
                raise ElicitationUnavailable(f"the answer could not be kept: {describe(exc)}") from exc

    def consumer_leaving(self) -> None:
        """The consumer is leaving its block: from now on, questions fail at once."""
        self._consumer_left = True

    async def deliver(self, request: ElicitationRequest) -> None:
        """Send a question on this run's stream (wrapped, for a nested run).

        In a durable session the question is written first, with the top-level
        tool call that asked: a restarted process can resume the run from it.
        """
        root = self._root or self
        journal = root._journal
        if root._held is not None:  # asked before the run is written (an MCP server's, as it opens): once it is
            failure = await root._held.settle()
            if failure is not None:
                raise ElicitationUnavailable(f"the run could not be kept: {failure}")
        call_id = _TOP_CALL.get()
        if journal is not None and call_id is not None and journal.asked(root.run_id, call_id, request):
            try:
                await journal.flush()
            except StoreError as exc:
                raise ElicitationUnavailable(f"the question could not be kept: {describe(exc)}") from exc
        await self._emit(request)

    def result(self) -> RunResult[Any]:
        """What the run produced so far."""
        return RunResult(
            run_id=self.run_id,
            output=self._output,
            reason=self.reason,
            usage=Usage(
                self.input_tokens,
                self.output_tokens,
                self.cache_read_tokens,
                self.cache_write_tokens,
                self.reasoning_tokens,
            ),
            tool_calls=tuple(self._tool_calls),
            error=self._error,
            text=self._text,
            stop_reason=self._stop,
            refusal=self._refusal,
            requests=self.requests,
            progress_dropped=self._dropped,
        )

    def copy_to(self, tee: Tee) -> None:
        """Before :meth:`drive`, when its turn comes: its events go through ``tee`` (to the session's stream
        handlers, its journal) as well as to its consumer."""
        self._out = tee

    def drive(self) -> Coroutine[Any, Any, None]:
        """Run the agent to the end, streaming events; see the class docstring.

        A plain function returning the run's coroutine: untraced, the run is :meth:`_drive` itself,
        with no frame of this one (many runs at once each hold theirs).
        """
        tracing = self._tracing
        if tracing is not None and not tracing.active():
            tracing = self._tracing = None  # nothing would record it: this run's calls skip tracing too
        if tracing is None:
            return self._drive()
        return self._drive_traced(tracing)

    async def _drive_traced(self, tracing: Tracing) -> None:
        session_id = getattr(self._session, "id", None)
        span, token = tracing.start_agent(
            self._agent.name,
            self._agent.model,
            self.run_id,
            session_id if isinstance(session_id, str) else None,
            self._user_input,
        )
        try:
            await self._drive()
        except BaseException as exc:
            if self.final is None:  # else it had ended (a cancel in its end hooks): the span says how, below
                kind, message = failure(exc, "the run")
                tracing.end_agent(
                    span,
                    token,
                    reason="cancelled",
                    error=kind,
                    message=message,
                    input_tokens=self.input_tokens,
                    output_tokens=self.output_tokens,
                    output=None,
                )
                raise
            self._end_span(tracing, span, token)
            raise
        self._end_span(tracing, span, token)

    def _end_span(self, tracing: Tracing, span: Any, token: Any) -> None:
        error = self._error
        output = self._output
        traced_output = None
        if tracing.content and output is not None:
            try:
                traced_output = content_text(_to_content(output))
            except _NoTextForm as exc:  # a typed output whose computed field raises, say: the span says so
                cause = exc.__cause__ or exc
                traced_output = f"the output ({type(output).__name__}) has no JSON or text form: {describe(cause)}"
        tracing.end_agent(
            span,
            token,
            reason=self.reason,
            error=None if error is None else error.kind,
            message=None if error is None else error.message if tracing.content else self._error_traced,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            output=traced_output,
        )

    async def _drive(self) -> None:
        # This run's tools ask its consumer; leaving the block, on every path,
        # restores the target it replaced (the cagent #3073 seed).
        with ElicitationBridge.target(self):
            try:
                if self._journal is not None:
                    # The first durability point: its events are held until the store has the run (see HeldEvents).
                    tee = self._out
                    assert isinstance(tee, Tee)  # a durable run's events are copied to its journal
                    self._out = self._held = HeldEvents(tee, self._journal)
                await self._emit(RunStarted(self.run_id, None if self._resume is None else self._resume.run_id))
                self._stream_is(_OPEN)
                timeout = self._agent.run_timeout
                deadline = None if timeout is None else trio.move_on_after(timeout)
                reason: FinishReason
                message: str | None
                with deadline or _NO_SCOPE:
                    try:
                        stop = await self._user_prompt_hooks() if self._agent.hooks else None
                        tools = {item.name: item for item in self._agent.tools if isinstance(item, Tool)}
                        if self._agent.sub_agents:
                            transfer = attrs.evolve(_transfer_tool(self._agent.sub_agents), function=self._transfer)
                            tools[transfer.name] = transfer
                        if stop is not None:
                            # A typed output has no value to give; text output gives the hook's message.
                            self._output = stop.message if self._agent.output.is_text else None
                            reason, message = "hook_stop", stop.message
                        elif len(tools) == len(self._agent.tools) + bool(self._agent.sub_agents):
                            reason, message = await self._turns(tools)
                        else:
                            async with AsyncExitStack() as stack:
                                await self._open_toolsets(stack, tools)
                                reason, message = await self._turns(tools)
                    except _EndRun as end:
                        reason, message = await self._fail(end.kind, end.message, end.reason, end.traced)
                    except Exception as exc:
                        logger.exception("run %s failed inside trio-agents", self.run_id)
                        reason, message = await self._fail("internal", describe(exc), "error")
                if deadline is not None and deadline.cancelled_caught:
                    reason, message = await self._fail(
                        "timeout", f"the run took longer than run_timeout={timeout}s", "timeout"
                    )
                if self._held is not None:  # it never asked its model: it ends once it is written
                    try:
                        await self._settle()
                    except _EndRun as end:
                        reason, message = await self._fail(end.kind, end.message, end.reason)
            except BaseException:
                # Cancelled: the hooks still hear of it, briefly, the consumer gets the real
                # RunFinished if there is room (else RunStream makes one), and the stream
                # handlers get it if its RunStarted reached them (the Tee knows).
                if self._held is not None:
                    await self._held_when_cancelled()
                if self._agent.hooks:
                    with trio.CancelScope(shield=True, deadline=trio.current_time() + ON_RUN_END_GRACE):
                        await self._run_end_hooks("cancelled")
                self._out.send_last(RunFinished("cancelled"))
                self._stream_is(_CLOSED)
                raise
            finally:
                self._ended = True  # a task it started must not ask its (soon closed) stream
        # It has ended as it did: a cancel from now on (the consumer leaving, or cancel()) does not change
        # that. Its RunFinished still reaches every handler, and the consumer (final, if it has no room).
        self.final = finished = RunFinished(reason, message)
        try:
            try:
                if self._agent.hooks:
                    await self._run_end_hooks_graced(reason)
            except BaseException:
                self._out.send_last(finished)
                raise
            try:
                await self._emit(finished)
            except BaseException:
                self._out.send_last(finished)  # cancelled waiting for room: it still goes to every handler
                raise
        finally:
            self._stream_is(_CLOSED)

    async def _settle(self, *, failed: bool = False) -> None:
        """The first durability point, settled: wait until the store has the run and its user's message, and
        its held events have gone on (:class:`HeldEvents`). Called before the run acts on anything but its
        model's stream (a turn asking for tools: once that turn is written, with the run if it had not been).
        Cancelled, the events stay held.

        Args:
            failed: The write of the turn that asks for tools (with the run, if it was not written) failed:
                the held events go on now, and the run ends with that write's error.

        Raises:
            _EndRun: the store could not write the run (its ``RunStarted`` went on; what followed is dropped).
        """
        held = self._held
        assert held is not None
        failure = await held.settle(failed=failed)
        self._held = None
        self._out_settled(held)
        self._written(failure)
        if failure is not None:
            raise _EndRun("store", f"the session store could not write the run: {failure}")

    def _out_settled(self, held: HeldEvents) -> None:
        """Its events go straight to its Tee from now on: its own, and its hooks' (a context made while held)."""
        self._out = held.out
        if self._sink is not None:
            self._sink.retarget(held.out)

    def _written(self, failure: str | None) -> None:
        """The first durability point is settled: the message of a run that ended before it joins the history,
        unless the store did not take the run."""
        message, self._unwritten_message = self._unwritten_message, None
        if message is not None and failure is None:
            self._history.append(message)

    async def _held_when_cancelled(self) -> None:
        """Cancelled with its events held: its model may have been asked (tokens spent), so what it holds
        goes on once its write is done, briefly waited for (as its end hooks are); a run its store did
        not take by then gives it up (nobody saw it start)."""
        held = self._held
        assert held is not None
        with trio.CancelScope(shield=True, deadline=trio.current_time() + ON_RUN_END_GRACE):
            try:
                failure = await held.settle()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                failure = None  # its consumer has gone: what is left goes by send_last, as the rest of the run's end
            if held.written:
                self._written(failure)
            if held.settled:
                self._held = None
                self._out_settled(held)

    def _run_context(self) -> RunContext[Any]:
        context = self._context
        if context is None:
            context = RunContext(self._deps, self._agent, self._session, self.run_id, events=self._events())
            self._context = context
        return context

    def _events(self) -> _RunSink:
        sink = self._sink
        if sink is None:
            sink = self._sink = _RunSink(self._out, self._stream)
        return sink

    def _stream_is(self, state: int) -> None:
        self._stream = state
        if self._sink is not None:
            self._sink.stream = state

    async def _emit(self, event: Event) -> None:
        # Block policy, bounded by the run's cancel scope. A full trio
        # checkpoint per event would cost more than the event: only wait (a
        # schedule point) when the consumer is a whole buffer behind. The
        # model's stream and the consumer's reads are the cancel points.
        try:
            self._out.send_nowait(event)
            return
        except trio.WouldBlock:
            pass
        # Outside the except block, so the WouldBlock isn't kept alive while we wait.
        await self._out.send(event)

    async def _emit_kept(self, event: Event) -> None:
        """Send an event whose effect is kept whatever happens (tokens spent, a call recorded): cancelled while
        it waits for room (run_timeout, a parent's tool_timeout, the consumer leaving), it is still delivered,
        as owed, so a consumer reading on sees what the run's result says."""
        try:
            await self._emit(event)
        except BaseException:
            self._out.send_last(event, owed=True)  # a send cancelled while it waits sent nothing
            raise

    async def _open_toolsets(self, stack: AsyncExitStack, tools: dict[str, Tool]) -> None:
        toolsets: dict[str, str] = {}  # a toolset's tool's name: which toolset
        for item in self._agent.tools:
            if isinstance(item, Tool):
                continue
            try:
                opened = await stack.enter_async_context(item.open_tools(self._run_context()))
            except Exception as exc:
                # Its words may quote what the run holds (an MCP server's stderr, a URL): the span names the class.
                label = getattr(item, "name", None)
                traced = f"toolset {label!r} failed to open: {type(exc).__name__}" if isinstance(label, str) else None
                raise _EndRun(
                    "toolset",
                    f"toolset {item!r} failed to open: {describe(exc)}",
                    traced=traced or f"a toolset failed to open: {type(exc).__name__}",
                ) from exc
            name = getattr(item, "name", None)
            here = f"toolset {name!r}" if isinstance(name, str) else f"toolset {item!r}"
            for opened_tool in opened:
                # A name the model is already offered: sent twice, a provider refuses the request (400).
                taken = self._tool_named(opened_tool.name, tools, toolsets)
                if taken is None:
                    tools[opened_tool.name] = opened_tool
                    toolsets[opened_tool.name] = here
                else:
                    logger.warning("%s: its tool %r is left out: %s has that name", here, opened_tool.name, taken)

    def _tool_named(self, name: str, tools: dict[str, Tool], toolsets: dict[str, str]) -> str | None:
        """Who already has this tool name (``None``: no one)."""
        if not self._agent.output.is_text and self._agent.output.is_output_tool(name):
            return "the output tool"
        if name in toolsets:
            return toolsets[name]
        if name in tools:
            return "the transfer tool" if name == TRANSFER_TOOL and self._agent.sub_agents else "a local tool"
        return None

    async def _fail(
        self, kind: str, message: str, reason: FinishReason, traced: str | None = None
    ) -> tuple[FinishReason, str | None]:
        self._error = ErrorEvent(kind, message)
        self._error_traced = message if traced is None else traced
        await self._emit(self._error)
        return reason, message

    async def _user_prompt_hooks(self) -> StopRun | None:
        if self._user_input is None:
            return None  # a resumption without a new message: the user said nothing new
        for hooks in self._agent.hooks:
            try:
                stop = await hooks.on_user_prompt(self._run_context(), content_text(self._user_input))
            except Exception as exc:
                failed = "on_user_prompt hook failed"  # its words may quote the prompt: spans get only the class
                raise _EndRun(
                    "hook", f"{failed}: {describe(exc)}", traced=f"{failed}: {type(exc).__qualname__}"
                ) from exc
            if isinstance(stop, StopRun):
                return stop
        return None

    async def _turns(self, tools: dict[str, Tool]) -> tuple[FinishReason, str | None]:
        output = self._agent.output
        specs = tuple(tool.spec for tool in tools.values())
        instructions = await self._instructions()
        request_output = None
        if not output.is_text:
            specs += output.tool_specs()
            instructions = output.instructions(instructions)
            request_output = output.request_output()
        if self._resume is not None:
            # The tool calls an interrupted run was waiting on are called again (the model is not asked again).
            resume = self._resume
            try:
                await self._call_tools(list(resume.calls.values()), tools, resuming=resume)
            finally:
                for questions in resume.questions.values():  # those of calls refused before they ran
                    self._unlist(questions)
                resume.questions.clear()
                if resume.done:  # their results are in the history (errors, if the run ends in them)
                    self._history.extend(UserMessage(content) for content in resume.then)
                    if self._journal is not None:
                        for call_id in resume.calls:  # their questions wait no more, asked again or not
                            self._journal.settle_call(call_id)
        # The user's new message joins the history with the first request, unless the model cannot take a
        # part of it: then nothing was sent, and a later run must not send it again (nor the store keep it).
        new = None if self._user_input is None else UserMessage(self._user_input)
        retries = self._agent.output_retries
        for _ in range(self._agent.max_turns):
            answered = False
            try:
                if self._limited:
                    self._check_limits()
                messages = tuple(self._history) if new is None else (*self._history, new)
                request = ModelRequest(
                    instructions, messages, specs, output=request_output, http_client=self._http_client
                )
                text, calls, refusal, reasoning = await self._call_model(request, output)
                if self._held is not None and not (refusal is None and _asks_for_tools(calls, output)):
                    await self._settle()  # (a turn that asks for tools settles at its durability point)
                answered = True
            except _EndRun as end:
                if self._held is not None:
                    try:
                        await self._settle()
                    except _EndRun:
                        new = None  # the store did not take the run: its failure is the run's, and (below) ...
                        raise
                if new is not None and (end.kind == "store" or _refuses_part_of(end, new)):
                    new = None  # ... a run the store did not take leaves no trace in the history, as a refused part
                raise
            finally:
                if new is not None:
                    if answered or self._held is None:
                        self._history.append(new)
                    else:  # it ended before it was written (a timeout, a cancel): settling decides
                        self._unwritten_message = new
                    new = None
            self._text = text
            if refusal is not None:
                # The model sees its own refusal next turn; its calls, if any, are not run: no results owed.
                self._history.append(AssistantMessage(text or refusal))
                self._refusal = refusal
                if output.is_text:
                    self._output = text  # the last response's text, as for any other ending
                await self._emit(Refusal(refusal))
                return "refusal", refusal or "the model refused to answer"
            self._history.append(AssistantMessage(text, tuple(calls), reasoning))
            if output.is_text:
                self._output = text
                if not calls:
                    return "completed", None
                await self._call_tools(calls, tools)
                continue
            problem = await self._typed_turn(output, text, calls, tools)
            if problem is None:
                await self._emit(FinalOutput(self._output))
                return "completed", None
            if problem:
                if retries == 0:
                    tries = self._agent.output_retries + 1
                    invalid = f"the output was not valid after {tries} attempt(s)"
                    raise _EndRun("output", f"{invalid}: {problem}", traced=invalid)  # problem quotes the answer
                retries -= 1
        return "max_turns", f"the run reached max_turns={self._agent.max_turns}"

    async def _typed_turn(
        self, output: OutputSpec, text: str, calls: list[ToolCallChunk], tools: dict[str, Tool]
    ) -> str | None:
        """One response, for a typed output: ``None`` if it gave the valid answer (now in ``_output``), else
        ``""`` (it asked for tools: go on) or what was wrong with its answer (the model is told, to retry)."""
        answers = [call for call in calls if output.is_output_tool(call.name)]
        if answers:
            answer = answers[0]
            try:
                value = output.validate_call(answer.name, answer.arguments)
            except OutputValidationError as invalid:
                problem = self._cut_off(str(invalid))
            else:
                self._output = value
                self._history.extend(
                    ToolResultMessage(call.call_id, call.name, "final answer accepted" if call is answer else _ANSWERED)
                    for call in calls
                )
                return None
            others = [call for call in calls if not output.is_output_tool(call.name)]
            try:
                if others:
                    await self._call_tools(others, tools)
            finally:
                # Even if the other calls are cancelled (run_timeout, the consumer leaving): every call gets a result.
                self._history.extend(
                    ToolResultMessage(call.call_id, call.name, f"{problem}. Fix it and call {call.name} again.", True)
                    for call in answers
                )
            return problem
        if calls:
            await self._call_tools(calls, tools)
            return ""
        if output.mode == "tool":
            if output.accepts_text:
                if self._stop == "max_tokens":  # a text answer cut off is no answer: retried as the others are
                    problem = self._cut_off("the text answer is incomplete")
                    self._history.append(UserMessage(f"{problem}. Answer again, more briefly."))
                    return problem
                self._output = text
                return None
            self._history.append(UserMessage(output.text_retry()))
            return "the model answered in text instead of calling the output tool"
        try:
            self._output = output.validate_text(text)
        except OutputValidationError as invalid:
            problem = self._cut_off(str(invalid))
            self._history.append(UserMessage(f"{problem}. Answer again: only JSON matching the schema."))
            return problem
        return None

    def _cut_off(self, problem: str) -> str:
        if self._stop == "max_tokens":
            return f"the response was cut off at the token limit (max_tokens), so {problem}"
        return problem

    def _check_limits(self) -> None:
        node: AgentRun | UsageTally | None = self
        while node is not None:
            limits = node._agent.usage_limits if isinstance(node, AgentRun) else node.limits
            crossed = None if limits is None else limits.crossed(_usage_of(node))
            if crossed is not None:
                raise _EndRun("usage_limit", crossed, "usage_limit")
            node = node._up

    # -- EventSink, for this run's tool calls: ctx.report_progress and ctx.emit ---

    def progress(self, call_id: str, progress: float, total: float | None, message: str | None) -> None:
        """Send a ``ToolProgress`` if there is room; drop and count it if not (never waits), or if the run
        has ended (a task the tool started outlived it)."""
        try:
            if self._ended:  # a nested run's stream is its parent's, still open: nothing else refuses it
                raise trio.ClosedResourceError
            self._out.send_nowait(ToolProgress(call_id, progress, total, message))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._count_dropped()

    def _count_dropped(self) -> None:
        """Count a dropped progress report in the result the consumer gets (a nested run's: its root's), while
        that run lasts: once it has ended its result is final."""
        root = self._root or self
        if not root._ended:
            root._dropped += 1

    async def emit(self, event: Any) -> None:
        """Send a ``CustomEvent`` in order with the run's events (waits for room).

        Raises:
            ClosedRunStreamError: the run has ended (for a sub-agent's run too, whose parent goes on).
        """
        if self._ended:
            raise ClosedRunStreamError(f"{type(event).__name__} was emitted after its run had ended")
        await _emit_custom(event, self._out)

    async def _instructions(self) -> str:
        instructions = self._agent.instructions
        if isinstance(instructions, str):
            return instructions
        try:
            value = instructions(self._run_context())
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            failed = "the instructions callable failed"  # (as the hook's, above)
            raise _EndRun(
                "instructions", f"{failed}: {describe(exc)}", traced=f"{failed}: {type(exc).__qualname__}"
            ) from exc
        if not isinstance(value, str):  # a forgotten return: "None" was sent as the system prompt
            raise _EndRun("instructions", f"the instructions callable returned a {type(value).__name__}, not a str")
        return value

    async def _call_model(
        self, request: ModelRequest, output: OutputSpec
    ) -> tuple[str, list[ToolCallChunk], str | None, tuple[ReasoningBlock, ...]]:
        """One model call, streamed: its text, its tool calls, its refusal (``None`` if it did not refuse),
        and the reasoning blocks its provider wants back."""
        tracing = self._tracing
        if tracing is None:
            return await self._stream_model(request, output)
        span, token, measured, started = tracing.start_chat(
            self._agent.model, request.instructions, request.messages, request.tools
        )
        input_tokens, output_tokens = self.input_tokens, self.output_tokens
        self._answered_by: str | None = None  # (read only here: an untraced run never sets it first)
        try:
            text, calls, refusal, reasoning = await self._stream_model(request, output)
        except BaseException as exc:
            if isinstance(exc, _EndRun):
                kind, message = exc.kind, exc.message if tracing.content else exc.traced
            else:
                kind, message = failure(exc, "the model request")
            tracing.end_chat(
                span, token, measured, started, stop=self._stop, input_tokens=self.input_tokens - input_tokens,
                output_tokens=self.output_tokens - output_tokens, answered_by=self._answered_by, error=kind,
                description=message,
            )  # fmt: skip
            raise
        tracing.end_chat(
            span,
            token,
            measured,
            started,
            stop=self._stop,
            input_tokens=self.input_tokens - input_tokens,
            output_tokens=self.output_tokens - output_tokens,
            answered_by=self._answered_by,
            text=text or refusal,
            calls=calls,
        )
        return text, calls, refusal, reasoning

    async def _stream_model(
        self, request: ModelRequest, output: OutputSpec
    ) -> tuple[str, list[ToolCallChunk], str | None, tuple[ReasoningBlock, ...]]:
        texts: list[str] = []
        calls: list[ToolCallChunk] = []
        refusals: list[str] | None = None
        blocks: list[ReasoningBlock] | None = None
        idle = self._agent.model_idle_timeout
        emit = self._emit
        out = self._out
        send_nowait = out.send_nowait
        node: AgentRun | UsageTally | None = self
        while node is not None:
            node.requests += 1
            node = node._up
        self._stop = None
        # A typed answer being written is parsed as it comes, for OutputDelta.
        partial = None if output.is_text else _PartialOutput(output)
        # Only a run with model_idle_timeout pays for a cancel scope.
        idle_scope = None if idle is None else trio.CancelScope(deadline=trio.current_time() + idle)
        try:
            with idle_scope or _NO_SCOPE:
                async with self._agent.model.stream(request) as chunks:
                    async for chunk in chunks:
                        if idle_scope is not None:
                            # A slow consumer is not an idle model.
                            idle_scope.deadline = math.inf
                        if isinstance(chunk, TextChunk):
                            texts.append(chunk.text)
                            # _emit inlined: the one event every token makes.
                            delta = TextDelta(chunk.text)
                            try:
                                send_nowait(delta)
                                sent = True
                            except trio.WouldBlock:
                                sent = False
                            if not sent:  # waited for outside the except block (see _emit)
                                await out.send(delta)
                            if partial is not None and output.mode != "tool":
                                await partial.feed(chunk.text, None, emit)
                        elif isinstance(chunk, ToolCallDeltaChunk):
                            await emit(ToolCallDelta(chunk.call_id, chunk.name, chunk.arguments_delta))
                            if partial is not None and output.is_output_tool(chunk.name):
                                await partial.feed(chunk.arguments_delta, chunk.call_id, emit, chunk.name)
                        elif isinstance(chunk, ReasoningChunk):
                            await emit(ReasoningDelta(chunk.text))
                        elif isinstance(chunk, ToolCallChunk):
                            calls.append(chunk)
                        elif isinstance(chunk, UsageChunk):
                            node = self
                            while node is not None:
                                node.input_tokens += chunk.input_tokens
                                node.output_tokens += chunk.output_tokens
                                node.cache_read_tokens += chunk.cache_read_tokens
                                node.cache_write_tokens += chunk.cache_write_tokens
                                node.reasoning_tokens += chunk.reasoning_tokens
                                node = node._up
                            # Counted already: the event must follow (the Usage events add up to the totals).
                            await self._emit_kept(
                                Usage(
                                    chunk.input_tokens,
                                    chunk.output_tokens,
                                    chunk.cache_read_tokens,
                                    chunk.cache_write_tokens,
                                    chunk.reasoning_tokens,
                                )
                            )
                        elif isinstance(chunk, StopChunk):
                            self._stop = chunk.reason
                            await emit(ModelStopped(chunk.reason, chunk.raw))
                        elif isinstance(chunk, RefusalChunk):
                            refusals = refusals or []
                            refusals.append(chunk.text)
                        elif isinstance(chunk, ServerToolChunk):
                            await emit(ServerToolUse(chunk.call_id, chunk.name, dict(chunk.input)))
                        elif isinstance(chunk, ModelFallbackChunk):
                            self._answered_by = chunk.next  # for a traced call's gen_ai.response.model
                            await emit(ModelFallback(chunk.failed, chunk.error, chunk.next))
                        elif isinstance(chunk, ReasoningBlock):  # kept for the provider, not an event
                            blocks = blocks or []
                            blocks.append(chunk)
                        elif isinstance(chunk, ErrorChunk):
                            raise _EndRun("model", chunk.message)
                        else:
                            raise _EndRun(
                                "model",
                                f"the model sent an unknown chunk: {chunk!r}",
                                traced=f"the model sent an unknown chunk: {type(chunk).__name__}",
                            )
                        if idle_scope is not None:
                            idle_scope.deadline = trio.current_time() + (idle or 0.0)
        except _EndRun:
            raise
        except Exception as exc:
            traced = exc.summary if isinstance(exc, MalformedStreamError) else None
            raise _EndRun("model", describe(exc), traced=traced) from exc
        if idle_scope is not None and idle_scope.cancelled_caught:
            raise _EndRun("timeout", f"the model sent nothing for model_idle_timeout={idle}s", "timeout")
        text = "".join(texts)
        if partial is not None:
            await partial.flush(emit)
        reasoning = () if blocks is None else tuple(blocks)
        if refusals is not None:
            return text, calls, "".join(refusals), reasoning
        if self._stop == "refusal":
            return "", calls, text, reasoning  # Anthropic: what it wrote before refusing is the refusal
        return text, calls, None, reasoning

    async def _call_tools(
        self, calls: list[ToolCallChunk], tools: dict[str, Tool], *, resuming: Resumption | None = None
    ) -> None:
        """Call the turn's tools (``resuming``: an interrupted run's, called again); every call gets a result
        in the history, but a resumption's that ended before they were called (it stays to be resumed)."""
        results: list[ToolResultMessage | None] = [None] * len(calls)
        announced = 0  # calls whose ToolCallStarted went out: each is owed its ToolCallFinished
        cut_off = self._stop == "max_tokens"
        parsed = [_parse_arguments(call, cut_off=cut_off) for call in calls]
        node: AgentRun | UsageTally | None = self
        while node is not None:
            node.tool_calls += len(calls)
            # A resumption's calls are in the session's total already: the interrupted run counted them,
            # and that total was stored with their questions. This run counts them in its own.
            node = None if resuming is not None else node._up
        try:
            if self._journal is not None:
                # The second durability point: the turn that asks for tools is written before any runs,
                # so that a restarted process knows these calls were made and never makes them unknowingly.
                # The run's first one too, if it is not written yet: one write for both, which has the
                # events it holds too (a process stopping in a tool has them in the run's log).
                held = self._held
                if held is not None:
                    held.record()
                try:
                    await self._journal.flush()
                except StoreError as exc:
                    if held is not None:
                        await self._settle(failed=True)
                    raise _EndRun("store", f"the session store could not write the turn: {describe(exc)}") from exc
                if held is not None:
                    await self._settle()
            if resuming is not None:
                resuming.done = True
            for call, (arguments, _) in zip(calls, parsed, strict=True):
                await self._emit(ToolCallStarted(call.call_id, call.name, arguments))
                announced += 1
            if len(calls) == 1:
                await self._call_tool(results, 0, calls[0], *parsed[0], tools)
            else:
                async with trio.open_nursery() as nursery:
                    for i, call in enumerate(calls):
                        nursery.start_soon(self._call_tool, results, i, call, *parsed[i], tools)
        finally:
            # Every call the model made gets a result, even on cancellation,
            # so the history stays valid for the next run.
            if resuming is None or resuming.done:
                for i, (call, result) in enumerate(zip(calls, results, strict=True)):
                    if result is None:
                        result = ToolResultMessage(call.call_id, call.name, f"error: {_CANCELLED}", True)
                        if i < announced:
                            # Its ToolCallFinished, before its run's RunFinished: owed, as the run (or, for a
                            # sub-agent, its parent) may go on (run_timeout, tool_timeout).
                            self._tool_calls.append(
                                ToolCallRecord(call.call_id, call.name, parsed[i][0], None, _CANCELLED)
                            )
                            self._out.send_last(ToolCallFinished(call.call_id, call.name, None, _CANCELLED), owed=True)
                    self._history.append(result)

    def _call_tool(
        self,
        results: list[ToolResultMessage | None],
        index: int,
        call: ToolCallChunk,
        arguments: dict[str, Any],
        parse_error: str | None,
        tools: dict[str, Tool],
        traced: bool = True,
    ) -> Coroutine[Any, Any, str | None]:
        """Call one tool, into ``results[index]``: ``None``, or the ``error.type`` of its failure.

        A plain function returning the call's coroutine: on the plain path (no tracing, no store) the
        call is :meth:`_run_tool` itself, with no frame of this one (many runs at once each hold theirs).
        """
        tracing = self._tracing
        if tracing is not None and traced:
            return self._call_tool_traced(tracing, results, index, call, arguments, parse_error, tools)
        journal = self._journal
        if journal is None:
            elicitor: Elicitor = self._bridge
            if self._root is not None and (resumed := _RESUMED.get()) is not None and resumed[0] is self._root:
                elicitor = resumed[1]  # a sub-agent of a resumed call
            return self._run_tool(results, index, call, arguments, parse_error, tools, elicitor)
        return self._call_tool_durable(journal, results, index, call, arguments, parse_error, tools)

    async def _call_tool_traced(
        self,
        tracing: Tracing,
        results: list[ToolResultMessage | None],
        index: int,
        call: ToolCallChunk,
        arguments: dict[str, Any],
        parse_error: str | None,
        tools: dict[str, Tool],
    ) -> str | None:
        # Its span is current while it runs: a sub-agent it starts (the transfer tool) nests in it.
        span, token = tracing.start_tool(call.name, call.call_id, arguments)
        try:
            kind = await self._call_tool(results, index, call, arguments, parse_error, tools, False)
        except BaseException as exc:
            kind, message = failure(exc, "the tool call")
            tracing.end_tool(span, token, error=kind, description=message, result=None)
            raise
        result = results[index]
        assert result is not None
        tracing.end_tool(
            span,
            token,
            error=kind,
            description=content_text(result.content) if kind is not None else None,
            result=result.content,
        )
        return kind

    async def _call_tool_durable(
        self,
        journal: Journal,
        results: list[ToolResultMessage | None],
        index: int,
        call: ToolCallChunk,
        arguments: dict[str, Any],
        parse_error: str | None,
        tools: dict[str, Tool],
    ) -> str | None:
        # A durable run: the questions this call asks are written with its id, and settled when it ends.
        token = _TOP_CALL.set(call.call_id)
        try:
            # Only the resumed call itself takes its questions' ids and answers: the model may give a later
            # call the same id.
            resumed = None if self._resume is None else self._resume.questions.pop(call.call_id, None)
            elicitor = self._bridge if resumed is None else _ResumedQuestions(self._bridge, resumed, self.answered)
            resumed_token = _RESUMED.set(None if resumed is None else (self, elicitor))
            try:
                return await self._run_tool(results, index, call, arguments, parse_error, tools, elicitor)
            finally:
                _RESUMED.reset(resumed_token)
        finally:
            if resumed:  # the questions it did not ask again
                self._unlist(resumed)
            _TOP_CALL.reset(token)
            journal.settle_call(call.call_id)

    async def _run_tool(
        self,
        results: list[ToolResultMessage | None],
        index: int,
        call: ToolCallChunk,
        arguments: dict[str, Any],
        parse_error: str | None,
        tools: dict[str, Tool],
        elicitor: Elicitor,
    ) -> str | None:
        """Returns ``None``, or a short name of the failure (its ``error.type``)."""
        tool = tools.get(call.name)
        value: Any = None
        content: Content = ""
        error = parse_error
        kind = None if error is None else "invalid_arguments"
        ctx = ToolContext(
            self._deps,
            self._agent,
            self._session,
            self.run_id,
            call.call_id,
            call.name,
            elicitor=elicitor,
            events=(sink := _CallEvents(self)),
        )
        if error is None and tool is None:
            known = ", ".join(sorted(tools)) or "none"
            shown = call.name if len(call.name) <= 100 else f"{call.name[:99]}…"  # the model's text: bounded
            error = f"unknown tool {shown!r}; the tools are: {known}"
            kind = "unknown_tool"
        if error is None and tool is not None:
            timeout = self._agent.tool_timeout
            validating = True
            began = False  # its before_tool hooks have all run: a cancel from here on owes them after_tool
            try:
                validated = tool.validate(arguments)
                validating = False
                if tool.requires_approval and tool.needs_approval(validated):
                    await self._approve(ctx, tool, validated)
                for hooks in self._agent.hooks:
                    await hooks.before_tool(ctx, validated)
                began = True
                share = session_threads(self._session) if tool.runs_in_thread else None  # of the worker threads
                threads: ThreadLimiter | None = share
                deadline = None
                if timeout is not None:
                    deadline = trio.move_on_after(timeout)
                    if share is not None:
                        threads = TimedThreads(share, deadline, timeout)  # the wait for a thread is not counted
                with deadline or _NO_SCOPE:
                    try:
                        value = await tool.invoke(ctx, validated, limiter=threads)
                    except BaseExceptionGroup as group:
                        _cancel_alone(group, call.name)
                        raise
                if deadline is not None and deadline.cancelled_caught:
                    error = f"tool {tool.name!r} took longer than tool_timeout={timeout}s"
                    kind = "timeout"
                else:
                    content = _to_content(value)  # here: a result with no text form is this call's error
            except _Refused as refused:
                value, error, kind = None, str(refused), "refused"
            except _NoTextForm as unconvertible:
                value, error, kind = None, str(unconvertible), type(unconvertible.__cause__).__qualname__
            except Exception as exc:
                value, error = None, describe(exc)
                # The arguments' schema refused them: as bad JSON is, not as a tool raising ToolArgumentsError.
                invalid = validating and isinstance(exc, ToolArgumentsError)
                kind = "invalid_arguments" if invalid else type(exc).__qualname__
            except SystemExit as exc:  # a sync tool's sys.exit() (argparse on bad input): its error, not the process's
                value, error, kind = None, f"the tool exited: {describe(exc)}", "SystemExit"
            except BaseException as exc:
                # Its own BaseException (GeneratorExit, a library's), or a group of them, is this call's error
                # too; only a cancel or Ctrl+C goes on up (from a group, _cancel_alone raised those alone).
                if isinstance(exc, _PASSING) or (
                    isinstance(exc, BaseExceptionGroup) and exc.split(_PASSING)[0] is not None
                ):
                    if began and self._agent.hooks:  # they still hear of it, briefly, as the run's end hooks do
                        with trio.CancelScope(shield=True, deadline=trio.current_time() + ON_RUN_END_GRACE):
                            await self._after_tool_hooks(ctx, None, _CANCELLED)
                    sink.ended = True  # its ToolCallFinished is sent next (see _call_tools): nothing after it
                    raise
                value, error, kind = None, describe(exc), type(exc).__qualname__
            for hooks in self._agent.hooks:
                try:
                    await hooks.after_tool(ctx, value, error)
                except Exception as exc:
                    value, error, kind = None, f"after_tool hook failed: {describe(exc)}", type(exc).__qualname__
                except BaseException:
                    sink.ended = True  # (as above)
                    raise
        results[index] = ToolResultMessage(
            call.call_id, call.name, error if error is not None else content, error is not None
        )
        self._tool_calls.append(ToolCallRecord(call.call_id, call.name, arguments, value, error))
        sink.ended = True
        await self._emit_kept(ToolCallFinished(call.call_id, call.name, value, error))
        return kind

    async def _approve(self, ctx: ToolContext[Any], tool: Tool, arguments: dict[str, Any]) -> None:
        shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
        try:
            answer = await ctx.elicit(f"Allow {self._agent.name} to run {tool.name}({shown})?")
        except ElicitationUnavailable as exc:
            if isinstance(exc.__cause__, StoreError):  # given, but not written: the body must not run
                raise _Refused(f"not run: the approval could not be kept: {describe(exc.__cause__)}") from exc
            raise _Refused(f"not run: {tool.name} needs approval, and no one is there to give it") from None
        if not answer.accepted:
            raise _Refused("declined by user")
        journal = (self._root or self)._journal
        if journal is not None:
            # Written before the body runs: a process that stops in it leaves the call interrupted, never
            # approved again and run twice.
            try:
                await journal.flush()
            except StoreError as exc:
                raise _Refused(f"not run: the approval could not be kept: {describe(exc)}") from exc

    async def _transfer(self, agent: str, task: str) -> str:
        """The transfer tool: run a sub-agent's own loop, nested in this tool call."""
        if self._depth + 1 > self._max_depth:
            raise _Refused(f"sub-agents may nest at most {self._max_depth} deep; {agent!r} was not started")
        child_agent = next(a for a in self._agent.sub_agents if a.name == agent)
        self._sub_runs += 1
        child = AgentRun(
            run_id=f"{self.run_id}/{agent}-{self._sub_runs}",
            agent=child_agent,
            session=self._session,
            user_input=task,
            deps=self._deps,
            history=[],
            http_client=self._http_client,
            parent=self,
        )
        await self._emit(AgentSwitched(self._agent.name, agent))
        back = AgentSwitched(agent, self._agent.name)
        try:
            await child.drive()  # its usage is counted into this run's as it goes
            await self._emit(back)
        except BaseException:
            # This run may go on (a tool timeout), and a send cancelled while it waits for room sent nothing:
            # the switch back is owed either way.
            self._out.send_last(back, owed=True)
            raise
        result = child.result()
        ended = child.final.message if child.final is not None else None
        if result.reason == "hook_stop":
            return ended or ""  # the stop hook's message is the answer, typed output or not (as the gateway's)
        # A typed sub-agent out of turns has no answer: not one of None (a valid Optional answer, "null").
        unanswered = result.reason == "max_turns" and not child_agent.output.is_text
        if result.reason not in ("completed", "max_turns") or unanswered:
            if result.error is not None:
                detail = result.error.message
            elif result.refusal is not None:
                detail = f"it refused: {result.refusal}"
            else:
                detail = f"it ended without an answer: {ended}" if unanswered else result.reason
            raise _Refused(f"{agent} failed: {detail}")
        if child_agent.output.is_text:
            return str(result.output)
        # A typed sub-agent answers with its validated value, as JSON.
        return child_agent.output.to_json(result.output)

    async def _run_end_hooks_graced(self, reason: FinishReason) -> None:
        """The end hooks of a run that has ended: as long as they take, but a cancel that comes meanwhile (the
        consumer leaving before RunFinished, the session closed) leaves them ``ON_RUN_END_GRACE`` more, as a
        cancelled run's hooks have; then the cancel goes on."""
        async with trio.open_nursery() as nursery:
            grace = trio.CancelScope(shield=True)
            nursery.start_soon(_cut_when_cancelled, grace)
            with grace:
                await self._run_end_hooks(reason)
            nursery.cancel_scope.cancel()

    async def _after_tool_hooks(self, ctx: ToolContext[Any], value: Any, error: str | None) -> None:
        """A cancelled call's ``after_tool`` hooks; one that fails is logged (the call's error is the cancel)."""
        for hooks in self._agent.hooks:
            try:
                await hooks.after_tool(ctx, value, error)
            except Exception:
                logger.exception("after_tool hook failed for a cancelled call in run %s", self.run_id)

    async def _run_end_hooks(self, reason: FinishReason) -> None:
        for hooks in self._agent.hooks:
            try:
                await hooks.on_run_end(self._run_context(), reason)
            except Exception:
                logger.exception("on_run_end hook failed in run %s", self.run_id)


async def _cut_when_cancelled(grace: trio.CancelScope) -> None:
    """Give ``grace`` (a shielded scope) ``ON_RUN_END_GRACE`` more once this task is cancelled from outside;
    the cancel itself goes on in the task that owns ``grace``, at its next checkpoint (no group to unwrap).

    The one place a ``Cancelled`` is not re-raised: this watcher's only work is noticing it, and the scope
    that was cancelled is still cancelled for the parent task, which raises it at its next checkpoint.
    """
    try:
        await trio.sleep_forever()
    except trio.Cancelled:
        grace.deadline = min(grace.deadline, trio.current_time() + ON_RUN_END_GRACE)


class _ResumedQuestions:
    """A resumed tool call's elicitor: a question it asked before, asked again (the same text, schema and
    agent), keeps its id, and is answered at once if the answer came with the resumption (or was given on the
    stream before) and the tool's validator takes it; others, and one whose answer it refuses, are asked on
    the stream (with the old id)."""

    __slots__ = ("_answered", "_bridge", "_questions")

    def __init__(
        self,
        bridge: ElicitationBridge,
        questions: list[ResumedQuestion],
        answered: Callable[[str], Awaitable[None]],
    ) -> None:
        self._bridge = bridge
        self._questions = questions
        self._answered = answered

    async def elicit(
        self, message: str, *, schema: type[Any] | Mapping[str, Any] | None, timeout: float | None, agent: str
    ) -> ElicitationResult:
        if timeout is not None and not timeout >= 0:  # as the bridge checks it, before an answer is given
            raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
        json_schema, validate = compile_schema(schema)
        for at, question in enumerate(self._questions):
            if question.matches(message, json_schema, agent):
                del self._questions[at]
                if question.answer is not None:
                    # Checked as a live answer is, by the tool's own validator (its model, lax coercion); one it
                    # refuses is not handed over: the question is asked again.
                    check = PendingElicitation(question.request.id, validate)
                    with contextlib.suppress(InvalidElicitationResponse):
                        check.answer(question.answer.action, question.answer.content)
                    if check.result is not None:
                        await self._answered(question.request.id)  # kept before the tool acts on it
                        return check.result
                return await self._bridge.elicit(
                    message, schema=schema, timeout=timeout, agent=agent, request_id=question.request.id
                )
        return await self._bridge.elicit(message, schema=schema, timeout=timeout, agent=agent)


class _ResumedPending(PendingElicitation):
    """A resumed question its call has not asked again yet (listed in the run's ``pending``): an answer given
    now is kept in the question, for when its call asks it. Only its action is checked now: its content is
    checked by the tool's validator when the call asks (the stored JSON schema would refuse what the tool takes,
    "3" for an int, and could not give it its pydantic model)."""

    __slots__ = ("question",)

    def __init__(self, question: ResumedQuestion) -> None:
        super().__init__(question.request.id, as_given)
        self.question = question

    def answer(self, action: str, content: Any) -> None:
        super().answer(action, content)
        self.question.answer = self.result


class _Refused(Exception):
    """A tool call that did not run; its message is the error result the model sees."""


class _NoTextForm(Exception):
    """A tool's result that cannot be given to the model; its message is the error result the model sees, its
    ``__cause__`` what failed."""


class _CallEvents:
    """A tool call's ``ctx.report_progress`` and ``ctx.emit``: its run's, until the call has ended. A thread
    or task of it that outlives it (a sync tool past tool_timeout) sends nothing after its ToolCallFinished."""

    __slots__ = ("_run", "ended")

    def __init__(self, run: AgentRun) -> None:
        self._run = run
        self.ended = False

    def progress(self, call_id: str, progress: float, total: float | None, message: str | None) -> None:
        run = self._run
        if self.ended:
            run._count_dropped()
        else:
            run.progress(call_id, progress, total, message)

    async def emit(self, event: Any) -> None:
        if self.ended and not self._run._ended:  # (an ended run says so itself)
            raise ClosedRunStreamError(f"{type(event).__name__} was emitted after its tool call had ended")
        await self._run.emit(event)


class _RunSink:
    """What a :class:`RunContext` (hooks, instructions, toolsets) emits through: ``ctx.emit``.

    It holds where the run's events go, not the run: the run keeps its
    context, and a context holding the run would be a reference cycle (a
    finished run is freed by reference counting alone). A tool's context
    holds the run itself, which implements the same two methods.
    """

    __slots__ = ("_out", "stream")

    def __init__(self, out: EventOut, stream: int) -> None:
        self._out = out
        self.stream = stream
        """Where the run's stream is (the run says): :data:`_OPEN` from its ``RunStarted`` to its ``RunFinished``."""

    def retarget(self, out: EventOut) -> None:
        """Send into ``out`` from now on (the run's events were held until its store had it)."""
        self._out = out

    def progress(self, call_id: str, progress: float, total: float | None, message: str | None) -> None:
        # A RunContext has no report_progress: only a ToolContext does.
        raise NotImplementedError  # pragma: no cover

    async def emit(self, event: Any) -> None:
        if self.stream != _OPEN:
            # Cancelled before its RunStarted went out, its stream is RunFinished alone; after its RunFinished
            # (a task a sub-agent's hook started, its parent going on), nothing more of it is sent.
            when = "before its run had started" if self.stream == _NOT_STARTED else "after its run had ended"
            raise ClosedRunStreamError(f"{type(event).__name__} was emitted {when}")
        await _emit_custom(event, self._out)


_NOT_STARTED: Final = 0
_OPEN: Final = 1
_CLOSED: Final = 2


class EventOut(Protocol):
    """Where a run sends its events: its pipe, a Tee (stream handlers), or its parent run's (a sub-agent)."""

    def send_nowait(self, event: Event) -> None: ...
    async def send(self, event: Event) -> None: ...
    def send_last(self, event: Event, *, owed: bool = False) -> None: ...


class _SubAgentOut:
    """A nested run's events, each sent on into its parent's as a :class:`SubAgentEvent`."""

    __slots__ = ("_name", "_parent", "_started")

    def __init__(self, parent: EventOut, name: str) -> None:
        self._parent = parent
        self._name = name
        self._started = False  # its RunStarted went in: its end is owed

    def send_nowait(self, event: Event) -> None:
        self._parent.send_nowait(SubAgentEvent(self._name, event))
        self._started = True

    async def send(self, event: Event) -> None:
        await self._parent.send(SubAgentEvent(self._name, event))  # cancelled waiting: it went nowhere
        self._started = True

    def send_last(self, event: Event, *, owed: bool = False) -> None:
        # The parent's stream goes on (a tool timeout ended this run, not the parent): the end is owed to it,
        # once its start is there (cancelled before its RunStarted went in, it has no stream to end).
        if self._started:
            self._parent.send_last(SubAgentEvent(self._name, event), owed=True)


async def _emit_custom(event: Any, out: EventOut) -> None:
    # An attrs class has its own __attrs_attrs__; a plain subclass only inherits its base's.
    if not isinstance(event, CustomEvent) or "__attrs_attrs__" not in type(event).__dict__:
        raise TypeError(f"ctx.emit takes an attrs subclass of runtime.events.CustomEvent, not {event!r}")
    clashing = _WIRE_NAMES.intersection(attrs.fields_dict(type(event)))
    if clashing:
        # On the wire "type" and "name" say what the event is: a field of the same name would be lost.
        raise TypeError(f"{type(event).__name__} has fields named {sorted(clashing)}, which CustomEvent reserves")
    try:
        try:
            out.send_nowait(event)
            return
        except trio.WouldBlock:
            pass
        await out.send(event)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        raise ClosedRunStreamError(f"{type(event).__name__} was emitted after its run had ended") from None


def _asks_for_tools(calls: list[ToolCallChunk], output: OutputSpec) -> bool:
    """Whether a model's answer with these calls goes on to call tools (not to give a typed output)."""
    return bool(calls) and (output.is_text or not any(output.is_output_tool(call.name) for call in calls))


def _refuses_part_of(end: _EndRun, message: UserMessage) -> bool:
    """Whether the run ended because its model cannot take a part of ``message`` (nothing was sent)."""
    cause = end.__cause__
    parts = message.content
    return (
        isinstance(cause, UnsupportedContentError)
        and not isinstance(parts, str)
        and any(part is cause.part for part in parts)
    )


def _usage_of(node: AgentRun | UsageTally) -> RunUsage:
    return RunUsage(node.requests, node.input_tokens, node.output_tokens, node.tool_calls)


_WIRE_NAMES: Final = frozenset({"type", "name"})


class _PartialOutput:
    """A typed answer as it streams: parsed at most every ``OUTPUT_DELTA_INTERVAL`` s, sent when it changed."""

    __slots__ = ("_call_id", "_last", "_output", "_parsed_at", "_pending", "_text", "_tool")

    def __init__(self, output: OutputSpec) -> None:
        self._output = output
        self._text: list[str] = []
        self._call_id: str | None = None
        self._tool: str | None = None
        self._last: Any = None
        self._parsed_at = -math.inf
        self._pending = False

    async def feed(
        self, piece: str, call_id: str | None, emit: Callable[[Event], Awaitable[None]], tool: str | None = None
    ) -> None:
        if call_id is not None and call_id != self._call_id:
            if self._call_id is not None:
                return  # a second answer in one response: the first one counts
            self._call_id, self._tool = call_id, tool
        self._text.append(piece)
        self._pending = True
        now = trio.current_time()
        if now - self._parsed_at >= OUTPUT_DELTA_INTERVAL:
            self._parsed_at = now
            await self.flush(emit)

    async def flush(self, emit: Callable[[Event], Awaitable[None]]) -> None:
        if not self._pending:
            return
        self._pending = False
        value = self._output.partial("".join(self._text), self._tool)
        if value is not None and value != self._last:
            self._last = value
            await emit(OutputDelta(value))


@functools.lru_cache(maxsize=256)
def _transfer_tool(sub_agents: tuple[Agent[Any, Any], ...]) -> Tool:
    """The schema of the transfer tool for these sub-agents (its function is bound per run)."""
    names = tuple(agent.name for agent in sub_agents)
    listing = "\n".join(f"- {agent.name}: {_summary(agent)}" for agent in sub_agents)

    async def transfer_task(agent: str, task: str) -> str:
        raise AssertionError("bound per run")  # pragma: no cover

    transfer_task.__annotations__ = {"agent": Literal[names], "task": str, "return": str}
    transfer_task.__doc__ = (
        f"Hand a task to another agent and get its answer back.\n\nThe agents:\n{listing}\n\n"
        "Args:\n    agent: Which agent does the task.\n"
        "    task: The task, in full: the agent sees nothing of this conversation."
    )
    return tool(name=TRANSFER_TOOL)(transfer_task)


def _summary(agent: Agent[Any, Any]) -> str:
    if isinstance(agent.instructions, str) and agent.instructions.strip():
        return agent.instructions.strip().splitlines()[0]
    return agent.name


def _parse_arguments(call: ToolCallChunk, *, cut_off: bool = False) -> tuple[dict[str, Any], str | None]:
    """The call's arguments, or ``{}`` and the error the model is told (never an exception: a model's
    bad arguments are an error result of that call, and the turn's other calls go on). ``cut_off``: the
    response ended at ``max_tokens``, which is then the likely reason for broken JSON."""
    raw = call.arguments
    if isinstance(raw, Mapping):
        arguments = dict(raw)
        if nested_deeper_than(arguments, MAX_JSON_DEPTH):
            return {}, f"the arguments for tool {call.name!r} are nested deeper than {MAX_JSON_DEPTH} levels"
        return arguments, None
    if not isinstance(raw, str):  # a model adapter's bug (or a custom model's): this call fails, not the run
        return {}, f"the arguments for tool {call.name!r} must be a JSON object, not {type(raw).__name__}"
    try:
        value = loads_untrusted(raw) if raw.strip() else {}
    except ValueError as exc:
        if cut_off:
            return {}, (
                f"the arguments for tool {call.name!r} were cut off: the response reached its token limit "
                f"(max_tokens) before they were complete ({exc})"
            )
        return {}, f"the arguments for tool {call.name!r} are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return {}, f"the arguments for tool {call.name!r} must be a JSON object, not {type(value).__name__}"
    return value, None


# What a tool raises that is not its call's error: they end the run (or the process).
_PASSING: Final = (trio.Cancelled, KeyboardInterrupt)


def _cancel_alone(group: BaseExceptionGroup[BaseException], tool_name: str) -> None:
    """A tool's own nursery, cancelled (tool_timeout, the run ending) while a task of it failed, raises both:
    raise the cancel alone (the errors would outlive the scope that takes the Cancelled, and fail the session).
    Returns if there is no cancel (or Ctrl+C) in the group."""
    passing, errors = group.split(_PASSING)
    if passing is None:
        return
    if errors is not None:
        logger.warning("tool %s failed as it was cancelled", tool_name, exc_info=errors)
    raise passing from None


def _to_content(value: Any) -> Content:
    """A tool's return value as a result's content: a string as it is, parts (an image, or a list
    holding one) as parts, anything else as JSON (pydantic's, values it has none for as their ``str``).

    Raises:
        _NoTextForm: the value has neither a JSON nor a ``str`` form (a ``__str__`` that raises).
    """
    if isinstance(value, str):
        # A str that carries more (an MCP result with images) gives its parts.
        return value if type(value) is str else (tool_content(value) or value)
    parts = tool_content(value)
    if parts is not None:
        return parts
    try:
        # pydantic's JSON, as remote clients get the value (a model or dataclass as its fields, a set as
        # a list, an enum as its value), not its repr.
        return pydantic_core.to_json(value, fallback=str).decode()
    except Exception:  # nested deeper than pydantic goes, bytes that are not UTF-8, a __str__ that raises
        try:
            return str(value)
        except RecursionError:
            return f"<{type(value).__name__} nested too deep to send as JSON>"
        except Exception as exc:
            raise _NoTextForm(
                f"the tool's result ({type(value).__name__}) has no JSON or text form: {describe(exc)}"
            ) from exc
