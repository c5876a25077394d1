"""Gateway: channels in its nursery, a session per chat, replies out, best-effort extras, clean shutdown."""

from __future__ import annotations

import gc
import itertools
import json
import math
import weakref
from typing import TYPE_CHECKING, Any

import pydantic
import pytest
import trio
import trio.lowlevel
import trio.testing

from agents import (
    Agent,
    AssistantMessage,
    ElicitationUnavailable,
    Hooks,
    ReasoningChunk,
    RefusalChunk,
    RunContext,
    ScriptedModel,
    StopChunk,
    StopRun,
    TextChunk,
    ToolCall,
    ToolCallChunk,
    ToolContext,
    ToolResultMessage,
    UserMessage,
    tool,
)
from runtime import Channel, InboundMessage, MessageBus, OutboundMessage, SQLiteStore, open_gateway, open_runtime
from runtime._gateway import BEST_EFFORT_TIMEOUT

if TYPE_CHECKING:
    from pathlib import Path

    from agents import Message, ModelChunk, ModelRequest


class RecordingChannel:
    """Serves at once and hands every outbound message for it to the test, through ``delivered``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._send, self.delivered = trio.open_memory_channel[OutboundMessage](math.inf)

    async def run(self, bus: MessageBus, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._send:
            task_status.started()
            async for message in bus.outbound(self.name):
                self._send.send_nowait(message)

    async def say(self, bus: MessageBus, chat_id: str, text: str) -> InboundMessage:
        message = InboundMessage(self.name, chat_id, text)
        assert await bus.publish_inbound(message, policy="block")
        return message

    async def reply(self) -> OutboundMessage:
        """The next delivered message of kind ``reply``, skipping best-effort extras."""
        with trio.fail_after(5):
            while True:
                message = await self.delivered.receive()
                if message.kind == "reply":
                    return message

    async def answer(self) -> OutboundMessage:
        """The next delivered reply or error reply, skipping best-effort extras."""
        with trio.fail_after(5):
            while True:
                message = await self.delivered.receive()
                if message.kind in ("reply", "error"):
                    return message


class GatedChannel(RecordingChannel):
    """Serves at once, but reads its outbound queue only once ``gate`` is set (a chat app rate-limiting us)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gate = trio.Event()

    async def run(self, bus: MessageBus, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._send:
            task_status.started()
            await self.gate.wait()
            async for message in bus.outbound(self.name):
                self._send.send_nowait(message)


class MuteChannel:
    """Serves at once but never reads its outbound queue."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, bus: MessageBus, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


class StuckLoginChannel:
    """A QR login that never completes: ``started()`` is never called."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.login_began = False
        self.cleaned_up = False

    async def run(self, bus: MessageBus, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self.login_began = True
            await trio.sleep_forever()  # waiting for someone to scan the QR code
            task_status.started()
        finally:
            self.cleaned_up = True


class ReconnectingChannel:
    """Serves, loses its connection, and reconnects with exponential backoff in its own task."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.attempts: list[float] = []
        self.cleaned_up = False

    async def run(self, bus: MessageBus, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            task_status.started()
            backoff = 1.0
            while True:
                self.attempts.append(trio.current_time())
                await trio.sleep(backoff)
                backoff *= 2
        finally:
            self.cleaned_up = True


class CrashingChannel:
    """Serves, then fails for good."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fail = trio.Event()

    async def run(self, bus: MessageBus, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self.fail.wait()
        raise RuntimeError("connection lost for good")


class _ChunkStream:
    """One model call answering from a list of chunks (a class, so abandoning it never warns)."""

    def __init__(self, chunks: list[ModelChunk]) -> None:
        self._chunks = iter(chunks)

    async def __aenter__(self) -> _ChunkStream:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> _ChunkStream:
        return self

    async def __anext__(self) -> ModelChunk:
        await trio.lowlevel.checkpoint()
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None


class ReasoningModel:
    """Reasons in ``deltas`` chunks, then answers ``answer``."""

    def __init__(self, deltas: int, answer: str) -> None:
        self.deltas = deltas
        self.answer = answer

    def stream(self, request: ModelRequest) -> _ChunkStream:
        chunks: list[ModelChunk] = [ReasoningChunk(f"thought {i}") for i in range(self.deltas)]
        chunks.append(TextChunk(self.answer))
        return _ChunkStream(chunks)


class _HangingStream:
    """A model call that never answers."""

    async def __aenter__(self) -> _HangingStream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> _HangingStream:
        return self

    async def __anext__(self) -> ModelChunk:
        raise StopAsyncIteration


class HangingModel:
    """Never answers."""

    def stream(self, request: ModelRequest) -> _HangingStream:
        return _HangingStream()


def _recorder(seen: list[tuple[Message, ...]], answer: str) -> Any:
    def turn(request: ModelRequest) -> str:
        seen.append(request.messages)
        return answer

    return turn


async def test_gateway_fake_channels_implement_the_channel_protocol() -> None:
    """Every fake channel of this file is a runtime.Channel."""
    for channel in (
        RecordingChannel("a"),
        MuteChannel("b"),
        StuckLoginChannel("c"),
        ReconnectingChannel("d"),
        CrashingChannel("e"),
    ):
        assert isinstance(channel, Channel)


async def test_gateway_replies_on_the_channels_outbound_queue() -> None:
    """A message gets a reply, delivered by its channel, with reply_to set to the message's id."""
    web = RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel(["hello there"]))
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        with trio.fail_after(5):
            await gateway.wait_ready("web")
        message = await web.say(gateway.bus, "chat-1", "hi")
        reply = await web.reply()
        assert reply == OutboundMessage("web", "chat-1", "hello there", "reply", message.message_id)
        assert gateway.statistics().handled == 1


async def test_gateway_messages_of_one_chat_share_one_session() -> None:
    """The second message of a chat is answered with the first exchange in the model's input."""
    seen: list[tuple[Message, ...]] = []
    web = RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel([_recorder(seen, "one"), _recorder(seen, "two")]))
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        await web.say(gateway.bus, "chat-1", "first")
        assert (await web.reply()).text == "one"
        await web.say(gateway.bus, "chat-1", "second")
        assert (await web.reply()).text == "two"
        assert gateway.statistics().sessions == 1
    assert seen[0] == (UserMessage("first"),)
    assert seen[1] == (UserMessage("first"), AssistantMessage("one"), UserMessage("second"))


async def test_gateway_two_chats_get_two_sessions() -> None:
    """Messages of two chats (and of one chat id on two channels) are answered in separate sessions."""
    seen: list[tuple[Message, ...]] = []
    web, ws = RecordingChannel("web"), RecordingChannel("ws")
    agent = Agent(name="a", model=ScriptedModel([_recorder(seen, "one"), _recorder(seen, "two"), _recorder(seen, "3")]))
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web, ws]) as gateway:
        await web.say(gateway.bus, "chat-1", "first")
        assert (await web.reply()).chat_id == "chat-1"
        await web.say(gateway.bus, "chat-2", "second")
        assert (await web.reply()).chat_id == "chat-2"
        await ws.say(gateway.bus, "chat-1", "third")
        assert (await ws.reply()).chat_id == "chat-1"
        assert gateway.statistics().sessions == 3
    assert seen == [(UserMessage("first"),), (UserMessage("second"),), (UserMessage("third"),)]


