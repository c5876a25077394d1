"""Agent definitions: agents, models, tools and hooks.

Nothing here runs anything by itself; :mod:`runtime` runs agents.
"""

from ._agent import TRANSFER_TOOL as TRANSFER_TOOL, Agent as Agent, Instructions as Instructions
from ._content import (
    ContentPart as ContentPart,
    DocumentPart as DocumentPart,
    ImagePart as ImagePart,
    TextPart as TextPart,
    UserContent as UserContent,
)
from ._context import (
    ElicitationAction as ElicitationAction,
    ElicitationResult as ElicitationResult,
    Elicitor as Elicitor,
    EventSink as EventSink,
    RunContext as RunContext,
    SessionLike as SessionLike,
    SessionResourceLike as SessionResourceLike,
    ToolContext as ToolContext,
)
from ._exceptions import (
    AgentDefinitionError as AgentDefinitionError,
    AgentsError as AgentsError,
    AuthenticationError as AuthenticationError,
    BadRequestError as BadRequestError,
    ElicitationError as ElicitationError,
    ElicitationTimeout as ElicitationTimeout,
    ElicitationUnavailable as ElicitationUnavailable,
    MalformedStreamError as MalformedStreamError,
    MissingAPIKeyError as MissingAPIKeyError,
    ModelConnectionError as ModelConnectionError,
    ModelError as ModelError,
    ProviderError as ProviderError,
    RateLimitError as RateLimitError,
    ScriptExhaustedError as ScriptExhaustedError,
    ServerError as ServerError,
    ToolArgumentsError as ToolArgumentsError,
    UnsupportedContentError as UnsupportedContentError,
)
from ._hooks import Hooks as Hooks, StopRun as StopRun
from ._messages import (
    AssistantMessage as AssistantMessage,
    ErrorChunk as ErrorChunk,
    Message as Message,
    ModelChunk as ModelChunk,
    ModelFallbackChunk as ModelFallbackChunk,
    ModelRequest as ModelRequest,
    OutputSchema as OutputSchema,
    ReasoningBlock as ReasoningBlock,
    ReasoningChunk as ReasoningChunk,
    RefusalChunk as RefusalChunk,
    ServerToolChunk as ServerToolChunk,
    StopChunk as StopChunk,
    StopReason as StopReason,
    TextChunk as TextChunk,
    ToolCallChunk as ToolCallChunk,
    ToolCallDeltaChunk as ToolCallDeltaChunk,
    ToolResultMessage as ToolResultMessage,
    ToolSpec as ToolSpec,
    UsageChunk as UsageChunk,
    UserMessage as UserMessage,
)
from ._output import FINAL_RESULT_TOOL as FINAL_RESULT_TOOL, OutputMode as OutputMode
from ._tools import (
    ThreadLimiter as ThreadLimiter,
    Tool as Tool,
    ToolLike as ToolLike,
    Toolset as Toolset,
    tool as tool,
)
from ._usage import RunUsage as RunUsage, UsageLimits as UsageLimits
from .models import (
    AnthropicModel as AnthropicModel,
    FallbackModel as FallbackModel,
    GeminiModel as GeminiModel,
    Model as Model,
    OpenAIChatModel as OpenAIChatModel,
    OpenAIResponsesModel as OpenAIResponsesModel,
    RetryPolicy as RetryPolicy,
    ScriptedModel as ScriptedModel,
    ToolCall as ToolCall,
    resolve_model as resolve_model,
)
