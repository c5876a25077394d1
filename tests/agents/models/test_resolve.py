"""Model strings, and the quickstart driven through one against a real (loopback) server."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
import trio

from agents import (
    Agent,
    AgentDefinitionError,
    AnthropicModel,
    GeminiModel,
    ModelRequest,
    OpenAIChatModel,
    OpenAIResponsesModel,
    ScriptedModel,
    UnsupportedContentError,
    UserMessage,
    resolve_model,
)
from agents.models._resolve import PROVIDERS

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from types import ModuleType

    from agents.models._http import HTTPModel

SHARED_FIXTURES: Final = Path(__file__).resolve().parents[4] / "shared" / "fixtures"
"""The shared test data: ``../shared/fixtures`` beside the checkout, and nowhere else."""
FIXTURES = SHARED_FIXTURES / "llm_streams"
OUR_FIXTURES: Final = Path(__file__).resolve().parents[2] / "fixtures" / "llm_streams"
README: Final = Path(__file__).resolve().parents[3] / "README.md"

TABLE: Final[dict[str, tuple[type[HTTPModel], str, str | None, str | None]]] = {
    "openai": (OpenAIChatModel, "https://api.openai.com/v1", "OPENAI_BASE_URL", "OPENAI_API_KEY"),
    "anthropic": (AnthropicModel, "https://api.anthropic.com", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"),
    "openai-responses": (OpenAIResponsesModel, "https://api.openai.com/v1", "OPENAI_BASE_URL", "OPENAI_API_KEY"),
    "google": (GeminiModel, "https://generativelanguage.googleapis.com/v1beta", "GEMINI_BASE_URL", "GEMINI_API_KEY"),
    "mistral": (OpenAIChatModel, "https://api.mistral.ai/v1", "MISTRAL_BASE_URL", "MISTRAL_API_KEY"),
    "groq": (OpenAIChatModel, "https://api.groq.com/openai/v1", "GROQ_BASE_URL", "GROQ_API_KEY"),
    "deepseek": (OpenAIChatModel, "https://api.deepseek.com", "DEEPSEEK_BASE_URL", "DEEPSEEK_API_KEY"),
    "openrouter": (OpenAIChatModel, "https://openrouter.ai/api/v1", "OPENROUTER_BASE_URL", "OPENROUTER_API_KEY"),
    "together": (OpenAIChatModel, "https://api.together.xyz/v1", "TOGETHER_BASE_URL", "TOGETHER_API_KEY"),
    "ollama": (OpenAIChatModel, "http://localhost:11434/v1", "OLLAMA_BASE_URL", None),
}
"""Each model string's class, base URL, the variable overriding it, and its key variable (None: needs no key)."""


QUICKSTART_SERVED: Final[dict[type[HTTPModel], tuple[Path, str]]] = {
    AnthropicModel: (FIXTURES / "anthropic" / "text.sse", "/v1/messages"),
    OpenAIResponsesModel: (OUR_FIXTURES / "openai_responses" / "text_usage.sse", "/responses"),
    GeminiModel: (OUR_FIXTURES / "gemini" / "text_usage.sse", "/models/some-model:streamGenerateContent?alt=sse"),
}
"""A recorded answer each non-Chat-Completions class is served in the quickstart test, and the path it posts to."""


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


