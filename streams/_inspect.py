"""The live inspector's model: the tree of a served runtime, and its changes, coalesced, for ``/inspect``.

The server feeds an :class:`Inspector` what it already sees: every event of
every served run (``ServedSession.record``), runs beginning and ending,
sessions opening and closing. The inspector keeps a compact model of the
tree (sessions, their runs, each run's model calls, tool calls, sub-agents
and pending questions, with times and token counts) and tells each
subscriber which sessions changed. A subscriber holds a *set* of changed
session ids, not a queue of changes: however slow it is, it costs one entry
per session, and what it reads is always the latest state of each (it loses
intermediate states, never the last one). It reads at most once per
``interval`` (100 ms), so a run streaming thousands of tokens a second costs
a watcher ten messages a second.

What the tree keeps is bounded per session: every run's summary for the
runs the server keeps (``KEPT_RUNS``), and the detail (model calls, the last
:data:`TOOL_CALLS_SHOWN` tool calls, arguments and results cut to
:data:`VALUE_CHARS` characters) for each run; a run's whole event log is a
``GET .../runs/{run_id}/events`` away.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Final

import trio

from ._codec import dumps, event_to_json
from ._remote import LISTENERS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._server import ServedSession

TOOL_CALLS_SHOWN: Final = 30
"""Tool calls of one run the tree keeps (the latest); older ones are counted in ``tool_calls_hidden``."""
MODEL_CALLS_SHOWN: Final = 30
"""Model calls of one run the tree keeps (the latest)."""
VALUE_CHARS: Final = 240
"""A tool call's arguments, result or error, as JSON text, cut to this many characters."""
TEXT_CHARS: Final = 240
"""The end of a run's answer the tree keeps."""
DEFAULT_INTERVAL: Final = 0.1
"""Seconds between two messages to one subscriber, at least: changes meanwhile are coalesced."""
SWEEP_INTERVAL: Final = 1.0
"""Seconds between two looks at what changes without an event (stream handlers' counters, remote listeners)."""

_MODEL_TYPES: Final = frozenset(
    {"TextDelta", "ReasoningDelta", "ToolCallDelta", "ModelStopped", "ModelFallback", "Refusal", "OutputDelta"}
)


def _now() -> int:
    """Wall-clock milliseconds (the page shows durations against its own clock, corrected by ``now``)."""
    return round(time.time() * 1000)


def _cut(value: Any) -> str:
    text = value if isinstance(value, str) else dumps(value)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


