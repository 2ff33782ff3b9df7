"""
The pytest plugin, end to end: inner test suites that call the official
``openai`` SDK run in real pytest processes (``pytester.runpytest_subprocess``)
with the plugin, against a real daemon it starts and a fake upstream here.

Some tests rely on parts of the daemon that their docstrings name: the
directive prefix (``/_stasis/with/<directives>/<rest>``), the replay miss's
``x-should-retry: false``; those that use a cassette need
``python -m stasis import|export`` and are skipped without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from stasis.testing import DaemonStartError, Directives, MarkerError, StasisProxy
from stasis.testing._daemon import start_daemon
from stasis.testing._environ import EnvironmentPatch
from stasis.testing._replay import ReplayMiss, find_replay_misses, report
from stasis.testing._session import inherited_routes, session_environ
from stasis.testing._settings import Setting, resolve
from stasis.testing._storage import Storage, StorageKind
from tests.fake_upstream import FakeUpstream

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

#: The plugin's entry point makes pytest load it; before stasis is installed
#: with it, the inner runs load it by module name (both at once is an error).
_INSTALLED = any(ep.name == "stasis" for ep in entry_points(group="pytest11"))
PLUGIN = () if _INSTALLED else ("-p", "stasis.pytest_plugin")
#: Quieter, faster inner runs that leave nothing behind.
INNER = (
    *PLUGIN,
    *("-p", "no:cacheprovider", "-p", "no:twisted", "-p", "no:hypothesispytest", "-p", "no:anyio"),
    *("--strict-markers", "-rs"),
)

#: What the plugin may set, and what a developer's machine may have set: the
#: inner runs start from none of them unless a test says otherwise.
SCRUBBED = (
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    "GOOGLE_GEMINI_BASE_URL",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "STASIS_MODE",
    "STASIS_DB",
    "STASIS_UPSTREAM",
    "PYTEST_ADDOPTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
DEV_KEY = "sk-dev-REAL-KEY-0123456789"

SUITE = """
from openai import OpenAI


def ask(content, **options):
    reply = OpenAI(**options).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}], temperature=0
    )
    return reply.choices[0].message.content


def test_capital():
    assert ask("What is the capital of France?").endswith(": What is the capital of France?")


def test_the_same_question_twice_has_the_same_answer():
    assert ask("Say hi") == ask("Say hi")
"""
#: The suite's calls: two distinct questions, one of them asked twice.
SUITE_CALLS = 3
SUITE_DISTINCT = 2
#: The fake's ``usage.total_tokens`` for a chat completion.
TOKENS = 18


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SCRUBBED:
        monkeypatch.delenv(name, raising=False)


def closed_port_url() -> str:
    """An address where nothing listens: an upstream replay mode must never call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def summary(hits: int, misses: int, replay_misses: int) -> str:
    return (
        f"stasis: {hits} hits, {misses} misses ({replay_misses} replay misses), "
        f"{hits} calls and {hits * TOKENS} tokens saved"
    )


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*INNER, *args, timeout=60)


def record(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream, db: Path
) -> pytest.RunResult:
    """Run the inner suite in cache mode with a key, against the fake."""
    with monkeypatch.context() as m:
        m.setenv("OPENAI_API_KEY", DEV_KEY)
        return run(
            pytester,
            "--stasis-mode=cache",
            f"--stasis-upstream={upstream.url}",
            f"--stasis-db={db}",
        )


def replay(
    pytester: pytest.Pytester, db: Path, *args: str, key: str | None = None
) -> pytest.RunResult:
    """
    Run the inner suite in replay mode with no reachable upstream, and no key
    unless ``key`` (for tests about something else than replaying with another key).
    """
    assert "OPENAI_API_KEY" not in os.environ
    with pytest.MonkeyPatch.context() as m:
        if key is not None:
            m.setenv("OPENAI_API_KEY", key)
        return run(
            pytester,
            "--stasis-mode=replay",
            f"--stasis-upstream={closed_port_url()}",
            f"--stasis-db={db}",
            *args,
        )


# --- Installation and cost ----------------------------------------------------------


def test_pyproject_declares_the_entry_point() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"stasis": "stasis.pytest_plugin"}


