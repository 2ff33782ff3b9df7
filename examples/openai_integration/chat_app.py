"""
A tiny app built on the official ``openai`` SDK: the code under test.

Nothing in it knows about stasis. ``OpenAI()`` reads ``OPENAI_BASE_URL`` and
``OPENAI_API_KEY`` from the environment when it is built, which is all the
stasis pytest plugin needs to send these calls through its daemon. So the
client is built on first use, not at import time: a module
level client would be built before the plugin sets the variables. One client
serves every call after that (building one costs tens of milliseconds).
"""

from __future__ import annotations

import functools

from openai import OpenAI

__all__ = ["MODEL", "TICKET_LABELS", "classify_ticket", "client", "reply_to", "summarize"]

MODEL = "gpt-4o-mini"
TICKET_LABELS = ("billing", "bug", "feature_request", "other")


@functools.cache
def client() -> OpenAI:
    """The app's client, built on first use."""
    return OpenAI()


def _ask(system: str, user: str) -> str:
    # temperature=0: the same question gets the same answer, so caching it is safe.
    completion = client().chat.completions.create(
        model=MODEL,
        temperature=0,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
    )
    return completion.choices[0].message.content or ""


def summarize(text: str) -> str:
    """One short sentence saying what ``text`` is about."""
    return _ask("Summarize the user's text in one short sentence.", text)


def classify_ticket(text: str) -> str:
    """The support queue a ticket belongs in: one of :data:`TICKET_LABELS`."""
    label = (
        _ask(f"Classify the support ticket. Answer with one of: {', '.join(TICKET_LABELS)}.", text)
        .strip()
        .lower()
    )
    return label if label in TICKET_LABELS else "other"


def reply_to(text: str) -> str:
    """A first, polite reply to a customer's message."""
    return _ask("You are a helpful support agent. Reply politely and briefly.", text)