class _Run:
    """One run's node."""

    __slots__ = (
        "agents",
        "ended",
        "error",
        "events",
        "id",
        "input_tokens",
        "message",
        "model_calls",
        "model_open",
        "output_tokens",
        "pending",
        "reason",
        "started",
        "text",
        "tool_calls",
        "tool_calls_hidden",
        "turn_start",
    )

    def __init__(self, run_id: str) -> None:
        self.id = run_id
        self.started = _now()
        self.ended: int | None = None
        self.reason: str | None = None
        self.message: str | None = None
        self.error: str | None = None
        self.events = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.text = ""
        self.model_calls: deque[dict[str, Any]] = deque(maxlen=MODEL_CALLS_SHOWN)
        self.model_open = False
        self.turn_start = self.started
        self.tool_calls: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.tool_calls_hidden = 0
        self.agents: list[str] = []
        self.pending: dict[str, dict[str, Any]] = {}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": "running" if self.reason is None else self.reason,
            "message": self.message,
            "error": self.error,
            "started": self.started,
            "ended": self.ended,
            "events": self.events,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "text": self.text,
            "model_calls": list(self.model_calls),
            "tool_calls": list(self.tool_calls.values()),
            "tool_calls_hidden": self.tool_calls_hidden,
            "agents": self.agents,
            "pending": list(self.pending.values()),
        }

    def note(self, data: dict[str, Any], agent: str | None) -> None:
        """Take one event (its JSON form), of this run or (``agent``: the path of) a sub-agent's run."""
        kind = data["type"]
        if kind == "SubAgentEvent":
            path = data["agent"] if agent is None else f"{agent}/{data['agent']}"
            if path not in self.agents:
                self.agents.append(path)
            inner = data["event"]
            if isinstance(inner, dict) and isinstance(inner.get("type"), str):
                self.note(inner, path)
            return
        if kind in _MODEL_TYPES:
            call = self._model_call(agent)
            if kind == "TextDelta" and agent is None:
                self.text = (self.text + data["text"])[-TEXT_CHARS:]
            elif kind == "ModelStopped":
                call["ended"] = _now()
                call["stop"] = data["reason"]
                self.model_open = False
                self.turn_start = call["ended"]
            return
        if kind == "Usage":
            call = self.model_calls[-1] if self.model_calls else self._model_call(agent)
            call["input_tokens"] += data["input_tokens"]
            call["output_tokens"] += data["output_tokens"]
            self.input_tokens += data["input_tokens"]
            self.output_tokens += data["output_tokens"]
            return
        if kind == "ToolCallStarted":
            self._close_model_call()
            key = data["call_id"] if agent is None else f"{agent}/{data['call_id']}"
            self.tool_calls[key] = {
                "call_id": data["call_id"],
                "name": data["name"],
                "agent": agent,
                "arguments": _cut(data["arguments"]),
                "started": _now(),
                "ended": None,
                "progress": None,
                "total": None,
                "progress_message": None,
                "result": None,
                "error": None,
            }
            while len(self.tool_calls) > TOOL_CALLS_SHOWN:
                self.tool_calls.popitem(last=False)
                self.tool_calls_hidden += 1
            return
        if kind in ("ToolProgress", "ToolCallFinished"):
            key = data["call_id"] if agent is None else f"{agent}/{data['call_id']}"
            tool_call = self.tool_calls.get(key)
            if tool_call is None:
                return
            if kind == "ToolProgress":
                tool_call["progress"] = data["progress"]
                tool_call["total"] = data["total"]
                tool_call["progress_message"] = None if data["message"] is None else _cut(data["message"])
            else:
                tool_call["ended"] = self.turn_start = _now()
                tool_call["result"] = None if data["result"] is None else _cut(data["result"])
                tool_call["error"] = None if data["error"] is None else _cut(data["error"])
            return
        if kind == "ElicitationRequest":
            self.pending[data["id"]] = {
                "id": data["id"],
                "message": data["message"],
                "schema": data["schema"],
                "agent": data["agent"],
            }
            return
        if kind == "ErrorEvent":
            self.error = _cut(f"{data['kind']}: {data['message']}")
            return
        if kind == "RunFinished" and agent is None:
            self._close_model_call()
            self.ended = _now()
            self.reason = data["reason"]
            message = data.get("message")
            self.message = None if message is None else _cut(message)
            self.pending.clear()

    def _model_call(self, agent: str | None) -> dict[str, Any]:
        if not self.model_open:
            self.model_calls.append(
                {
                    "agent": agent,
                    "started": self.turn_start,
                    "ended": None,
                    "stop": None,
                    "input_tokens": 0,
                    "output_tokens": 0,
                }
            )
            self.model_open = True
        return self.model_calls[-1]

    def _close_model_call(self) -> None:
        if self.model_open:
            self.model_open = False
            if self.model_calls[-1]["ended"] is None:
                self.model_calls[-1]["ended"] = _now()


class _Session:
    """One served session's node."""

    __slots__ = ("id", "input_tokens", "opened", "output_tokens", "runs", "served", "state")

    def __init__(self, served: ServedSession) -> None:
        self.served = served
        self.id = served.id
        self.opened = _now()
        self.state = "idle"
        self.runs: OrderedDict[str, _Run] = OrderedDict()
        self.input_tokens = 0
        self.output_tokens = 0

    def handlers(self) -> list[dict[str, Any]]:
        found = []
        for handler in self.served.session.handlers:
            stats = handler.statistics()
            name = getattr(handler.handler, "__qualname__", None) or repr(handler.handler)
            found.append(
                {
                    "name": name[:VALUE_CHARS],
                    "overflow": handler.overflow,
                    "handled": stats.handled,
                    "dropped": stats.dropped,
                    "failed": stats.failed,
                    "buffered": stats.buffered,
                }
            )
        return found

    def to_json(self) -> dict[str, Any]:
        served = self.served
        return {
            "id": self.id,
            "state": self.state,
            "opened": self.opened,
            "run_count": served.run_count,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "pending": sum(len(run.pending) for run in self.runs.values()),
            "handlers": self.handlers(),
            "runs": [run.to_json() for run in self.runs.values()],
        }