def test_loading_the_plugin_imports_almost_nothing() -> None:
    """pytest loads the plugin in every session; one without a mode must not pay for it."""
    script = textwrap.dedent(
        """
        import json, sys
        import pytest
        before = set(sys.modules)
        import stasis.pytest_plugin
        print(json.dumps(sorted(set(sys.modules) - before)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    loaded = set(json.loads(out))
    # stasis/__init__ reads its version (incremental); nothing else.
    assert loaded <= {
        "stasis",
        "stasis._version",
        "stasis.pytest_plugin",
        "incremental",
        "incremental._version",
    }, loaded


def test_without_a_mode_nothing_happens(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://gateway.example/v1")
    monkeypatch.setenv("STASIS_DB", str(pytester.path / "elsewhere.db"))
    pytester.makepyfile(
        """
        import os
        import sys

        import pytest

        def test_the_environment_is_left_alone():
            assert os.environ["OPENAI_BASE_URL"] == "http://gateway.example/v1"
            assert "ANTHROPIC_BASE_URL" not in os.environ
            # Nothing of the plugin's machinery was even imported.
            assert "stasis.testing" not in sys.modules

        def test_the_fixture_skips(stasis_proxy):
            raise AssertionError("not reached")

        @pytest.mark.stasis(mode="replay")
        def test_a_marker_alone_does_nothing():
            assert os.environ["OPENAI_BASE_URL"] == "http://gateway.example/v1"
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*no proxy in this session; set --stasis-mode*"])
    result.stdout.no_fnmatch_line("stasis: *hits*")
    assert not (pytester.path / "stasis-cache.db").exists()
    assert not (pytester.path / "elsewhere.db").exists()


def test_mode_off_overrides_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nstasis_mode = replay\n")
    pytester.makepyfile("def test_nothing(stasis_proxy): pass")
    result = run(pytester, "--stasis-mode=off")
    result.assert_outcomes(skipped=1)


# --- Recording and replaying ----------------------------------------------------------


def test_record_then_replay_with_no_key(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    db = pytester.path / "recorded.db"
    recorded = record(pytester, monkeypatch, upstream, db)
    recorded.assert_outcomes(passed=2)
    assert len(upstream.calls("/v1/chat/completions")) == SUITE_DISTINCT
    recorded.stdout.fnmatch_lines(
        [summary(SUITE_CALLS - SUITE_DISTINCT, SUITE_DISTINCT, 0)], consecutive=True
    )
    # The key recorded with never reached the file.
    assert DEV_KEY.encode() not in db.read_bytes()

    replayed = replay(pytester, db)
    replayed.assert_outcomes(passed=2)
    assert len(upstream.calls()) == SUITE_DISTINCT
    replayed.stdout.fnmatch_lines([summary(SUITE_CALLS, 0, 0)])
    replayed.stdout.fnmatch_lines(["stasis: replay mode, http://127.0.0.1:*, db *recorded.db"])


@pytest.mark.parametrize("cassette", ["cassettes", "cassette.jsonl"])
def test_record_then_replay_with_a_cassette(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    upstream: FakeUpstream,
    cassette: str,
) -> None:
    pytest.importorskip("stasis.cassettes")
    pytester.makepyfile(test_suite=SUITE)
    path = pytester.path / "tests" / cassette
    recorded = record(pytester, monkeypatch, upstream, path)
    recorded.assert_outcomes(passed=2)
    recorded.stdout.fnmatch_lines([f"stasis: wrote the cassette {path} ({SUITE_DISTINCT} entries)"])
    if path.suffix == ".jsonl":
        assert len(path.read_text().splitlines()) == SUITE_DISTINCT
    else:
        assert len([p for p in path.iterdir() if p.is_file()]) == SUITE_DISTINCT
    assert DEV_KEY not in "".join(p.read_text() for p in [path, *path.glob("*")] if p.is_file())
    before = {p: p.read_bytes() for p in [path, *path.glob("*")] if p.is_file()}
    # No temporary file of the session is left in the project.
    assert not list(pytester.path.glob("*.db"))

    replayed = replay(pytester, path)
    replayed.assert_outcomes(passed=2)
    assert len(upstream.calls()) == SUITE_DISTINCT
    replayed.stdout.fnmatch_lines([summary(SUITE_CALLS, 0, 0)])
    # Replaying writes nothing back.
    replayed.stdout.no_fnmatch_line("stasis: wrote the cassette*")
    assert {p: p.read_bytes() for p in [path, *path.glob("*")] if p.is_file()} == before


def test_a_cassette_is_written_back_only_after_a_session_that_recorded(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    pytest.importorskip("stasis.cassettes")
    pytester.makepyfile(test_suite=SUITE)
    path = pytester.path / "cassettes"
    record(pytester, monkeypatch, upstream, path).assert_outcomes(passed=2)
    again = record(pytester, monkeypatch, upstream, path)
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines([summary(SUITE_CALLS, 0, 0)])
    again.stdout.no_fnmatch_line("stasis: wrote the cassette*")
    assert len(upstream.calls()) == SUITE_DISTINCT


def test_a_cassette_that_cannot_be_written_keeps_the_recording_and_fails_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    (pytester.path / "a-file").write_text("")
    result = record(pytester, monkeypatch, upstream, pytester.path / "a-file" / "cassettes")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines(
        [
            "stasis: cannot write the cassette */a-file/cassettes: *",
            "stasis: this session's recordings are kept in *cassette.db; "
            "to write them: python -m stasis export */a-file/cassettes -d *cassette.db",
        ]
    )
    found = re.search(r"kept in (\S+); ", result.stdout.str())
    assert found is not None
    kept = Path(found.group(1))
    try:
        assert kept.stat().st_size > 0
    finally:
        shutil.rmtree(kept.parent)


def test_a_cassette_that_cannot_be_read_is_a_usage_error(pytester: pytest.Pytester) -> None:
    cassette = pytester.path / "bad.jsonl"
    cassette.write_text("this is not JSON\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = replay(pytester, cassette)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*stasis: cannot read the cassette */bad.jsonl (python -m stasis import: *)"]
    )


def test_replay_of_a_recording_that_does_not_exist_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = replay(pytester, pytester.path / "tests" / "cassettes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*stasis: replay mode, but *cassettes does not exist*"])


# --- Replay misses ----------------------------------------------------------------


UNRECORDED = """
from openai import OpenAI


def test_an_unrecorded_question():
    OpenAI().chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "A question nobody recorded"}],
    )
"""


def test_an_unrecorded_call_fails_at_once_saying_so(pytester: pytest.Pytester) -> None:
    """Needs the replay miss's ``x-should-retry: false`` (else the SDK tries three times)."""
    db = pytester.path / "empty.db"
    db.touch()
    pytester.makepyfile(test_unrecorded=UNRECORDED)
    result = replay(pytester, db)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            # The SDK's error, with the daemon's message; then the report's own section.
            "E * Error code: 504 - *replay mode*",
            "*- stasis: replay misses -*",
            "This test made a call that the recording does not have*",
            "  - *replay mode*[0-9a-f]*",
        ]
    )
    # One request, not the SDK's three: the daemon counted one miss.
    result.stdout.fnmatch_lines([summary(0, 1, 1)])


