"""A throwaway PostgreSQL cluster for tests: ``initdb`` and ``pg_ctl`` on a temporary directory.

A plain helper (the ``postgres_cluster`` fixture in ``tests/conftest.py`` is one per test
session). The binaries come from Debian's ``postgresql`` package (``make test`` installs it).
``initdb`` and ``postgres`` refuse to run as root, which CI is: then they run as the
``postgres`` system user, in a directory it owns.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterator

SUPERUSER: Final = "trio_agents"
"""The cluster's superuser (trust authentication: no password)."""


class PostgresMissingError(Exception):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` that has ``initdb``.

    Raises:
        PostgresMissingError: There is none.
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise PostgresMissingError(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "install the Debian package `postgresql` (make test installs it when run as root)"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define(eq=False)
class PostgresCluster:
    """A running throwaway cluster on 127.0.0.1 (its unix socket in its own directory)."""

    bindir: Path
    directory: Path
    port: int
    as_postgres: bool
    """Whether its commands run as the ``postgres`` system user (we are root)."""
    _databases: Iterator[int] = attrs.field(factory=itertools.count)

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for one of its databases."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, cwd=self.directory, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        if done.returncode:
            log = self.directory / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}\n{tail}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory} -F -c max_connections=200"
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.directory / "server.log"), "-w", "-o", options, "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean), or ``immediate`` (as if it crashed)."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def restart_after_crash(self) -> None:
        """Stop it as a crash would (``immediate``), then start it again: every connection and lock is gone."""
        self.stop("immediate")
        self.start()

    def create_database(self) -> str:
        """Make a fresh empty database and return its connection string."""
        import psycopg

        name = f"test_{next(self._databases)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.dsn(name)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Initialize and start a cluster in a temporary directory; stop it and remove it on exit.

    Raises:
        PostgresMissingError: The server binaries are not installed.
    """
    bindir = find_bindir()
    as_postgres = os.geteuid() == 0
    # mkdtemp, not pytest's tmp_path: the postgres user must reach it, and tmp_path's parent is 0700.
    directory = Path(tempfile.mkdtemp(prefix="trio-agents-pg-"))
    try:
        if as_postgres:
            shutil.chown(directory, "postgres", "postgres")
        cluster = PostgresCluster(bindir, directory, _free_port(), as_postgres)
        cluster._run("initdb", "-D", str(cluster.datadir), "-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8")
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop("fast")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
