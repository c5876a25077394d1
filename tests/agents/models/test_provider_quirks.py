"""What OpenAI-compatible servers and Anthropic really send, over a real loopback server: Mistral's typed
content parts, Ollama's index-0 parallel calls, Groq's ``x_groq.usage``, Azure's empty first chunk, the
cached and reasoning token counts, and Anthropic prompt caching.

The recorded streams are in ``tests/fixtures/llm_streams`` (see its README) and in the shared fixtures; each
expectation is the fixture's ``expect``, worked out from the chunks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import pytest
import trio

from agents import (
    Agent,
    AnthropicModel,
    AssistantMessage,
    ModelChunk,
    ModelRequest,
    OpenAIChatModel,
    OpenAIResponsesModel,
    ReasoningChunk,
    RetryPolicy,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolResultMessage,
    UsageChunk,
    UserMessage,
    tool,
)
from runtime import open_runtime
from runtime.events import (
    ErrorEvent,
    Event,
    ModelStopped,
    ReasoningDelta,
    RunFinished,
    ServerToolUse,
    TextDelta,
    ToolCallStarted,
    Usage,
)

STREAMS: Final = Path(__file__).resolve().parents[2] / "fixtures" / "llm_streams"
"""This project's own recorded streams."""
SHARED_STREAMS: Final = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "llm_streams"
"""The shared test data: ``../shared/fixtures`` beside the checkout."""
OPENAI_CASES: Final = sorted(path for name in ("mistral", "azure", "groq") for path in (STREAMS / name).glob("*.json"))
SHARED_OPENAI_CASES: Final = sorted(
    path
    for name in ("openai", "deepseek", "groq", "openrouter", "vllm")
    for path in (SHARED_STREAMS / name).glob("*.json")
    if json.loads(path.read_text("utf-8"))["expect"].get("usage")
)
ONE_TRY: Final = RetryPolicy(max_attempts=1)
RUN_LIMIT: Final = 10.0
"""Seconds any one run against the loopback server may take before the test fails."""


def _case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return case


def _serve_case(server: Any, path: Path, **options: Any) -> dict[str, Any]:
    case = _case(path)
    body = (path.parent / case["body_file"]).read_bytes()
    assert len(body) == case["body_bytes"]
    server.serve(body, status=case["http_status"], content_type=case["content_type"], **options)
    return case


def _openai(server: Any) -> OpenAIChatModel:
    return OpenAIChatModel("m", base_url=server.base_url, api_key="k", retry=ONE_TRY)


def _anthropic(server: Any, **options: Any) -> AnthropicModel:
    return AnthropicModel("m", base_url=server.base_url, api_key="k", retry=ONE_TRY, **options)


async def _run(agent: Agent, prompt: str = "hi") -> list[Event]:
    with trio.fail_after(RUN_LIMIT):
        async with open_runtime() as runtime, runtime.open_session(agent) as session:
            async with session.run(prompt) as stream:
                return [event async for event in stream]


async def _chunks(model: OpenAIChatModel | AnthropicModel) -> list[ModelChunk]:
    with trio.fail_after(RUN_LIMIT):
        async with model.stream(ModelRequest("", (UserMessage("hi"),))) as chunks:
            return [chunk async for chunk in chunks]


def _sse(*chunks: dict[str, Any] | str) -> bytes:
    return b"".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks)


def _openai_usage(usage: dict[str, Any]) -> Usage:
    """The Usage event an OpenAI-style ``usage`` object means: ``prompt_tokens`` as sent, cached beside it."""
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return Usage(
        usage["prompt_tokens"],
        usage["completion_tokens"],
        cache_read_tokens=prompt.get("cached_tokens") or 0,
        reasoning_tokens=completion.get("reasoning_tokens") or 0,
    )


def _deltas(events: list[Event]) -> list[list[str]]:
    return [
        ["text" if isinstance(event, TextDelta) else "reasoning", event.text]
        for event in events
        if isinstance(event, TextDelta | ReasoningDelta)
    ]


def _check_openai_expect(events: list[Event], expect: dict[str, Any]) -> None:
    assert [e for e in events if isinstance(e, ErrorEvent)] == []
    assert _deltas(events) == expect["deltas"]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == expect["text"]
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == expect["reasoning"]
    usage = expect["usage"] or expect["x_groq_usage"]
    assert [e for e in events if isinstance(e, Usage)] == [_openai_usage(usage)]
    assert [e for e in events if isinstance(e, ModelStopped)] == [ModelStopped("end_turn", expect["finish_reason"])]
    assert events[-1] == RunFinished("completed")


