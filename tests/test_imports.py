"""
What importing a part of stasis costs: the pure parts load no web server,
HTTP client or database driver, so a pytest plugin or a script that only
derives keys starts at once.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("twisted.web", "treq", "twisted.enterprise", "sqlite3", "botocore", "psycopg")


def _loaded_by(statement: str) -> list[str]:
    """The modules a fresh interpreter has loaded after ``statement``."""
    script = f"import sys; {statement}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    modules: list[str] = json.loads(out)
    return modules


@pytest.mark.parametrize(
    "statement",
    [
        "import stasis",
        "import stasis.keys",
        "import stasis.providers",
        "import stasis.model",
        "import stasis.modes",
        "from stasis.streams.events import decode_sse",
    ],
)
def test_pure_parts_load_nothing_heavy(statement: str) -> None:
    heavy = [
        name
        for name in _loaded_by(statement)
        if any(name == prefix or name.startswith(prefix + ".") for prefix in HEAVY)
    ]
    assert heavy == []


def test_public_names_load_on_first_use() -> None:
    modules = _loaded_by("import stasis; stasis.StasisService")
    assert "stasis.service" in modules
    assert "stasis.service" not in _loaded_by("import stasis")


def test_unknown_attribute_is_an_attribute_error() -> None:
    import stasis

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        stasis.nope  # noqa: B018
