"""A served run's input of content parts: its JSON form, the server reading it, and RemoteSession sending it.

Real sockets, so the real clock: every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Final

import pytest
import trio

from agents import Agent, DocumentPart, ImagePart, ScriptedModel, TextPart, UserMessage
from runtime.events import RunFinished, ToolCallFinished
from streams import ListenerRegistry, MalformedMessageError, open_remote_session
from streams._codec import content_from_json, content_to_json, event_to_json

if TYPE_CHECKING:
    from tests.streams.conftest import Create, Serving

TIMEOUT: Final = 10
PNG: Final = b"\x89PNG\r\n\x1a\n-a-tiny-png"
PDF: Final = b"%PDF-1.4 a tiny pdf"
PNG_B64: Final = base64.b64encode(PNG).decode()
PDF_B64: Final = base64.b64encode(PDF).decode()
PARTS: Final = (
    TextPart("Compare:"),
    ImagePart(url="https://example.com/cat.jpg"),
    ImagePart(data=PNG, media_type="image/png"),
    DocumentPart(data=PDF, filename="q3.pdf"),
    DocumentPart(url="https://example.com/q4.pdf"),
)
WIRE: Final = [
    {"type": "text", "text": "Compare:"},
    {"type": "image", "url": "https://example.com/cat.jpg"},
    {"type": "image", "data": PNG_B64, "media_type": "image/png"},
    {"type": "document", "data": PDF_B64, "media_type": "application/pdf", "filename": "q3.pdf"},
    {"type": "document", "url": "https://example.com/q4.pdf", "media_type": "application/pdf"},
]


def test_content_json_round_trips() -> None:
    """Parts go on the wire as typed objects (bytes in base64) and come back equal; a string stays a string."""
    assert content_to_json(PARTS) == WIRE
    assert content_from_json(WIRE) == PARTS
    assert content_to_json("hi") == "hi"
    assert content_from_json("hi") == "hi"
    assert content_from_json(["plain", {"type": "document", "data": PDF_B64}]) == (
        TextPart("plain"),
        DocumentPart(data=PDF),
    )


def test_a_tool_image_in_an_event_is_described_not_sent() -> None:
    """A tool's image result on the wire (ToolCallFinished.result) is a short description, never its bytes."""
    event = ToolCallFinished("c1", "snap", ["Here:", ImagePart(data=PNG * 100, media_type="image/png")], None)
    assert event_to_json(event)["result"] == [
        "Here:",
        f"ImagePart(url=None, data=<{len(PNG) * 100} bytes>, media_type='image/png')",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "must be a string or a non-empty list"),
        (5, "must be a string or a non-empty list"),
        ([], "must be a string or a non-empty list"),
        ({"type": "text", "text": "hi"}, "must be a string or a non-empty list"),
        ([5], "part 0 must be a string or an object of type text, image or document"),
        (["ok", {"type": "audio", "url": "u"}], "part 1 must be a string or an object of type"),
        ([{"url": "u"}], "part 0 must be a string or an object of type"),
        ([{"type": "image", "url": "u", "size": 3}], r"unknown fields \['size'\]"),
        ([{"type": "image", "url": 3}], r"\['url'\] must be strings"),
        ([{"type": "text"}], "part 0: "),
        ([{"type": "image"}], "exactly one of url= or data="),
        ([{"type": "image", "data": "!!not base64!!", "media_type": "image/png"}], "'data' is not base64"),
        ([{"type": "image", "data": PNG_B64, "media_type": "image/bmp"}], "'image/bmp' is not one of"),
        ([{"type": "document", "data": PDF_B64, "media_type": "text/html"}], "'text/html' is not one of"),
        ([""], "only empty text"),
        ([{"type": "text", "text": ""}, ""], "only empty text"),
    ],
)
def test_content_from_json_refuses_what_is_not_parts(value: Any, message: str) -> None:
    """Anything else is a MalformedMessageError saying which part and what is wrong with it."""
    with pytest.raises(MalformedMessageError, match=message):
        content_from_json(value)