@pytest.mark.parametrize("path", OPENAI_CASES, ids=[f"{p.parent.name}/{p.stem}" for p in OPENAI_CASES])
async def test_recorded_quirk_stream_rebuilds_the_expected_response(provider_server: Any, path: Path) -> None:
    """Each recorded stream, served byte for byte, gives its text and reasoning deltas in order, its stop and
    one Usage with the cached and reasoning counts, and the run completes."""
    case = _serve_case(provider_server, path)
    events = await _run(Agent(name="m", model=_openai(provider_server), max_turns=1))
    _check_openai_expect(events, case["expect"])


@pytest.mark.parametrize("path", OPENAI_CASES, ids=[f"{p.parent.name}/{p.stem}" for p in OPENAI_CASES])
async def test_recorded_quirk_stream_served_slowly_gives_the_same_response(provider_server: Any, path: Path) -> None:
    """Sent a few bytes at a time (splitting lines, JSON and UTF-8), each stream gives the same response."""
    case = _serve_case(provider_server, path, chunk_size=3)
    events = await _run(Agent(name="m", model=_openai(provider_server), max_turns=1))
    _check_openai_expect(events, case["expect"])


async def test_mistral_thinking_parts_are_reasoning_and_text_parts_text(provider_server: Any) -> None:
    """A delta holding a thinking part and a text part gives a ReasoningChunk then a TextChunk; no chunk's
    text is anything but a string."""
    _serve_case(provider_server, STREAMS / "mistral" / "magistral_thinking_parts_then_text.json")
    chunks = await _chunks(_openai(provider_server))
    assert all(isinstance(chunk.text, str) for chunk in chunks if isinstance(chunk, TextChunk | ReasoningChunk))
    assert chunks[-5:] == [
        ReasoningChunk("1."),  # the second-to-last chunk: [thinking "1.", text "3"]
        TextChunk("3"),
        TextChunk("91"),  # then the content is a plain string again
        StopChunk("end_turn", "stop"),
        UsageChunk(28, 139),
    ]


async def test_content_neither_text_nor_parts_ends_the_run_with_a_model_error(provider_server: Any) -> None:
    """A delta whose content is an object (neither text nor a list of parts) is a malformed stream."""
    provider_server.serve(_sse({"choices": [{"index": 0, "delta": {"content": {"type": "text"}}}]}, "[DONE]"))
    events = await _run(Agent(name="m", model=_openai(provider_server), max_turns=1))
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.kind == "model"
    assert "content" in error.message
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.reason == "error"