async def test_gateway_reaps_an_idle_chats_session(autojump_clock: trio.testing.MockClock) -> None:
    """An idle chat's session is reaped after idle_timeout, and its next message starts a fresh session."""
    seen: list[tuple[Message, ...]] = []
    web = RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel([_recorder(seen, "one"), _recorder(seen, "two")]))
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web], idle_timeout=10) as gateway:
        await web.say(gateway.bus, "chat-1", "first")
        await web.reply()
        await trio.sleep(9)
        assert gateway.statistics().sessions == 1
        await trio.sleep(2)
        assert gateway.statistics().sessions == 0
        await web.say(gateway.bus, "chat-1", "second")
        assert (await web.reply()).text == "two"
        assert gateway.statistics().sessions == 1
    assert seen == [(UserMessage("first"),), (UserMessage("second"),)]


async def test_gateway_answers_a_message_that_arrives_as_its_chats_session_is_reaped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A message the gateway takes in the very instant its chat's idle session is reaped is answered
    (the session is in use from then until its run has begun). The reaper and the gateway wake in one
    batch, in either order: twenty tries."""
    for _ in range(20):
        web = RecordingChannel("web")
        agent = Agent(name="a", model=ScriptedModel(["one", "two"]))
        async with open_runtime() as runtime, open_gateway(runtime, agent, [web], idle_timeout=10) as gateway:
            await web.say(gateway.bus, "chat-1", "first")
            assert (await web.reply()).text == "one"  # its session is idle from this instant
            # No schedule point in "drop": the gateway is woken with the reaper, at the jump.
            assert await gateway.bus.publish_inbound(InboundMessage("web", "chat-1", "second"), policy="drop")
            autojump_clock.jump(10)
            assert (await web.reply()).text == "two"


async def test_gateway_delivers_progress_before_the_reply() -> None:
    """A tool call is announced as a progress message, then the reply follows."""

    @tool
    async def lookup(query: str) -> str:
        """Look something up."""
        await trio.lowlevel.checkpoint()
        return "found"

    web = RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel([ToolCall("lookup", {"query": "x"}), "done"]), tools=[lookup])
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        message = await web.say(gateway.bus, "chat-1", "hi")
        with trio.fail_after(5):
            progress = await web.delivered.receive()
        assert progress == OutboundMessage("web", "chat-1", "calling lookup", "progress", message.message_id)
        assert (await web.reply()).text == "done"
        assert gateway.statistics().best_effort_dropped == 0


async def test_gateway_sends_tool_progress_as_progress_messages() -> None:
    """``ctx.report_progress`` in a tool reaches the chat as progress messages, before the reply."""

    @tool
    async def crunch(ctx: ToolContext[None]) -> str:
        """Crunch numbers."""
        await ctx.report_progress(1, total=2, message="half way")
        await ctx.report_progress(2)
        return "crunched"

    web = RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel([ToolCall("crunch"), "done"]), tools=[crunch])
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        await web.say(gateway.bus, "chat-1", "hi")
        with trio.fail_after(5):
            texts = [(await web.delivered.receive()).text for _ in range(4)]
    assert texts == ["calling crunch", "half way (1/2)", "progress 2", "done"]


async def test_gateway_runs_a_tool_that_asks_without_waiting_for_an_answer_no_chat_can_give() -> None:
    """A chat cannot answer a tool's question: a call needing approval is refused and a tool's ctx.elicit
    raises ElicitationUnavailable, at once, and the run goes on to its reply; the chat's next message is
    answered too. Before, the run waited for an answer for good: no reply, and the chat wedged behind it."""
    asked: list[str] = []

    @tool(requires_approval=True)
    async def deploy() -> str:
        """Deploy (needs a human's yes)."""
        return "deployed"

    @tool
    async def confirm(ctx: ToolContext[None]) -> str:
        """Ask the human."""
        try:
            await ctx.elicit("sure?")
        except ElicitationUnavailable as exc:
            asked.append(str(exc))
        return "asked"

    def answer(request: ModelRequest) -> Any:
        last = request.messages[-1]
        if isinstance(last, UserMessage):
            return [ToolCall("deploy"), ToolCall("confirm")] if last.content == "ship it" else "fine"
        assert isinstance(last, ToolResultMessage)
        return "answered without the human"

    web = RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel(itertools.repeat(answer)), tools=[deploy, confirm])
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        await web.say(gateway.bus, "chat-1", "ship it")
        await web.say(gateway.bus, "chat-1", "and then?")
        assert (await web.answer()).text == "answered without the human"
        assert (await web.answer()).text == "fine"
    assert len(asked) == 1