def test_resolve_model_ollama_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``OLLAMA_BASE_URL`` moves "ollama:<model>" to another server."""
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://gpu-box:11434/v1")
    model = resolve_model("ollama:llama3.2")
    assert isinstance(model, OpenAIChatModel)
    assert model.base_url == "http://gpu-box:11434/v1"


@pytest.mark.parametrize("spec", ["scripted", "gpt-4o", "openai:", "mystery:model"])
def test_resolve_model_rejects_what_it_cannot_build(spec: str) -> None:
    """An unknown or incomplete model string is a clear AgentDefinitionError."""
    with pytest.raises(AgentDefinitionError):
        resolve_model(spec)


class _StreamlessModel:
    """Has a ``stream`` attribute that cannot be called."""

    stream = "not a method"


@pytest.mark.parametrize(
    "spec",
    [None, 42, object(), ScriptedModel, OpenAIChatModel, _StreamlessModel()],
    ids=["None", "an-int", "an-object", "a-model-class", "an-http-model-class", "a-stream-attribute"],
)
def test_resolve_model_rejects_what_is_not_a_model(spec: Any) -> None:
    """Neither a string nor an instance with a callable ``stream`` (None from an unset variable, a model
    class) is an AgentDefinitionError saying what a model is, not an AttributeError in every run."""
    with pytest.raises(AgentDefinitionError, match=r"model must be a model \(an object with a stream\(request\)"):
        resolve_model(spec)


def test_resolve_model_takes_any_instance_with_a_stream_method() -> None:
    """A model of one's own is duck-typed: any instance with a callable ``stream`` is returned as it is."""

    class Own:
        def stream(self, request: ModelRequest) -> Any:
            raise NotImplementedError

    own = Own()
    assert resolve_model(own) is own


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


