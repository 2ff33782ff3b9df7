"""
A fake of the OpenAI chat completions API, so the examples run offline.

It answers ``POST /v1/chat/completions`` like the real API (the same JSON
shape, token usage included), deterministically: the same request always gets
the same answer, which is what a cache needs to be shown working. It takes as
long as a small hosted model does (300-800 ms a call, scaled by
``STASIS_EXAMPLES_DELAY``, the mean delay in seconds), and it counts the calls
it receives: that count is the point of the examples, since every call a real
provider answers is time and money.

It understands just enough to make the examples' answers plausible: a system
prompt that asks for the sentiment, the named entities or the categories of a
text (the content analyzer's prompts) gets JSON of that shape; one that names
the labels to choose from gets one of them; anything else gets a short reply
built from the prompt. No model, no network.

Run alone, it serves until Ctrl-C: ``python examples/fake_llm.py --port 8000``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["DEFAULT_DELAY", "FakeLLM", "answer"]

#: The mean seconds a call takes; each call takes 0.6x to 1.4x of it.
DEFAULT_DELAY = 0.55

_POSITIVE = {
    "love",
    "great",
    "excellent",
    "happy",
    "fast",
    "delighted",
    "amazing",
    "best",
    "good",
    "wonderful",
    "recommend",
    "thrilled",
    "record",
    "growth",
    "win",
    "won",
}
_NEGATIVE = {
    "hate",
    "terrible",
    "slow",
    "broken",
    "awful",
    "bad",
    "angry",
    "worst",
    "crash",
    "crashed",
    "refund",
    "disappointed",
    "late",
    "loss",
    "layoffs",
    "never",
}
_CATEGORIES = {
    "technology": {"software", "app", "ai", "model", "chip", "cloud", "api", "laptop", "update"},
    "business": {
        "revenue",
        "quarter",
        "company",
        "market",
        "shares",
        "profit",
        "acquisition",
        "growth",
        "layoffs",
        "customers",
    },
    "sports": {"match", "goal", "season", "team", "league", "championship", "coach", "won"},
    "health": {"doctor", "hospital", "vaccine", "health", "patients", "clinic", "sleep"},
    "travel": {"flight", "hotel", "airport", "trip", "luggage", "booking", "airline"},
}
_PLACES = {"Paris", "London", "Berlin", "Tokyo", "Lisbon", "Seattle", "Madrid", "Europe"}
_ORG_HINTS = ("Inc", "Corp", "Labs", "Airlines", "Air", "FC", "United", "Bank", "Motors")
_STOPWORDS = {
    "The",
    "A",
    "An",
    "I",
    "We",
    "My",
    "Our",
    "It",
    "This",
    "That",
    "They",
    "Their",
    "After",
    "On",
    "In",
    "And",
    "But",
    "If",
    "When",
    "Its",
    "Thanks",
}


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z']+", text)


def _sentiment(text: str) -> dict[str, Any]:
    words = [w.lower() for w in _words(text)]
    score = sum(w in _POSITIVE for w in words) - sum(w in _NEGATIVE for w in words)
    label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    confidence = min(0.99, 0.6 + 0.1 * abs(score))
    return {"sentiment": label, "confidence": round(confidence, 2)}


def _entities(text: str) -> dict[str, Any]:
    found: list[dict[str, str]] = []
    # Runs of capitalised words: a known place, or a name of two words or more.
    for match in re.finditer(r"\b[A-Z][a-zA-Z]+(?:\s+[A-Z][a-zA-Z]+)*", text):
        name = match.group(0)
        first = name.split()[0]
        if first in _STOPWORDS:
            name = name[len(first) :].strip()
        if not name or (" " not in name and name not in _PLACES):
            continue  # a lone capitalised word is usually a sentence's first word
        if name in _PLACES:
            kind = "location"
        elif any(name.endswith(hint) or f"{hint} " in name for hint in _ORG_HINTS):
            kind = "organization"
        elif len(name.split()) == 2:
            kind = "person"
        else:
            kind = "organization"
        if all(entity["name"] != name for entity in found):
            found.append({"name": name, "type": kind})
    return {"entities": found}


def _categories(text: str) -> dict[str, Any]:
    words = {w.lower() for w in _words(text)}
    scored = sorted(
        ((len(words & keywords), name) for name, keywords in _CATEGORIES.items()),
        key=lambda pair: (-pair[0], pair[1]),
    )
    chosen = [name for hits, name in scored if hits > 0][:2] or ["general"]
    return {"categories": chosen}


def _label(labels: list[str], text: str) -> str:
    lowered = text.lower()
    for label in labels:
        if label.replace("_", " ") in lowered or label in lowered:
            return label
    for label in labels:
        stem = label.split("_")[0]
        if stem in lowered:
            return label
    return labels[-1]


def answer(messages: list[dict[str, Any]]) -> str:
    """The assistant's reply to ``messages``: deterministic, shaped by the system prompt."""
    system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    user = str(
        next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    )
    task = system.lower()
    if "sentiment" in task:
        return json.dumps(_sentiment(user))
    if "entities" in task:
        return json.dumps(_entities(user))
    if "categor" in task:
        return json.dumps(_categories(user))
    labels = re.search(r"one of:\s*([a-z_, ]+)", task)
    if labels:
        return _label([s.strip() for s in labels.group(1).split(",") if s.strip()], user)
    words = _words(user)
    if "summar" in task or "summar" in user.lower():
        return " ".join(words[:12]) + ("..." if len(words) > 12 else "")
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:8]
    return f"[fake-llm {digest}] A considered answer to: {' '.join(words[:16])}"


