"""Model strings: "scripted", "openai:…", "openai-responses:…", "anthropic:…", "google:…", "ollama:…"."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from .._exceptions import AgentDefinitionError

if TYPE_CHECKING:
    from ._protocol import Model

OLLAMA_BASE_URL: Final = "http://localhost:11434/v1"
"""Where Ollama serves its OpenAI-compatible API by default (``OLLAMA_BASE_URL`` overrides it)."""


def resolve_model(spec: str | Model, *, scripted: Model | None = None) -> Model:
    """The model a string names; a model is returned as it is.

    - ``"scripted"``: the ``scripted`` model given here (offline, the default of the examples);
    - ``"openai:<model>"``: :class:`OpenAIChatModel` (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``);
    - ``"openai-responses:<model>"``: :class:`OpenAIResponsesModel`, OpenAI's Responses API (the same variables);
    - ``"anthropic:<model>"``: :class:`AnthropicModel` (``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``);
    - ``"google:<model>"``: :class:`GeminiModel` (``GOOGLE_API_KEY`` or ``GEMINI_API_KEY``, ``GEMINI_BASE_URL``);
    - ``"ollama:<model>"``: an OpenAI-compatible model at Ollama's local URL.

    Raises:
        AgentDefinitionError: the string names no model this knows.
    """
    if not isinstance(spec, str):
        return spec
    provider, _, name = spec.partition(":")
    if spec == "scripted":
        if scripted is None:
            raise AgentDefinitionError('"scripted" needs a script: pass scripted=ScriptedModel([...])')
        return scripted
    if not name:
        raise AgentDefinitionError(f"model {spec!r} needs a name after the colon, e.g. 'openai:gpt-4o-mini'")
    if provider == "openai":
        from ._openai import OpenAIChatModel

        return OpenAIChatModel(name)
    if provider == "openai-responses":
        from ._openai_responses import OpenAIResponsesModel

        return OpenAIResponsesModel(name)
    if provider == "anthropic":
        from ._anthropic import AnthropicModel

        return AnthropicModel(name)
    if provider == "google":
        from ._gemini import GeminiModel

        return GeminiModel(name)
    if provider == "ollama":
        from ._openai import OpenAIChatModel

        return OpenAIChatModel(name, base_url=os.environ.get("OLLAMA_BASE_URL", OLLAMA_BASE_URL), api_key="ollama")
    raise AgentDefinitionError(
        f"unknown model {spec!r}: use 'scripted', 'openai:<model>', 'openai-responses:<model>', "
        "'anthropic:<model>', 'google:<model>' or 'ollama:<model>'"
    )