class _ChatHeldStore(SQLiteStore):
    """A store whose claim of one chat's session waits until the test lets it go (a long history to load, a
    remote database under load)."""

    def __init__(self, path: str, chat: str) -> None:
        super().__init__(path)
        self.chat = chat
        self.claiming = trio.Event()
        self.let_go = trio.Event()

    async def claim(self, session_id: str, agent: str, *, create: bool, fresh: bool = False) -> Any:
        if self.chat in session_id:
            self.claiming.set()
            await self.let_go.wait()
        return await super().claim(session_id, agent, create=create, fresh=fresh)


async def test_gateway_a_chat_whose_session_is_slow_to_open_holds_up_no_other_chat(tmp_path: Path) -> None:
    """One chat's session takes long to open (its store's claim waits): another chat's messages, live or new,
    are answered meanwhile, and the slow chat's own messages are answered in order once it is open. Before,
    the router opened sessions inline, so every message behind it waited."""

    def echo(request: ModelRequest) -> str:
        last = request.messages[-1]
        assert isinstance(last, UserMessage)
        return f"re: {last.content}"

    store = _ChatHeldStore(str(tmp_path / "sessions.db"), "big")
    web = RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel(itertools.repeat(echo)))
    with trio.fail_after(10):
        async with open_runtime(store=store) as runtime, open_gateway(runtime, agent, [web]) as gateway:
            await web.say(gateway.bus, "alice", "hello")
            assert (await web.answer()).text == "re: hello"
            await web.say(gateway.bus, "big", "one")
            await store.claiming.wait()
            await web.say(gateway.bus, "big", "two")
            await web.say(gateway.bus, "alice", "again")
            await web.say(gateway.bus, "bob", "hi")
            early = {(reply.chat_id, reply.text) for reply in [await web.answer(), await web.answer()]}
            assert early == {("alice", "re: again"), ("bob", "re: hi")}
            store.let_go.set()
            late = [(reply.chat_id, reply.text) for reply in [await web.answer(), await web.answer()]]
            assert late == [("big", "re: one"), ("big", "re: two")]
            await web.say(gateway.bus, "big", "three")
            assert (await web.answer()).text == "re: three"
            assert gateway.statistics().in_flight == 0


async def test_gateway_exit_while_a_chats_session_is_opening_finishes_promptly(tmp_path: Path) -> None:
    """The gateway exits while a chat's session is being opened with more of its messages waiting: the
    opening is cancelled, the waiting messages' places are given back, nothing is left running."""
    store = _ChatHeldStore(str(tmp_path / "sessions.db"), "big")
    web = RecordingChannel("web")
    with trio.fail_after(10):
        async with open_runtime(store=store) as runtime:
            async with open_gateway(runtime, Agent(name="a", model=ScriptedModel(["x"])), [web]) as gateway:
                await web.say(gateway.bus, "big", "one")
                await store.claiming.wait()
                await web.say(gateway.bus, "big", "two")
                await trio.testing.wait_all_tasks_blocked()
                assert gateway.statistics().in_flight == 2
            assert gateway.statistics().in_flight == 0


async def test_gateway_replies_with_a_typed_output_as_json() -> None:
    """An agent with an output type answers the chat with its validated value, as JSON."""

    class Answer(pydantic.BaseModel):
        city: str
        celsius: float

    web = RecordingChannel("web")
    model = ScriptedModel([ToolCall("final_result", {"city": "Oslo", "celsius": "3"})])
    agent = Agent(name="a", model=model, output_type=Answer)
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        await web.say(gateway.bus, "chat-1", "weather?")
        reply = await web.reply()
    assert json.loads(reply.text) == {"city": "Oslo", "celsius": 3.0}  # validated: "3" became 3.0


async def test_gateway_replies_with_the_refusal() -> None:
    """A refusal is the reply (an OpenAI refusal streams no text at all)."""
    web = RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel([[RefusalChunk("I can't help with that."), StopChunk("refusal")]]))
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        await web.say(gateway.bus, "chat-1", "something bad")
        reply = await web.reply()
    assert reply.text == "I can't help with that."


