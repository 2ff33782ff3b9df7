"""
Settings: a Config checks itself when made, and the daemon's options become one.

The options are parsed in-process, as dicts; the same mistakes as real
processes are in tests/test_cli.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from stasis import Config, Mode
from stasis.config import ConfigError, ConfigTypeError, parse_upstream
from stasis.keys import CredentialScope
from stasis.tap import Options


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"mode": "sometimes"}, ConfigError, "mode must be one of cache, fresh, bypass, replay"),
        ({"mode": 3}, ConfigTypeError, "mode must be a Mode or a mode name, not 3"),
        ({"max_body_bytes": -5}, ConfigError, "max_body_bytes must be greater than 0, not -5"),
        ({"max_body_bytes": 0}, ConfigError, "max_body_bytes must be greater than 0, not 0"),
        ({"max_body_bytes": 1.9}, ConfigTypeError, "max_body_bytes must be a whole number"),
        ({"max_body_bytes": True}, ConfigTypeError, "max_body_bytes must be a whole number"),
        ({"memory_cache_bytes": -1}, ConfigError, "memory_cache_bytes must be at least 0"),
        ({"upstream_timeout": 0}, ConfigError, "upstream_timeout must be greater than 0"),
        ({"upstream_timeout": float("nan")}, ConfigError, "upstream_timeout must be greater"),
        ({"upstream_timeout": "60"}, ConfigTypeError, "upstream_timeout must be a number"),
        ({"header_timeout": 0}, ConfigError, "header_timeout must be greater than 0, not 0"),
        ({"header_timeout": float("inf")}, ConfigError, "header_timeout must be greater"),
        ({"body_timeout": -1.5}, ConfigError, "body_timeout must be greater than 0, not -1.5"),
        ({"body_timeout": "60"}, ConfigTypeError, "body_timeout must be a number of seconds"),
        ({"log_level": "loud"}, ConfigError, "log_level must be one of fatal, error, warn"),
        ({"db": ""}, ConfigError, "db must name a file"),
        ({"upstream": "ftp://example.com"}, ConfigError, "upstream 'ftp://example.com' must be"),
        ({"upstream": "http://x/?a=1"}, ConfigError, "must not carry a query"),
        ({"upstreams": {"nope": "http://x"}}, ConfigError, "unknown provider 'nope'"),
        ({"upstreams": {"openai": "x"}}, ConfigError, "upstreams 'x' must be an http://"),
        ({"listen": "bogus:thing"}, ConfigError, "Unknown endpoint type: 'bogus'"),
        ({"listen": "tcp:abc"}, ConfigError, "listen 'tcp:abc' is not a Twisted server endpoint"),
        ({"listen": "tcp:70000"}, ConfigError, "port 70000 is not between 0 and 65535"),
        ({"listen": "tcp:0:colour=blue"}, ConfigError, "colour"),
        (
            {"listen": "unix:/nonexistent/dir/s.sock"},
            ConfigError,
            "the socket's folder /nonexistent/dir does not exist",
        ),
        ({"listen": 4000}, ConfigTypeError, "listen must be an endpoint description"),
        (
            {"credential_scope": "mine"},
            ConfigError,
            "credential_scope must be one of caller, shared",
        ),
        ({"ready_file": "/nonexistent/dir/url"}, ConfigError, "no such folder to write it in"),
    ],
)
def test_each_bad_value_is_an_error_naming_its_field(
    fields: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as e:
        Config(**fields)
    assert message in str(e.value)
    assert isinstance(e.value, ConfigError)
    assert e.value.field == next(iter(fields))
    # Callers that know nothing of stasis catch the built-in types.
    assert isinstance(e.value, ValueError)
    if error is ConfigTypeError:
        assert isinstance(e.value, TypeError)


def test_good_values_are_converted() -> None:
    config = Config(
        mode="REPLAY",
        log_level="Warn",
        upstream=" https://api.openai.com/ ",
        upstreams={"Anthropic": "http://127.0.0.1:9000/"},
        upstream_timeout=5,
        memory_cache_bytes=0,
    )
    assert config.mode is Mode.REPLAY
    assert config.log_level == "warn"
    assert config.upstream == "https://api.openai.com"
    assert config.upstreams == {"anthropic": "http://127.0.0.1:9000"}
    assert config.routes.describe() == "anthropic=http://127.0.0.1:9000, https://api.openai.com"


@pytest.mark.parametrize(
    "listen",
    ["tcp:0", "tcp6:4000:interface=\\:\\:1", "unix:stasis.sock", "unix:address=/tmp/s.sock"],
)
def test_endpoint_descriptions_twisted_accepts_are_accepted_without_listening(
    listen: str,
) -> None:
    assert Config(listen=listen).listen == listen


def test_upstream_values() -> None:
    assert parse_upstream("https://x.example/v1/") == (None, "https://x.example/v1")
    assert parse_upstream(" Gemini = http://127.0.0.1:1 ") == ("gemini", "http://127.0.0.1:1")
    # A URL whose query has an "=" is a URL, not NAME=URL.
    with pytest.raises(ConfigError, match="must not carry a query"):
        parse_upstream("http://x/?a=b")


def _parsed(args: list[str], environ: dict[str, str] | None = None) -> Options:
    options = Options(environ=environ or {})
    options.parseOptions(args)
    return options


def test_options_become_a_config() -> None:
    options = _parsed(
        [
            "-p", "4100", "-u", "http://127.0.0.1:9000/", "-u", "openai=http://o:1",
            "-d", "x.db", "--mode", "fresh", "-l", "debug", "--upstream-timeout", "2.5",
            "--max-body", "1000", "--memory-cache", "0", "--credential-scope", "shared",
            "--ready-file", "url.txt", "--ttl", "12h", "--stale-if-error", "1d", "--max-size",
            "500MB", "--max-entries", "1000", "--ignore", "user", "--ignore", "messages[*].id",
            "--samples", "3", "--workers", "4", "--header-timeout", "2", "--body-timeout", "7.5",
        ]
    )  # fmt: skip
    assert options["port"] == 4100
    assert options["max-body"] == 1000
    assert options.config == Config(
        listen="tcp:4100:interface=127.0.0.1:backlog=511",
        upstream="http://127.0.0.1:9000",
        upstreams={"openai": "http://o:1"},
        db="x.db",
        mode=Mode.FRESH,
        log_level="debug",
        upstream_timeout=2.5,
        header_timeout=2.0,
        body_timeout=7.5,
        max_body_bytes=1000,
        memory_cache_bytes=0,
        credential_scope=CredentialScope.SHARED,
        ready_file="url.txt",
        ttl=12 * 3600,
        stale_if_error=86400,
        max_size_bytes=500_000_000,
        max_entries=1000,
        ignore=("user", "messages[*].id"),
        samples=3,
        workers=4,
    )


def test_defaults() -> None:
    assert _parsed([]).config == Config()
    assert _parsed(["--listen", "unix:s.sock", "-p", "1"]).config.listen == "unix:s.sock"


def test_the_environment_is_read_when_options_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"STASIS_DB": "env.db", "STASIS_UPSTREAM": "http://a:1,anthropic=http://b:2"}
    config = _parsed([], environ).config
    assert (config.db, config.upstream, dict(config.upstreams)) == (
        "env.db",
        "http://a:1",
        {"anthropic": "http://b:2"},
    )
    # The command line wins; any --upstream replaces $STASIS_UPSTREAM entirely.
    config = _parsed(["-d", "cli.db", "-u", "gemini=http://g:3"], environ).config
    assert (config.db, config.upstream, dict(config.upstreams)) == (
        "cli.db",
        None,
        {"gemini": "http://g:3"},
    )
    # Without environ, os.environ as it is now, not as it was at import.
    monkeypatch.setenv("STASIS_DB", "late.db")
    monkeypatch.delenv("STASIS_UPSTREAM", raising=False)
    late = Options()
    late.parseOptions([])
    assert late.config.db == "late.db"
    assert _parsed([], {"STASIS_DB": ""}).config.db == "./stasis-cache.db"


@pytest.mark.parametrize(
    ("args", "environ", "complaint"),
    [
        (["--max-body", "1.9"], {}, "--max-body: '1.9' is not a whole number of bytes"),
        (["--max-body", "0"], {}, "--max-body must be greater than 0, not 0"),
        (["--memory-cache", "-1"], {}, "--memory-cache: '-1' is not a size"),
        (
            ["--max-size", "lots"],
            {},
            "--max-size: 'lots' is not a size: a number of bytes, or 500MB",
        ),
        (["--max-entries", "1e3"], {}, "--max-entries must be a whole number, not '1e3'"),
        (["--max-entries", "0"], {}, "--max-entries must be greater than 0, not 0"),
        (["--ttl", "soon"], {}, "--ttl: 'soon' is not a duration"),
        (["--ttl", "0s"], {}, "--ttl: '0s': a duration must be greater than 0"),
        (
            ["--stale-if-error", "-5"],
            {},
            "--stale-if-error: '-5': a duration must be greater than 0",
        ),
        (["--ignore", "messages[x]"], {}, "--ignore 'messages[x]': expected [N], [*]"),
        (["--samples", "0"], {}, "--samples must be from 1 to 100, not 0"),
        (["--samples", "101"], {}, "--samples must be from 1 to 100, not 101"),
        (["--upstream-timeout", "soon"], {}, "--upstream-timeout must be a number of seconds"),
        (["--upstream-timeout", "0"], {}, "--upstream-timeout must be greater than 0"),
        (["--header-timeout", "soon"], {}, "--header-timeout must be a number of seconds"),
        (["--header-timeout", "0"], {}, "--header-timeout must be greater than 0, not 0.0"),
        (["--body-timeout", "-1"], {}, "--body-timeout must be greater than 0, not -1.0"),
        (["--body-timeout", "nan"], {}, "--body-timeout must be greater than 0, not nan"),
        (["--mode", "sometimes"], {}, "--mode must be one of cache, fresh, bypass, replay"),
        (["--listen", "bogus:thing"], {}, "--listen 'bogus:thing' is not a Twisted server"),
        (["-u", "nope=http://x"], {}, "--upstream 'nope=http://x': unknown provider 'nope'"),
        (["-u", "http://a", "-u", "http://b"], {}, "--upstream URL (for everything) may be"),
        ([], {"STASIS_UPSTREAM": "ftp://x"}, "--upstream 'ftp://x' must be an http://"),
        (["-p", "-1"], {}, "--port must be between 0 and 65535"),
        (["--workers", "0"], {}, "--workers must be greater than 0, not 0"),
        (["--workers", "2.5"], {}, "--workers must be a whole number, not '2.5'"),
        (["--workers", "257"], {}, "--workers must be at most 256, not 257"),
    ],
)
def test_a_bad_option_is_one_line_naming_the_option(
    capsys: pytest.CaptureFixture[str], args: list[str], environ: dict[str, str], complaint: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parsed(args, environ)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"stasis: error: {complaint}")
    assert err.endswith(" (see --help)\n")
    assert err.count("\n") == 1


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    with pytest.raises(SystemExit) as exited:
        _parsed([flag])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "-h, --help" in out
    assert "--max-body=" in out


def test_options_are_not_a_config_until_parsed() -> None:
    with pytest.raises(RuntimeError, match="not been parsed"):
        Options().config  # noqa: B018
