"""
Where the session's recordings live: an SQLite file the daemon opens itself,
or a cassette (a directory of one JSON file per entry, or a ``.jsonl`` file)
that is imported into a temporary SQLite file before the session and
exported back after it.

A cassette is what a project commits: it is readable in a diff, holds no
credential, and merges (one file per entry). The import and export are
``python -m stasis import|export``, run as commands so the test process never
loads the store (Twisted, sqlite3) and so they behave exactly as a user's own
invocation of them would.
"""

from __future__ import annotations

import enum
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from attrs import frozen

from stasis.testing._errors import CassetteError

__all__ = ["Storage", "StorageKind"]

#: Seconds an import or export may take.
COMMAND_DEADLINE = 300.0


class StorageKind(enum.Enum):
    SQLITE = "sqlite"
    DIRECTORY = "directory"
    JSONL = "jsonl"
    #: A database URL (``postgresql://``), handed to the daemon as it is.
    URL = "url"


@frozen
class Storage:
    location: str
    kind: StorageKind

    @classmethod
    def of(cls, location: str) -> Storage:
        """
        What ``location`` (an absolute path or a URL) is: a ``.jsonl`` path is a
        JSON Lines cassette; an existing directory, or a path that does not exist
        and has no suffix, a cassette directory; anything else an SQLite file.
        """
        if "://" in location:
            return cls(location, StorageKind.URL)
        path = Path(location)
        if path.suffix == ".jsonl":
            return cls(location, StorageKind.JSONL)
        if path.is_dir() or (
            not path.exists() and (location.endswith(("/", os.sep)) or not path.suffix)
        ):
            return cls(location, StorageKind.DIRECTORY)
        return cls(location, StorageKind.SQLITE)

    @property
    def is_cassette(self) -> bool:
        return self.kind in (StorageKind.DIRECTORY, StorageKind.JSONL)

    def exists(self) -> bool:
        return self.kind is StorageKind.URL or Path(self.location).exists()

    def daemon_db(self, workdir: Path) -> str:
        """The daemon's ``--db``: the location itself, or a temporary file for a cassette."""
        return str(workdir / "cassette.db") if self.is_cassette else self.location

    def load(self, workdir: Path, env: Mapping[str, str]) -> None:
        """Import the cassette (if it exists yet) into :meth:`daemon_db`."""
        if self.is_cassette and self.exists():
            _run("import", self.location, self.daemon_db(workdir), env)

    def save(self, workdir: Path, env: Mapping[str, str]) -> None:
        """Export :meth:`daemon_db` to the cassette."""
        if not self.is_cassette:
            return
        try:
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CassetteError(f"cannot write the cassette {self.location}: {e}") from None
        _run("export", self.location, self.daemon_db(workdir), env)


def _run(command: str, path: str, db: str, env: Mapping[str, str]) -> None:
    args = [sys.executable, "-m", "stasis", command, path, "-d", db]
    failed = f"cannot {'read' if command == 'import' else 'write'} the cassette {path}"
    try:
        done = subprocess.run(
            args,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_DEADLINE,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CassetteError(f"{failed}: {e}") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        reason = said[-1].removeprefix("stasis: ") if said else f"exit status {done.returncode}"
        raise CassetteError(f"{failed} (python -m stasis {command}: {reason})")