async def test_gateway_reasoning_is_best_effort_and_never_blocks_the_run(mock_clock: trio.testing.MockClock) -> None:
    """With no room on the outbound queue, reasoning deltas are dropped and counted; only the reply waits."""
    deltas = 8
    bus = MessageBus(outbound_size=1)
    mute = MuteChannel("mute")
    agent = Agent(name="a", model=ReasoningModel(deltas, "answer"))
    async with (
        open_runtime() as runtime,
        open_gateway(runtime, agent, [mute], bus=bus, idle_timeout=None) as gateway,
    ):
        message = InboundMessage("mute", "chat-1", "think")
        await bus.publish_inbound(message, policy="drop")
        # The first delta fills the queue; each later one waits BEST_EFFORT_TIMEOUT, then is dropped.
        for _ in range(deltas - 1):
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(BEST_EFFORT_TIMEOUT)
        await trio.testing.wait_all_tasks_blocked()
        assert gateway.statistics().best_effort_dropped == deltas - 1
        assert gateway.statistics().handled == 0  # the reply waits for room, with no timeout
        # Only the first extra waited (and timed out); once stalled, the rest dropped without waiting.
        assert bus.statistics().outbound.timed_out == 1
        mock_clock.jump(3600)  # the reply waits however long it takes
        await trio.testing.wait_all_tasks_blocked()
        assert gateway.statistics().handled == 0
        outbound = bus.outbound("mute")
        assert outbound.receive_nowait() == OutboundMessage(
            "mute", "chat-1", "thought 0", "reasoning", message.message_id
        )
        await trio.testing.wait_all_tasks_blocked()
        assert outbound.receive_nowait() == OutboundMessage("mute", "chat-1", "answer", "reply", message.message_id)
        assert gateway.statistics().handled == 1
        assert gateway.statistics().best_effort_dropped == deltas - 1


