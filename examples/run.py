"""
Run the examples offline: a first run against a cached run, timed and counted.

    python examples/run.py                      # all three
    python examples/run.py content_analyzer     # one (or several) by name

Each example runs against the fake LLM in ``fake_llm.py`` (300-800 ms a
call, like a small hosted model; ``--delay`` or ``STASIS_EXAMPLES_DELAY``
sets the mean) with stasis in between, twice: the first run calls "the
provider" for everything, the cached run for nothing. The table says how long
each took and how many calls reached the fake. No network, no API key:
``sk-example`` stands in for one.

- ``openai_integration`` and ``content_analyzer``: their test suites, under
  stasis's pytest plugin: recorded into a cassette (``--stasis-mode cache``),
  then replayed from it (``--stasis-mode replay``), as CI would.
- ``prompt_iteration``: its script against a ``stasis start`` daemon, run
  twice, then once more with one prompt edited.

``--json PATH`` also writes the figures as JSON (the examples' own test reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from xml.etree import ElementTree

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fake_llm import FakeLLM  # noqa: E402
from stasis_daemon import DaemonStartError, stasis_daemon  # noqa: E402

__all__ = ["EXAMPLES", "Run", "main"]

#: Stands in for an API key: the SDK wants one, the fake and the cache need none.
EXAMPLE_KEY = "sk-example"
#: Variables of the caller's that would send these runs elsewhere.
_FOREIGN = ("OPENAI_BASE_URL", "OPENAI_API_BASE", "STASIS_MODE", "STASIS_DB", "STASIS_UPSTREAM")


@dataclass
class Run:
    """One run of an example: its figures for the table."""

    name: str
    #: The whole run, as you would wait for it.
    seconds: float
    #: Calls that reached the fake LLM (the provider, in real life).
    upstream_calls: int
    #: Calls stasis answered from its cache.
    hits: int
    #: Of ``seconds``, the time spent in the tests themselves (pytest examples
    #: only): what the cache changes. The rest is Python, pytest and stasis's
    #: daemon starting, which no cache makes shorter.
    test_seconds: float | None = None


class ExampleFailed(Exception):
    """An example's run failed (a test, or stasis); the message says how."""


def _environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    env["OPENAI_API_KEY"] = EXAMPLE_KEY
    return env


def _measure(name: str, fake: FakeLLM, action: Callable[[], tuple[int, float | None]]) -> Run:
    """Time ``action`` (which returns the hits it saw, and its tests' time) and count calls."""
    calls = fake.calls
    started = time.perf_counter()
    hits, test_seconds = action()
    return Run(name, time.perf_counter() - started, fake.calls - calls, hits, test_seconds)


def _test_seconds(junit: Path) -> float:
    """The tests' own time (setup, call and teardown of each), from pytest's JUnit XML report."""
    return sum(float(case.get("time", 0)) for case in ElementTree.parse(junit).iter("testcase"))


_HITS = re.compile(r"^stasis: (\d+) hits", re.MULTILINE)
_SUMMARY = re.compile(r"^stasis: |\d+ (passed|failed|error)")


def _pytest_runs(example: str) -> Callable[[FakeLLM, Path], list[Run]]:
    """An example whose tests are run by the stasis pytest plugin: record, then replay."""

    def run(fake: FakeLLM, workdir: Path) -> list[Run]:
        cassette = workdir / "cassettes"

        def pytest(*options: str) -> tuple[int, float]:
            junit = workdir / "junit.xml"
            command = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "--stasis-db",
                str(cassette),
                f"--junitxml={junit}",
            ]
            done = subprocess.run(
                [*command, *options],
                cwd=HERE / example,
                env=_environ(),
                capture_output=True,
                text=True,
                check=False,
            )
            for line in done.stdout.splitlines():
                if _SUMMARY.search(line):  # the plugin's lines, and pytest's last
                    print("    " + line.strip("= "))
            if done.returncode != 0:
                raise ExampleFailed(
                    f"pytest {' '.join(options)} failed:\n{done.stdout}{done.stderr}"
                )
            hits = _HITS.search(done.stdout)
            return (int(hits.group(1)) if hits else 0), _test_seconds(junit)

        return [
            _measure(
                "first run (record)",
                fake,
                lambda: pytest("--stasis-mode", "cache", "--stasis-upstream", fake.url),
            ),
            _measure("cached run (replay)", fake, lambda: pytest("--stasis-mode", "replay")),
        ]

    return run


