"""
Which request targets stasis forwards, and the URL it forwards them to: only
origin-form paths, joined to the configured upstream part by part, so that
nothing a client sends can choose the host (SSRF), and the path judged
cacheable is exactly the path sent.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stasis.errors import BadRequest
from stasis.routing import check_target, join_url

BASES = [
    "http://127.0.0.1",
    "http://127.0.0",
    "https://api.openai.com",
    "http://127.0.0.1:4291",
    "http://upstream.test/openai",
    "http://upstream.test/v1",
]


@pytest.mark.parametrize(
    "target",
    [
        ":4292/v1/chat/completions",
        ".attacker.tld/v1/chat/completions",
        "2/v1/chat/completions",
        "@attacker.tld/v1/chat/completions",
        "http://127.0.0.1:4292/v1/chat/completions",
        "https://attacker.tld/v1/chat/completions",
        "*",
        "",
        "/v1/files#/chat/completions",
        "/v1/chat/completions#",
        "/v1/chat/completions/../../files",
        "/v1/./chat/completions",
        "/v1/chat/completions/%2e%2e/%2E%2E/files",
        "/v1/chat/completions/..",
    ],
)
def test_a_target_that_is_not_a_plain_path_is_refused(target: str) -> None:
    with pytest.raises(BadRequest):
        check_target("POST", target)


def test_connect_is_refused_whatever_its_target() -> None:
    with pytest.raises(BadRequest, match="not a forward proxy"):
        check_target("CONNECT", "api.openai.com:443")
    with pytest.raises(BadRequest):
        check_target("CONNECT", "/v1/chat/completions")


@pytest.mark.parametrize(
    "target",
    ["/v1/chat/completions", "/v1/models?limit=5", "//attacker.tld/v1", "/v1/a..b/c.d", "/"],
)
def test_a_plain_path_is_taken(target: str) -> None:
    check_target("POST", target)


@given(
    base=st.sampled_from(BASES),
    path=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#"),
        max_size=40,
    ).map(lambda text: "/" + text),
    query=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"),
        max_size=20,
    ),
)
def test_a_taken_target_never_reaches_into_the_upstreams_authority(
    base: str, path: str, query: str
) -> None:
    try:
        check_target("POST", path + ("?" + query if query else ""))
    except BadRequest:
        return
    url = join_url(base, path, query)
    joined, configured = urlsplit(url), urlsplit(base)
    assert (joined.scheme, joined.netloc) == (configured.scheme, configured.netloc)
    assert url.startswith(base.rstrip("/").removesuffix("/v1") + "/")
    assert joined.path.endswith(path) or path.startswith("/v1")
    assert joined.query == query


@pytest.mark.parametrize(
    ("base", "path", "url"),
    [
        (
            "https://api.openai.com",
            "/v1/chat/completions",
            "https://api.openai.com/v1/chat/completions",
        ),
        ("http://host/v1", "/v1/chat/completions", "http://host/v1/chat/completions"),
        ("http://host/v1/", "/v1/chat/completions", "http://host/v1/chat/completions"),
        ("http://host/openai/v1", "/v1/models", "http://host/openai/v1/models"),
        ("http://host/v1beta", "/v1beta/models/x", "http://host/v1beta/models/x"),
        # Only a version segment is taken for the one the SDK already put in the path.
        ("http://host/openai", "/openai/x", "http://host/openai/openai/x"),
        ("http://host/v1", "/v2/x", "http://host/v1/v2/x"),
        ("http://host/v1", "/v10/x", "http://host/v1/v10/x"),
    ],
)
def test_a_version_segment_in_both_the_upstream_and_the_path_is_not_doubled(
    base: str, path: str, url: str
) -> None:
    assert join_url(base, path, "") == url