def _ollama_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """An Ollama /v1 chunk: its envelope as Ollama sends it (``fp_ollama``, ``chatcmpl-<n>``)."""
    return {
        "id": "chatcmpl-15",
        "object": "chat.completion.chunk",
        "created": 1775808043,
        "model": "qwen2.5-coder:7b",
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _ollama_call(call_id: str, arguments: dict[str, str]) -> dict[str, Any]:
    """One whole call per chunk, always at ``index: 0``: Ollama 0.20's shape (ollama #15457)."""
    function = {"name": "file_write", "arguments": json.dumps(arguments)}
    return {"id": call_id, "index": 0, "type": "function", "function": function}


HELLO: Final = {"filePath": "hello.py", "content": 'print("hello")'}
WORLD: Final = {"filePath": "world.py", "content": 'print("world")'}
OLLAMA_PARALLEL: Final = _sse(
    _ollama_chunk({"role": "assistant", "content": "", "tool_calls": [_ollama_call("call_mst3bxvw", HELLO)]}),
    _ollama_chunk({"role": "assistant", "content": "", "tool_calls": [_ollama_call("call_0ed9c6kw", WORLD)]}),
    _ollama_chunk({"role": "assistant", "content": ""}, "tool_calls"),
    "[DONE]",
)
"""Ollama 0.20's two parallel calls, both at ``index: 0``. No recorded stream of this was found; it is built
from the shape reported in ollama #15457 (``"tool_calls":[{"id":...,"function":{"arguments":...}}]``, every
call at index 0) in the chunk envelope of Ollama's recorded /v1 streams."""


async def test_ollama_parallel_calls_at_index_0_are_told_apart_by_id(provider_server: Any) -> None:
    """Two calls sent at the same index with different ids are two calls, not one with names and JSON glued."""
    provider_server.serve(OLLAMA_PARALLEL)
    chunks = await _chunks(_openai(provider_server))
    assert chunks == [
        ToolCallDeltaChunk("call_mst3bxvw", "file_write", json.dumps(HELLO)),
        ToolCallDeltaChunk("call_0ed9c6kw", "file_write", json.dumps(WORLD)),
        ToolCallChunk("call_mst3bxvw", "file_write", json.dumps(HELLO)),
        ToolCallChunk("call_0ed9c6kw", "file_write", json.dumps(WORLD)),
        StopChunk("tool_use", "tool_calls"),
    ]


async def test_ollama_parallel_calls_at_index_0_both_run(provider_server: Any) -> None:
    """In a run, both of Ollama's index-0 calls start with their own arguments and both run."""
    written: list[str] = []

    @tool
    def file_write(filePath: str, content: str) -> str:
        """Write a file."""
        written.append(filePath)
        return "ok"

    provider_server.serve(OLLAMA_PARALLEL)
    events = await _run(Agent(name="m", model=_openai(provider_server), tools=[file_write], max_turns=1))
    assert [(e.call_id, e.arguments) for e in events if isinstance(e, ToolCallStarted)] == [
        ("call_mst3bxvw", HELLO),
        ("call_0ed9c6kw", WORLD),
    ]
    assert sorted(written) == ["hello.py", "world.py"]


async def test_a_repeated_id_at_the_same_index_stays_one_call(provider_server: Any) -> None:
    """A fragment repeating its call's id (as OpenRouter's do) adds to that call; only a new id begins one."""

    def fragment(**fields: Any) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, **fields}]}}]}

    provider_server.serve(
        _sse(
            fragment(id="call_a", function={"name": "add", "arguments": '{"a": '}),
            fragment(id="call_a", function={"arguments": "1}"}),
            fragment(id="call_b", function={"name": "add", "arguments": "{}"}),
            "[DONE]",
        )
    )
    chunks = await _chunks(_openai(provider_server))
    assert [chunk for chunk in chunks if isinstance(chunk, ToolCallChunk)] == [
        ToolCallChunk("call_a", "add", '{"a": 1}'),
        ToolCallChunk("call_b", "add", "{}"),
    ]


async def test_groq_usage_only_in_x_groq_is_the_usage(provider_server: Any) -> None:
    """Groq's stream with no top-level usage reports the tokens of its last chunk's ``x_groq.usage``."""
    case = _serve_case(provider_server, STREAMS / "groq" / "llama3_x_groq_usage_only.json")
    usage = case["expect"]["x_groq_usage"]
    assert case["expect"]["usage"] is None
    chunks = await _chunks(_openai(provider_server))
    assert chunks[-1] == UsageChunk(usage["prompt_tokens"], usage["completion_tokens"])


async def test_azure_empty_first_chunk_is_skipped(provider_server: Any) -> None:
    """Azure's first chunk (no choices, only prompt_filter_results) gives nothing; the text follows it."""
    _serve_case(provider_server, STREAMS / "azure" / "model_router_empty_first_choices.json")
    chunks = await _chunks(_openai(provider_server))
    assert chunks == [
        TextChunk("Capital"),
        TextChunk(" of"),
        TextChunk(" Denmark"),
        TextChunk("."),
        StopChunk("end_turn", "stop"),
        UsageChunk(15, 78, reasoning_tokens=64),
    ]


@pytest.mark.parametrize("path", SHARED_OPENAI_CASES, ids=[f"{p.parent.name}/{p.stem}" for p in SHARED_OPENAI_CASES])
async def test_shared_recorded_usage_keeps_cached_and_reasoning_tokens(provider_server: Any, path: Path) -> None:
    """The Usage of every shared recorded stream carries ``prompt_tokens`` as sent and the cached and
    reasoning counts of its details (DeepSeek's 198 reasoning tokens, OpenRouter's 11 ...)."""
    case = _serve_case(provider_server, path)
    events = await _run(Agent(name="m", model=_openai(provider_server), max_turns=1))
    assert [e for e in events if isinstance(e, Usage)] == [_openai_usage(case["expect"]["usage"])]


async def test_openai_cached_tokens_are_beside_prompt_tokens(provider_server: Any) -> None:
    """``prompt_tokens`` stays the provider's figure (it includes the cached ones); the cached count is beside
    it. (No recorded stream with a cache hit was found; the usage object is OpenAI's documented shape.)"""
    provider_server.serve(
        _sse(
            {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]},
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 1200,
                    "completion_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 1024},
                    "completion_tokens_details": {"reasoning_tokens": 3},
                },
            },
            "[DONE]",
        )
    )
    events = await _run(Agent(name="m", model=_openai(provider_server), max_turns=1))
    assert [e for e in events if isinstance(e, Usage)] == [Usage(1200, 7, cache_read_tokens=1024, reasoning_tokens=3)]