async def test_gateway_stalled_channel_delays_a_run_by_one_best_effort_timeout_at_most(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On a channel that never reads, a run with many reasoning deltas finishes within a couple of timeouts."""
    deltas = 200
    bus = MessageBus(outbound_size=1)
    agent = Agent(name="a", model=ReasoningModel(deltas, "answer"))
    async with (
        open_runtime() as runtime,
        open_gateway(runtime, agent, [MuteChannel("mute")], bus=bus, idle_timeout=None) as gateway,
    ):
        await bus.publish_inbound(InboundMessage("mute", "chat-1", "think"), policy="drop")
        await trio.sleep(3 * BEST_EFFORT_TIMEOUT)
        # Today this is about 3 after 0.15 s; all 199 are dropped only after 199 * 0.05 s ≈ 10 s.
        assert gateway.statistics().best_effort_dropped == deltas - 1


async def test_gateway_exit_while_a_reply_is_blocked_finishes_promptly() -> None:
    """Leaving the gateway while a reply waits on a full outbound queue ends at once, without deadlock."""
    bus = MessageBus(outbound_size=1)
    agent = Agent(name="a", model=ScriptedModel(["one", "two"]))
    with trio.fail_after(5):
        async with open_runtime() as runtime:
            async with open_gateway(runtime, agent, [MuteChannel("mute")], bus=bus, idle_timeout=None) as gateway:
                await bus.publish_inbound(InboundMessage("mute", "chat-1", "a"), policy="drop")
                await bus.publish_inbound(InboundMessage("mute", "chat-2", "b"), policy="drop")
                await trio.testing.wait_all_tasks_blocked()
                assert gateway.statistics().handled == 1  # the other reply waits for room
                assert bus.statistics().outbound.buffered == 1
                start = trio.current_time()
            assert trio.current_time() - start < 1
            assert bus.closed
            assert gateway.statistics().sessions == 0
            assert gateway.statistics().handled == 1


async def test_gateway_stuck_login_does_not_delay_other_channels(autojump_clock: trio.testing.MockClock) -> None:
    """A channel whose login never completes leaves the others to start, and is cancelled cleanly on exit."""
    stuck, web = StuckLoginChannel("whatsapp"), RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel(["hello"]))
    async with open_runtime() as runtime:
        # Around the whole block: a gateway that waited for the stuck login
        # before starting "web" (or before its body) fails here, never hangs.
        with trio.fail_after(1):
            async with open_gateway(runtime, agent, [stuck, web]) as gateway:
                await gateway.wait_ready("web")
                assert gateway.is_ready("web")
                assert not gateway.is_ready("whatsapp")
                await web.say(gateway.bus, "chat-1", "hi")
                assert (await web.reply()).text == "hello"
                assert stuck.login_began
                assert not stuck.cleaned_up
                start = trio.current_time()
            assert trio.current_time() == start
        assert stuck.cleaned_up
        assert not gateway.is_ready("whatsapp")


async def test_gateway_ready_of_an_unknown_channel_is_a_value_error() -> None:
    """``is_ready`` and ``wait_ready`` with a name that is none of the gateway's channels raise a ValueError
    naming the channels it has, not a bare KeyError."""
    agent = Agent(name="a", model=ScriptedModel([]))
    async with open_runtime() as runtime, open_gateway(runtime, agent, [RecordingChannel("webhook")]) as gateway:
        await gateway.wait_ready("webhook")
        with pytest.raises(ValueError, match=r"no channel named 'webhooks'; its channels: 'webhook'$"):
            gateway.is_ready("webhooks")
        with pytest.raises(ValueError, match=r"no channel named 'webhooks'; its channels: 'webhook'$"):
            await gateway.wait_ready("webhooks")


async def test_gateway_cancels_a_reconnect_backoff_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """A channel sleeping in its reconnect backoff is cancelled at once when the gateway exits."""
    channel = ReconnectingChannel("flaky")
    agent = Agent(name="a", model=ScriptedModel([]))
    async with open_runtime() as runtime:
        async with open_gateway(runtime, agent, [channel]) as gateway:
            await gateway.wait_ready("flaky")
            await trio.sleep(5.5)  # attempts at 0, 1, 3; now 2.5 s into a 4 s backoff
            assert channel.attempts == [0, 1, 3]
            start = trio.current_time()
        assert trio.current_time() - start == pytest.approx(0)
        assert channel.cleaned_up
        assert channel.attempts == [0, 1, 3]


async def test_gateway_channel_failing_after_start_fails_the_gateway() -> None:
    """A channel raising after started() cancels the block and the other channels; its error comes out as itself.

    What the code does now: the channel's task lives in the gateway's nursery,
    so its error cancels the router, the other channels and the body of the
    ``async with`` block; the bus is closed, the chats' sessions are closed,
    and ``open_gateway`` raises the error itself (a one-error group is
    unwrapped, as ``open_runtime`` does).
    Reconnecting is the channel's own loop, so an error that escapes it is a
    bug worth surfacing, not one to swallow.
    """
    crashing, web = CrashingChannel("crashing"), RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel(["hello"]))
    body_cancelled = False
    async with open_runtime() as runtime:
        with trio.fail_after(5), pytest.raises(RuntimeError, match="lost for good"):
            async with open_gateway(runtime, agent, [crashing, web]) as gateway:
                await gateway.wait_ready("web")
                await web.say(gateway.bus, "chat-1", "hi")
                await web.reply()
                crashing.fail.set()
                try:
                    await trio.sleep_forever()
                except trio.Cancelled:
                    body_cancelled = True
                    raise
        assert body_cancelled
        assert gateway.bus.closed
        assert gateway.statistics().sessions == 0


async def test_gateway_error_raised_in_the_block_comes_out_as_itself() -> None:
    """An error raised in the gateway block comes out unwrapped, as it does from open_runtime."""
    agent = Agent(name="a", model=ScriptedModel([]))
    async with open_runtime() as runtime:
        with pytest.raises(KeyError):
            async with open_gateway(runtime, agent, [RecordingChannel("web")]):
                raise KeyError("mine")


async def test_gateway_channel_names_must_be_unique() -> None:
    """Two channels of one name are refused with ValueError before anything starts."""
    first, second = StuckLoginChannel("web"), StuckLoginChannel("web")
    agent = Agent(name="a", model=ScriptedModel([]))
    async with open_runtime() as runtime:
        with pytest.raises(ValueError, match="unique"):
            async with open_gateway(runtime, agent, [first, second]):
                pytest.fail("the block must not run")
    assert not first.login_began
    assert not second.login_began


async def test_gateway_replies_with_the_runs_output_not_every_turns_text() -> None:
    """The reply is the run's answer: not the text the model wrote before calling a tool, and a stop
    hook's message when a hook ends the run."""

    @tool
    async def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    class Stopper(Hooks):
        async def on_user_prompt(self, ctx: RunContext[None], prompt: str) -> StopRun | None:
            return StopRun("Sorry, I can't help with that.") if prompt == "stop" else None

    model = ScriptedModel(
        [[TextChunk("Let me compute that. "), ToolCallChunk("c1", "add", {"a": 2, "b": 3}), StopChunk("tool_use")], "5"]
    )
    web = RecordingChannel("web")
    agent = Agent(name="a", model=model, tools=[add], hooks=[Stopper()])
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        await web.say(gateway.bus, "chat-1", "add 2 and 3")
        assert (await web.reply()).text == "5"
        await web.say(gateway.bus, "chat-1", "stop")
        assert (await web.reply()).text == "Sorry, I can't help with that."


async def test_gateway_answers_an_output_it_cannot_send_with_an_error_reply() -> None:
    """A typed answer the model nested past the arguments' depth limit is refused as output (the run
    fails, with an error reply); the session goes on serving the chat."""
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(200):
        deep = {"next": deep}

    class Deep(pydantic.BaseModel):
        tree: dict[str, Any]

    web = RecordingChannel("web")
    model = ScriptedModel([ToolCall("final_result", {"tree": deep}), ToolCall("final_result", {"tree": {"a": 1}})])
    agent = Agent(name="a", model=model, output_type=Deep, output_retries=0)
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        await web.say(gateway.bus, "chat-1", "deep")
        with trio.fail_after(5):
            while (message := await web.delivered.receive()).kind != "error":
                pass
        assert "nested deeper than 64" in message.text
        await web.say(gateway.bus, "chat-1", "again")
        assert json.loads((await web.reply()).text) == {"tree": {"a": 1}}


async def test_gateway_replies_with_a_stop_hooks_message_for_a_typed_agent_too() -> None:
    class Answer(pydantic.BaseModel):
        city: str

    class Stopper(Hooks):
        async def on_user_prompt(self, ctx: RunContext[None], prompt: str) -> StopRun | None:
            return StopRun("Sorry, I can't help with that.")

    web = RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel(["never"]), output_type=Answer, hooks=[Stopper()])
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        await web.say(gateway.bus, "chat-1", "weather?")
        assert (await web.reply()).text == "Sorry, I can't help with that."


