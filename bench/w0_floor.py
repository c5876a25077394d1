"""W0 floor: the cost of one event hop through a raw trio memory channel, and through trio-agents.

1,000,000 items through ``trio.open_memory_channel`` (buffer 0 and 100),
one producer, one consumer: ns per item, the physical floor of one event hop
on this machine. Then trio-agents' marginal cost of one streamed event:
runs whose answer is 1 word and 2,001 words (each word one ``TextDelta``
from model chunk to consumer), (t_2001 - t_1) / 2000. And the same for
``ToolCallDelta``: runs making one tool call whose arguments stream in 2 and
2,002 pieces (``ScriptedModel(stream_arguments=True)``), then answering.

Run with trio-agents' interpreter: ``.venv/bin/python bench/w0_floor.py``.
"""

from __future__ import annotations

import time

import trio
from _harness import emit, load, parse


def channel_ns_per_item(items: int, buffer: int) -> float:
    async def main() -> float:
        send, receive = trio.open_memory_channel[int](buffer)

        async def produce() -> None:
            async with send:
                for i in range(items):
                    await send.send(i)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with receive:
                async for _ in receive:
                    pass
        return (time.perf_counter() - start) / items * 1e9

    return trio.run(main)


def agent_ns_per_event(words: int, repeats: int) -> float:
    from agents import Agent, ScriptedModel
    from runtime import open_runtime

    long_answer = " ".join(["word"] * words)

    async def timed(answer: str) -> float:
        agent = Agent(name="w0", model=ScriptedModel([answer] * repeats, record_requests=False))
        async with open_runtime() as runtime:
            start = time.perf_counter()
            for _ in range(repeats):
                async with runtime.open_session(agent) as session, session.run("go") as stream:
                    async for _ in stream:
                        pass
            return (time.perf_counter() - start) / repeats

    async def main() -> float:
        await timed("warm")
        short = min([await timed("word") for _ in range(3)])
        long = min([await timed(long_answer) for _ in range(3)])
        return (long - short) / (words - 1) * 1e9

    return trio.run(main)


def tool_delta_ns_per_event(words: int, repeats: int) -> float:
    from agents import Agent, ScriptedModel, ToolCall, tool
    from runtime import open_runtime

    @tool
    async def echo(text: str) -> int:
        """Count the characters."""
        return len(text)

    async def timed(text: str) -> float:
        script = [ToolCall("echo", {"text": text}), "ok"] * repeats
        model = ScriptedModel(script, record_requests=False, stream_arguments=True)
        agent = Agent(name="w0", model=model, tools=[echo])
        async with open_runtime() as runtime:
            start = time.perf_counter()
            for _ in range(repeats):
                async with runtime.open_session(agent) as session, session.run("go") as stream:
                    async for _ in stream:
                        pass
            return (time.perf_counter() - start) / repeats

    async def main() -> float:
        await timed("warm")
        short = min([await timed("word") for _ in range(3)])
        long = min([await timed(" ".join(["word"] * words)) for _ in range(3)])
        return (long - short) / (words - 1) * 1e9

    return trio.run(main)


def main() -> None:
    args = parse(__doc__ or "", items=1_000_000, words=2001)
    module = load("trio-agents")
    metrics = {
        "channel_buffer0_ns": channel_ns_per_item(args.items, 0),
        "channel_buffer100_ns": channel_ns_per_item(args.items, 100),
        "agent_event_ns": agent_ns_per_event(args.words, 20),
        "agent_tool_delta_ns": tool_delta_ns_per_event(args.words, 20),
    }
    emit("w0", "trio-agents", module, metrics)


if __name__ == "__main__":
    main()