def test_a_swallowed_replay_miss_is_still_reported(pytester: pytest.Pytester) -> None:
    """The code under test hides the SDK's error; the daemon's count still tells."""
    db = pytester.path / "empty.db"
    db.touch()
    pytester.makepyfile(
        """
        from openai import OpenAI

        def answer(question):
            try:
                client = OpenAI(max_retries=0)
                client.embeddings.create(model="text-embedding-3-small", input=question)
            except Exception:
                return None  # a fallback that hides why

        def test_answers():
            assert answer("unrecorded") is not None
        """
    )
    result = replay(pytester, db)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- stasis: replay misses -*",
            "This test made a call that the recording does not have*",
            "The daemon logged:",
            "  *POST /v1/embeddings 504 MISS*",
        ]
    )


# --- The marker -------------------------------------------------------------------


def test_the_marker_points_the_sdks_at_the_directive_prefix_for_one_test(
    pytester: pytest.Pytester,
) -> None:
    db = pytester.path / "empty.db"
    db.touch()
    pytester.makepyfile(
        """
        import os
        import pytest

        pytestmark = pytest.mark.stasis(namespace="suite a")

        @pytest.mark.stasis(mode="record", ttl=60)
        def test_marked(stasis_proxy):
            prefix = "/_stasis/with/mode=cache;namespace=suite%20a;ttl=60"
            assert stasis_proxy.mode == "cache"
            assert stasis_proxy.namespace == "suite a"
            assert os.environ["OPENAI_BASE_URL"] == stasis_proxy.url + prefix + "/v1"
            assert os.environ["ANTHROPIC_BASE_URL"] == stasis_proxy.url + prefix
            assert stasis_proxy.base_url("gemini") == stasis_proxy.url + prefix
            assert os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] == stasis_proxy.url + prefix

        @pytest.mark.stasis(namespace=None)
        def test_module_marker_applies(stasis_proxy, stasis_proxy_session):
            assert stasis_proxy.mode == "replay"
            assert stasis_proxy_session.namespace is None
            assert os.environ["OPENAI_BASE_URL"] == (
                stasis_proxy_session.url + "/_stasis/with/namespace=suite%20a/v1"
            )

        @pytest.mark.stasis(namespce="x")
        def test_unknown_argument_is_an_error():
            pass
        """
    )
    pytester.makepyfile(
        test_z_unmarked="""
        import os

        def test_after(stasis_proxy, stasis_proxy_session):
            # Each test's variables were put back: the session's again.
            assert os.environ["OPENAI_BASE_URL"] == stasis_proxy_session.url + "/v1"
            assert stasis_proxy == stasis_proxy_session
        """
    )
    result = replay(pytester, db)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.stasis: unknown argument namespce*"])


