"""
``stasis show KEY``: one entry, the request it answers and the answer, for a
person (bodies pretty-printed when they are JSON, a stream as the text it
spells) or, with ``--json``, for a script.

The request is the credential-free one stasis keeps beside the answer (only
the headers that took part in the key, and the ignore rules its key was
derived with); an entry stored by a stasis that did not keep requests says
so instead.
"""

from __future__ import annotations

import json

from twisted.python import usage

from stasis.commands._command import Command, CommandError, Console, visible_json
from stasis.commands._human import count_of, size
from stasis.commands._keys import resolve_key
from stasis.commands._options import CommandOptions, check_key
from stasis.entry_json import entry_json, headers_json, is_json, parse_json
from stasis.model import Entry
from stasis.store import Store
from stasis.streams.recorded import (
    RecordedEvent,
    is_eventstream,
    recorded_events,
    stream_text,
)
from stasis.times import iso8601

__all__ = ["SHOW"]

NO_REQUEST = "(not kept: this entry was stored by an older stasis)"


class ShowOptions(CommandOptions):
    synopsis = "[options] KEY"
    longdesc = (
        "Show one entry: the request it answers (method, path, query, the headers that took "
        "part in its key, the fields its key leaves out, the body) and the stored answer "
        "(status, headers, body). JSON bodies are pretty-printed; a streamed answer is shown "
        "as the text it spells. KEY is a whole key or its first digits (at least 6), as ls "
        "shows them."
    )
    optFlags = [
        ["events", None, "Print a streamed answer's events as they were sent, not its text."],
        ["json", None, "Print one JSON object: the entry, its request and its answer."],
    ]
    examples = (
        "stasis show 3f2a9c81d0b4",
        "stasis show 3f2a9c --events",
        "stasis show 3f2a9c --json | jq .response.body",
    )
    key = ""

    def parseArgs(self, *keys: str) -> None:
        if len(keys) != 1:
            raise usage.UsageError("give one KEY (or the first digits of one)")
        self.key = check_key(keys[0])


def _body_lines(body: bytes) -> list[str]:
    if not body:
        return ["(empty body)"]
    document = parse_json(body)
    if is_json(document):
        return json.dumps(document, indent=2, ensure_ascii=False).splitlines()
    try:
        return body.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return [f"({size(len(body))} of binary data)"]


def _summary(entry: Entry, now: float) -> list[str]:
    usage_ = entry.usage
    expires = "never"
    if entry.expires_at is not None:
        expires = iso8601(entry.expires_at) or ""
        if not entry.is_fresh(now):
            expires += " (expired)"
    hits = f"{entry.hit_count:,}"
    if entry.last_hit_at is not None:
        hits += f" (the last at {iso8601(entry.last_hit_at)})"
    rows = [("key", entry.key)]
    if entry.shared_key and entry.shared_key != entry.key:
        rows.append(("shared key", entry.shared_key))
    if entry.sample:
        rows.append(("sample", f"{entry.sample} (0 is its key's first answer)"))
    rows += [
        ("stored", iso8601(entry.created_at) or ""),
        ("expires", expires),
        ("provider", entry.provider or "-"),
        ("model", entry.model or "-"),
        ("namespace", entry.namespace or "(default)"),
        ("tokens", f"{usage_.total:,} ({usage_.input:,} in, {usage_.output:,} out)"),
        ("hits", hits),
    ]
    return [f"{name:<11} {value}" for name, value in rows]


def _request_lines(entry: Entry) -> list[str]:
    request = entry.request
    target = entry.path + (f"?{request.query}" if request and request.query else "")
    lines = ["--- request ---", f"{entry.method} {target}"]
    if request is None:
        return [*lines, NO_REQUEST]
    lines += [f"{name}: {value}" for name, value in request.headers]
    if request.ignored:
        lines.append(f"(left out of its key: {', '.join(request.ignored)})")
    return [*lines, "", *_body_lines(request.body)]


def _event_text(event: RecordedEvent, eventstream: bool) -> str:
    if not eventstream:
        return event.raw.decode("utf-8", "replace")
    if event.event is None:
        return f": {len(event.raw)} bytes that are not an AWS event stream message\n\n"
    data = event.event.data
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"event: {event.event.name or ''}\ndata: {text}\n\n"


def _answer_lines(entry: Entry, events_wanted: bool) -> list[str]:
    lines = ["--- answer ---", f"HTTP {entry.status}"]
    lines += [f"{name}: {value}" for name, value in headers_json(entry.headers)]
    lines.append("")
    events = recorded_events(entry)
    if events is None:
        return lines + _body_lines(entry.body)
    eventstream = is_eventstream(entry)
    if events_wanted:
        return lines + "".join(_event_text(e, eventstream) for e in events).splitlines()
    text = stream_text(entry, events)
    if not text:
        note = f"(a stream of {count_of(len(events), 'event')} that spell no text stasis reads"
        return [*lines, note + "; --events shows them)"]
    note = f"(a stream of {count_of(len(events), 'event')}, shown as its text; --events for them)"
    return [*lines, note, *text.splitlines()]


async def run(store: Store, options: ShowOptions, console: Console) -> None:
    key = await resolve_key(store, options.key)
    entry = await store.get(key, request=True)
    if entry is None:  # removed since it was found
        raise CommandError(f"no entry with key {key}")
    if options["json"]:
        console.out(visible_json(json.dumps(entry_json(entry), indent=2, ensure_ascii=False)))
        return
    lines = [
        *_summary(entry, console.now()),
        "",
        *_request_lines(entry),
        "",
        *_answer_lines(entry, options["events"]),
    ]
    console.out("\n".join(lines))


SHOW = Command("show", "Show one entry: its request and its answer.", ShowOptions, run)