async def test_deepseek_prompt_cache_hit_tokens_are_the_cached_tokens(provider_server: Any) -> None:
    """With no ``prompt_tokens_details``, DeepSeek's ``prompt_cache_hit_tokens`` is the cached count."""
    usage = {"prompt_tokens": 64, "completion_tokens": 2, "prompt_cache_hit_tokens": 60, "prompt_cache_miss_tokens": 4}
    provider_server.serve(_sse({"choices": [{"index": 0, "delta": {"content": "ok"}}], "usage": usage}, "[DONE]"))
    chunks = await _chunks(_openai(provider_server))
    assert chunks[-1] == UsageChunk(64, 2, cache_read_tokens=60)


ANTHROPIC_CACHE: Final = STREAMS / "anthropic" / "code_execution_prompt_cache.json"


async def test_anthropic_cache_counts_are_beside_input_tokens(provider_server: Any) -> None:
    """The recorded prompt-cache stream reports ``input_tokens`` as sent, and its cache reads and writes as
    ``message_delta.usage`` last counted them, after the server tools and the text."""
    case = _serve_case(provider_server, ANTHROPIC_CACHE)
    expect = case["expect"]
    usage = expect["usage"]
    events = await _run(Agent(name="claude", model=_anthropic(provider_server), max_turns=1))
    assert [e for e in events if isinstance(e, ErrorEvent)] == []
    assert [e for e in events if isinstance(e, Usage)] == [
        Usage(
            usage["input_tokens"],
            usage["output_tokens"],
            cache_read_tokens=usage["cache_read_input_tokens"],
            cache_write_tokens=usage["cache_creation_input_tokens"],
            reasoning_tokens=usage["output_tokens_details"]["thinking_tokens"],
        )
    ]
    assert [(e.call_id, e.name, e.input) for e in events if isinstance(e, ServerToolUse)] == [
        (call["id"], call["name"], call["arguments"]) for call in expect["server_tool_calls"]
    ]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == expect["text"]
    assert [e for e in events if isinstance(e, ModelStopped)] == [ModelStopped("end_turn", expect["finish_reason"])]
    assert events[-1] == RunFinished("completed")


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return query


@tool
def fetch(url: str) -> str:
    """Fetch a page."""
    return url


async def test_anthropic_cache_prompt_marks_the_system_prompt_and_last_tool(provider_server: Any) -> None:
    """``cache_prompt=True`` sends the system prompt as one text block with ``cache_control`` and marks the
    last tool definition; without it the body is as before, with no ``cache_control`` anywhere."""
    _serve_case(provider_server, ANTHROPIC_CACHE)
    for cache_prompt in (True, False):
        model = _anthropic(provider_server, cache_prompt=cache_prompt)
        agent = Agent(name="claude", model=model, instructions="Be brief.", tools=[lookup, fetch], max_turns=1)
        events = await _run(agent)
        assert events[-1] == RunFinished("completed")
    cached, plain = (json.loads(request.body) for request in provider_server.requests)
    ephemeral = {"type": "ephemeral"}
    assert cached["system"] == [{"type": "text", "text": "Be brief.", "cache_control": ephemeral}]
    assert [tool.get("cache_control") for tool in cached["tools"]] == [None, ephemeral]
    assert [tool["name"] for tool in cached["tools"]] == ["lookup", "fetch"]
    assert plain["system"] == "Be brief."
    assert "cache_control" not in json.dumps(plain)
    assert {key: value for key, value in cached.items() if key not in ("system", "tools")} == {
        key: value for key, value in plain.items() if key not in ("system", "tools")
    }


async def test_anthropic_cache_prompt_without_instructions_or_tools_changes_nothing(provider_server: Any) -> None:
    """With nothing to mark (no system prompt, no tools), ``cache_prompt`` adds no key to the body."""
    _serve_case(provider_server, ANTHROPIC_CACHE)
    await _chunks(_anthropic(provider_server, cache_prompt=True))
    body = json.loads(provider_server.requests[0].body)
    assert "system" not in body
    assert "tools" not in body
    assert "cache_control" not in json.dumps(body)


