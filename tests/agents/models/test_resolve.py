"""Model strings, and the quickstart driven through one against a real (loopback) server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
import trio

from agents import (
    Agent,
    AgentDefinitionError,
    AnthropicModel,
    GeminiModel,
    OpenAIChatModel,
    OpenAIResponsesModel,
    ScriptedModel,
    resolve_model,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

SHARED_FIXTURES: Final = Path(__file__).resolve().parents[4] / "shared" / "fixtures"
"""The shared test data: ``../shared/fixtures`` beside the checkout, and nowhere else."""
FIXTURES = SHARED_FIXTURES / "llm_streams"


def test_resolve_model_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each known prefix gives its provider; "scripted" gives the script passed in."""
    monkeypatch.delenv("OLLAMA_BASE_URL", raising=False)
    script = ScriptedModel(["hi"])
    assert resolve_model("scripted", scripted=script) is script
    openai = resolve_model("openai:gpt-4o-mini")
    assert isinstance(openai, OpenAIChatModel)
    assert openai.model == "gpt-4o-mini"
    ollama = resolve_model("ollama:llama3.2")
    assert isinstance(ollama, OpenAIChatModel)
    assert ollama.model == "llama3.2"
    assert ollama.base_url == "http://localhost:11434/v1"
    assert resolve_model(script) is script


def test_resolve_model_anthropic() -> None:
    """ "anthropic:<model>" gives the Anthropic provider."""
    model = resolve_model("anthropic:claude-sonnet-4-5")
    assert isinstance(model, AnthropicModel)
    assert model.model == "claude-sonnet-4-5"


def test_resolve_model_google() -> None:
    """ "google:<model>" gives the Gemini provider, and an unknown prefix's error names every valid one."""
    model = resolve_model("google:gemini-2.5-flash")
    assert isinstance(model, GeminiModel)
    assert model.model == "gemini-2.5-flash"
    with pytest.raises(AgentDefinitionError) as caught:
        resolve_model("gemini:gemini-2.5-flash")
    for prefix in ("'scripted'", "'openai:<model>'", "'anthropic:<model>'", "'google:<model>'", "'ollama:<model>'"):
        assert prefix in str(caught.value)


def test_resolve_model_openai_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    """ "openai-responses:<model>" gives the Responses API model, configured by OpenAI's variables."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    model = resolve_model("openai-responses:o4-mini")
    assert isinstance(model, OpenAIResponsesModel)
    assert model.model == "o4-mini"
    assert model.base_url == "http://127.0.0.1:9/v1"
    assert isinstance(Agent(name="a", model="openai-responses:gpt-4.1-mini").model, OpenAIResponsesModel)


def test_resolve_model_ollama_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``OLLAMA_BASE_URL`` moves "ollama:<model>" to another server."""
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://gpu-box:11434/v1")
    model = resolve_model("ollama:llama3.2")
    assert isinstance(model, OpenAIChatModel)
    assert model.base_url == "http://gpu-box:11434/v1"


@pytest.mark.parametrize("spec", ["scripted", "gpt-4o", "openai:", "openai-responses:", "mystery:model"])
def test_resolve_model_rejects_what_it_cannot_build(spec: str) -> None:
    """An unknown or incomplete model string is a clear AgentDefinitionError."""
    with pytest.raises(AgentDefinitionError):
        resolve_model(spec)


def test_resolve_model_unknown_prefix_lists_every_valid_one() -> None:
    """The error for an unknown model string names every prefix that would work."""
    with pytest.raises(AgentDefinitionError) as caught:
        resolve_model("mystery:model")
    for prefix in (
        "'scripted'",
        "'openai:<model>'",
        "'openai-responses:<model>'",
        "'anthropic:<model>'",
        "'ollama:<model>'",
    ):
        assert prefix in str(caught.value)


def test_agent_accepts_a_model_string(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agent(model="openai:...") builds the provider, with base URL and key from the environment."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    agent = Agent(name="a", model="openai:some-model")
    assert isinstance(agent.model, OpenAIChatModel)
    assert agent.model.base_url == "http://127.0.0.1:9/v1"


async def test_quickstart_runs_against_an_openai_compatible_server(
    provider_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    load_example: Callable[[str], ModuleType],
) -> None:
    """`quickstart.py --model openai:...` streams a real recorded answer from the server it is pointed at."""
    provider_server.serve((FIXTURES / "openai" / "chat_text_usage.sse").read_bytes())
    monkeypatch.setenv("OPENAI_BASE_URL", provider_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    quickstart = load_example("quickstart")
    with trio.fail_after(20):
        status = await quickstart.main(["--model", "openai:gpt-4o-mini"])
    out = capsys.readouterr().out
    assert status == 0
    assert "[run finished: completed]" in out
    request = provider_server.requests[0]
    assert request.path == "/chat/completions"
    assert request.headers["authorization"] == "Bearer test-key"
