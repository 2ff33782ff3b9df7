"""
Keying one large body, in a process of its own: how long it takes, how much memory.

``python -m bench.keying build SHAPE BYTES FILE`` writes a body of about BYTES
in the shape SHAPE (see :data:`SHAPES`) to FILE. ``python -m bench.keying
measure FILE [--keys PATH]`` reads it (one allocation: the process has no
freed heap from building it to hide growth in), keys it as the daemon does
(``parse_body``, then ``scoped_keys``) and prints one JSON line: the seconds
keying took, the growth of the process's peak resident set (the kernel's
high-water mark, reset just before) over its resident set just before, and
how the body was keyed (``json`` or ``raw``). ``--keys`` loads another
version of ``stasis/keys.py`` from a file (section i gives it commit
c957452's, to measure the code this change started from); by default the
checkout's own is measured.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["SHAPES", "build", "main"]

SECRET = b"0123456789abcdef0123456789abcdef"


def _repeat(piece: bytes, size: int, opening: bytes = b"[", closing: bytes = b"]") -> bytes:
    """``opening`` + copies of ``piece`` joined by commas + ``closing``, about ``size`` bytes."""
    count = max(1, (size - len(opening) - len(closing)) // (len(piece) + 1))
    return opening + b",".join([piece] * count) + closing


def _joined(pieces: Callable[[int], bytes], size: int) -> bytes:
    out = bytearray(b"[")
    i = 0
    while len(out) < size - 64:
        if i:
            out += b","
        out += pieces(i)
        i += 1
    out += b"]"
    return bytes(out)


def _floats(size: int) -> bytes:
    rnd = random.Random(1)
    return _joined(lambda i: repr(rnd.uniform(-1, 1)).encode(), size)


def _short_strings(size: int) -> bytes:
    words = [b'"%s"' % w.encode() for w in ("ab", "cd", "the", "x", "yes", "no")]
    return _joined(lambda i: words[i % len(words)], size)


def _string(text: str, size: int, ascii_only: bool = False) -> bytes:
    unit = len(json.dumps(text, ensure_ascii=ascii_only).encode()) - 2
    return json.dumps(text * max(1, size // unit), ensure_ascii=ascii_only).encode()


def _many_keys(size: int) -> bytes:
    out = bytearray(b"{")
    i = 0
    while len(out) < size - 64:
        if i:
            out += b","
        out += b'"key-%08d":%d' % (i * 7919 % 100_000_000, i % 10)
        i += 1
    out += b"}"
    return bytes(out)


def _deep(size: int) -> bytes:
    # Objects 127 deep around a text, in an array: 128 deep, within the budget.
    element = b'{"k":' * 127 + b'"' + b"text " * 800 + b'"' + b"}" * 127
    return _repeat(element, size)


def _conversation(size: int) -> bytes:
    rnd = random.Random(2)
    words = ["the", "cache", "keeps", "every", "answer", "it", "was", "given", "café", "東京", "😀"]
    messages: list[dict[str, Any]] = []
    total = 0
    while total < size - 200:
        text = " ".join(rnd.choice(words) for _ in range(rnd.randrange(5, 120)))
        message = {"role": ("user", "assistant")[len(messages) % 2], "content": text}
        messages.append(message)
        total += len(json.dumps(message, ensure_ascii=False).encode()) + 2
    body = {"model": "claude-3-5-sonnet", "max_tokens": 1024, "messages": messages}
    return json.dumps(body, ensure_ascii=False).encode()


def _tokens(size: int) -> bytes:
    rnd = random.Random(3)
    inputs: list[bytes] = []
    total = 0
    while total < size - 200:
        row = b",".join(b"%d" % rnd.randrange(100_000) for _ in range(8000))
        inputs.append(b"[" + row + b"]")
        total += len(row) + 3
    return b'{"input":[' + b",".join(inputs) + b'],"model":"text-embedding-3-small"}'


#: Body shapes by name: a builder of about ``size`` bytes each.
SHAPES: dict[str, Callable[[int], bytes]] = {
    "ones": lambda size: _repeat(b"1", size),
    "distinct ints": lambda size: _joined(lambda i: b"%d" % i, size),
    "floats": _floats,
    "empty arrays": lambda size: _repeat(b"[]", size),
    "empty objects": lambda size: _repeat(b"{}", size),
    "short strings": _short_strings,
    "ASCII string": lambda size: _string("a", size),
    "CJK string": lambda size: _string("東", size),
    "emoji string": lambda size: _string("😀", size),
    "escaped emoji": lambda size: _string("😀", size, ascii_only=True),
    "many keys": _many_keys,
    "nested 128": _deep,
    "not JSON": lambda size: random.Random(4).randbytes(size),
    "conversation": _conversation,
    "token ids": _tokens,
}


def build(shape: str, size: int) -> bytes:
    return SHAPES[shape](size)


def _status(field: str) -> int:
    """A field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_old_keys", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _measure(path: Path, keys_file: Path | None) -> dict[str, Any]:
    if keys_file is not None:
        keys = _load(keys_file)
    else:
        import stasis.keys as keys
    body = path.read_bytes()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS
    before = _status("VmRSS")
    started = time.perf_counter()
    parsed = keys.parse_body(body)
    request = keys.KeyRequest(
        method="POST",
        path="/v1/embeddings",
        headers={"authorization": "Bearer sk-b"},
        body=body,
        parsed=parsed,
    )
    keys.scoped_keys(request, SECRET)
    seconds = time.perf_counter() - started
    peak = _status("VmHWM")
    parts = getattr(parsed, "parts", None)  # c957452's normalized is one bytes object
    form = (parts[0] if parts else parsed.normalized).split(b":")[0].decode("latin-1")
    return {"bytes": len(body), "seconds": seconds, "growth": peak - before, "form": form}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keying")
    commands = parser.add_subparsers(dest="command", required=True)
    building = commands.add_parser("build", help="write a body of a shape to a file")
    building.add_argument("shape", choices=sorted(SHAPES))
    building.add_argument("size", type=int)
    building.add_argument("file", type=Path)
    measuring = commands.add_parser("measure", help="key a body read from a file")
    measuring.add_argument("file", type=Path)
    measuring.add_argument("--keys", type=Path, help="a stasis/keys.py to measure instead")
    options = parser.parse_args(argv)
    if options.command == "build":
        options.file.write_bytes(build(options.shape, options.size))
    else:
        print(json.dumps(_measure(options.file, options.keys)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