class Inspector:
    """The tree of a served runtime, kept up to date by the server; :meth:`subscribe` to its changes."""

    def __init__(self, *, kept_runs: int, interval: float = DEFAULT_INTERVAL) -> None:
        self._kept_runs = kept_runs
        self.interval = interval
        """Seconds between two messages to one subscriber, at least."""
        self._sessions: dict[str, _Session] = {}
        self._subscribers: list[InspectorSubscriber] = []
        self._handler_counts: dict[str, tuple[int, ...]] = {}
        self._listeners: frozenset[tuple[str, str]] = LISTENERS.active
        self._closed = False

    def __len__(self) -> int:
        return sum(not node.served.session.closed for node in self._sessions.values())

    # -- what the server tells it ------------------------------------------------

    def session_opened(self, served: ServedSession) -> None:
        """A served session opened; one opened from its store with questions still waiting (its process
        stopped while a run asked them) shows them on that run, interrupted, to be answered from the page."""
        node = self._sessions[served.id] = _Session(served)
        session = served.session
        if session.pending and session.suspended_run is not None:
            run = node.runs[session.suspended_run] = _Run(session.suspended_run)
            run.ended, run.reason = run.started, "interrupted"
            for request in session.pending:
                run.note(event_to_json(request), None)
        self._changed(served.id)

    def session_closed(self, session_id: str) -> None:
        """A served session closed: it leaves the tree (if it has not already, as it began closing)."""
        if self._sessions.pop(session_id, None) is not None:
            self._handler_counts.pop(session_id, None)
            for subscriber in self._subscribers:
                subscriber._gone(session_id)

    def _forget_closing(self, session_ids: Iterable[str]) -> list[str]:
        """Those of ``session_ids`` that began closing leave the tree now (returned): the server lists them no
        more, though their tasks may still be ending (:meth:`session_closed` comes once they have). Nothing
        tells the inspector when a session begins to close (a reaper, a tool, ``DELETE``): it looks."""
        nodes = self._sessions
        closing = [sid for sid in session_ids if (node := nodes.get(sid)) is not None and node.served.session.closed]
        for session_id in closing:
            self.session_closed(session_id)
        return closing

    def state(self, session_id: str, state: str) -> None:
        """A served session's state changed (``idle``, ``running``, ``closed``)."""
        node = self._sessions.get(session_id)
        if node is not None:
            node.state = state
            self._changed(session_id)

    def run_begins(self, session_id: str, run_id: str) -> None:
        """A run of a served session began."""
        node = self._sessions.get(session_id)
        if node is None:
            return
        node.runs[run_id] = _Run(run_id)
        self._forget_finished(node)
        self._changed(session_id)

    def _forget_finished(self, node: _Session) -> None:
        """Forget the oldest finished runs while more than ``kept_runs`` are kept (as the server forgets logs)."""
        excess = len(node.runs) - self._kept_runs
        if excess > 0:
            for run_id in [run_id for run_id, run in node.runs.items() if run.reason is not None][:excess]:
                del node.runs[run_id]

    def record(self, session_id: str, run_id: str, data: dict[str, Any]) -> None:
        """An event of a run (its JSON form, as the run's log has it)."""
        node = self._sessions.get(session_id)
        if node is None:
            return
        run = node.runs.get(run_id)
        if run is None:
            return
        run.events += 1
        kind = data["type"]
        if kind == "TextDelta":  # the most frequent by far: its own short path
            if not run.model_open:
                run._model_call(None)
            text = run.text + data["text"]
            run.text = text if len(text) <= TEXT_CHARS else text[-TEXT_CHARS:]
        else:
            tokens = run.input_tokens, run.output_tokens
            run.note(data, None)
            node.input_tokens += run.input_tokens - tokens[0]  # sub-agents' too
            node.output_tokens += run.output_tokens - tokens[1]
            if run.pending and kind != "ElicitationRequest":
                self._reconcile(node, run)
            resumes = data.get("resumes") if kind == "RunStarted" else None
            if resumes is not None and (resumed := node.runs.get(resumes)) is not None:
                resumed.pending.clear()  # its questions were answered: the answer resumed it
            if kind == "RunFinished":  # runs that waited behind others, kept meanwhile, go once finished
                self._forget_finished(node)
        if self._subscribers:
            self._changed(session_id)

    def answered(self, session_id: str) -> None:
        """A question of a session was answered: its runs' pending questions are looked at again."""
        node = self._sessions.get(session_id)
        if node is None:
            return
        for run in node.runs.values():
            if run.pending:
                self._reconcile(node, run)
        self._changed(session_id)

    def _reconcile(self, node: _Session, run: _Run) -> None:
        stream = node.served.live.get(run.id)
        if stream is not None:
            waiting = set(stream.pending_elicitations)
        else:  # an interrupted run's questions, kept by the store
            waiting = {request.id for request in node.served.session.pending}
        for question in [question for question in run.pending if question not in waiting]:
            del run.pending[question]

    def _changed(self, session_id: str) -> None:
        for subscriber in self._subscribers:
            subscriber._dirty(session_id)

    # -- what subscribers read ----------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """``{"type": "Snapshot", "now", "sessions", "listeners"}``: the whole tree."""
        self._forget_closing(list(self._sessions))
        return {
            "type": "Snapshot",
            "now": _now(),
            "sessions": [node.to_json() for node in self._sessions.values()],
            "listeners": self._listeners_json(),
        }

    def _listeners_json(self) -> list[dict[str, str]]:
        return [{"url": url, "session": session} for url, session in sorted(self._listeners)]

    def sweep(self) -> None:
        """Look at what changes without an event: sessions that began closing, stream handlers' counters and
        the remote listeners."""
        self._forget_closing(list(self._sessions))
        for session_id, node in self._sessions.items():
            handlers = node.served.session.handlers
            if not handlers and session_id not in self._handler_counts:
                continue
            counts = tuple(number for handler in handlers for number in attrs_tuple(handler.statistics()))
            if self._handler_counts.get(session_id) != counts:
                self._handler_counts[session_id] = counts
                self._changed(session_id)
        listeners = LISTENERS.active
        if listeners != self._listeners:
            self._listeners = listeners
            for subscriber in self._subscribers:
                subscriber._listeners_changed()

    def close(self) -> None:
        """The server is stopping: every subscriber ends, once it has read the last changes."""
        self._closed = True
        for subscriber in self._subscribers:
            subscriber._wakeup.set()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def subscribe(self) -> InspectorSubscriber:
        """A subscriber: its first message is the snapshot; :meth:`unsubscribe` it when done."""
        subscriber = InspectorSubscriber(self)
        self._subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: InspectorSubscriber) -> None:
        self._subscribers.remove(subscriber)

    @property
    def subscribers(self) -> int:
        """Subscribers now."""
        return len(self._subscribers)

    def changes(self, session_ids: set[str], gone: set[str], listeners: bool) -> dict[str, Any]:
        """``{"type": "Changed", "now", "sessions", "closed"[, "listeners"]}``: the latest state of the
        sessions named (those still open), and those that closed (or began closing)."""
        closing = self._forget_closing(list(session_ids))
        message: dict[str, Any] = {
            "type": "Changed",
            "now": _now(),
            "sessions": [self._sessions[sid].to_json() for sid in session_ids if sid in self._sessions],
            "closed": sorted({*gone, *closing}),
        }
        if listeners:
            message["listeners"] = self._listeners_json()
        return message


