"""
A small "content analyzer" service: the sentiment, the named entities and the
categories of a text, each from one LLM call, through the official ``openai``
SDK.

This is the shape of many real AI services, and the reason a cache pays: each
document costs three calls, a test suite analyses the same documents on every
run, and with ``temperature=0`` and a JSON answer the same document always
gets the same analysis. Nothing here knows about stasis; point the SDK at it
(``OPENAI_BASE_URL=http://127.0.0.1:4000/v1``) or let the pytest plugin do it.

    python analyzer.py "Acme Corp shares fell after the recall in Berlin."
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from openai import OpenAI

__all__ = ["Analysis", "ContentAnalyzer", "Entity"]

MODEL = "gpt-4o-mini"

_SENTIMENT = (
    "Classify the sentiment of the user's text. Answer with JSON: "
    '{"sentiment": "positive" | "negative" | "neutral", "confidence": 0..1}.'
)
_ENTITIES = (
    "Extract the named entities from the user's text. Answer with JSON: "
    '{"entities": [{"name": str, "type": "person" | "organization" | "location"}]}.'
)
_CATEGORIES = (
    "Assign up to two topic categories to the user's text. Answer with JSON: "
    '{"categories": [str]}.'
)


@dataclass(frozen=True)
class Entity:
    name: str
    type: str


@dataclass(frozen=True)
class Analysis:
    sentiment: str
    confidence: float
    entities: list[Entity] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)


class ContentAnalyzer:
    """The service: one client, three prompts, typed results."""

    def __init__(self, client: OpenAI | None = None, model: str = MODEL) -> None:
        # Built when the service is, so the environment of that moment decides the base URL.
        self.client = client or OpenAI()
        self.model = model

    def _json(self, system: str, text: str) -> dict[str, Any]:
        completion = self.client.chat.completions.create(
            model=self.model,
            temperature=0,
            response_format={"type": "json_object"},
            messages=[{"role": "system", "content": system}, {"role": "user", "content": text}],
        )
        document = json.loads(completion.choices[0].message.content or "{}")
        if not isinstance(document, dict):
            raise ValueError(f"expected a JSON object, got {document!r}")
        return document

    def sentiment(self, text: str) -> tuple[str, float]:
        document = self._json(_SENTIMENT, text)
        return str(document["sentiment"]), float(document.get("confidence", 0.0))

    def entities(self, text: str) -> list[Entity]:
        return [
            Entity(str(e["name"]), str(e["type"])) for e in self._json(_ENTITIES, text)["entities"]
        ]

    def categories(self, text: str) -> list[str]:
        return [str(c) for c in self._json(_CATEGORIES, text)["categories"]]

    def analyze(self, text: str) -> Analysis:
        sentiment, confidence = self.sentiment(text)
        return Analysis(sentiment, confidence, self.entities(text), self.categories(text))


if __name__ == "__main__":
    result = ContentAnalyzer().analyze(" ".join(sys.argv[1:]) or sys.stdin.read())
    print(json.dumps(result, default=lambda o: o.__dict__, indent=2))