def _delay(mean: float, body: bytes) -> float:
    """Between 0.6x and 1.4x ``mean``, the same for the same request."""
    fraction = int.from_bytes(hashlib.sha256(body).digest()[:2], "big") / 0xFFFF
    return mean * (0.6 + 0.8 * fraction)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeLLM:
    """
    The fake, serving on 127.0.0.1 in a thread of this process.

    :attr:`calls` counts the chat completions it answered; a test or the
    runner reads it before and after a run to know how many reached "the
    provider" rather than stasis's cache.
    """

    def __init__(self, port: int = 0, delay: float | None = None) -> None:
        if delay is None:
            delay = float(os.environ.get("STASIS_EXAMPLES_DELAY", DEFAULT_DELAY))
        self.delay = delay
        self._lock = threading.Lock()
        self._calls = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _count(self) -> None:
        with self._lock:
            self._calls += 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the examples print their own table

            def do_GET(self) -> None:
                if self.path == "/calls":
                    self._json(200, {"calls": fake.calls})
                else:
                    self._json(404, {"error": {"message": "not found", "type": "not_found"}})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._json(
                        404,
                        {
                            "error": {
                                "message": f"no route {self.path}",
                                "type": "invalid_request_error",
                            }
                        },
                    )
                    return
                try:
                    request = json.loads(body)
                    messages = list(request["messages"])
                except (ValueError, KeyError, TypeError):
                    self._json(
                        400,
                        {
                            "error": {
                                "message": "expected a JSON body with messages",
                                "type": "invalid_request_error",
                            }
                        },
                    )
                    return
                fake._count()
                time.sleep(_delay(fake.delay, body))
                reply = answer(messages)
                prompt_tokens = sum(_tokens(str(m.get("content", ""))) for m in messages)
                completion_tokens = _tokens(reply)
                self._json(
                    200,
                    {
                        "id": "chatcmpl-" + hashlib.sha256(body).hexdigest()[:24],
                        "object": "chat.completion",
                        "created": 1_700_000_000,
                        "model": request.get("model", "gpt-4o-mini"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens,
                        },
                    },
                )

            def _json(self, status: int, document: dict[str, Any]) -> None:
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--delay", type=float, default=None, help="mean seconds per call")
    args = parser.parse_args()
    fake = FakeLLM(args.port, args.delay).start()
    print(f"fake LLM on {fake.url}/v1 (Ctrl-C stops it)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
