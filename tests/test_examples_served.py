"""The served-mode examples and ``python -m streams serve``, as real processes talking over loopback.

Each test starts its processes with the real clock, waits for a line of
their output before going on (never a sleep), and kills whatever is still
running on the way out, even when it fails.
"""

from __future__ import annotations

import json
import re
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, cast

import httpx
import trio

from tests.processes import ROOT, Child, run_python, running

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

SERVE = str(ROOT / "examples" / "serve.py")
CLIENT = str(ROOT / "examples" / "remote_client.py")
PROMPT = "remember the milk"
URL = re.compile(r"^serving on (http://\S+)$", re.MULTILINE)


async def serving_url(server: Child) -> str:
    """The URL a server prints once it listens."""
    return (await server.wait_for(URL))[1]


ANSWER = "  Noted. Prompt 1 of this session is saved in notes/001.md; read it back over the workspace stream."
DONE = "done: the run is over and the session is idle again."


def check_client_output(lines: list[str], session: str) -> None:
    """What ``remote_client.py --prompt PROMPT`` prints for the first prompt of a fresh session, up to the run's end."""
    prompt = lines.index(f"> {PROMPT}")
    assert "  -> write_file(path='notes/001.md', content='# Note 1\\n\\nremember the milk\\n')" in lines
    # The answer streamed as text deltas, printed on one line as they came (handler lines wait for its end).
    assert ANSWER in lines
    assert "[run finished: completed]" in lines
    # The updates stream: the same run, from its start to its end.
    assert f"[updates] RunStarted (run {session}-r1)" in lines
    assert "[updates] ToolCallStarted write_file" in lines
    assert any(
        re.fullmatch(r"\[updates\] RunFinished completed \(after \d+ TextDelta events\)", line) for line in lines
    )
    # The between-run feed: running, the agent's write, idle again after the run.
    running = lines.index(f"[feed] SessionState running (run {session}-r1)")
    assert prompt < running
    assert "[feed] SessionState idle" in lines[running + 1 :]
    assert "[feed] WorkspaceChanged write notes/001.md by agent" in lines
    assert "[workspace] WorkspaceChanged write notes/001.md by agent" in lines
    # The note, read back over the workspace stream.
    note = lines.index("[workspace] read notes/001.md:")
    assert lines[note + 1 : note + 4] == ["  | # Note 1", "  | ", f"  | {PROMPT}"]


async def test_remote_client_once_runs_a_prompt_on_the_served_example_and_the_server_stops_on_ctrl_c() -> None:
    """The client attaches, streams the answer, sees the feed go idle, reads the note; the server exits 0 on SIGINT."""
    with trio.fail_after(30):
        async with running(SERVE, "--port", "0") as server:
            url = await serving_url(server)
            await server.wait_for(r"^  curl .*/sessions/curl/runs$")
            client = await run_python(CLIENT, "--url", url, "--once", "--prompt", PROMPT)
            out = client.stdout.decode()
            assert client.returncode == 0, f"{out}\n{client.stderr.decode()}"
            assert "Traceback" not in client.stderr.decode()
            lines = out.splitlines()
            check_client_output(lines, "demo")
            assert lines[-1] == DONE

            with trio.fail_after(10):
                status = await server.interrupt()
            assert status == 0, server.describe()
            assert "Traceback" not in server.stderr, server.describe()
            assert server.stdout.rstrip().endswith("Goodbye."), server.describe()


async def test_streams_serve_command_serves_the_example_agent_and_exits_0_on_ctrl_c() -> None:
    """``python -m streams serve --agent examples.serve:agent`` (from the repo root) answers /health; SIGINT: exit 0."""
    with trio.fail_after(30):
        async with running("-m", "streams", "serve", "--agent", "examples.serve:agent", "--port", "0") as server:
            url = await serving_url(server)
            inspector = (await server.wait_for(r"^inspector: (\S+)$"))[1]
            await server.wait_for(r"^agent 'notes'; Ctrl-C stops$")  # the example's agent, not some other
            async with httpx.AsyncClient(timeout=10) as client:
                health = await client.get(f"{url}/health")
                created = await client.post(f"{url}/sessions", json={"id": "cli"})
                page = await client.get(inspector)
            assert inspector == f"{url}/inspect"
            assert page.status_code == 200
            assert "trio-agents inspector" in page.text
            assert health.status_code == 200
            assert health.json() == {"ok": True}
            assert created.status_code == 201
            with trio.fail_after(10):
                status = await server.interrupt()
            assert status == 0, server.describe()
            assert "Traceback" not in server.stderr, server.describe()


async def test_streams_serve_command_rejects_an_agent_it_cannot_find_with_exit_2() -> None:
    """``--agent nope:x`` is a usage error: exit 2 and a message naming the missing module, no traceback."""
    with trio.fail_after(30):
        completed = await run_python("-m", "streams", "serve", "--agent", "nope:x", "--port", "0")
    stderr = completed.stderr.decode()
    assert completed.returncode == 2, stderr
    assert "--agent nope:x" in stderr
    assert "No module named 'nope'" in stderr
    assert "Traceback" not in stderr
    assert completed.stdout == b""