def test_the_marker_namespace_partitions_the_recording(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    """Needs the daemon's directive prefix (``/_stasis/with/namespace=.../v1``)."""
    monkeypatch.setenv("OPENAI_API_KEY", DEV_KEY)
    suite = """
        import os
        import pytest
        from openai import OpenAI

        def ask():
            return OpenAI().chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            ).choices[0].message.content

        @pytest.mark.stasis(namespace=os.environ["NAMESPACE"])
        def test_ask():
            assert ask().startswith("echo #")
        """
    pytester.makepyfile(test_ns=textwrap.dedent(suite))
    db = pytester.path / "recorded.db"
    monkeypatch.setenv("NAMESPACE", "suite-a")
    record(pytester, monkeypatch, upstream, db).assert_outcomes(passed=1)
    assert len(upstream.calls("/v1/chat/completions")) == 1
    run(pytester, "--stasis-mode=replay", f"--stasis-db={db}").assert_outcomes(passed=1)
    monkeypatch.setenv("NAMESPACE", "suite-b")
    missed = run(pytester, "--stasis-mode=replay", f"--stasis-db={db}")
    missed.assert_outcomes(failed=1)
    missed.stdout.fnmatch_lines(["*- stasis: replay misses -*"])
    assert len(upstream.calls()) == 1


# --- pytest-xdist -------------------------------------------------------------------


def test_xdist_workers_share_one_daemon(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    pytest.importorskip("xdist")
    seen = pytester.mkdir("seen")
    monkeypatch.setenv("SEEN", str(seen))
    test = """
        import os
        from pathlib import Path
        from openai import OpenAI

        def test_{name}(stasis_proxy):
            OpenAI().chat.completions.create(
                model="gpt-4o-mini", messages=[{{"role": "user", "content": "shared"}}]
            )
            worker = os.environ["PYTEST_XDIST_WORKER"]
            Path(os.environ["SEEN"], worker).write_text(stasis_proxy.url)
        """
    pytester.makepyfile(
        test_one=textwrap.dedent(test.format(name="one")),
        test_two=textwrap.dedent(test.format(name="two")),
    )
    with monkeypatch.context() as m:
        m.setenv("OPENAI_API_KEY", DEV_KEY)
        result = run(
            pytester,
            "-n",
            "2",
            "--stasis-mode=cache",
            f"--stasis-upstream={upstream.url}",
            f"--stasis-db={pytester.path / 'shared.db'}",
        )
    result.assert_outcomes(passed=2)
    urls = {path.name: path.read_text() for path in seen.iterdir()}
    assert sorted(urls) == ["gw0", "gw1"]
    assert len(set(urls.values())) == 1
    # One cache: the second identical call was a hit (or waited on the first).
    assert len(upstream.calls()) == 1
    result.stdout.fnmatch_lines(["stasis: * hits, * misses (0 replay misses), *"])

    for path in seen.iterdir():
        path.unlink()
    replayed = replay(pytester, pytester.path / "shared.db", "-n", "2", key=DEV_KEY)
    replayed.assert_outcomes(passed=2)
    replayed.stdout.fnmatch_lines([summary(2, 0, 0)])


def test_without_xdist_the_single_process_starts_the_daemon(
    pytester: pytest.Pytester,
) -> None:
    db = pytester.path / "empty.db"
    db.touch()
    pytester.makepyfile("def test_proxy(stasis_proxy): assert stasis_proxy.stats()['hits'] == 0")
    replay(pytester, db, "-p", "no:xdist").assert_outcomes(passed=1)


# --- The environment ------------------------------------------------------------------


def test_the_session_sets_and_restores_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-mine")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://gateway.example/v1")
    report = pytester.path / "after.json"
    monkeypatch.setenv("AFTER", str(report))
    db = pytester.path / "empty.db"
    db.touch()
    pytester.makeconftest(
        """
        import json
        import os

        NAMES = ["OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"]

        def pytest_unconfigure(config):
            with open(os.environ["AFTER"], "w") as f:
                json.dump({name: os.environ.get(name) for name in NAMES}, f)
        """
    )
    pytester.makepyfile(
        """
        import os

        def test_during(stasis_proxy):
            with open(os.environ["AFTER"] + ".url", "w") as f:
                f.write(stasis_proxy.url)
            assert stasis_proxy.mode == "replay"
            assert os.environ["OPENAI_BASE_URL"] == stasis_proxy.url + "/v1"
            assert os.environ["ANTHROPIC_BASE_URL"] == stasis_proxy.url
            assert os.environ["GOOGLE_GEMINI_BASE_URL"] == stasis_proxy.url
            # Stand-ins where no key is set; a key that is set is kept.
            assert os.environ["OPENAI_API_KEY"] == "sk-stasis-replay"
            assert os.environ["ANTHROPIC_API_KEY"] == "sk-ant-mine"
            assert "AZURE_OPENAI_ENDPOINT" not in os.environ
        """
    )
    replay(pytester, db).assert_outcomes(passed=1)
    # The daemon is gone with the session.
    url = Path(f"{report}.url").read_text()
    host, port = url.removeprefix("http://").split(":")
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port))):
        pass
    assert json.loads(report.read_text()) == {
        "OPENAI_BASE_URL": "http://gateway.example/v1",
        "ANTHROPIC_BASE_URL": None,
        "OPENAI_API_KEY": None,
        "ANTHROPIC_API_KEY": "sk-ant-mine",
    }


