"""WebhookChannel: a real Hypercorn server on loopback, driven by httpx, with a gateway or a bare bus."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
import trio.testing

from agents import Agent, ScriptedModel, ToolCall, tool
from runtime import InboundMessage, MessageBus, open_gateway, open_runtime
from streams import WebhookChannel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from types import ModuleType

    from agents import ModelRequest, UserMessage
    from agents.models import Turn

SECRET = "s3cret"
AUTH = {"Authorization": f"Bearer {SECRET}"}
EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


@tool
def lookup(topic: str) -> str:
    """Look something up.

    Args:
        topic: What to look up.
    """
    return f"notes on {topic}"


def _echo(request: ModelRequest) -> Turn:
    last: UserMessage = request.messages[-1]  # type: ignore[assignment]  # the run's input is the last message
    return f"echo: {last.content}"


def make_agent(turns: list[Turn] | None = None) -> Agent:
    """An agent whose scripted model echoes each message (or follows ``turns``)."""
    script = turns if turns is not None else itertools.repeat(_echo)
    return Agent(name="bot", instructions="Echo.", model=ScriptedModel(script), tools=[lookup])


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Let every task run until all of them wait, then check ``predicate``: the server runs in this test's
    Trio loop, and loopback bytes are there at once for its next I/O poll, so nothing is left in flight."""
    await trio.testing.wait_all_tasks_blocked()
    assert predicate()


@asynccontextmanager
async def serving(channel: WebhookChannel, agent: Agent | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A runtime and gateway serving ``channel``, and an httpx client pointed at it."""
    async with open_runtime() as runtime, open_gateway(runtime, agent or make_agent(), [channel]) as gateway:
        with trio.fail_after(10):
            await gateway.wait_ready(channel.name)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{channel.port}", timeout=10) as client:
            yield client


async def test_webhook_accepts_with_202_and_the_reply_reaches_the_channel() -> None:
    """A plain POST answers 202 with a message id, and the agent's reply comes back to the channel."""
    channel = WebhookChannel(secret=SECRET)
    async with serving(channel) as client:
        with trio.fail_after(10):
            response = await client.post("/messages", json={"chat_id": "c1", "text": "hi"}, headers=AUTH)
            assert response.status_code == 202
            assert response.json()["message_id"].startswith("m")
            await wait_until(lambda: channel.statistics().unclaimed == 1)  # the reply reached the channel
    stats = channel.statistics()
    assert stats.accepted == 1
    assert stats.pending == 0


async def test_webhook_wait_for_response_returns_the_reply_and_progress() -> None:
    """With wait_for_response the request answers 200 with the agent's reply and its progress notes."""
    channel = WebhookChannel(secret=SECRET)
    agent = make_agent([ToolCall("lookup", {"topic": "trio"}), "done looking"])
    async with serving(channel, agent) as client:
        with trio.fail_after(10):
            response = await client.post(
                "/messages", json={"chat_id": "c1", "text": "look", "wait_for_response": True}, headers=AUTH
            )
    assert response.status_code == 200
    body = response.json()
    assert body["reply"] == "done looking"
    assert body["kind"] == "reply"
    assert body["progress"] == ["calling lookup"]
    assert channel.statistics().pending == 0


async def test_webhook_rejects_a_missing_or_wrong_secret_with_401() -> None:
    """Without the right bearer token the request is refused with a JSON 401 and nothing is published."""
    channel = WebhookChannel(secret=SECRET)
    async with serving(channel) as client:
        with trio.fail_after(10):
            missing = await client.post("/messages", json={"chat_id": "c", "text": "x"})
            wrong = await client.post(
                "/messages", json={"chat_id": "c", "text": "x"}, headers={"Authorization": "Bearer nope"}
            )
    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert "error" in missing.json()
    assert "error" in wrong.json()
    assert channel.statistics().accepted == 0


async def test_webhook_rejects_an_oversized_body_with_413() -> None:
    """A body over max_body is refused with a JSON 413."""
    channel = WebhookChannel(max_body=1024)
    async with serving(channel) as client:
        with trio.fail_after(10):
            response = await client.post("/messages", json={"chat_id": "c", "text": "x" * 2048})
    assert response.status_code == 413
    assert "error" in response.json()
    assert channel.statistics().accepted == 0


async def test_webhook_rejects_bad_json_and_missing_fields_with_422() -> None:
    """Invalid JSON, a non-object, a missing field or a wrongly typed field each get a JSON 422."""
    channel = WebhookChannel()
    async with serving(channel) as client:
        with trio.fail_after(10):
            responses = [
                await client.post("/messages", content=b"{not json", headers={"content-type": "application/json"}),
                await client.post("/messages", json=["a list"]),
                await client.post("/messages", json={"text": "no chat id"}),
                await client.post("/messages", json={"chat_id": "c"}),
                await client.post("/messages", json={"chat_id": "c", "text": "x", "wait_for_response": "yes"}),
            ]
    assert [response.status_code for response in responses] == [422] * 5
    assert all("error" in response.json() for response in responses)
    assert channel.statistics().accepted == 0


async def test_webhook_answers_504_on_response_timeout_and_forgets_the_request() -> None:
    """A reply that does not come within response_timeout gives a JSON 504 and leaves no pending entry."""
    bus = MessageBus()
    channel = WebhookChannel(response_timeout=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, bus)  # no gateway: nobody ever replies
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{channel.port}", timeout=10) as client:
            with trio.fail_after(10):
                response = await client.post("/messages", json={"chat_id": "c", "text": "x", "wait_for_response": True})
        assert response.status_code == 504
        assert "error" in response.json()
        assert len(channel._pending) == 0
        assert channel.statistics().pending == 0
        nursery.cancel_scope.cancel()
    bus.close()


async def test_webhook_forgets_a_waiting_request_when_its_client_goes_away() -> None:
    """A client that disconnects while waiting for its reply leaves no pending entry behind."""
    bus = MessageBus()
    channel = WebhookChannel(response_timeout=30)
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, bus)  # no gateway: nobody ever replies
        with trio.fail_after(10):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{channel.port}", timeout=10) as client:
                async with trio.open_nursery() as waiting:
                    body = {"chat_id": "c", "text": "x", "wait_for_response": True}
                    waiting.start_soon(functools.partial(client.post, "/messages", json=body))
                    await wait_until(lambda: channel.statistics().pending == 1)  # it waits for its reply
                    waiting.cancel_scope.cancel()  # the client gives up: its connection closes
            await wait_until(lambda: channel.statistics().pending == 0)
        nursery.cancel_scope.cancel()
    bus.close()


