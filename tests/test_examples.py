"""
The examples in ``examples/`` run, offline, and show what they claim.

Each is run as a user runs it (``python examples/run.py NAME``, in a
subprocess), with the bundled fake LLM made fast (``--delay``) so the whole
module stays within half a minute. The figures come from the runner's
``--json`` report: calls counted by the fake upstream itself, hits by stasis.
The pytest examples' own suites run inside (recorded, then replayed); the
runner exits non-zero when one fails, and this test shows their output then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
#: Seconds the fake LLM takes per call here (0.55 s when a user runs them).
DELAY = "0.02"

#: The tests each pytest example has: both its runs (record, replay) must pass them all.
TESTS = {"openai_integration": 7, "content_analyzer": 8}
#: Per example: (run, upstream calls, answered from stasis's cache), in order.
EXPECTED = {
    # 7 tests, 7 distinct calls; one test repeats its call to show the HIT.
    "openai_integration": [("first run (record)", 7, 1), ("cached run (replay)", 0, 8)],
    "prompt_iteration": [("first run", 6, 0), ("cached run", 0, 6), ("one prompt edited", 1, 5)],
    # 8 distinct calls (3 sentiments, 1 entities, 3 categories, 1 new entities call in the
    # full analysis), whose other 2 calls repeat earlier tests' ones.
    "content_analyzer": [("first run (record)", 8, 2), ("cached run (replay)", 0, 10)],
}


def _environ() -> dict[str, str]:
    """This process's environment, without anything that points the examples elsewhere."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("STASIS_", "OPENAI_", "PYTEST_"))
    }


@pytest.mark.parametrize("name", list(EXPECTED))
def test_example_runs_offline_and_its_cached_run_calls_nothing(name: str, tmp_path: Path) -> None:
    figures_file = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "run.py"),
            name,
            "--delay",
            DELAY,
            "--json",
            str(figures_file),
        ],
        cwd=tmp_path,
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output

    runs = json.loads(figures_file.read_text())[name]
    assert [(r["name"], r["upstream_calls"], r["hits"]) for r in runs] == EXPECTED[name], output
    # The time is taken around the calls: each took the fake at least 0.6 x its delay.
    assert all(r["seconds"] >= r["upstream_calls"] * 0.6 * float(DELAY) for r in runs)

    # The table a user reads: a header, one row per run with its calls, the speed-up.
    assert f"== {name}:" in done.stdout
    assert "| run | time |" in done.stdout
    for run, calls, hits in EXPECTED[name]:
        assert f"| {run} | " in done.stdout
        assert f" | {calls} | {hits} |" in done.stdout
    assert "cached run:" in done.stdout
    assert f"{EXPECTED[name][0][1]} upstream calls saved" in done.stdout
    if name in TESTS:  # its own suite passed, recorded and then replayed
        assert done.stdout.count(f"{TESTS[name]} passed in ") == 2, output


@pytest.mark.parametrize("name", ["openai_integration", "content_analyzer"])
def test_example_tests_skip_without_a_stasis_mode(name: str) -> None:
    """A plain ``pytest`` in an example never calls a provider (or needs a key): it skips."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs"],
        cwd=EXAMPLES / name,
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped" in done.stdout and " passed" not in done.stdout
    assert "no proxy in this session" in done.stdout
