"""
Keying a large body takes memory about the body's size, whatever its shape (issue 15).

A 60 MB array of ``1`` once took 6.1 GB and a minute to key: the whole
document was parsed into Python objects, a hundred bytes and more per value,
then spelled into a list of small strings. Each body here is keyed in a
child process of its own, as the daemon keys it (``parse_body``, then
``scoped_keys``), and the child's peak resident set is measured: the kernel's
high-water mark, reset once the body is read (in one piece, from a file), so
that only keying counts.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MIB = 1024 * 1024
SIZE = 12 * MIB

#: Keys the body in ``sys.argv[1]``; prints its form, seconds and peak growth.
CHILD = r"""
import gc, json, sys, time
from pathlib import Path
from stasis.keys import KeyRequest, parse_body, scoped_keys

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

body = Path(sys.argv[1]).read_bytes()
gc.collect()
Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to VmRSS
before = status("VmRSS")
started = time.monotonic()
parsed = parse_body(body)
scoped_keys(
    KeyRequest(method="POST", path="/v1/x", headers={"x-api-key": "k"}, body=body, parsed=parsed),
    b"0" * 32,
)
seconds = time.monotonic() - started
growth = status("VmHWM") - before
parts = getattr(parsed, "parts", None)  # before the stream, normalized was one bytes
form = (parts[0] if parts else parsed.normalized).split(b":")[0].decode()
print(json.dumps({"growth": growth, "seconds": seconds, "form": form}))
"""


def _repeated(piece: bytes, size: int) -> bytes:
    return b"[" + b",".join([piece] * (size // (len(piece) + 1))) + b"]"


def _floats(size: int) -> bytes:
    rnd = random.Random(5)
    return json.dumps([rnd.uniform(-1, 1) for _ in range(size // 21)]).encode()


def _conversation(size: int) -> bytes:
    rnd = random.Random(6)
    words = ["the", "answer", "cache", "café", "東京", "😀", '"quoted"', "back\\slash"]
    messages: list[dict[str, Any]] = []
    while len(messages) * 420 < size:
        text = " ".join(rnd.choice(words) for _ in range(60))
        messages.append({"role": "user", "content": [{"type": "text", "text": text}]})
    return json.dumps({"model": "m", "messages": messages}, ensure_ascii=False).encode()


def _nested(size: int) -> bytes:
    element = b'{"k":' * 127 + json.dumps("text " * 700).encode() + b"}" * 127
    return _repeated(element, size)


#: Shape: how it is built, and how it is keyed (``raw`` when over the stream's budget).
SHAPES = {
    "the issue's: an array of 1": (lambda size: _repeated(b"1", size), "raw"),
    "empty arrays": (lambda size: _repeated(b"[]", size), "raw"),
    "empty objects": (lambda size: _repeated(b"{}", size), "raw"),
    "short strings": (lambda size: _repeated(b'"ab"', size), "raw"),
    "floats": (_floats, "json"),
    "one ASCII string": (lambda size: json.dumps("a" * size).encode(), "json"),
    "one emoji string": (
        lambda size: json.dumps("😀" * (size // 4), ensure_ascii=False).encode(),
        "json",
    ),
    "one escaped CJK string": (lambda size: json.dumps("東" * (size // 6)).encode(), "json"),
    "many keys": (
        lambda size: json.dumps({f"k{i:07d}": i for i in range(size // 16)}).encode(),
        "raw",
    ),
    "objects 128 deep": (_nested, "json"),
    "a conversation": (_conversation, "json"),
    "not JSON": (lambda size: random.Random(7).randbytes(size), "raw"),
}


def keyed(tmp_path: Path, body: bytes) -> dict[str, Any]:
    path = tmp_path / "body"
    path.write_bytes(body)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the checkout: stasis is what PYTHONPATH says
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("shape", SHAPES)
def test_keying_a_large_body_takes_at_most_four_times_its_size(tmp_path: Path, shape: str) -> None:
    build, form = SHAPES[shape]
    body = build(SIZE)
    result = keyed(tmp_path, body)
    # The canonical text (up to three times the body, for text escaped as
    # \uXXXX), at most a window's worth of parsing beside it.
    assert result["growth"] <= 4 * len(body) + 16 * MIB, (result, len(body))
    assert result["seconds"] < 60, result
    # Only dense masses of tiny values are over the stream's budget.
    assert result["form"] == form, result
