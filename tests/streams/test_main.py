"""``python -m streams serve``: ordinary mistakes in its flags, or a port it cannot have, are a line, not a
traceback."""

from __future__ import annotations

import socket

import pytest
import trio

from streams.__main__ import main
from tests.processes import run_python

AGENT = "tests.streams.durable_agent:agent"


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--port", "70000"),
        ("--port", "-1"),
        ("--idle-timeout", "-5"),
        ("--idle-timeout", "nan"),
        ("--max-sessions", "-3"),
        ("--max-queued-runs", "-3"),
        ("--write-timeout", "0"),
        ("--body-timeout", "-1"),
        ("--backlog", "-1"),
    ],
)
def test_serve_refuses_a_number_flag_out_of_range_with_usage(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    """A negative limit served a broken server, a bad port or deadline ended in a traceback: each is now
    refused by the parser (exit 2), naming the flag and the value."""
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--agent", "no_such_module:agent", flag, value])  # refused before the agent is loaded
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be " in err
    assert f"not {value}" in err
    assert "Traceback" not in err


async def test_serve_on_a_port_in_use_says_so_in_one_line() -> None:
    """A port another socket listens on is a one-line ``error:`` and exit 1, not an ``OSError`` traceback."""
    with socket.socket() as taken, trio.fail_after(60):
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # A process of its own: Hypercorn leaves the socket it failed to bind unclosed (a ResourceWarning).
        completed = await run_python("-m", "streams", "serve", "--agent", AGENT, "--port", str(port))
    err = completed.stderr.decode()
    assert completed.returncode == 1, err
    assert err.splitlines()[0].startswith(f"error: cannot serve on 127.0.0.1:{port}: ")
    assert "Traceback" not in err  # (only -W error shows Hypercorn's unclosed socket after the line)


async def test_serve_never_prints_the_stores_password() -> None:
    """A store it cannot reach, or a URL it cannot read, is one ``error:`` line naming the store without the
    password the URL holds; it printed the --store value as given, password and all."""
    with trio.fail_after(60):
        unreachable = "postgresql://agent:S3CRET-PW@127.0.0.1:1/sessions"
        completed = await run_python("-m", "streams", "serve", "--agent", AGENT, "--port", "0", "--store", unreachable)
    err = completed.stderr.decode()
    assert completed.returncode == 1, err
    assert err.startswith("error: the store postgresql://agent@127.0.0.1:1/sessions: "), err
    assert "S3CRET-PW" not in err


def test_serve_refusing_a_store_url_hides_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--agent", AGENT, "--store", "mysql://agent:S3CRET-PW@db/sessions"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--store mysql://agent:***@db/sessions: a store is sqlite:PATH or postgresql://" in err
    assert "S3CRET-PW" not in err