@pytest.mark.parametrize("prefix", sorted(TABLE))
def test_each_model_string_builds_its_provider(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each prefix gives its class at its base URL with its key variable, named as the string is."""
    cls, base_url, base_env, key_env = TABLE[prefix]
    for variable in (base_env, key_env, "OPENAI_BASE_URL", "OPENAI_API_KEY", "GOOGLE_API_KEY"):
        if variable is not None:
            monkeypatch.delenv(variable, raising=False)
    if key_env is not None:
        monkeypatch.setenv(key_env, f"key-for-{prefix}")
    model = resolve_model(f"{prefix}:some/model:v1")
    assert type(model) is cls
    assert (model.model, model.base_url, model.provider) == ("some/model:v1", base_url, prefix)
    assert model.name == f"{prefix}:some/model:v1"
    if key_env is not None:
        assert model.api_key_env == key_env
        assert f"key-for-{prefix}" in str(model.headers(ModelRequest("", ())))
    if base_env is not None:
        monkeypatch.setenv(base_env, "http://127.0.0.1:9/elsewhere")
        assert resolve_model(f"{prefix}:m").base_url == "http://127.0.0.1:9/elsewhere"  # type: ignore[attr-defined]


def test_a_model_string_never_sends_another_providers_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OpenAI-compatible provider reads its own key variable only, never OPENAI_API_KEY."""
    monkeypatch.setenv("OPENAI_API_KEY", "openai-secret")
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    model = resolve_model("groq:m")
    assert isinstance(model, OpenAIChatModel)
    assert "openai-secret" not in str(model.headers(ModelRequest("", ())))


def test_the_readme_providers_table_is_the_model_string_table() -> None:
    """README's "Real models" table has a row for each model string, saying what PROVIDERS says (a row of a
    provider not in it yet says it lives in its own module)."""
    lines = README.read_text("utf-8").splitlines()
    start = lines.index("<!-- providers -->") + 3
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`").partition(":")[0]] = cells
    assert set(PROVIDERS) <= set(rows)
    for prefix, (string, cls, base, key, _notes) in rows.items():
        assert string == f"`{prefix}:<model>`"
        if prefix not in PROVIDERS:
            assert cls.endswith(" (its own module)"), prefix  # another branch's row, for when it lands
            continue
        expected_cls, base_url, base_env, key_env = TABLE[prefix]
        assert cls == f"`{expected_cls.__name__}`"
        assert base == f"`{base_url}` (`{base_env}`)"
        assert key.startswith(f"`{key_env}`") if key_env else key == "none"  # Gemini's: "(or GOOGLE_API_KEY)"
    assert set(PROVIDERS) == set(TABLE)


@pytest.mark.parametrize("prefix", sorted(TABLE))
async def test_the_quickstart_runs_with_each_model_string(
    prefix: str,
    provider_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    load_example: Callable[[str], ModuleType],
) -> None:
    """`quickstart.py --model <provider>:<model>` streams an answer from the server its variables point at,
    sending the provider's own key."""
    cls, _, base_env, key_env = TABLE[prefix]
    body, path = QUICKSTART_SERVED.get(cls, (FIXTURES / "openai" / "chat_text_usage.sse", "/chat/completions"))
    provider_server.serve(body.read_bytes())
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    assert base_env is not None
    monkeypatch.setenv(base_env, provider_server.base_url)
    if key_env is not None:
        monkeypatch.setenv(key_env, f"key-for-{prefix}")
    quickstart = load_example("quickstart")
    with trio.fail_after(20):
        status = await quickstart.main(["--model", f"{prefix}:some-model"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "[run finished: completed]" in out
    [request] = provider_server.requests
    assert request.path == path
    if cls is not GeminiModel:  # Gemini names the model in the path
        assert json.loads(request.body)["model"] == "some-model"
    if key_env is None:
        assert request.headers["authorization"] == "Bearer ollama"  # a stand-in: Ollama checks none
    else:
        sent = [request.headers.get(name, "") for name in ("authorization", "x-api-key", "x-goog-api-key")]
        assert any(f"key-for-{prefix}" in value for value in sent)


def test_the_quickstart_with_no_key_exits_1_saying_what_to_set(
    run_example: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """As a new user meets it: `--model openai:...` with no OPENAI_API_KEY fails at once, before any request,
    saying which variable to set, and exits 1."""
    completed = run_example("quickstart", "--model", "openai:gpt-4o-mini")
    assert completed.returncode == 1, completed.stderr
    assert "[model error] openai: no API key: set OPENAI_API_KEY" in completed.stdout
    assert "[run finished: error]" in completed.stdout


def test_the_quickstart_with_ollama_not_running_exits_1_saying_so(
    run_example: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """`--model ollama:...` with nothing listening at its URL says so, with the URL and a hint, and exits 1."""
    with socket.socket() as probe:  # a port that was free a moment ago, and is closed again
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    completed = run_example("quickstart", "--model", "ollama:llama3.2", env={"OLLAMA_BASE_URL": url})
    assert completed.returncode == 1, completed.stderr
    assert f"ollama: nothing is listening at {url}/chat/completions; is the server running?" in completed.stdout
    assert "`ollama serve`" in completed.stdout


@pytest.mark.parametrize("example", ["quickstart", "typed_output"])
def test_the_examples_refuse_a_model_string_they_do_not_know(
    example: str, run_example: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """An unknown model string is a usage error (exit 2) that lists the known ones, not a traceback."""
    completed = run_example(example, "--model", "gtp:4o")
    assert completed.returncode == 2
    assert "unknown model 'gtp:4o'" in completed.stderr
    assert "'groq:<model>'" in completed.stderr  # the known ones
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    ("built", "prefix"),
    [
        (lambda: OpenAIChatModel("m"), "openai"),
        (lambda: OpenAIResponsesModel("m"), "openai-responses"),
        (lambda: AnthropicModel("m"), "anthropic"),
        (lambda: GeminiModel("m"), "google"),
    ],
)
def test_a_model_built_directly_is_named_by_its_model_string(built: Callable[[], Any], prefix: str) -> None:
    """A model class built by hand has the name its model string has, and that string builds the same class."""
    model = built()
    assert model.name == f"{prefix}:m"
    assert type(resolve_model(model.name)) is type(model)


@pytest.mark.parametrize("spec", ["groq:m", "openai:m", "google:m", "openai-responses:m"])
def test_a_part_a_provider_cannot_take_is_an_error_naming_that_provider(spec: str) -> None:
    """UnsupportedContentError names the provider of the model string (groq, not the openai its protocol is)."""
    model = resolve_model(spec)
    request = ModelRequest("", (UserMessage([_Odd()]),))  # type: ignore[arg-type]
    with pytest.raises(UnsupportedContentError) as caught:
        model.body(request)  # type: ignore[attr-defined]
    assert caught.value.provider == spec.partition(":")[0]
    assert str(caught.value).startswith(f"{spec.partition(':')[0]}: cannot send")


class _Odd:
    """A content part no provider knows."""
