"""Model strings: ``"<provider>:<model>"`` (``"openai:gpt-4o-mini"``, ``"groq:llama-3.3-70b-versatile"`` ...).

One table, :data:`PROVIDERS`, says what each provider prefix builds: the
model class, the base URL and the environment variables of its URL and key.
The README's providers table is the same table, for people.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Final

import attrs

from .._exceptions import AgentDefinitionError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._http import HTTPModel
    from ._protocol import Model

OLLAMA_BASE_URL: Final = "http://localhost:11434/v1"
"""Where Ollama serves its OpenAI-compatible API by default (``OLLAMA_BASE_URL`` overrides it)."""


@attrs.frozen
class Provider:
    """What one model-string prefix builds.

    ``None`` in ``base_url``, ``base_url_env`` or ``api_key_env`` means the
    class's own (``OpenAIChatModel``: ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``).
    """

    model_class: str
    """``"<module>:<class>"``, imported when a string names it (a provider costs nothing until used)."""
    base_url: str | None = None
    """Its default base URL."""
    base_url_env: str | None = None
    """The environment variable that overrides ``base_url``."""
    api_key_env: str | None = None
    """The environment variable its key is read from."""
    api_key: str | None = None
    """A fixed key, for a server that needs none (Ollama)."""

    def build(self, prefix: str, model: str) -> HTTPModel:
        """The model ``"<prefix>:<model>"`` names."""
        module, _, name = self.model_class.partition(":")
        cls: type[HTTPModel] = getattr(importlib.import_module(module, __package__), name)
        base_url = (os.environ.get(self.base_url_env) if self.base_url_env else None) or self.base_url
        return cls(model, base_url=base_url, api_key=self.api_key, provider=prefix, api_key_env=self.api_key_env)


_CHAT: Final = "._openai:OpenAIChatModel"

PROVIDERS: Final[Mapping[str, Provider]] = {
    "openai": Provider(_CHAT),
    "anthropic": Provider("._anthropic:AnthropicModel"),
    # Their classes' own URL and key variables (OpenAI's; GEMINI_BASE_URL, GOOGLE_API_KEY or GEMINI_API_KEY):
    "openai-responses": Provider("._openai_responses:OpenAIResponsesModel"),
    "google": Provider("._gemini:GeminiModel"),
    "mistral": Provider(_CHAT, "https://api.mistral.ai/v1", "MISTRAL_BASE_URL", "MISTRAL_API_KEY"),
    "groq": Provider(_CHAT, "https://api.groq.com/openai/v1", "GROQ_BASE_URL", "GROQ_API_KEY"),
    "deepseek": Provider(_CHAT, "https://api.deepseek.com", "DEEPSEEK_BASE_URL", "DEEPSEEK_API_KEY"),
    "openrouter": Provider(_CHAT, "https://openrouter.ai/api/v1", "OPENROUTER_BASE_URL", "OPENROUTER_API_KEY"),
    "together": Provider(_CHAT, "https://api.together.xyz/v1", "TOGETHER_BASE_URL", "TOGETHER_API_KEY"),
    "ollama": Provider(_CHAT, OLLAMA_BASE_URL, "OLLAMA_BASE_URL", api_key="ollama"),
}
"""Every model-string prefix, and what it builds."""


def resolve_model(spec: str | Model, *, scripted: Model | None = None) -> Model:
    """The model a string names; a model (an instance with a callable ``stream``) is returned as it is.

    - ``"scripted"``: the ``scripted`` model given here (offline, the default of the examples);
    - ``"<provider>:<model>"``: the provider's model, its base URL and key from
      the environment (one row of :data:`PROVIDERS` each: ``openai``,
      ``openai-responses``, ``anthropic``, ``google``, ``mistral``, ``groq``, ``deepseek``, ``openrouter``,
      ``together``, ``ollama``). Its :attr:`~HTTPModel.name` is the string,
      and its errors name the provider as the string does.

    Raises:
        AgentDefinitionError: the string names no model this knows, or ``spec`` is neither a string nor a
            model (``None``, say, from an unset environment variable; or a model class, not an instance).
    """
    if not isinstance(spec, str):
        # Refused here, not as an AttributeError in every run.
        if isinstance(spec, type) or not callable(getattr(spec, "stream", None)):
            raise AgentDefinitionError(
                f"model must be a model (an object with a stream(request) method, e.g. ScriptedModel([...]) "
                f"or OpenAIChatModel(...)) or a model string (e.g. 'openai:gpt-4o-mini'), not {spec!r}"
            )
        return spec
    if spec == "scripted":
        if scripted is None:
            raise AgentDefinitionError('"scripted" needs a script: pass scripted=ScriptedModel([...])')
        return scripted
    prefix, colon, model = spec.partition(":")
    provider = PROVIDERS.get(prefix)
    if provider is None or not colon:
        known = ", ".join(f"'{name}:<model>'" for name in PROVIDERS)
        raise AgentDefinitionError(f"unknown model {spec!r}: use 'scripted' or one of {known}")
    if not model:
        raise AgentDefinitionError(f"model {spec!r} needs a name after the colon, e.g. '{prefix}:<model>'")
    return provider.build(prefix, model)
