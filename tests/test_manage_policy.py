"""
``stasis show`` and ``stasis ls`` with the cache policy's facts: the fields an
entry's key leaves out (its ignore rules) and which of its key's answers it is
(its sample), in process over the in-memory store.
"""

from __future__ import annotations

import io
import json
from typing import Any

from attrs import evolve
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from stasis.commands import ls, show
from stasis.commands._command import Console
from stasis.model import Entry, StoredRequest
from tests.memory_store import MemoryStore
from tests.store_support import make_entry

BODY = {"model": "gpt-4o-mini", "user": "run-7", "metadata": {"user_id": "u-1"}}
RULES = ("metadata.user_id", "user")


def entry(sample: int = 0, ignored: tuple[str, ...] = RULES) -> Entry:
    request = StoredRequest(body=json.dumps(BODY).encode(), ignored=ignored)
    return make_entry(1, request=request, sample=sample)


def command(name: str, *arguments: str, entries: tuple[Entry, ...] = ()) -> str:
    """What ``stasis NAME ARGUMENTS`` prints over a store holding ``entries``."""
    clock = Clock()
    store = MemoryStore(clock)
    store.open()
    for each in entries:
        store.put(each)
    module: Any = {"show": show, "ls": ls}[name]
    options = module.SHOW.options() if name == "show" else module.LS.options()
    options.parseOptions(list(arguments))
    out = io.StringIO()
    run = ensureDeferred(module.run(store, options, Console(clock, stdout=out)))
    failures: list[Any] = []
    run.addErrback(failures.append)
    assert not failures, failures
    return out.getvalue()


def test_show_prints_the_fields_the_key_leaves_out_with_the_request() -> None:
    shown = command("show", entry().key, entries=(entry(),))
    request = shown.split("--- request ---\n")[1].split("--- answer ---\n")[0]
    assert request.startswith(
        "POST /v1/chat/completions\n(left out of its key: metadata.user_id, user)\n\n{\n"
    )
    assert '"user_id": "u-1"' in request  # the body is kept whole
    assert "sample" not in shown.split("--- request ---")[0]


def test_show_prints_no_rules_line_for_a_request_without_rules() -> None:
    plain = entry(ignored=())
    shown = command("show", plain.key, entries=(plain,))
    assert "left out" not in shown
    assert "--- request ---\nPOST /v1/chat/completions\n\n{\n" in shown


def test_show_says_which_sample_an_entry_is() -> None:
    sampled = entry(sample=2)
    summary = command("show", sampled.key, entries=(sampled,)).split("--- request ---")[0]
    assert "sample      2 (0 is its key's first answer)\n" in summary


def test_show_json_has_the_rules_and_the_sample() -> None:
    shown = json.loads(command("show", "--json", entry().key, entries=(entry(sample=3),)))
    assert shown["request"]["ignored"] == list(RULES)
    assert shown["sample"] == 3
    assert list(shown)[:3] == ["key", "sharedKey", "sample"]
    plain = json.loads(command("show", "--json", entry().key, entries=(entry(ignored=()),)))
    assert plain["request"]["ignored"] == []
    assert "sample" not in plain


def test_ls_shows_a_sample_only_when_there_is_one() -> None:
    first, second = entry(), evolve(entry(sample=1), key="b" * 64, created_at=1_700_000_001.0)
    listed = json.loads(command("ls", "--json", entries=(first, second)))
    assert [row.get("sample") for row in listed] == [1, None]
    header, *rows = command("ls", entries=(first, second)).splitlines()
    assert header.split()[:2] == ["KEY", "SAMPLE"]
    assert rows[0].split()[:2] == ["b" * 12, "1"]


def test_ls_has_no_sample_column_without_samples() -> None:
    header = command("ls", entries=(entry(),)).splitlines()[0]
    assert "SAMPLE" not in header
    (row,) = json.loads(command("ls", "--json", entries=(entry(),)))
    assert "sample" not in row


def test_the_sample_column_comes_and_goes_with_samples() -> None:
    def row(key: str, sample: str, namespace: str = "-") -> list[str]:
        return [key, sample, "2024-01-15 10:30", "openai", "m", "/p", namespace, "200", "1", "0"]

    columns, rows = ls._fitted_columns([row("a", ""), row("b", "2")])
    assert [c.header for c in columns][:3] == ["KEY", "SAMPLE", "STORED (UTC)"]
    assert rows[1][:2] == ["b", "2"]
    columns, rows = ls._fitted_columns([row("a", "", "ci"), row("b", "")])
    assert [c.header for c in columns][:2] == ["KEY", "STORED (UTC)"]
    assert rows[0][:2] == ["a", "2024-01-15 10:30"]
    namespace = next(c for c in columns if c.header == "NAMESPACE")
    assert namespace.drop == 1  # one entry has a namespace: not the first to go


HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\x7f"


def test_what_clients_and_models_sent_never_reaches_the_terminal_raw() -> None:
    body = json.dumps({"choices": [{"message": {"content": "hi " + HOSTILE}}]}).encode()
    hostile = make_entry(
        1,
        model="gpt-" + HOSTILE,
        body=body,
        request=StoredRequest(body=json.dumps({"model": "gpt-" + HOSTILE}).encode()),
    )
    for name, arguments in (("ls", ()), ("ls", ("--json",)), ("show", (hostile.key,))):
        printed = command(name, *arguments, entries=(hostile,))
        assert not any(
            0x7F <= ord(c) < 0xA0 or (ord(c) < 0x20 and c not in "\n\t") for c in printed
        )
        assert "pwned" in printed  # shown, as text
    shown = json.loads(command("show", "--json", hostile.key, entries=(hostile,)))
    assert shown["model"] == "gpt-" + HOSTILE  # the JSON still says exactly what was stored
