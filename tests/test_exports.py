"""The public names of each package, pinned (httpx ``test_exported_members.py``, trio ``test_exports.py``).

Adding or removing a public name is an API change: update the expected set
here in the same commit, on purpose.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from typing import Any, Final

import pytest

OUR_PACKAGES: Final = frozenset({"runtime", "agents", "streams"})

PUBLIC_SUBMODULES: Final = frozenset({"runtime.events"})
"""Submodules that are deliberately public, so they count as public names of their package."""

EXPECTED: Final[dict[str, frozenset[str]]] = {
    "runtime": frozenset(
        {
            "Handler",
            "HandlerStatistics",
            "Overflow",
            "StreamHandler",
            "BusStatistics",
            "Channel",
            "ClosedBusError",
            "DirectionStatistics",
            "Gateway",
            "GatewayStatistics",
            "InboundMessage",
            "MessageBus",
            "OutboundMessage",
            "Policy",
            "PublishTimeoutError",
            "open_gateway",
            "ElicitationBridge",
            "ElicitationResponseError",
            "InvalidElicitationResponse",
            "UnknownElicitationError",
            "events",
            "AgentRuntimeError",
            "ClosedRunStreamError",
            "ClosedSessionError",
            "ReentrantRunError",
            "RunFailedError",
            "RunResult",
            "ToolCallRecord",
            "Runtime",
            "SessionHandle",
            "open_runtime",
            "Session",
            "SessionResource",
            "RunStream",
            "SQLiteStore",
            "PostgresStore",
            "SessionStore",
            "StoreError",
            "StoreUnavailableError",
            "StoreRejectedError",
            "StoreCorruptError",
            "StoreVersionError",
            "SessionOwnedError",
            "SessionNotFoundError",
            "NothingToResumeError",
            "SessionConflictError",
            "Checkpoint",
            "EventRow",
            "PendingRow",
            "RunRow",
            "SessionSnapshot",
        }
    ),
    "runtime.events": frozenset(
        {
            "ServerToolUse",
            "AgentSwitched",
            "ElicitationRequest",
            "SubAgentEvent",
            "FinishReason",
            "FINISH_REASONS",
            "RunStarted",
            "TextDelta",
            "ReasoningDelta",
            "ToolCallStarted",
            "ToolCallFinished",
            "Usage",
            "ErrorEvent",
            "RunFinished",
            "Event",
            "StopReason",
            "STOP_REASONS",
            "ToolCallDelta",
            "ToolProgress",
            "ModelStopped",
            "Refusal",
            "OutputDelta",
            "FinalOutput",
            "CustomEvent",
            "ModelFallback",
        }
    ),
    "agents": frozenset(
        {
            "resolve_model",
            "EventSink",
            "OutputSchema",
            "RefusalChunk",
            "StopChunk",
            "StopReason",
            "ToolCallDeltaChunk",
            "FINAL_RESULT_TOOL",
            "OutputMode",
            "RunUsage",
            "UsageLimits",
            "ContentPart",
            "DocumentPart",
            "ImagePart",
            "TextPart",
            "UserContent",
            "UnsupportedContentError",
            "AuthenticationError",
            "BadRequestError",
            "MalformedStreamError",
            "ModelConnectionError",
            "ProviderError",
            "RateLimitError",
            "ServerError",
            "ServerToolChunk",
            "AnthropicModel",
            "GeminiModel",
            "FallbackModel",
            "MissingAPIKeyError",
            "ModelFallbackChunk",
            "OpenAIChatModel",
            "OpenAIResponsesModel",
            "RetryPolicy",
            "TRANSFER_TOOL",
            "ElicitationAction",
            "ElicitationError",
            "ElicitationResult",
            "ElicitationTimeout",
            "ElicitationUnavailable",
            "Elicitor",
            "Agent",
            "Instructions",
            "RunContext",
            "SessionLike",
            "SessionResourceLike",
            "ToolContext",
            "AgentDefinitionError",
            "AgentsError",
            "ModelError",
            "ScriptExhaustedError",
            "ToolArgumentsError",
            "Hooks",
            "StopRun",
            "AssistantMessage",
            "ErrorChunk",
            "Message",
            "ModelChunk",
            "ModelRequest",
            "ReasoningBlock",
            "ReasoningChunk",
            "TextChunk",
            "ToolCallChunk",
            "ToolResultMessage",
            "ToolSpec",
            "UsageChunk",
            "UserMessage",
            "Tool",
            "ThreadLimiter",
            "ToolLike",
            "Toolset",
            "tool",
            "Model",
            "ScriptedModel",
            "ToolCall",
        }
    ),
    "agents.mcp": frozenset(
        {
            "BrokenMCPServerError",
            "Lifetime",
            "MCPConnectionError",
            "MCPResult",
            "MCPServerError",
            "MCPServerStdio",
            "MCPServerStreamableHTTP",
            "MCPToolError",
        }
    ),
    "agents.models": frozenset(
        {
            "AnthropicModel",
            "GeminiModel",
            "FallbackModel",
            "Model",
            "OpenAIChatModel",
            "OpenAIResponsesModel",
            "RetryPolicy",
            "Script",
            "ScriptedModel",
            "ToolCall",
            "Turn",
            "http_client",
            "resolve_model",
        }
    ),
    "streams": frozenset(
        {
            "Backoff",
            "BrokenStreamError",
            "DEFAULT_IDLE_TIMEOUT",
            "DEFAULT_MAX_QUEUED_RUNS",
            "DEFAULT_MAX_SESSIONS",
            "InvalidSessionIdError",
            "SESSION_ID_PATTERN",
            "TooManySessionsError",
            "ClosedRemoteSessionError",
            "InvalidRequestError",
            "MalformedMessageError",
            "LISTENERS",
            "ListenerBusyError",
            "ListenerRegistry",
            "PeerSilentError",
            "RemoteError",
            "RemoteEvent",
            "RemoteSession",
            "RemoteStatistics",
            "SSEListener",
            "SSEMessage",
            "ServedSession",
            "Server",
            "ServerStatistics",
            "SessionExistsError",
            "StreamClosedError",
            "StreamError",
            "UnknownEvent",
            "UnsafeBindError",
            "Update",
            "UpdatesStream",
            "WORKSPACE_TOOLS",
            "WebSocketChannel",
            "WebSocketChannelStatistics",
            "WebhookChannel",
            "WebhookStatistics",
            "Workspace",
            "WorkspaceChange",
            "WorkspaceError",
            "WorkspaceStream",
            "event_from_json",
            "event_to_json",
            "open_server",
            "open_remote_session",
            "open_sse_listener",
            "open_updates_stream",
            "open_workspace_stream",
        }
    ),
}

PACKAGES: Final = sorted(EXPECTED)

ALIASES: Final = {"streams.Backoff": "RetryPolicy"}
"""Public names that are another name for one class: there is one backoff policy, ``agents.RetryPolicy``."""


def _is_import_noise(name: str, value: object) -> bool:
    """Whether ``name`` is only there because a module body imported it for its own use.

    ``runtime.events`` defines its classes in the module itself, so its
    namespace also holds ``from __future__ import annotations`` and the
    ``typing`` names it annotates with; those are not part of the API.
    """
    if type(value).__module__ == "__future__":
        return True
    return getattr(typing, name, None) is value


def _public_names(module: types.ModuleType) -> set[str]:
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or _is_import_noise(name, value):
            continue
        if isinstance(value, types.ModuleType) and value.__name__ not in PUBLIC_SUBMODULES:
            continue
        names.add(name)
    return names


def _is_ours(value: object) -> bool:
    module = getattr(value, "__module__", None)
    return isinstance(module, str) and module.split(".")[0] in OUR_PACKAGES


def _own_docstring(value: Any) -> str | None:
    # A class's __doc__ is never inherited, but read it from the class's own
    # namespace anyway so a subclass can't pass on its base's docstring.
    doc = vars(value).get("__doc__") if inspect.isclass(value) else getattr(value, "__doc__", None)
    return doc if isinstance(doc, str) else None


@pytest.mark.parametrize("package", PACKAGES)
def test_exports_public_names_are_pinned(package: str) -> None:
    """Each package exposes exactly the public names written out in EXPECTED."""
    module = importlib.import_module(package)
    assert _public_names(module) == EXPECTED[package]


@pytest.mark.parametrize("package", PACKAGES)
def test_exports_public_classes_and_functions_have_docstrings(package: str) -> None:
    """Every public class or function defined in our packages has a non-empty docstring."""
    module = importlib.import_module(package)
    checked = []
    for name in sorted(_public_names(module)):
        value = getattr(module, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)) or not _is_ours(value):
            continue
        checked.append(name)
        doc = _own_docstring(value)
        assert doc is not None, f"{package}.{name} has no docstring"
        assert doc.strip(), f"{package}.{name} has an empty docstring"
    # Guard the filter above: a package with public classes must have had them checked.
    if package != "streams":
        assert checked


@pytest.mark.parametrize("package", PACKAGES)
def test_exports_packages_have_docstrings(package: str) -> None:
    """Every package and public submodule has a module docstring."""
    module = importlib.import_module(package)
    assert module.__doc__
    assert module.__doc__.strip()


@pytest.mark.parametrize("package", PACKAGES)
def test_exports_public_classes_and_functions_keep_their_names(package: str) -> None:
    """Every public class or function is exported under the name it was defined with, or is a listed alias."""
    module = importlib.import_module(package)
    for name in sorted(_public_names(module)):
        value = getattr(module, name)
        if (inspect.isclass(value) or inspect.isfunction(value)) and _is_ours(value):
            expected = ALIASES.get(f"{package}.{name}", name)
            assert value.__name__ == expected, f"{package}.{name} is {value.__qualname__}"