def attrs_tuple(stats: Any) -> tuple[int, ...]:
    """A stream handler's counters, as a tuple (to compare)."""
    return (stats.handled, stats.dropped, stats.failed, stats.buffered)


class InspectorSubscriber:
    """One watcher of the tree: a :class:`~streams._sse.MessageSource` of the snapshot, then coalesced changes.

    It ends (``None``) when the inspector is closed (the server stops), after the last changes.
    """

    def __init__(self, inspector: Inspector) -> None:
        self._inspector = inspector
        self._snapshot_sent = False
        self._dirty_ids: set[str] = set()
        self._gone_ids: set[str] = set()
        self._listeners = False
        self._wakeup = trio.Event()
        self._last = -float("inf")  # trio time of the last message
        self._swept = trio.current_time()

    def _dirty(self, session_id: str) -> None:
        self._dirty_ids.add(session_id)
        self._gone_ids.discard(session_id)  # closed and opened again (same id) since the last message: it is open
        self._wakeup.set()

    def _gone(self, session_id: str) -> None:
        self._dirty_ids.discard(session_id)
        self._gone_ids.add(session_id)
        self._wakeup.set()

    def _listeners_changed(self) -> None:
        self._listeners = True
        self._wakeup.set()

    def _pending(self) -> bool:
        return bool(self._dirty_ids or self._gone_ids or self._listeners)

    def _take(self) -> tuple[str, dict[str, Any]]:
        self._last = trio.current_time()
        if not self._snapshot_sent:
            self._snapshot_sent = True
            self._dirty_ids.clear()
            self._gone_ids.clear()
            self._listeners = False
            return "Snapshot", self._inspector.snapshot()
        message = self._inspector.changes(self._dirty_ids, self._gone_ids, self._listeners)
        self._dirty_ids = set()
        self._gone_ids = set()
        self._listeners = False
        return "Changed", message

    def next_nowait(self) -> tuple[str, dict[str, Any]] | None:
        """The snapshot, or the changes if there are some and ``interval`` has passed since the last message;
        ``None`` once the inspector is closed and everything was read.

        Raises:
            trio.WouldBlock: nothing to send yet.
        """
        if not self._snapshot_sent:
            return self._take()
        if self._inspector.closed:
            return self._take() if self._pending() else None
        now = trio.current_time()
        if now - self._swept >= SWEEP_INTERVAL:
            self._swept = now
            self._inspector.sweep()
        if self._pending() and now - self._last >= self._inspector.interval:
            return self._take()
        raise trio.WouldBlock

    async def next(self) -> tuple[str, dict[str, Any]] | None:
        """The next message, waiting for a change (and for ``interval`` after the last message)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                return self.next_nowait()
            except trio.WouldBlock:
                pass
            if self._pending():
                await trio.sleep_until(self._last + self._inspector.interval)
                continue
            self._wakeup = trio.Event()
            with trio.move_on_at(self._swept + SWEEP_INTERVAL):
                await self._wakeup.wait()
