"""
Processes opening one new SQLite file together, as the workers of
``--workers`` do at start: ``python -m tests.open_race FOLDER ROUNDS``
prints one line per process that could not, and exits 1 if any.

A program of its own, so that the processes are forked from an interpreter
with no other thread (a fork of the test runner could inherit a lock held).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from stasis.store._sqlite import SQLiteDialect, configure

PROCESSES = 4


def _open(path: str, barrier: Any, failures: Any) -> None:
    barrier.wait(timeout=30)
    try:
        SQLiteDialect(path).prepare()
        with closing(sqlite3.connect(path, isolation_level=None, timeout=5)) as connection:
            configure(connection)
            connection.execute("SELECT count(*) FROM entries").fetchone()
    except Exception as e:
        failures.put(f"{path}: {e!r}")


def main(folder: str, rounds: int) -> int:
    context = multiprocessing.get_context("fork")
    failures = context.Queue()
    for round_ in range(rounds):
        path = str(Path(folder) / f"new-{round_}.db")
        barrier = context.Barrier(PROCESSES)
        processes = [
            context.Process(target=_open, args=(path, barrier, failures)) for _ in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
            if process.exitcode != 0:
                failures.put(f"{path}: a process ended with {process.exitcode}")
    found = 0
    while not failures.empty():
        print(failures.get())
        found += 1
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