async def test_webhook_shutdown_answers_a_request_blocked_on_a_full_bus_with_503() -> None:
    """Ironclaw #905: cancelling the channel while a request is blocked on a full bus ends promptly with 503."""
    bus = MessageBus(inbound_size=1)
    await bus.publish_inbound(InboundMessage("webhook", "filler", "fill"), policy="drop")  # the queue is now full
    channel = WebhookChannel(publish_timeout=30)
    responses: list[httpx.Response] = []
    async with httpx.AsyncClient(timeout=10) as client:
        with trio.fail_after(10):
            async with trio.open_nursery() as requests:
                async with trio.open_nursery() as server:
                    await server.start(channel.run, bus)
                    url = f"http://127.0.0.1:{channel.port}/messages"

                    async def post() -> None:
                        responses.append(await client.post(url, json={"chat_id": "c", "text": "blocked"}))

                    requests.start_soon(post)
                    await wait_until(lambda: channel.statistics().publishing == 1)  # parked on the full bus
                    cancelled_at = trio.current_time()
                    server.cancel_scope.cancel()
                shutdown_took = trio.current_time() - cancelled_at
    assert shutdown_took < 2
    assert len(responses) == 1
    assert responses[0].status_code == 503
    assert "error" in responses[0].json()
    assert channel.statistics().publishing == 0
    assert bus.statistics().inbound.buffered == 1  # the blocked message was never accepted
    bus.close()


async def test_webhook_refuses_with_503_when_the_bus_stays_full() -> None:
    """A publish that finds no room within publish_timeout is answered with a JSON 503."""
    bus = MessageBus(inbound_size=1)
    await bus.publish_inbound(InboundMessage("webhook", "filler", "fill"), policy="drop")
    channel = WebhookChannel(publish_timeout=0.1)
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, bus)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{channel.port}", timeout=10) as client:
            with trio.fail_after(10):
                response = await client.post("/messages", json={"chat_id": "c", "text": "x"})
        nursery.cancel_scope.cancel()
    assert response.status_code == 503
    assert "error" in response.json()
    bus.close()


@pytest.mark.parametrize(
    "option",
    ["publish_timeout", "response_timeout", "max_body", "write_timeout", "body_timeout", "backlog"],
)
@pytest.mark.parametrize("value", [0, -1])
def test_webhook_refuses_a_limit_not_above_zero(option: str, value: int) -> None:
    """A limit that is not above zero is a ValueError naming it when the channel is made, not a 500 on every POST."""
    with pytest.raises(ValueError, match=f"{option} must be above zero"):
        WebhookChannel(**{option: value})  # type: ignore[arg-type]


def test_webhook_refuses_a_negative_graceful_timeout() -> None:
    """A graceful_timeout below zero is refused when the channel is made (0: no grace, is allowed)."""
    with pytest.raises(ValueError, match="graceful_timeout must be 0 or more"):
        WebhookChannel(graceful_timeout=-1)
    WebhookChannel(graceful_timeout=0)


async def test_webhook_bot_example_selftest_exits_0(load_example: Callable[[str], ModuleType]) -> None:
    """`examples/webhook_bot.py --selftest` serves, answers its own requests and exits 0."""
    example = load_example("webhook_bot")
    with trio.fail_after(30):
        assert await example.main(["--selftest", "--port", "0"]) == 0
