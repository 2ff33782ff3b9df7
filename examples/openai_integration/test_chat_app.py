"""
The app's tests, served by stasis's pytest plugin: unchanged test code.

Record once (``pytest --stasis-mode cache``, with a real key or, here, the
fake upstream), then replay for ever (``pytest --stasis-mode replay``: no
network, no key). Without a mode the ``stasis_proxy`` fixture skips the
tests, so a plain ``pytest`` never spends money by accident.
"""

from __future__ import annotations

import pytest
from chat_app import MODEL, TICKET_LABELS, classify_ticket, client, reply_to, summarize
from openai.types.chat import ChatCompletionMessageParam

# Every test here goes through the session's stasis daemon (or is skipped).
pytestmark = pytest.mark.usefixtures("stasis_proxy")


def test_summary_is_shorter_than_the_text() -> None:
    text = (
        "Our team moved the nightly build from a single large machine to four small ones, "
        "which cut the build time from forty minutes to twelve and halved the cloud bill."
    )
    summary = summarize(text)
    assert summary
    assert len(summary) < len(text)


@pytest.mark.parametrize(
    ("ticket", "label"),
    [
        ("I was charged twice this month, please check my billing.", "billing"),
        ("The export button crashes the app with a bug report dialog.", "bug"),
        (
            "It would be great to have a dark mode feature request: please add it.",
            "feature_request",
        ),
    ],
)
def test_tickets_go_to_the_right_queue(ticket: str, label: str) -> None:
    assert classify_ticket(ticket) == label


def test_classification_is_one_of_the_labels() -> None:
    assert classify_ticket("Hello, just saying hi.") in TICKET_LABELS


def test_reply_is_not_empty() -> None:
    assert reply_to("My order arrived late and the box was damaged.").strip()


def test_the_same_question_twice_is_answered_once() -> None:
    """The second identical call is a hit: stasis says so in ``X-Stasis-Status``."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Summarize: the capital of Portugal is Lisbon."}
    ]
    client().chat.completions.create(model=MODEL, temperature=0, messages=messages)
    again = client().chat.completions.with_raw_response.create(
        model=MODEL, temperature=0, messages=messages
    )
    assert again.headers["x-stasis-status"] == "HIT"
    assert again.parse().choices[0].message.content