async def test_gateway_answers_a_run_that_hit_max_turns_with_an_error_reply() -> None:
    """A run that reached max_turns has no answer: the chat gets an error reply saying so, not an empty
    reply; the next message is answered as usual."""

    @tool
    async def noop() -> str:
        """Does nothing."""
        return "ok"

    web = RecordingChannel("web")
    model = ScriptedModel([ToolCall("noop"), ToolCall("noop"), "fine"])
    agent = Agent(name="a", model=model, tools=[noop], max_turns=2)
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        await web.say(gateway.bus, "chat-1", "loop")
        with trio.fail_after(5):
            while (message := await web.delivered.receive()).kind not in ("reply", "error"):
                pass
        assert message.kind == "error"
        assert message.text.startswith("the run ended: max_turns")
        await web.say(gateway.bus, "chat-1", "again")
        assert (await web.reply()).text == "fine"


async def test_gateway_answers_a_chat_whose_session_another_process_holds_with_an_error_reply(tmp_path: Path) -> None:
    """With a store, a chat whose session another process holds gets an error reply; the gateway and its
    other chats go on."""
    agent = Agent(name="a", model=ScriptedModel(["one"]))
    web = RecordingChannel("web")
    async with open_runtime(store=SQLiteStore(tmp_path / "s.db"), owner="other-replica") as other:
        held = await other.start_session(agent, session_id="web:busy")
        async with (
            open_runtime(store=SQLiteStore(tmp_path / "s.db"), owner="me") as runtime,
            open_gateway(runtime, agent, [web]) as gateway,
        ):
            message = await web.say(gateway.bus, "busy", "hi")
            error = await web.answer()
            assert (error.kind, error.chat_id, error.reply_to) == ("error", "busy", message.message_id)
            assert "could not be started" in error.text
            assert "other-replica" in error.text
            await web.say(gateway.bus, "free", "hi")
            assert (await web.answer()).text == "one"
            assert gateway.statistics().handled == 2
        await held.aclose()


async def test_gateway_session_ids_are_one_per_chat_and_keep_the_stored_ones(tmp_path: Path) -> None:
    """Chat "x:y" of channel "a" and chat "y" of channel "a:x" get a session each (both were "a:x:y"), and a
    chat of a channel without ":" in its name finds the session stored under "channel:chat_id" before."""
    seen: list[tuple[Message, ...]] = []
    agent = Agent(name="a", model=ScriptedModel(["before", *(_recorder(seen, str(i)) for i in range(3))]))
    async with (
        open_runtime(store=SQLiteStore(tmp_path / "s.db")) as runtime,
        runtime.open_session(agent, session_id="a:old") as session,
    ):
        await session.ask("earlier")
    a, ax = RecordingChannel("a"), RecordingChannel("a:x")
    async with (
        open_runtime(store=SQLiteStore(tmp_path / "s.db")) as runtime,
        open_gateway(runtime, agent, [a, ax]) as gateway,
    ):
        await a.say(gateway.bus, "x:y", "first")
        assert (await a.answer()).text == "0"
        await ax.say(gateway.bus, "y", "second")
        assert (await ax.answer()).text == "1"
        await a.say(gateway.bus, "old", "third")
        assert (await a.answer()).text == "2"
        assert gateway.statistics().sessions == 3
    assert seen == [
        (UserMessage("first"),),
        (UserMessage("second"),),
        (UserMessage("earlier"), AssistantMessage("before"), UserMessage("third")),
    ]


async def test_gateway_answers_a_chat_whose_id_no_session_id_may_hold(tmp_path: Path) -> None:
    """A chat id that makes a session id the rule refuses (over 1,024 bytes, NUL, a lone surrogate) no longer
    fails the gateway: each such chat is answered in a session of its own, the same one for its next message,
    in the next process too (a stable id in the store), and the other chats go on."""
    seen: list[tuple[Message, ...]] = []
    agent = Agent(name="a", model=ScriptedModel([_recorder(seen, str(i)) for i in range(8)]))
    web = RecordingChannel("web")
    odd = ["x" * 1100, "a\x00b", "\ud800", "x" * 1101]
    async with (
        open_runtime(store=SQLiteStore(tmp_path / "s.db")) as runtime,
        open_gateway(runtime, agent, [web]) as gateway,
    ):
        for i, chat_id in enumerate(odd):
            message = await web.say(gateway.bus, chat_id, f"hi {i}")
            answer = await web.answer()
            assert (answer.kind, answer.chat_id, answer.reply_to) == ("reply", chat_id, message.message_id)
        await web.say(gateway.bus, "ok", "hello")
        assert (await web.answer()).text == str(len(odd))
        assert gateway.statistics().sessions == len(odd) + 1
    web = RecordingChannel("web")
    async with (
        open_runtime(store=SQLiteStore(tmp_path / "s.db")) as runtime,
        open_gateway(runtime, agent, [web]) as gateway,
    ):
        await web.say(gateway.bus, odd[0], "again")
        assert (await web.answer()).text == "5"
    assert seen[:4] == [(UserMessage(f"hi {i}"),) for i in range(4)]
    assert seen[5] == (UserMessage("hi 0"), AssistantMessage("0"), UserMessage("again"))