async def test_a_served_run_takes_parts(serving: Serving, create: Create) -> None:
    """POST .../runs with a list of parts: the agent's model gets them as one user message of parts."""
    model = ScriptedModel(["Seen.", "Seen again."])
    with trio.fail_after(TIMEOUT):
        async with serving(Agent(name="a", model=model)) as (_, client):
            await create(client, "s1")
            async with client.stream("POST", "/sessions/s1/runs", json={"input": WIRE}) as response:
                assert response.status_code == 200
                lines = [line async for line in response.aiter_lines()]
            assert any('"type":"RunFinished","reason":"completed"' in line for line in lines)
            detached = await client.post("/sessions/s1/runs", json={"input": ["again", WIRE[2]], "detach": True})
            assert detached.status_code == 202
            async with client.stream("GET", f"/sessions/s1/runs/{detached.json()['run_id']}/events") as response:
                lines = [line async for line in response.aiter_lines()]
            assert any('"reason":"completed"' in line for line in lines)
    assert model.requests[0].messages == (UserMessage(PARTS),)
    assert model.requests[1].messages[-1] == UserMessage((TextPart("again"), PARTS[2]))


async def test_a_served_run_with_bad_parts_is_refused(serving: Serving, create: Create) -> None:
    """Malformed parts are a 422 bad_request naming the problem, and no run starts."""
    model = ScriptedModel(["never"])
    with trio.fail_after(TIMEOUT):
        async with serving(Agent(name="a", model=model)) as (_, client):
            await create(client, "s1")
            bad = [{"type": "image", "data": "!!", "media_type": "image/png"}]
            bodies: list[dict[str, Any]] = [{"input": bad}, {"input": bad, "detach": True}, {"input": []}]
            for body in bodies:
                response = await client.post("/sessions/s1/runs", json=body)
                assert response.status_code == 422
                assert response.json()["error"]["type"] == "bad_request"
            assert "'data' is not base64" in (await client.post("/sessions/s1/runs", json={"input": bad})).text
            assert (await client.get("/sessions/s1")).json()["runs"] == 0
    assert model.requests == []


async def test_a_served_run_of_empty_text_is_refused(serving: Serving, create: Create) -> None:
    """Input of empty text parts alone, which Session.run refuses, is a 422 bad_request saying so (attached or
    detached), not a 500; a session run before keeps serving."""
    model = ScriptedModel(["never"])
    with trio.fail_after(TIMEOUT):
        async with serving(Agent(name="a", model=model)) as (_, client):
            await create(client, "s1")
            empty = [{"type": "text", "text": ""}]
            bodies: list[dict[str, Any]] = [{"input": empty}, {"input": empty, "detach": True}, {"input": ["", ""]}]
            for body in bodies:
                response = await client.post("/sessions/s1/runs", json=body)
                assert response.status_code == 422
                assert response.json()["error"]["type"] == "bad_request"
                assert "only empty text" in response.json()["error"]["message"]
            assert (await client.get("/sessions/s1")).json()["runs"] == 0
    assert model.requests == []


async def test_remote_session_sends_parts(serving: Serving, create: Create) -> None:
    """RemoteSession.run takes text and parts as Session.run does, and the served model gets them."""
    model = ScriptedModel(["Seen."])
    with trio.fail_after(TIMEOUT):
        async with serving(Agent(name="a", model=model)) as (server, client):
            await create(client, "s1")
            async with open_remote_session(server.url, "s1", registry=ListenerRegistry()) as remote:
                async with remote.run(["Compare:", *PARTS[1:]]) as updates:
                    events = [update.event async for update in updates]
                with pytest.raises(ValueError, match="empty sequence"):
                    async with remote.run([]):
                        pytest.fail("the run started")  # pragma: no cover
    assert events[-1] == RunFinished("completed")
    assert model.requests[0].messages == (UserMessage(PARTS),)
