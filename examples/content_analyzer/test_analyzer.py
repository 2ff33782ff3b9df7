"""
The content analyzer's tests: each document is three LLM calls, and the suite
runs them on every change. Under ``pytest --stasis-mode cache`` only the first
run pays for them; ``--stasis-mode replay`` runs them in CI with no key.
"""

from __future__ import annotations

import pytest
from analyzer import Analysis, ContentAnalyzer

from stasis.testing import StasisProxy

pytestmark = pytest.mark.usefixtures("stasis_proxy")

REVIEW = "I love the new Acme Labs laptop: excellent battery, great screen, fast update."
COMPLAINT = "Terrible trip: the Skyway Airlines flight to Paris was late and my luggage is broken."
NEWS = (
    "Globex Corp reported record revenue this quarter as customers in Tokyo and Berlin "
    "moved to its cloud software; shares rose after the acquisition."
)
MATCH = "The team won the championship match in Madrid; coach Maria Lopez praised the season."


@pytest.fixture(scope="session")
def analyzer(stasis_proxy_session: StasisProxy) -> ContentAnalyzer:
    # One for the session, built once the plugin's proxy runs (it set OPENAI_BASE_URL),
    # or skipped with the tests when there is none.
    return ContentAnalyzer()


@pytest.mark.parametrize(
    ("text", "sentiment"), [(REVIEW, "positive"), (COMPLAINT, "negative"), (NEWS, "positive")]
)
def test_sentiment(analyzer: ContentAnalyzer, text: str, sentiment: str) -> None:
    label, confidence = analyzer.sentiment(text)
    assert label == sentiment
    assert 0.0 <= confidence <= 1.0


def test_entities_name_people_places_and_companies(analyzer: ContentAnalyzer) -> None:
    entities = {(e.name, e.type) for e in analyzer.entities(MATCH + " " + COMPLAINT)}
    assert ("Maria Lopez", "person") in entities
    assert ("Madrid", "location") in entities
    assert ("Skyway Airlines", "organization") in entities


@pytest.mark.parametrize(
    ("text", "category"), [(NEWS, "business"), (MATCH, "sports"), (COMPLAINT, "travel")]
)
def test_categories(analyzer: ContentAnalyzer, text: str, category: str) -> None:
    assert category in analyzer.categories(text)


def test_a_full_analysis(analyzer: ContentAnalyzer) -> None:
    analysis = analyzer.analyze(NEWS)
    assert isinstance(analysis, Analysis)
    assert analysis.sentiment == "positive"
    assert {"Globex Corp", "Tokyo", "Berlin"} <= {e.name for e in analysis.entities}
    assert analysis.categories[0] in {"business", "technology"}