async def test_gateway_answers_a_chat_with_a_lone_surrogate_on_a_channel_named_with_a_colon() -> None:
    """On a channel whose name holds ':' (its ids are percent-encoded, UTF-8), a chat id with a lone surrogate
    is answered in a session of its own and the other chats go on; encoding it raised UnicodeEncodeError, which
    ended the gateway."""
    agent = Agent(name="a", model=ScriptedModel(["one", "two"]))
    web = RecordingChannel("team:web")
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        await web.say(gateway.bus, "\ud800", "hi")
        assert (await web.answer()).text == "one"
        await web.say(gateway.bus, "ok", "hi")
        assert (await web.answer()).text == "two"


async def test_gateway_reply_waiting_for_room_outlives_the_idle_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """A reply that waits for room on the bus for longer than idle_timeout is still delivered: its chat's
    session stays in use until the reply is out, so the reaper cannot cancel it."""
    bus = MessageBus(outbound_size=1)
    web = GatedChannel("web")
    agent = Agent(name="a", model=ScriptedModel(["answer a", "answer b"]))
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web], bus=bus, idle_timeout=10) as gateway:
        await web.say(gateway.bus, "chat-a", "q")
        await web.say(gateway.bus, "chat-b", "q")
        await trio.sleep(15)
        # chat-a's reply took the one place on the bus and its session was reaped; chat-b's reply waits.
        assert gateway.statistics().sessions == 1
        web.gate.set()
        assert {(await web.reply()).text, (await web.reply()).text} == {"answer a", "answer b"}
        assert gateway.statistics().handled == 2


@tool
async def break_the_session(ctx: ToolContext[Any]) -> str:
    """Start a task of the session that fails, and wait."""

    async def fail() -> None:
        raise RuntimeError("a background job failed")

    ctx.session.start_soon(fail)
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def test_gateway_answers_a_message_whose_session_fails_mid_run_with_an_error_reply() -> None:
    """A message whose chat's session fails while its run is under way gets an error reply, not silence;
    the chat's next message is answered in a fresh session."""
    web = RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel([ToolCall("break_the_session"), "fresh"]), tools=[break_the_session])
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
        message = await web.say(gateway.bus, "chat-1", "go")
        error = await web.answer()
        assert (error.kind, error.reply_to) == ("error", message.message_id)
        assert "session failed" in error.text
        await web.say(gateway.bus, "chat-1", "again")
        assert (await web.answer()).text == "fresh"
        await trio.testing.wait_all_tasks_blocked()
        assert gateway.statistics().handled == 2
        assert gateway.statistics().in_flight == 0


@tool
async def break_the_session_once_all_wait(ctx: ToolContext[Any]) -> str:
    """Fail the session once everything else waits (the chat's later messages in its run slot)."""

    async def fail() -> None:
        await trio.testing.wait_all_tasks_blocked()
        raise RuntimeError("a background job failed")

    ctx.session.start_soon(fail)
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def test_gateway_error_replies_of_a_failed_session_go_out_in_the_order_of_their_messages() -> None:
    """A chat's session fails with four of its messages unanswered: their error replies go out in the order
    the messages came, every time. Before, each went out from a task of its own as soon as it could, in
    whatever order the scheduler ran them (newest first about half the time)."""
    for _ in range(12):  # trio runs a pass's tasks in a random order: a wrong order shows within a few rounds
        web = RecordingChannel("web")
        agent = Agent(
            name="a",
            model=ScriptedModel([ToolCall("break_the_session_once_all_wait")]),
            tools=[break_the_session_once_all_wait],
        )
        with trio.fail_after(5):
            async with open_runtime() as runtime, open_gateway(runtime, agent, [web]) as gateway:
                sent = [(await web.say(gateway.bus, "chat-1", f"m{n}")).message_id for n in range(4)]
                replies = [await web.answer() for _ in sent]
        assert [reply.kind for reply in replies] == ["error"] * 4
        assert [reply.reply_to for reply in replies] == sent
        assert gateway.statistics().in_flight == 0


async def test_gateway_takes_no_more_than_max_in_flight_messages_off_the_bus() -> None:
    """With every answer stuck, the gateway takes max_in_flight messages and no more: the bus's inbound
    queue fills, and publishers find no room (rather than the gateway queueing runs without bound)."""
    bus = MessageBus(inbound_size=2)
    web = RecordingChannel("web")
    agent = Agent(name="a", model=HangingModel())
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web], bus=bus, max_in_flight=3) as gateway:
        accepted = 0
        for i in range(20):
            accepted += await bus.publish_inbound(InboundMessage("web", "chat-1", f"m{i}"), policy="drop")
            await trio.testing.wait_all_tasks_blocked()
        assert accepted == 5
        assert gateway.statistics().in_flight == 3
        assert bus.statistics().inbound.buffered == 2
        assert bus.statistics().inbound.dropped == 15


async def test_gateway_max_in_flight_must_be_at_least_one() -> None:
    """max_in_flight below 1 (a gateway that could take no message) is a ValueError."""
    agent = Agent(name="a", model=ScriptedModel([]))
    async with open_runtime() as runtime:
        with pytest.raises(ValueError, match="max_in_flight must be at least 1"):
            async with open_gateway(runtime, agent, [], max_in_flight=0):
                pytest.fail("the block must not run")


