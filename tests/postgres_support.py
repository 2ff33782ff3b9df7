"""
PostgreSQL servers for the tests, real ones: the one CI gives, or a throwaway cluster.

``STASIS_TEST_POSTGRES_URL`` names a server (CI's; any database on it the
tests may ``CREATE DATABASE`` from). Without it, a cluster is made in a
temporary folder with the server's own ``initdb`` and ``pg_ctl`` (found on
PATH, else in ``/usr/lib/postgresql/*/bin``), listening on 127.0.0.1 only,
with trust authentication, and removed at the end of the session; as root,
its commands run as the ``postgres`` user, since ``initdb`` refuses root.
With neither, the tests that need one are skipped, saying why.

Every test gets a database of its own (:func:`postgres_url`), so tests are
isolated from each other and safe under pytest-xdist, whose workers each
have a session (and so a cluster) of their own. A test that stops the server
(:func:`own_cluster`) always has a cluster of its own, never CI's.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from attrs import define

ENVIRONMENT = "STASIS_TEST_POSTGRES_URL"
_USER = "postgres"


def _binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's newest."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name.partition(".")[0] or 0),
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(command: list[str]) -> list[str]:
    """``command`` as the user who owns the cluster: ``postgres`` when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", _USER, "--", *command]
    return command


def with_database(url: str, name: str) -> str:
    """``url`` naming the database ``name`` instead of its own, the rest kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@define
class Cluster:
    """A throwaway PostgreSQL cluster: a data folder, a port on 127.0.0.1, trust auth."""

    folder: Path
    binaries: Path
    port: int

    @classmethod
    def create(cls) -> Cluster:
        binaries = _binaries()
        if binaries is None:
            pytest.skip(f"no PostgreSQL server: set {ENVIRONMENT} or install initdb and pg_ctl")
        folder = Path(tempfile.mkdtemp(prefix="stasis-pg-"))
        if os.geteuid() == 0:
            shutil.chown(folder, _USER)
        cluster = cls(folder, binaries, _free_port())
        cluster._run(
            "initdb",
            "--pgdata",
            str(folder / "data"),
            "--auth",
            "trust",
            "--username",
            _USER,
            "--encoding",
            "UTF8",
            "--no-sync",
        )
        cluster.start()
        return cluster

    def _run(self, program: str, *args: str) -> None:
        command = _as_owner([str(self.binaries / program), *args])
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}")

    @property
    def url(self) -> str:
        """The maintenance database's URL."""
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        # fsync off: a throwaway cluster need not survive a power cut.
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -F -c max_connections=200"
        self._run(
            "pg_ctl",
            "--pgdata",
            str(self.folder / "data"),
            "--log",
            str(self.folder / "server.log"),
            "--options",
            options,
            "--wait",
            "start",
        )

    def require_password(self, role: str, password: str) -> None:
        """
        Make ``role`` a login role with ``password``, which connections over
        TCP as that role must give (SCRAM); every other role keeps trust auth.
        """
        admin(self.url, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        hba = self.folder / "data" / "pg_hba.conf"
        rule = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(rule + hba.read_text())  # the first matching line decides
        admin(self.url, "SELECT pg_reload_conf()")

    def stop(self) -> None:
        self._run("pg_ctl", "--pgdata", str(self.folder / "data"), "--mode", "fast", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run(
                "pg_ctl", "--pgdata", str(self.folder / "data"), "--mode", "immediate", "stop"
            )
        shutil.rmtree(self.folder, ignore_errors=True)


def admin(url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE or DROP DATABASE) on ``url``."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        connection.execute(statement)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server, dropped afterwards, connections and all."""
    name = f"stasis_test_{uuid.uuid4().hex[:16]}"
    admin(server_url, f"CREATE DATABASE {name}")
    try:
        yield with_database(server_url, name)
    finally:
        with contextlib.suppress(Exception):
            admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a server the tests may create databases on (CI's, or a throwaway one)."""
    pytest.importorskip("psycopg")
    given = os.environ.get(ENVIRONMENT)
    if given:
        yield given
        return
    cluster = Cluster.create()
    try:
        yield cluster.url
    finally:
        cluster.remove()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A database of this test's own, empty, on :func:`postgres_server`."""
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of this test's own, which it may stop and start (never CI's server)."""
    pytest.importorskip("psycopg")
    cluster = Cluster.create()
    try:
        yield cluster
    finally:
        cluster.remove()