def test_a_base_url_already_set_stays_the_upstream(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    """A suite that talks to a gateway keeps talking to it, through the daemon."""
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", DEV_KEY)
    pytester.makepyfile(test_suite=SUITE)
    result = run(pytester, "--stasis-mode=cache", f"--stasis-db={pytester.path / 'c.db'}")
    result.assert_outcomes(passed=2)
    assert len(upstream.calls("/v1/chat/completions")) == SUITE_DISTINCT
    result.stdout.fnmatch_lines([summary(1, SUITE_DISTINCT, 0)])


# --- Settings and start-up errors -----------------------------------------------------------


def test_settings_come_from_the_ini_file_relative_to_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    pytester.makeini(
        f"""
        [pytest]
        stasis_mode = cache
        stasis_db = recordings/ini.db
        stasis_upstream = {upstream.url}
        """
    )
    (pytester.path / "recordings").mkdir()
    pytester.makepyfile(test_suite=SUITE)
    # The environment loses to the ini file.
    monkeypatch.setenv("STASIS_MODE", "replay")
    monkeypatch.setenv("STASIS_DB", str(pytester.path / "env.db"))
    monkeypatch.setenv("OPENAI_API_KEY", DEV_KEY)
    result = run(pytester)
    result.assert_outcomes(passed=2)
    assert (pytester.path / "recordings" / "ini.db").exists()
    assert not (pytester.path / "env.db").exists()
    assert len(upstream.calls()) == SUITE_DISTINCT


def test_a_bad_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester, "--stasis-mode=sideways")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*stasis: --stasis-mode: unknown mode 'sideways'; allowed: cache, fresh, bypass, replay*"]
    )


