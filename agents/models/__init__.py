"""Models: the protocol every model implements, and the models that ship."""

from .._retry import RetryPolicy as RetryPolicy
from ._anthropic import AnthropicModel as AnthropicModel
from ._fallback import FallbackModel as FallbackModel
from ._gemini import GeminiModel as GeminiModel
from ._http import http_client as http_client
from ._openai import OpenAIChatModel as OpenAIChatModel
from ._openai_responses import OpenAIResponsesModel as OpenAIResponsesModel
from ._protocol import Model as Model
from ._resolve import resolve_model as resolve_model
from ._scripted import Script as Script, ScriptedModel as ScriptedModel, ToolCall as ToolCall, Turn as Turn
