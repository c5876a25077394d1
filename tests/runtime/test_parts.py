"""Runs whose input (or a tool's result) holds content parts: history, hooks, usage, typing."""

from __future__ import annotations

from typing import Any, Final

import pytest
import trio

from agents import (
    Agent,
    DocumentPart,
    Hooks,
    ImagePart,
    RunContext,
    ScriptedModel,
    StopRun,
    TextPart,
    ToolCall,
    ToolResultMessage,
    UserContent,
    UserMessage,
    tool,
)
from runtime import open_runtime
from runtime.events import Event, RunFinished, ToolCallFinished, Usage

PNG: Final = b"\x89PNG\r\n\x1a\n-a-tiny-png"
IMAGE: Final = ImagePart(data=PNG, media_type="image/png")


class PromptRecorder(Hooks):
    """Records each prompt it is shown; stops a run whose prompt mentions a password."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def on_user_prompt(self, ctx: RunContext[Any], prompt: str) -> StopRun | None:
        self.prompts.append(prompt)
        return StopRun("no passwords") if "password" in prompt else None


async def _events(agent: Agent, user_input: UserContent) -> list[Event]:
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run(user_input) as stream:
            return [event async for event in stream]


async def test_parts_input_is_a_user_message_of_parts() -> None:
    """A list input is in history as one UserMessage whose content is a tuple of parts."""
    model = ScriptedModel(["A cat."])
    agent = Agent(name="a", model=model)
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        result = await session.ask(["What is this?", IMAGE])
        assert result.output == "A cat."
        assert session.history[0] == UserMessage((TextPart("What is this?"), IMAGE))
    [request] = model.requests
    assert request.messages[0] == UserMessage((TextPart("What is this?"), IMAGE))


async def test_history_keeps_parts_across_two_runs() -> None:
    """The second run's model sees the first run's parts, then its own text input."""
    model = ScriptedModel(["A cat.", "Grey."])
    agent = Agent(name="a", model=model)
    document = DocumentPart(data=b"%PDF-1.4", filename="cat.pdf")
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        await session.ask(("What is this?", IMAGE, document))
        await session.ask("What colour?")
        history = session.history
    assert [type(message).__name__ for message in history] == [
        "UserMessage",
        "AssistantMessage",
        "UserMessage",
        "AssistantMessage",
    ]
    assert history[0] == UserMessage((TextPart("What is this?"), IMAGE, document))
    assert history[2] == UserMessage("What colour?")
    assert model.requests[1].messages[:3] == history[:3]


async def test_hooks_see_the_text_parts_joined() -> None:
    """on_user_prompt gets the input's text parts joined by newlines, and may stop the run on them."""
    recorder = PromptRecorder()
    agent = Agent(name="a", model=ScriptedModel(["ok"]), hooks=[recorder])
    events = await _events(agent, ["Look at", IMAGE, TextPart("this please.")])
    assert events[-1] == RunFinished("completed")
    events = await _events(agent, [IMAGE, "my password is on it"])
    assert events[-1] == RunFinished("hook_stop", "no passwords")
    events = await _events(agent, [IMAGE])
    assert recorder.prompts == ["Look at\nthis please.", "my password is on it", ""]


async def test_scripted_model_counts_the_words_of_text_parts() -> None:
    """ScriptedModel's input usage counts the words of the text parts; an image counts nothing."""
    agent = Agent(name="a", model=ScriptedModel(["ok", "ok"]), instructions="Be brief.")
    events = await _events(agent, ["three little words", IMAGE, "and two"])
    assert [event for event in events if isinstance(event, Usage)] == [Usage(2 + 5, 1)]


async def test_a_tool_returning_an_image_gives_a_result_of_parts() -> None:
    """An image a tool returns is in history as a parts result; its ToolCallFinished holds the value."""

    @tool
    async def screenshot() -> ImagePart:
        """Take a screenshot."""
        return IMAGE

    @tool
    def names() -> list[str]:
        """Some names."""
        return ["ada", "alan"]

    model = ScriptedModel([[ToolCall("screenshot"), ToolCall("names")], "Done."])
    agent = Agent(name="a", model=model, tools=[screenshot, names])
    async with open_runtime() as runtime, runtime.open_session(agent) as session:
        async with session.run("Show me.") as stream:
            events = [event async for event in stream]
        history = session.history
    finished = {event.name: event for event in events if isinstance(event, ToolCallFinished)}
    assert finished["screenshot"].result == IMAGE
    results = {message.name: message for message in history if isinstance(message, ToolResultMessage)}
    assert results["screenshot"].content == (IMAGE,)
    assert results["names"].content == '["ada","alan"]'  # a list of strings alone is JSON, as before
    assert model.requests[1].messages[-2:] == tuple(results.values())


async def test_bad_input_fails_at_the_call() -> None:
    """An input that is not text or parts fails when run() or ask() is called, before any run starts."""
    model = ScriptedModel(["never"])
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
        with pytest.raises(TypeError, match="not int"):
            session.run(["ok", 3])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="empty sequence"):
            await session.ask([])
        with pytest.raises(TypeError, match="not dict"):
            await session.ask({"type": "text"})  # type: ignore[arg-type]
        assert session.history == ()
    assert model.requests == []


async def test_run_and_ask_type_check_with_parts() -> None:
    """mypy accepts a str, a list or tuple of str and parts, and a list of one part type (this file is checked)."""
    model = ScriptedModel(["1", "2", "3", "4"])
    async with open_runtime() as runtime, runtime.open_session(Agent(name="a", model=model)) as session:
        with trio.fail_after(10):
            images: list[ImagePart] = [IMAGE]
            mixed: list[str | ImagePart | DocumentPart] = ["see", IMAGE]
            async with session.run(mixed) as stream:
                assert [event async for event in stream][-1] == RunFinished("completed")
            assert (await session.ask(images)).output == "2"
            assert (await session.ask(("text", TextPart("more")))).output == "3"
            assert (await session.ask("plain")).output == "4"