def _history(call_id: str) -> ModelRequest:
    """A history whose tool call (made by another provider) has the id ``call_id``."""
    call = ToolCallChunk(call_id, "lookup", {"q": "x"})
    return ModelRequest(
        "", (UserMessage("hi"), AssistantMessage("", (call,)), ToolResultMessage(call_id, "lookup", "found"))
    )


@pytest.mark.parametrize(
    "call_id", ["chatcmpl-tool-" + "a" * 32, "toolu_01825dXWLSoJwCst1qTsiWdb", "llm_version:0", "lookup-0"]
)
def test_another_providers_tool_call_ids_are_made_ones_each_provider_takes(call_id: str) -> None:
    """A history made by one provider (a FallbackModel's, a session reopened with another model) may hold ids
    another refuses: OpenAI's are 40 characters at most (vLLM's are 46), Anthropic's letters, digits, _ and -
    (OpenRouter's "llm_version:0"), Mistral's exactly 9 letters or digits. Each gets one it takes, the same
    for the call and its result; an id it takes goes as it is."""
    openai = OpenAIChatModel("m", api_key="k")
    mistral = OpenAIChatModel("m", api_key="k", provider="mistral")
    for model, valid in ((openai, r".{1,40}"), (mistral, r"[A-Za-z0-9]{9}")):
        _, assistant, result = model.body(_history(call_id))["messages"]
        sent = assistant["tool_calls"][0]["id"]
        assert re.fullmatch(valid, sent), sent
        assert result["tool_call_id"] == sent
        assert sent == call_id or not re.fullmatch(valid, call_id)
    _, assistant, result = AnthropicModel("m", api_key="k").body(_history(call_id))["messages"]
    sent = assistant["content"][0]["id"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", sent), sent
    assert result["content"][0]["tool_use_id"] == sent
    assert sent == call_id or ":" in call_id


def test_mistral_gets_an_assistant_turn_between_tool_results_and_the_next_user_message() -> None:
    """A run that ended right after its tools (max_turns, a timeout, an interrupted run repaired) leaves tool
    results followed by the next run's user message: Mistral refuses that order ("Unexpected role 'user'
    after role 'tool'"), so an empty assistant turn goes between them; other servers get the history as is."""
    call = ToolCallChunk("abcdefghi", "lookup", {"q": "x"})
    history = (
        UserMessage("hi"),
        AssistantMessage("", (call,)),
        ToolResultMessage("abcdefghi", "lookup", "found"),
        UserMessage("and now?"),
    )
    mistral = OpenAIChatModel("m", api_key="k", provider="mistral").body(ModelRequest("", history))
    assert [message["role"] for message in mistral["messages"]] == ["user", "assistant", "tool", "assistant", "user"]
    assert mistral["messages"][3] == {"role": "assistant", "content": "OK."}  # empty, Mistral refuses it too
    openai = OpenAIChatModel("m", api_key="k").body(ModelRequest("", history))
    assert [message["role"] for message in openai["messages"]] == ["user", "assistant", "tool", "user"]


def test_tool_call_ids_of_other_servers_go_as_they_are_and_odd_ones_never_break_a_request() -> None:
    """Only OpenAI's own API caps ids at 40: Kimi's own (functions.name:3, longer) go back as they are, which it
    relies on. An id holding a lone surrogate (a model's id is any string) is mapped, not a crash. The
    Responses API caps ids at 64."""
    kimi_id = "functions.search_internal_knowledge_base:3"
    kimi = OpenAIChatModel("kimi-k2", api_key="k", base_url="https://api.moonshot.ai/v1")
    _, assistant, result = kimi.body(_history(kimi_id))["messages"]
    assert assistant["tool_calls"][0]["id"] == result["tool_call_id"] == kimi_id
    odd = "x" * 41 + "\ud800"
    for model in (OpenAIChatModel("m", api_key="k"), OpenAIChatModel("m", api_key="k", provider="mistral")):
        _, assistant, result = model.body(_history(odd))["messages"]
        assert assistant["tool_calls"][0]["id"] == result["tool_call_id"] != odd
    _, assistant, result = AnthropicModel("m", api_key="k").body(_history(odd))["messages"]
    assert assistant["content"][0]["id"] == result["content"][0]["tool_use_id"] != odd
    long_id = "lookup_" + "x" * 70
    items = OpenAIResponsesModel("m", api_key="k").body(_history(long_id))["input"]
    call, output = (item for item in items if item.get("type") in ("function_call", "function_call_output"))
    assert call["call_id"] == output["call_id"]
    assert len(call["call_id"]) <= 64