def _prompt_iteration(fake: FakeLLM, workdir: Path) -> list[Run]:
    """The script three times against one daemon: cold, cached, with one prompt edited."""
    sys.path.insert(0, str(HERE / "prompt_iteration"))
    from iterate import load_prompts, run_prompts
    from openai import OpenAI

    prompts = load_prompts()
    with stasis_daemon(workdir, fake.url) as url:
        client = OpenAI(base_url=url + "/v1", api_key=EXAMPLE_KEY, max_retries=0)

        def iteration(edited: bool = False) -> tuple[int, float | None]:
            batch = list(prompts)
            if edited:  # what you do between runs: reword one prompt
                batch[0] = replace(batch[0], system=batch[0].system + " At most six words.")
            return sum(result.status == "HIT" for result in run_prompts(client, batch)), None

        return [
            _measure("first run", fake, iteration),
            _measure("cached run", fake, iteration),
            _measure("one prompt edited", fake, lambda: iteration(edited=True)),
        ]


EXAMPLES: dict[str, tuple[str, Callable[[FakeLLM, Path], list[Run]]]] = {
    "openai_integration": (
        "an app's tests under the stasis pytest plugin",
        _pytest_runs("openai_integration"),
    ),
    "prompt_iteration": ("a prompt-iteration script against `stasis start`", _prompt_iteration),
    "content_analyzer": (
        "a content analyzer service's tests (sentiment, entities, categories)",
        _pytest_runs("content_analyzer"),
    ),
}


def table(runs: list[Run]) -> str:
    """The first-run against cached-run table, in Markdown, with the speed-up under it."""
    in_tests = any(r.test_seconds is not None for r in runs)
    head = "| run | time |" + (" in the tests |" if in_tests else "")
    lines = [
        head + " upstream calls | from stasis's cache |",
        "|---|---:|" + ("---:|" if in_tests else "") + "---:|---:|",
    ]
    for r in runs:
        tests = f" {r.test_seconds:.2f} s |" if r.test_seconds is not None else ""
        lines.append(f"| {r.name} | {r.seconds:.2f} s |{tests} {r.upstream_calls} | {r.hits} |")
    first, cached = runs[0], runs[1]
    saved = f"{first.upstream_calls - cached.upstream_calls} upstream calls saved"
    if first.test_seconds is not None and cached.test_seconds is not None:
        lines.append(
            f"cached run: the tests {_ratio(first.test_seconds, cached.test_seconds)} faster, "
            f"the whole command {_ratio(first.seconds, cached.seconds)} (the rest is Python, "
            f"pytest and stasis starting); {saved}"
        )
    else:
        lines.append(f"cached run: {_ratio(first.seconds, cached.seconds)} faster; {saved}")
    return "\n".join(lines)


def _ratio(slow: float, fast: float) -> str:
    return f"{slow / max(fast, 1e-3):.1f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"examples to run (default: all): {', '.join(EXAMPLES)}",
    )
    parser.add_argument("--delay", type=float, help="the fake LLM's mean seconds per call")
    parser.add_argument("--json", type=Path, help="also write the figures here, as JSON")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in EXAMPLES]
    if unknown:
        parser.error(f"no example {', '.join(unknown)}; there are: {', '.join(EXAMPLES)}")
    figures: dict[str, list[dict[str, object]]] = {}
    status = 0
    with FakeLLM(delay=args.delay) as fake:
        print(f"fake LLM on {fake.url} ({fake.delay:g} s a call on average)")
        for name in args.names or list(EXAMPLES):
            title, run = EXAMPLES[name]
            print(f"\n== {name}: {title}")
            with tempfile.TemporaryDirectory(prefix=f"stasis-{name}-") as workdir:
                try:
                    runs = run(fake, Path(workdir))
                except (ExampleFailed, DaemonStartError) as e:
                    print(f"{name} FAILED: {e}", file=sys.stderr)
                    status = 1
                    continue
            print("\n" + table(runs))
            figures[name] = [asdict(r) for r in runs]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", "utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main())
