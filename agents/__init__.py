"""Agent definitions: agents, models, tools and hooks.

Nothing here runs anything by itself; :mod:`runtime` runs agents.
"""

from ._agent import TRANSFER_TOOL as TRANSFER_TOOL, Agent as Agent, Instructions as Instructions
from ._context import (
    ElicitationAction as ElicitationAction,
    ElicitationResult as ElicitationResult,
    Elicitor as Elicitor,
    RunContext as RunContext,
    ToolContext as ToolContext,
)
from ._exceptions import (
    AgentDefinitionError as AgentDefinitionError,
    AgentsError as AgentsError,
    ElicitationError as ElicitationError,
    ElicitationTimeout as ElicitationTimeout,
    ElicitationUnavailable as ElicitationUnavailable,
    ModelError as ModelError,
    ScriptExhaustedError as ScriptExhaustedError,
    ToolArgumentsError as ToolArgumentsError,
)
from ._hooks import Hooks as Hooks, StopRun as StopRun
from ._messages import (
    AssistantMessage as AssistantMessage,
    ErrorChunk as ErrorChunk,
    Message as Message,
    ModelChunk as ModelChunk,
    ModelRequest as ModelRequest,
    ReasoningChunk as ReasoningChunk,
    TextChunk as TextChunk,
    ToolCallChunk as ToolCallChunk,
    ToolResultMessage as ToolResultMessage,
    ToolSpec as ToolSpec,
    UsageChunk as UsageChunk,
    UserMessage as UserMessage,
)
from ._tools import Tool as Tool, ToolLike as ToolLike, Toolset as Toolset, tool as tool
from .models import Model as Model, ScriptedModel as ScriptedModel, ToolCall as ToolCall