async def test_remote_client_watches_until_ctrl_c_and_exits_0() -> None:
    """Without --once the client keeps watching after the run; SIGINT then ends it with 0 and no traceback.

    (With a bearer token on both sides, which the client passes on every stream and request.)
    """
    with trio.fail_after(30):
        async with running(SERVE, "--port", "0", "--token", "s3cret") as server:
            url = await serving_url(server)
            args = ("--url", url, "--token", "s3cret", "--session", "watch", "--prompt", PROMPT)
            async with running(CLIENT, *args) as client:
                # It waits for the run's end on every stream before it says so.
                await client.wait_for(r"^watching the session's streams .*Ctrl-C to stop$")
                check_client_output(client.stdout.splitlines(), "watch")
                with trio.fail_after(10):
                    status = await client.interrupt()
                assert status == 0, client.describe()
                assert "Traceback" not in client.stderr, client.describe()
                assert client.stdout.rstrip().endswith("Goodbye."), client.describe()
            with trio.fail_after(10):
                status = await server.interrupt()
            assert status == 0, server.describe()
            assert "Traceback" not in server.stderr, server.describe()


async def test_served_example_stops_promptly_on_ctrl_c_with_a_client_attached() -> None:
    """SIGINT to the server while a client watches: the server announces it on the feed (a Notice), ends the
    client's streams and exits 0 promptly; the client sees the notice, then the session closed and, its streams
    down, still exits 0 on its own SIGINT."""
    with trio.fail_after(30):
        async with running(SERVE, "--port", "0") as server:
            url = await serving_url(server)
            async with running(CLIENT, "--url", url, "--prompt", PROMPT) as client:
                await client.wait_for(r"^watching the session's streams .*Ctrl-C to stop$")
                started = trio.current_time()
                with trio.fail_after(10):
                    status = await server.interrupt()
                assert status == 0, server.describe()
                assert trio.current_time() - started < 5, server.describe()
                assert "Traceback" not in server.stderr, server.describe()
                notice = await client.wait_for(r"^\[feed\] Notice: the server is stopping: this session closes now$")
                closed = await client.wait_for(r"^\[feed\] SessionState closed$")
                assert notice.start() < closed.start()  # told first, then closed
                with trio.fail_after(10):
                    status = await client.interrupt()
                assert status == 0, client.describe()
                assert "Traceback" not in client.stderr, client.describe()


INSPECT = str(ROOT / "examples" / "inspector.py")


async def test_the_inspect_example_keeps_sessions_busy_for_the_inspector_and_stops_on_ctrl_c() -> None:
    """``examples/inspector.py`` prints the inspector's URL; the page's stream shows its busy sessions, one of
    them waiting for an approval; SIGINT: exit 0."""
    with trio.fail_after(30):
        async with running(INSPECT, "--port", "0", "--token", "s3cret") as server:
            url = await serving_url(server)
            assert (await server.wait_for(r"^inspector: (\S+)$"))[1] == f"{url}/inspect"
            auth = {"authorization": "Bearer s3cret"}
            sessions: dict[str, Any] = {}
            busy = trio.Event()

            async def watch() -> None:
                """Read the inspector's stream; cancelled once ``busy``, while it waits in a read."""
                async with (
                    httpx.AsyncClient(timeout=10, headers=auth) as client,
                    client.stream("GET", f"{url}/inspect/events") as response,
                    aclosing(cast("AsyncGenerator[str]", response.aiter_lines())) as lines,
                ):
                    async for line in lines:
                        if line.startswith("data: "):
                            message = json.loads(line.removeprefix("data: "))
                            sessions.update((node["id"], node) for node in message["sessions"])
                            if {"release", "batch", "research", "chat-0"} <= set(sessions):
                                if sessions["release"]["pending"]:
                                    busy.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await busy.wait()
                nursery.cancel_scope.cancel()
            with trio.fail_after(10):
                status = await server.interrupt()
            assert status == 0, server.describe()
            assert "Traceback" not in server.stderr, server.describe()


async def test_the_served_examples_serve_beyond_loopback_with_no_token_when_told() -> None:
    """Their refusal of ``--host 0.0.0.0`` with no token tells to pass ``--allow-unauthenticated-remote``:
    each example has that flag, and with it serves (``/health`` answers), then exits 0 on SIGINT."""
    with trio.fail_after(30):
        for example in (SERVE, INSPECT):
            args = ("--host", "0.0.0.0", "--allow-unauthenticated-remote", "--port", "0")
            async with running(example, *args) as server:
                port = (await serving_url(server)).rpartition(":")[2]
                async with httpx.AsyncClient(timeout=10) as client:
                    health = await client.get(f"http://127.0.0.1:{port}/health")
                assert health.json() == {"ok": True}
                status = await server.interrupt()
            assert status == 0, server.describe()
            assert "Traceback" not in server.stderr, server.describe()


async def test_remote_client_with_a_wrong_or_missing_token_says_the_server_refused_it() -> None:
    """Against a server with a token, the client with a wrong one, or none, exits 1 with the server's 401 in
    its one error line; it said "<RemoteSession ...> is not served", its own state, not the refusal."""
    with trio.fail_after(60):
        async with running(SERVE, "--port", "0", "--token", "s3cret") as server:
            url = await serving_url(server)
            for token in (["--token", "wrong"], []):
                client = await run_python(CLIENT, "--url", url, "--once", *token)
                err = client.stderr.decode()
                assert client.returncode == 1, err
                assert "Traceback" not in err
                assert "401" in err, err
                assert "is not served" not in err, err
            with trio.fail_after(10):
                assert await server.interrupt() == 0, server.describe()