def test_a_daemon_that_cannot_start_is_a_usage_error_with_its_message(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester, "--stasis-mode=cache", "--stasis-upstream=not-a-url")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*stasis: the stasis daemon exited at start (status 2):*", "*--upstream*"]
    )


# --- The parts, in process -----------------------------------------------------------


def test_settings_precedence(tmp_path: Path) -> None:
    def given(value: str, origin: str) -> Setting:
        return Setting(value, origin, tmp_path / origin)

    settings = resolve(
        [given("", "option"), given("record", "ini"), given("replay", "env")],
        [given("", "option"), given("", "ini"), given("env.db", "env")],
        [None, given("openai=http://a, http://b", "ini"), given("http://c", "env")],
        default_db=tmp_path / "default.db",
    )
    assert settings is not None
    assert settings.mode == "cache"
    assert settings.db == str(tmp_path / "env" / "env.db")
    assert settings.upstreams == ("openai=http://a", "http://b")
    assert resolve([given("off", "option"), given("cache", "ini")], [], [], tmp_path) is None
    assert resolve([None], [], [], tmp_path) is None


def test_storage_kinds(tmp_path: Path) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "plain").write_bytes(b"")
    assert Storage.of(str(tmp_path / "existing")).kind is StorageKind.DIRECTORY
    assert Storage.of(str(tmp_path / "new-cassettes")).kind is StorageKind.DIRECTORY
    assert Storage.of(str(tmp_path / "c.jsonl")).kind is StorageKind.JSONL
    assert Storage.of(str(tmp_path / "c.db")).kind is StorageKind.SQLITE
    assert Storage.of(str(tmp_path / "plain")).kind is StorageKind.SQLITE
    assert Storage.of("postgresql://db/stasis").kind is StorageKind.URL


def test_directives() -> None:
    directives = Directives.merged(
        [
            Directives.of((), {"mode": "Record", "replay": "realtime"}),
            Directives.of((), {"mode": "replay", "namespace": "ü/ü;x=y", "ttl": 30}),
        ]
    )
    assert directives == Directives(mode="cache", namespace="ü/ü;x=y", ttl="30", replay="realtime")
    assert directives.prefix() == (
        "/_stasis/with/mode=cache;namespace=%C3%BC%2F%C3%BC%3Bx%3Dy;ttl=30;replay=realtime"
    )
    assert Directives().prefix() == ""
    for args, kwargs in [
        (("replay",), {}),
        ((), {"mode": "sideways"}),
        ((), {"ttl": "1.5"}),
        ((), {"namespace": ""}),
        ((), {"replay": "slow"}),
        ((), {"nmespace": "x"}),
    ]:
        with pytest.raises(MarkerError):
            Directives.of(args, kwargs)


def test_base_urls_and_variables() -> None:
    proxy = StasisProxy(url="http://127.0.0.1:5", session_mode="replay")
    assert proxy.base_url() == "http://127.0.0.1:5/v1"
    assert proxy.base_url("bedrock") == "http://127.0.0.1:5"
    with pytest.raises(ValueError, match="unknown provider 'mistral'"):
        proxy.base_url("mistral")
    changes = session_environ(proxy, {"AWS_PROFILE": "dev", "HTTPS_PROXY": "http://corp:3128"})
    assert changes["OPENAI_BASE_URL"] == "http://127.0.0.1:5/v1"
    assert changes["OPENAI_API_KEY"] == "sk-stasis-replay"
    assert changes["AWS_DEFAULT_REGION"] == "us-east-1"
    assert "AWS_ACCESS_KEY_ID" not in changes  # the profile's credentials sign
    assert changes["NO_PROXY"] == changes["no_proxy"] == "127.0.0.1"
    assert "OPENAI_API_KEY" not in session_environ(
        proxy.with_directives(Directives()), {"OPENAI_API_KEY": "k"}
    )