@pytest.mark.parametrize("idle_timeout", [math.nan, -1, 0])
async def test_gateway_idle_timeout_that_is_not_above_zero_is_a_value_error(idle_timeout: float) -> None:
    """open_gateway refuses an idle_timeout that is not above zero (NaN meant its chats' sessions were never
    reaped, zero or below that each was reaped at once), before any channel starts."""
    agent = Agent(name="a", model=ScriptedModel([]))
    web = RecordingChannel("web")
    async with open_runtime() as runtime:
        with pytest.raises(ValueError, match=f"idle_timeout must be above zero, not {idle_timeout!r}"):
            async with open_gateway(runtime, agent, [web], idle_timeout=idle_timeout):
                pytest.fail("the block must not run")


@pytest.mark.parametrize("durable", [False, True], ids=["in-memory", "sqlite"])
async def test_a_chats_next_message_waits_for_its_closing_session_to_end(tmp_path: Path, durable: bool) -> None:
    """A chat's session failed, and its run's on_run_end still has its second of grace, when the chat's next
    message comes: it is answered in a fresh session once the old one has ended. With a store, it was an
    error reply ("session ... is live already, held by" this process): the old session's claim is let go only
    once its tasks have ended. (The real clock: the store's thread and an autojumping clock do not mix.)"""
    ending = trio.Event()

    class SlowEnd(Hooks):
        async def on_run_end(self, ctx: RunContext[Any], reason: str) -> None:
            if reason == "cancelled":
                ending.set()
                await trio.sleep_forever()  # cut by the runtime after its second of grace

    web = RecordingChannel("web")
    model = ScriptedModel([ToolCall("break_the_session"), "second answer"])
    agent = Agent(name="a", model=model, tools=[break_the_session], hooks=[SlowEnd()])
    store = SQLiteStore(tmp_path / "s.db") if durable else None
    async with open_runtime(store=store) as runtime, open_gateway(runtime, agent, [web]) as gateway:
        await web.say(gateway.bus, "chat-1", "first")
        await ending.wait()  # the session has failed; its run's end hook runs on
        await web.say(gateway.bus, "chat-1", "second")
        first, second = await web.answer(), await web.answer()
    assert first.kind == "error"
    assert (second.kind, second.text) == ("reply", "second answer")


async def test_a_reaped_chats_session_and_history_are_not_kept(autojump_clock: trio.testing.MockClock) -> None:
    """Once a chat's session is reaped, the gateway keeps nothing of it: its Session (and the history in it)
    is freed. Reaped sessions were forgotten only when enough new ones were opened: a gateway gone quiet kept
    every one, history and all."""
    web = RecordingChannel("web")
    agent = Agent(name="a", model=ScriptedModel(itertools.repeat("ok")))
    async with open_runtime() as runtime, open_gateway(runtime, agent, [web], idle_timeout=60) as gateway:
        for chat in ("a", "b", "c"):
            await web.say(gateway.bus, chat, "x" * 100_000)
            await web.answer()
        sessions = [weakref.ref(session) for session in runtime.sessions]
        assert len(sessions) == 3
        await trio.sleep(120)  # every chat idle past its timeout: reaped
        assert runtime.sessions == ()
        gc.collect()
        assert [ref() for ref in sessions] == [None, None, None]
        assert gateway.statistics().sessions == 0


class _HangsOnItsFirstMessage:
    """Answers "ok", but never the message "hang"."""

    def stream(self, request: ModelRequest) -> _HangingStream | _ChunkStream:
        last = request.messages[-1]
        if isinstance(last, UserMessage) and last.content == "hang":
            return _HangingStream()
        return _ChunkStream([TextChunk("ok")])


async def test_one_chat_cannot_take_every_place_of_the_gateway() -> None:
    """A chat whose agent hangs keeps at most max_waiting_per_chat messages waiting behind the one being
    answered; its next ones get an error reply at once, and another chat is still answered. Every message of
    the one chat took a place of max_in_flight: at 1,000 no chat was answered any more."""
    web = RecordingChannel("web")
    agent = Agent(name="a", model=_HangsOnItsFirstMessage())
    async with (
        open_runtime() as runtime,
        open_gateway(runtime, agent, [web], max_in_flight=10, max_waiting_per_chat=3) as gateway,
    ):
        await web.say(gateway.bus, "stuck", "hang")
        for i in range(3):
            await web.say(gateway.bus, "stuck", f"waits {i}")
        refused = [await web.say(gateway.bus, "stuck", f"refused {i}") for i in range(5)]
        errors = [await web.answer() for _ in refused]
        assert [error.reply_to for error in errors] == [message.message_id for message in refused]
        assert {error.kind for error in errors} == {"error"}
        assert "too many messages waiting in this chat" in errors[0].text
        await web.say(gateway.bus, "other", "hello")
        assert (await web.answer()).text == "ok"
        assert gateway.statistics().in_flight == 4  # the stuck chat's: the one being answered and 3 waiting


@pytest.mark.parametrize("limit", [-1, math.nan])
async def test_gateway_max_waiting_per_chat_must_not_be_negative(limit: float) -> None:
    """Below zero, or NaN (every comparison false: no limit at all, silently), is a ValueError."""
    agent = Agent(name="a", model=ScriptedModel([]))
    async with open_runtime() as runtime:
        with pytest.raises(ValueError, match="max_waiting_per_chat must be at least 0"):
            async with open_gateway(runtime, agent, [], max_waiting_per_chat=limit):  # type: ignore[arg-type]
                pytest.fail("the block must not run")