def test_inherited_routes() -> None:
    environ = {
        "OPENAI_BASE_URL": "https://gw.example/openai/v1/",
        "ANTHROPIC_BASE_URL": "https://gw.example/anthropic",
        "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
    }
    assert inherited_routes(environ, ("anthropic=http://fake",)) == [
        "openai=https://gw.example/openai",
        "azure=https://res.openai.azure.com",
    ]
    assert inherited_routes(environ, ("http://everything",)) == []


def test_environment_patch_restores_what_was_there() -> None:
    environ = {"KEPT": "1", "CHANGED": "old"}
    patch = EnvironmentPatch(environ)
    patch.apply({"CHANGED": "new", "ADDED": "x"})
    patch.apply({"CHANGED": "newer"})
    assert environ == {"KEPT": "1", "CHANGED": "newer", "ADDED": "x"}
    patch.restore()
    patch.restore()
    assert environ == {"KEPT": "1", "CHANGED": "old"}


class _Response:
    """An httpx-style response: what the openai and anthropic SDKs' errors carry."""

    def __init__(self, document: object) -> None:
        self.document = document

    def json(self) -> object:
        return self.document


class _SdkError(Exception):
    """The SDKs' status errors: ``.body`` (the JSON, or its ``error``) and ``.response``."""

    def __init__(self, body: object, response: object) -> None:
        super().__init__("Error code: 504")
        self.body = body
        self.response = response


MISS = {"type": "stasis_replay_miss", "message": "nearest: messages[0]", "key": "ab"}


@pytest.mark.parametrize(
    "error",
    [
        _SdkError(MISS, _Response({"error": MISS})),  # openai: body is the "error" object
        _SdkError({"error": MISS}, None),  # anthropic: body is the whole document
        _SdkError(None, _Response({"error": MISS})),  # a body that was not parsed
        Exception(f"Error code: 504 - {json.dumps({'error': MISS})}"),  # only the text
    ],
)
def test_replay_misses_are_found_in_the_sdk_error_and_its_causes(error: Exception) -> None:
    try:
        try:
            raise error
        except Exception as e:
            raise RuntimeError("the model call failed") from e
    except RuntimeError as wrapped:
        found = find_replay_misses(wrapped)
    assert [(miss.message, miss.key) for miss in found] == [("nearest: messages[0]", "ab")]


def test_botocore_errors_and_unrelated_errors() -> None:
    class ClientError(Exception):
        response = {"Error": {"Code": "stasis_replay_miss", "Message": "nearest: messages"}}

    assert [miss.message for miss in find_replay_misses(ClientError())] == ["nearest: messages"]
    assert find_replay_misses(ValueError("unrelated")) == []
    assert find_replay_misses(_SdkError({"error": {"type": "other"}}, None)) == []


def test_a_daemon_that_does_not_listen_in_time_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def recording_popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        process = popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(process)
        return process  # type: ignore[no-any-return]

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    with pytest.raises(DaemonStartError, match="did not listen within 0s"):
        start_daemon(tmp_path, str(tmp_path / "c.db"), "cache", [], dict(os.environ), deadline=0)
    (process,) = started
    assert process.poll() is not None


def test_the_report_section_says_how_many_calls_missed_and_which() -> None:
    text = report(
        [ReplayMiss("no answer", "ab"), ReplayMiss("no answer for key cd", "cd")],
        counted=3,
        log_lines=["POST /v1/embeddings 504 MISS 0.8ms"],
    )
    assert text.splitlines()[:5] == [
        "This test made 3 calls that the recording does not have; replay mode answers those "
        "with an error and never calls the provider.",
        "  - no answer (key ab)",
        "  - no answer for key cd",
        "The daemon logged:",
        "  POST /v1/embeddings 504 MISS 0.8ms",
    ]
