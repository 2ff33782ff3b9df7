"""
End to end: every provider through one real ``twistd -n stasis``, with the official SDKs.

Bedrock (boto3 and ``AnthropicBedrock``; SigV4 verified by stasis and
re-signed for the real host, which the fake Bedrock verifies in turn), Gemini
(raw HTTP, and ``google-genai`` when it is installed), Azure OpenAI
(``AzureOpenAI``), OpenAI's Responses, embeddings and files, and routing:
without a bare ``--upstream``, each provider's requests reach its own fake
upstream only. What is stored (provider, model, tokens) is read from the
SQLite file itself.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import anthropic
import boto3
import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotocoreConfig
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.daemon import Daemon, poll_until
from tests.fake_upstream import (
    AWS_ACCESS_KEY,
    AWS_SECRET_KEY,
    BEDROCK_USAGE,
    GEMINI_COUNT_TOKENS,
    GEMINI_USAGE,
    INVOKE_INPUT_TOKENS,
    INVOKE_OUTPUT_TOKENS,
    LLAMA_INPUT_TOKENS,
    LLAMA_OUTPUT_TOKENS,
    RESPONSES_USAGE,
    FakeUpstream,
    Received,
)

#: A model ID with a colon: boto3 sends it as ``%3A``, and signs it encoded once more.
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
LLAMA_MODEL = "meta.llama3-8b-instruct-v1:0"
BEDROCK_MESSAGES = [{"role": "user", "content": [{"text": "Hello, Bedrock"}]}]
INVOKE_BODY = json.dumps(
    {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hello, Bedrock"}],
    }
).encode()
REGION = "us-east-1"
#: Keys that must never be stored or logged.
OPENAI_KEY = "sk-test-PROVIDERS-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-PROVIDERS-abcdef0123456789"
AZURE_KEY = "azure-test-PROVIDERS-fedcba9876543210"
GEMINI_KEY = "AIzaSy-test-GEMINI-SECRET-0123456789ab"
OTHER_GEMINI_KEY = "AIzaSy-test-GEMINI-OTHER-9876543210zy"
BEDROCK_API_KEY = "ABSK-test-BEDROCK-API-KEY-0123456789abcd"
OTHER_BEDROCK_API_KEY = "ABSK-test-BEDROCK-API-KEY-other-98765432"
GEMINI_MODEL = "gemini-2.0-flash"
GEMINI_PATH = f"/v1beta/models/{GEMINI_MODEL}"
GEMINI_BODY = json.dumps({"contents": [{"role": "user", "parts": [{"text": "Hello, Gemini"}]}]})
AZURE_DEPLOYMENT = "my-gpt4o"
AZURE_API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "Hello"}]
#: The daemon's AWS identity: the example key pair the fake Bedrock verifies with.
DAEMON_AWS = {"AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": AWS_SECRET_KEY}
DEADLINE = 5.0


@pytest.fixture(autouse=True)
def no_aws_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This process's boto3 clients use only the credentials a test gives them."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def fakes(make_upstream: Callable[..., FakeUpstream]) -> dict[str, FakeUpstream]:
    """One fake upstream per provider, each on its own port."""
    return {name: make_upstream() for name in ("openai", "anthropic", "bedrock", "gemini", "azure")}


#: Where each provider's fake is mounted: Anthropic's and Azure's under a path prefix.
PREFIXES = {"anthropic": "/anthropic", "azure": "/my-resource"}


@pytest.fixture
def daemon(start: Callable[..., Daemon], fakes: dict[str, FakeUpstream]) -> Daemon:
    """No bare --upstream: ``-u NAME=URL`` for each provider, and the daemon's AWS identity."""
    routes = {name: fake.url + PREFIXES.get(name, "") for name, fake in fakes.items()}
    return start("-l", "debug", bare=False, routes=routes, env=DAEMON_AWS)


# --- helpers -------------------------------------------------------------------------


def bedrock(
    at: Daemon | FakeUpstream | SimpleNamespace,
    access_key: str = AWS_ACCESS_KEY,
    secret_key: str = AWS_SECRET_KEY,
) -> Any:
    """A boto3 Bedrock Runtime client pointed at a daemon (or straight at a fake)."""
    return boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=at.url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=BotocoreConfig(retries={"total_max_attempts": 1}),
    )


def stasis_status(answer: dict[str, Any]) -> str:
    return str(answer["ResponseMetadata"]["HTTPHeaders"].get("x-stasis-status"))


def sign(
    url: str,
    body: bytes,
    at: datetime | None = None,
    access_key: str = AWS_ACCESS_KEY,
    secret_key: str = AWS_SECRET_KEY,
    region: str = REGION,
) -> dict[str, str]:
    """Headers of a POST of ``body`` to ``url`` signed as boto3 signs, at ``at`` (default now)."""
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
    )
    signer = SigV4Auth(Credentials(access_key, secret_key), "bedrock", region)
    if at is None:
        signer.add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=at):
            signer.add_auth(request)
    return dict(request.headers.items())


def post(
    daemon: Daemon, path: str, body: bytes | str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    data = body.encode() if isinstance(body, str) else body
    return daemon.request("POST", path, data, {"Content-Type": "application/json", **headers})


def raw_post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    """POST with ``http.client``, whose Host header is the URL's (not any signed one)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def error_of(body: bytes) -> dict[str, Any]:
    error = json.loads(body)["error"]
    assert isinstance(error, dict)
    return error


def entries(daemon: Daemon) -> list[dict[str, Any]]:
    """The stored entries' facts, read from the database file itself."""
    connection = sqlite3.connect(daemon.db)
    connection.row_factory = sqlite3.Row
    try:
        rows = connection.execute(
            "SELECT provider, model, method, path, input_tokens, output_tokens, total_tokens "
            "FROM entries ORDER BY created_at"
        ).fetchall()
    finally:
        connection.close()
    return [dict(row) for row in rows]


def wait_for_entries(daemon: Daemon, count: int) -> list[dict[str, Any]]:
    poll_until(lambda: daemon.get_json("/stats")["totalEntries"] == count, deadline=DEADLINE)
    return entries(daemon)


def usage_of(entry: dict[str, Any]) -> tuple[int, int, int]:
    return entry["input_tokens"], entry["output_tokens"], entry["total_tokens"]


def assert_secret_nowhere(daemon: Daemon, *secrets: str) -> None:
    """Not in any of the database's files, nor in the daemon's log (stop the daemon first)."""
    files = sorted(daemon.db.parent.glob(daemon.db.name + "*"))
    assert files
    for secret in secrets:
        for path in files:
            data = path.read_bytes()
            assert secret.encode() not in data, (secret, path)
            assert secret[-12:].encode() not in data, (secret, path)
        assert secret[-12:] not in daemon.log, secret


def assert_signed_for(fake: FakeUpstream, seen: Received) -> None:
    """stasis re-signed ``seen`` for the fake's own host, and the fake verified it."""
    assert seen.signature == "valid"
    assert seen.headers["host"] == fake.url.removeprefix("http://")
    assert f"Credential={AWS_ACCESS_KEY}/" in seen.headers["authorization"]
    assert f"/{REGION}/bedrock/aws4_request" in seen.headers["authorization"]
    assert "x-amz-date" in seen.headers


# --- Bedrock through boto3 -------------------------------------------------------------


def _converse(client: Any) -> tuple[str, Any]:
    answer = client.converse(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES)
    return stasis_status(answer), {k: v for k, v in answer.items() if k != "ResponseMetadata"}


def _converse_stream(client: Any) -> tuple[str, Any]:
    answer = client.converse_stream(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES)
    return stasis_status(answer), list(answer["stream"])


def _invoke(client: Any) -> tuple[str, Any]:
    answer = client.invoke_model(modelId=BEDROCK_MODEL, body=INVOKE_BODY)
    headers = answer["ResponseMetadata"]["HTTPHeaders"]
    counts = (
        headers["x-amzn-bedrock-input-token-count"],
        headers["x-amzn-bedrock-output-token-count"],
    )
    return stasis_status(answer), (json.loads(answer["body"].read()), counts)


def _invoke_stream(client: Any) -> tuple[str, Any]:
    answer = client.invoke_model_with_response_stream(modelId=BEDROCK_MODEL, body=INVOKE_BODY)
    return stasis_status(answer), [json.loads(e["chunk"]["bytes"]) for e in answer["body"]]


def _converse_text(result: Any) -> str:
    return str(result["output"]["message"]["content"][0]["text"])


def _converse_stream_text(events: Any) -> str:
    return "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )


def _invoke_text(result: Any) -> str:
    return str(result[0]["content"][0]["text"])


def _invoke_stream_text(chunks: Any) -> str:
    return "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")


BEDROCK_CALLS = pytest.mark.parametrize(
    ("operation", "call", "text", "usage"),
    [
        ("converse", _converse, _converse_text, (10, 4, 14)),
        ("converse-stream", _converse_stream, _converse_stream_text, (10, 4, 14)),
        ("invoke", _invoke, _invoke_text, (12, 5, 17)),
        ("invoke-with-response-stream", _invoke_stream, _invoke_stream_text, (12, 5, 17)),
    ],
    ids=["converse", "converse-stream", "invoke", "invoke-with-response-stream"],
)


@BEDROCK_CALLS
def test_bedrock_through_boto3_is_cached(
    daemon: Daemon,
    fakes: dict[str, FakeUpstream],
    operation: str,
    call: Callable[[Any], tuple[str, Any]],
    text: Callable[[Any], str],
    usage: tuple[int, int, int],
) -> None:
    client = bedrock(daemon)
    (miss, first), (hit, second) = call(client), call(client)
    assert (miss, hit) == ("MISS", "HIT")
    assert first == second
    assert text(first).endswith("#1")
    fake = fakes["bedrock"]
    (seen,) = fake.calls()
    # The model ID's colon travels percent-encoded, and the signature still verifies.
    assert seen.path == f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/{operation}"
    assert_signed_for(fake, seen)
    assert all(not f.calls() for name, f in fakes.items() if name != "bedrock")
    (entry,) = wait_for_entries(daemon, 1)
    assert (entry["provider"], entry["model"]) == ("bedrock", BEDROCK_MODEL)
    assert usage_of(entry) == usage


def test_bedrock_through_the_directive_prefix_verifies_what_boto3_signed(
    daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    # boto3 signs the path with the prefix in it; upstream it goes without, signed again.
    client = bedrock(SimpleNamespace(url=daemon.url + "/_stasis/with/namespace=suite-b"))
    (miss, first), (hit, second) = _converse(client), _converse(client)
    assert (miss, hit, first) == ("MISS", "HIT", second)
    (seen,) = fakes["bedrock"].calls()
    assert seen.path == f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse"
    assert_signed_for(fakes["bedrock"], seen)
    assert _converse(bedrock(daemon))[0] == "MISS"  # another namespace


def test_bedrock_through_the_anthropic_sdk(daemon: Daemon, fakes: dict[str, FakeUpstream]) -> None:
    # AnthropicBedrock signs every header it sends (x-stainless-* and all), not boto3's few.
    client = anthropic.AnthropicBedrock(
        base_url=daemon.url,
        aws_access_key=AWS_ACCESS_KEY,
        aws_secret_key=AWS_SECRET_KEY,
        aws_region=REGION,
        max_retries=0,
    )
    created = [
        client.messages.with_raw_response.create(
            model=BEDROCK_MODEL,
            max_tokens=64,
            messages=MESSAGES,  # type: ignore[arg-type]
        )
        for _ in "12"
    ]
    assert [c.headers["x-stasis-status"] for c in created] == ["MISS", "HIT"]
    assert created[0].parse().model_dump() == created[1].parse().model_dump()
    assert created[1].parse().content[0].text == "invoked #1"  # type: ignore[union-attr]
    streamed = []
    for _ in "12":
        with client.messages.stream(
            model=BEDROCK_MODEL,
            max_tokens=64,
            messages=MESSAGES,  # type: ignore[arg-type]
        ) as stream:
            streamed.append((stream.response.headers["x-stasis-status"], list(stream.text_stream)))
    assert streamed == [("MISS", ["invoked", " #", "2"]), ("HIT", ["invoked", " #", "2"])]
    seen = fakes["bedrock"].calls()
    assert [r.target.rpartition("/")[2] for r in seen] == ["invoke", "invoke-with-response-stream"]
    for request in seen:
        assert_signed_for(fakes["bedrock"], request)
    stored = wait_for_entries(daemon, 2)
    assert {usage_of(e) for e in stored} == {(12, 5, 17)}


def test_an_upstream_refusal_reaches_boto3_and_is_not_stored(
    daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    # stasis verifies the client, but Bedrock does not know the daemon's key pair.
    fakes["bedrock"].aws_secret_key = "not-what-the-daemon-holds"
    for _ in "12":
        with pytest.raises(ClientError) as refused:
            bedrock(daemon).converse(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES)
        assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert (
            refused.value.response["ResponseMetadata"]["HTTPHeaders"]["x-stasis-status"] == "MISS"
        )
    assert len(fakes["bedrock"].calls()) == 2
    assert daemon.get_json("/stats")["totalEntries"] == 0


def test_the_fake_bedrock_rejects_a_signature_for_another_host(
    fakes: dict[str, FakeUpstream],
) -> None:
    # The proof that the fake's verification can fail: what stasis must fix by re-signing.
    fake = fakes["bedrock"]
    path = f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse"
    body = json.dumps({"messages": BEDROCK_MESSAGES}).encode()
    elsewhere = sign(f"https://bedrock-runtime.{REGION}.amazonaws.com{path}", body)
    status, headers, answer = raw_post(fake.url, path, body, elsewhere)
    assert status == 403
    assert headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    assert "signature we calculated does not match" in json.loads(answer)["message"]
    assert fake.calls()[-1].signature.startswith("InvalidSignatureException")
    # The same request signed for the fake's own address verifies.
    status, _, answer = raw_post(fake.url, path, body, sign(fake.url + path, body))
    assert (status, fake.calls()[-1].signature) == (200, "valid"), answer
    # And boto3 itself reads the fake's refusals as AWS errors.
    with pytest.raises(ClientError) as wrong_secret:
        bedrock(fake, secret_key="not-the-secret").converse(
            modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES
        )
    assert wrong_secret.value.response["Error"]["Code"] == "InvalidSignatureException"
    with pytest.raises(ClientError) as unknown_key:
        bedrock(fake, access_key="AKIDOTHER").converse(
            modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES
        )
    assert unknown_key.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_bedrock_signed_a_second_apart_is_one_call(
    daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    path = f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse"
    body = json.dumps({"messages": BEDROCK_MESSAGES}).encode()
    now = datetime.now(timezone.utc)
    first_headers = sign(daemon.url + path, body, at=now - timedelta(seconds=1))
    second_headers = sign(daemon.url + path, body, at=now)
    assert first_headers["X-Amz-Date"] != second_headers["X-Amz-Date"]
    assert first_headers["Authorization"] != second_headers["Authorization"]
    first = post(daemon, path, body, first_headers)
    second = post(daemon, path, body, second_headers)
    assert (first[0], second[0]) == (200, 200), first[2]
    assert (first[1]["x-stasis-status"], second[1]["x-stasis-status"]) == ("MISS", "HIT")
    assert first[2] == second[2]
    assert len(fakes["bedrock"].calls()) == 1


def test_bedrock_signed_with_other_credentials_is_refused_and_never_served(
    daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    path = f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse"
    body = json.dumps({"messages": BEDROCK_MESSAGES}).encode()
    recorded = post(daemon, path, body, sign(daemon.url + path, body))
    assert (recorded[0], recorded[1]["x-stasis-status"]) == (200, "MISS")
    attempts = {
        # Another identity altogether.
        "other key": sign(daemon.url + path, body, access_key="AKIDOTHER", secret_key="x" * 40),
        # The daemon's access key ID (no secret: it is in every signature) without its secret:
        # the cache key is the same, so only verification stands between this and the entry.
        "wrong secret": sign(daemon.url + path, body, secret_key="not-the-real-secret-key"),
        # The right key pair, but signed for AWS's host, not the one the request was sent to.
        "other host": sign(f"https://bedrock-runtime.{REGION}.amazonaws.com{path}", body),
        # Signed long ago: AWS refuses signatures more than 15 minutes off.
        "stale": sign(
            daemon.url + path, body, at=datetime.now(timezone.utc) - timedelta(minutes=20)
        ),
        # Signed for another body.
        "other body": sign(daemon.url + path, body.replace(b"Hello", b"Howdy")),
    }
    for name, headers in attempts.items():
        status, answer_headers, answer = post(daemon, path, body, headers)
        assert status == 403, (name, answer)
        assert answer_headers["content-type"].startswith("application/json")
        error = error_of(answer)
        assert error["type"] == "stasis_signature_rejected", name
        assert error["message"], error
        assert answer_headers.get("x-stasis-status") != "HIT", name
        assert b"bedrock #1" not in answer, name
    # Through boto3 too: a 403, not the cached answer.
    with pytest.raises(ClientError) as refused:
        bedrock(daemon, secret_key="not-the-real-secret-key").converse(
            modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES
        )
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert len(fakes["bedrock"].calls()) == 1
    stats = daemon.get_json("/stats")
    assert (stats["totalEntries"], stats["hits"]) == (1, 0)


def test_bedrock_with_session_credentials(
    start: Callable[..., Daemon], fakes: dict[str, FakeUpstream]
) -> None:
    # SSO and assumed roles give a session token; it is signed, forwarded re-signed,
    # and (like the signature) not part of the cache key.
    token = "FwoGZXIvYXdzEXAMPLE-session-token-0123456789"
    daemon = start(
        bare=False,
        routes={"bedrock": fakes["bedrock"].url},
        env={**DAEMON_AWS, "AWS_SESSION_TOKEN": token},
    )

    def converse(session_token: str) -> str:
        client = boto3.client(
            "bedrock-runtime",
            region_name=REGION,
            endpoint_url=daemon.url,
            aws_access_key_id=AWS_ACCESS_KEY,
            aws_secret_access_key=AWS_SECRET_KEY,
            aws_session_token=session_token,
            config=BotocoreConfig(retries={"total_max_attempts": 1}),
        )
        return _converse(client)[0]

    assert [converse(token), converse(token + "-refreshed")] == ["MISS", "HIT"]
    (seen,) = fakes["bedrock"].calls()
    assert_signed_for(fakes["bedrock"], seen)
    assert seen.headers["x-amz-security-token"] == token
    assert "x-amz-security-token" in seen.headers["authorization"]


def test_bedrock_regions_are_apart_and_re_signed_as_the_client_signed(
    daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    path = f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse"
    body = json.dumps({"messages": BEDROCK_MESSAGES}).encode()
    statuses = [
        post(daemon, path, body, sign(daemon.url + path, body, region=region))[1]["x-stasis-status"]
        for region in (REGION, "us-west-2", "us-west-2")
    ]
    assert statuses == ["MISS", "MISS", "HIT"]
    east, west = fakes["bedrock"].calls()
    assert "/us-east-1/bedrock/aws4_request" in east.headers["authorization"]
    assert "/us-west-2/bedrock/aws4_request" in west.headers["authorization"]
    assert east.signature == west.signature == "valid"


def test_bedrock_through_a_bare_upstream_with_a_path_prefix(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    # The original tool's one upstream for everything: re-signed for its host, prefix and all.
    daemon = start(upstream_url=upstream.url + "/gateway", env=DAEMON_AWS)
    status, result = _converse(bedrock(daemon))
    assert (status, _converse_text(result)) == ("MISS", "bedrock #1")
    (seen,) = upstream.calls()
    assert seen.path == f"/gateway/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse"
    assert_signed_for(upstream, seen)


def test_a_boto3_user_is_told_why_stasis_refused(
    start: Callable[..., Daemon], daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    with pytest.raises(ClientError) as refused:
        bedrock(daemon, secret_key="not-the-real-secret-key").converse(
            modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES
        )
    assert "same AWS credentials" in refused.value.response["Error"]["Message"]
    no_credentials = start(
        bare=False, routes={"bedrock": fakes["bedrock"].url}, env={}, db=daemon.db.with_name("x.db")
    )
    with pytest.raises(ClientError) as missing:
        bedrock(no_credentials).converse(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES)
    assert "AWS_ACCESS_KEY_ID" in missing.value.response["Error"]["Message"]


def test_bedrock_without_daemon_credentials_is_a_502(
    start: Callable[..., Daemon], fakes: dict[str, FakeUpstream]
) -> None:
    daemon = start(bare=False, routes={"bedrock": fakes["bedrock"].url}, env={})
    path = f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse"
    body = json.dumps({"messages": BEDROCK_MESSAGES}).encode()
    status, headers, answer = post(daemon, path, body, sign(daemon.url + path, body))
    assert status == 502
    assert headers["content-type"].startswith("application/json")
    error = error_of(answer)
    assert error["type"] == "stasis_aws_credentials_missing"
    assert "AWS_ACCESS_KEY_ID" in error["message"]
    with pytest.raises(ClientError) as failed:
        bedrock(daemon).converse(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES)
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert fakes["bedrock"].calls() == []
    assert daemon.get_json("/stats")["totalEntries"] == 0


def test_a_bedrock_api_key_is_a_plain_credential(
    start: Callable[..., Daemon], fakes: dict[str, FakeUpstream]
) -> None:
    # No AWS credentials needed: the key goes upstream as it came, unsigned. (Raw HTTP:
    # botocore sends a Bearer token over https only, so boto3 cannot be pointed at the
    # daemon's plain-http port with a Bedrock API key.)
    daemon = start(bare=False, routes={"bedrock": fakes["bedrock"].url}, env={})
    path = f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse"
    body = json.dumps({"messages": BEDROCK_MESSAGES})

    def converse(token: str) -> tuple[str, str]:
        status, headers, answer = post(daemon, path, body, {"Authorization": f"Bearer {token}"})
        assert status == 200, answer
        return headers["x-stasis-status"], _converse_text(json.loads(answer))

    assert converse(BEDROCK_API_KEY) == ("MISS", "bedrock #1")
    assert converse(BEDROCK_API_KEY) == ("HIT", "bedrock #1")
    assert converse(OTHER_BEDROCK_API_KEY) == ("MISS", "bedrock #2")
    seen = fakes["bedrock"].calls()
    assert [r.headers["authorization"] for r in seen] == [
        f"Bearer {BEDROCK_API_KEY}",
        f"Bearer {OTHER_BEDROCK_API_KEY}",
    ]
    assert [r.signature for r in seen] == ["", ""]
    # AnthropicBedrock sends an API key over plain http (boto3 will not).
    client = anthropic.AnthropicBedrock(
        base_url=daemon.url, api_key=BEDROCK_API_KEY, aws_region=REGION, max_retries=0
    )
    created = [
        client.messages.with_raw_response.create(
            model=BEDROCK_MODEL,
            max_tokens=64,
            messages=MESSAGES,  # type: ignore[arg-type]
        )
        for _ in "12"
    ]
    assert [c.headers["x-stasis-status"] for c in created] == ["MISS", "HIT"]
    assert fakes["bedrock"].calls()[-1].headers["authorization"] == f"Bearer {BEDROCK_API_KEY}"
    stored = wait_for_entries(daemon, 3)
    assert {(e["provider"], e["model"]) for e in stored} == {("bedrock", BEDROCK_MODEL)}
    daemon.stop()
    assert_secret_nowhere(daemon, BEDROCK_API_KEY, OTHER_BEDROCK_API_KEY)


def test_requests_that_cannot_be_routed_are_400s_saying_why(
    start: Callable[..., Daemon], fakes: dict[str, FakeUpstream]
) -> None:
    # Only OpenAI has an upstream; no bare --upstream, no AWS_REGION.
    daemon = start(bare=False, routes={"openai": fakes["openai"].url}, env={})
    status, headers, answer = post(
        daemon,
        f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse",
        json.dumps({"messages": BEDROCK_MESSAGES}),
        {"Authorization": f"Bearer {BEDROCK_API_KEY}"},
    )
    assert status == 400, answer
    assert headers["content-type"].startswith("application/json")
    error = error_of(answer)
    assert error["type"] == "stasis_bad_request"
    assert "AWS_REGION" in error["message"]
    assert "--upstream bedrock=" in error["message"]

    azure = openai.AzureOpenAI(
        azure_endpoint=daemon.url, api_key=AZURE_KEY, api_version=AZURE_API_VERSION, max_retries=0
    )
    with pytest.raises(openai.BadRequestError) as refused:
        azure.chat.completions.create(model=AZURE_DEPLOYMENT, messages=MESSAGES)  # type: ignore[arg-type]
    error = refused.value.response.json()["error"]
    assert error["type"] == "stasis_bad_request"
    assert "--upstream azure=" in error["message"]
    assert all(not fake.calls() for fake in fakes.values())


# --- Gemini ------------------------------------------------------------------------------


def test_a_gemini_key_in_a_header_or_the_query_is_one_credential(
    daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    path = f"{GEMINI_PATH}:generateContent"
    in_header = post(daemon, path, GEMINI_BODY, {"x-goog-api-key": GEMINI_KEY})
    in_query = post(daemon, f"{path}?key={GEMINI_KEY}", GEMINI_BODY, {})
    other = post(daemon, f"{path}?key={OTHER_GEMINI_KEY}", GEMINI_BODY, {})
    other_in_header = post(daemon, path, GEMINI_BODY, {"x-goog-api-key": OTHER_GEMINI_KEY})
    answers = [in_header, in_query, other, other_in_header]
    assert [a[0] for a in answers] == [200] * 4
    assert [a[1]["x-stasis-status"] for a in answers] == ["MISS", "HIT", "MISS", "HIT"]
    assert in_header[2] == in_query[2]
    assert other[2] == other_in_header[2] != in_header[2]
    assert in_header[1]["x-stasis-key"] == in_query[1]["x-stasis-key"]
    assert other[1]["x-stasis-key"] != in_header[1]["x-stasis-key"]
    # The key reaches Gemini however it was sent.
    first, second = fakes["gemini"].calls()
    assert (first.path, first.headers["x-goog-api-key"]) == (path, GEMINI_KEY)
    assert second.path == f"{path}?key={OTHER_GEMINI_KEY}"
    stored = wait_for_entries(daemon, 2)
    assert {e["path"] for e in stored} == {path}
    assert {(e["provider"], e["model"]) for e in stored} == {("gemini", GEMINI_MODEL)}
    assert {usage_of(e) for e in stored} == {(8, 5, GEMINI_USAGE["totalTokenCount"])}
    daemon.stop()
    assert_secret_nowhere(daemon, GEMINI_KEY, OTHER_GEMINI_KEY)


def test_a_gemini_sse_stream_is_cached(daemon: Daemon, fakes: dict[str, FakeUpstream]) -> None:
    path = f"{GEMINI_PATH}:streamGenerateContent?alt=sse&key={GEMINI_KEY}"
    first = post(daemon, path, GEMINI_BODY, {})
    second = post(daemon, path, GEMINI_BODY, {})
    assert (first[0], second[0]) == (200, 200)
    assert (first[1]["x-stasis-status"], second[1]["x-stasis-status"]) == ("MISS", "HIT")
    assert first[1]["content-type"].startswith("text/event-stream")
    assert first[2] == second[2]
    chunks = [json.loads(line[6:]) for line in first[2].split(b"\r\n") if line]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == "gemini #1"
    assert len(fakes["gemini"].calls()) == 1
    (entry,) = wait_for_entries(daemon, 1)
    assert (entry["provider"], entry["model"]) == ("gemini", GEMINI_MODEL)
    assert entry["path"] == f"{GEMINI_PATH}:streamGenerateContent"
    assert entry["total_tokens"] == GEMINI_USAGE["totalTokenCount"]
    # Without alt=sse the stream is one JSON array; its last element has the totals.
    array = [post(daemon, path.replace("alt=sse&", ""), GEMINI_BODY, {}) for _ in "12"]
    assert [a[1]["x-stasis-status"] for a in array] == ["MISS", "HIT"]
    assert array[0][2] == array[1][2]
    assert len(json.loads(array[0][2])) == 3
    assert wait_for_entries(daemon, 2) == [entry, entry]  # the same facts, twice
    daemon.stop()
    assert_secret_nowhere(daemon, GEMINI_KEY)


def test_gemini_through_google_genai(daemon: Daemon, fakes: dict[str, FakeUpstream]) -> None:
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    client = genai.Client(
        api_key=GEMINI_KEY,
        http_options=types.HttpOptions(
            base_url=daemon.url,
            api_version="v1beta",
            retry_options=types.HttpRetryOptions(attempts=1),
        ),
    )

    def status(response: Any) -> str:
        return str(response.sdk_http_response.headers["x-stasis-status"])

    generated = [client.models.generate_content(model=GEMINI_MODEL, contents="Hi") for _ in "12"]
    assert [status(r) for r in generated] == ["MISS", "HIT"]
    assert generated[0].text == generated[1].text == "gemini #1"
    streamed = [
        list(client.models.generate_content_stream(model=GEMINI_MODEL, contents="Hi")) for _ in "12"
    ]
    assert [status(s[0]) for s in streamed] == ["MISS", "HIT"]
    assert [c.text for c in streamed[0]] == [c.text for c in streamed[1]] == ["gemini", " #", "2"]
    counted = [client.models.count_tokens(model=GEMINI_MODEL, contents="Hi") for _ in "12"]
    assert [c.total_tokens for c in counted] == [GEMINI_COUNT_TOKENS] * 2
    embedded = [
        client.models.embed_content(model="text-embedding-004", contents="Hi") for _ in "12"
    ]
    assert embedded[0].embeddings == embedded[1].embeddings
    paths = [r.target for r in fakes["gemini"].calls()]
    assert paths == [
        f"{GEMINI_PATH}:generateContent",
        f"{GEMINI_PATH}:streamGenerateContent",
        f"{GEMINI_PATH}:countTokens",
        "/v1beta/models/text-embedding-004:batchEmbedContents",  # how the SDK embeds
    ]
    stored = {e["path"].rpartition(":")[2]: e for e in wait_for_entries(daemon, 4)}
    assert stored["generateContent"]["total_tokens"] == GEMINI_USAGE["totalTokenCount"]
    assert stored["streamGenerateContent"]["total_tokens"] == GEMINI_USAGE["totalTokenCount"]
    assert stored["countTokens"]["total_tokens"] == GEMINI_COUNT_TOKENS
    assert stored["generateContent"]["model"] == GEMINI_MODEL
    assert stored["batchEmbedContents"]["model"] == "text-embedding-004"
    stats = daemon.get_json("/stats")
    assert (stats["hits"], stats["misses"]) == (4, 4)


# --- Azure OpenAI and OpenAI --------------------------------------------------------------


def test_azure_openai_is_cached_under_its_path_prefix(
    daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=daemon.url, api_key=AZURE_KEY, api_version=AZURE_API_VERSION, max_retries=0
    )
    answers = [
        client.chat.completions.with_raw_response.create(
            model=AZURE_DEPLOYMENT,
            messages=MESSAGES,  # type: ignore[arg-type]
        )
        for _ in "12"
    ]
    assert [a.headers["x-stasis-status"] for a in answers] == ["MISS", "HIT"]
    assert answers[0].parse().model_dump() == answers[1].parse().model_dump()
    (seen,) = fakes["azure"].calls()
    assert seen.path == (
        f"/my-resource/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions"
        f"?api-version={AZURE_API_VERSION}"
    )
    assert seen.headers["api-key"] == AZURE_KEY
    (entry,) = wait_for_entries(daemon, 1)
    assert (entry["provider"], entry["model"]) == ("azure", AZURE_DEPLOYMENT)
    assert entry["path"] == f"/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions"
    assert usage_of(entry) == (11, 7, 18)
    # Streamed, it ends at [DONE] like OpenAI's.
    streams = [
        list(
            client.chat.completions.create(
                model=AZURE_DEPLOYMENT,
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            )
        )
        for _ in "12"
    ]
    texts = ["".join(c.choices[0].delta.content or "" for c in s if c.choices) for s in streams]
    assert texts == ["echo #2: Hello", "echo #2: Hello"]
    # Azure's newer /openai/v1/ API (no deployment in the path): the model is the body's.
    v1 = openai.OpenAI(base_url=daemon.url + "/openai/v1", api_key=AZURE_KEY, max_retries=0)
    v1_answers = [
        v1.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
        for _ in "12"
    ]
    assert [a.headers["x-stasis-status"] for a in v1_answers] == ["MISS", "HIT"]
    assert [r.target for r in fakes["azure"].calls()] == [
        f"/my-resource/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions"
    ] * 2 + ["/my-resource/openai/v1/chat/completions"]
    stored = {e["path"]: e for e in wait_for_entries(daemon, 3)}
    v1_entry = stored["/openai/v1/chat/completions"]
    assert (v1_entry["provider"], v1_entry["model"]) == ("azure", "gpt-4o")
    daemon.stop()
    assert_secret_nowhere(daemon, AZURE_KEY)


def openai_client(daemon: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key=OPENAI_KEY, max_retries=0)


def test_openai_responses_and_embeddings_are_cached(
    daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    client = openai_client(daemon)
    responses = [
        client.responses.with_raw_response.create(model="gpt-4o-mini", input="Hello") for _ in "12"
    ]
    assert [r.headers["x-stasis-status"] for r in responses] == ["MISS", "HIT"]
    assert responses[0].parse().output_text == responses[1].parse().output_text
    assert responses[1].parse().output_text == "reply #1: Hello"
    embeddings = [
        client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="Hello")
        for _ in "12"
    ]
    assert [e.headers["x-stasis-status"] for e in embeddings] == ["MISS", "HIT"]
    vectors = [e.parse().data[0].embedding for e in embeddings]
    assert vectors[0] == vectors[1] == pytest.approx([0.1, 0.2, 0.3])
    assert [r.target for r in fakes["openai"].calls()] == ["/v1/responses", "/v1/embeddings"]
    stored = {e["path"]: e for e in wait_for_entries(daemon, 2)}
    responses_entry = stored["/v1/responses"]
    assert (responses_entry["provider"], responses_entry["model"]) == ("openai", "gpt-4o-mini")
    assert usage_of(responses_entry) == (
        RESPONSES_USAGE["input_tokens"],
        RESPONSES_USAGE["output_tokens"],
        RESPONSES_USAGE["total_tokens"],
    )
    assert stored["/v1/embeddings"]["model"] == "text-embedding-3-small"
    assert stored["/v1/embeddings"]["total_tokens"] == 4


def test_file_uploads_pass_through_and_are_never_stored(
    daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    client = openai_client(daemon)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    before = wait_for_entries(daemon, 1)
    uploads = [
        client.files.with_raw_response.create(
            file=("batch.jsonl", b'{"custom_id": "1"}\n'), purpose="batch"
        )
        for _ in "12"
    ]
    assert [u.headers["x-stasis-status"] for u in uploads] == ["BYPASS", "BYPASS"]
    assert all("x-stasis-key" not in u.headers for u in uploads)
    assert [u.parse().id for u in uploads] == ["file-2", "file-3"]
    deleted = daemon.request("DELETE", "/v1/files/file-2", None, {"Authorization": "Bearer x"})
    assert (deleted[0], deleted[1]["x-stasis-status"]) == (200, "BYPASS")
    calls = fakes["openai"].calls()
    assert [(r.method, r.target) for r in calls[1:]] == [
        ("POST", "/v1/files"),
        ("POST", "/v1/files"),
        ("DELETE", "/v1/files/file-2"),
    ]
    assert calls[1].headers["content-type"].startswith("multipart/form-data")
    stats = daemon.get_json("/stats")
    assert (stats["totalEntries"], stats["bypasses"]) == (1, 3)
    assert entries(daemon) == before


# --- routing --------------------------------------------------------------------------------


def test_each_provider_reaches_its_own_upstream(
    daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    openai_client(daemon).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    anthropic_client = anthropic.Anthropic(
        base_url=daemon.url, api_key=ANTHROPIC_KEY, max_retries=0
    )
    anthropic_client.messages.create(model="claude-test-1", max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]
    bedrock(daemon).converse(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES)
    post(daemon, f"{GEMINI_PATH}:generateContent", GEMINI_BODY, {"x-goog-api-key": GEMINI_KEY})
    openai.AzureOpenAI(
        azure_endpoint=daemon.url, api_key=AZURE_KEY, api_version=AZURE_API_VERSION, max_retries=0
    ).chat.completions.create(model=AZURE_DEPLOYMENT, messages=MESSAGES)  # type: ignore[arg-type]
    seen = {name: [r.target for r in fake.calls()] for name, fake in fakes.items()}
    assert seen == {
        "openai": ["/v1/chat/completions"],
        "anthropic": ["/anthropic/v1/messages"],  # the route's path prefix is kept
        "bedrock": [f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse"],
        "gemini": [f"{GEMINI_PATH}:generateContent"],
        "azure": [f"/my-resource/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions"],
    }
    assert_signed_for(fakes["bedrock"], fakes["bedrock"].calls()[0])
    stored = wait_for_entries(daemon, 5)
    assert sorted(e["provider"] for e in stored) == [
        "anthropic",
        "azure",
        "bedrock",
        "gemini",
        "openai",
    ]
    # Anthropic's count_tokens is cacheable too, under the same prefix.
    counts = [
        anthropic_client.messages.with_raw_response.count_tokens(
            model="claude-test-1",
            messages=MESSAGES,  # type: ignore[arg-type]
        )
        for _ in "12"
    ]
    assert [c.headers["x-stasis-status"] for c in counts] == ["MISS", "HIT"]
    assert counts[1].parse().input_tokens == 12
    assert fakes["anthropic"].calls()[-1].target == "/anthropic/v1/messages/count_tokens"


def test_a_provider_route_wins_over_a_bare_upstream(
    start: Callable[..., Daemon], upstream: FakeUpstream, fakes: dict[str, FakeUpstream]
) -> None:
    daemon = start(upstream_url=upstream.url, routes={"gemini": fakes["gemini"].url})
    openai_client(daemon).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    post(daemon, f"{GEMINI_PATH}:generateContent", GEMINI_BODY, {"x-goog-api-key": GEMINI_KEY})
    assert [r.target for r in upstream.calls()] == ["/v1/chat/completions"]
    assert [r.target for r in fakes["gemini"].calls()] == [f"{GEMINI_PATH}:generateContent"]


PUBLIC_HOSTS = (
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "bedrock-runtime.eu-west-3.amazonaws.com",
    "bedrock-runtime.ap-south-1.amazonaws.com",
)


def _resolvable(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def test_without_any_upstream_each_provider_goes_to_its_public_api(
    start: Callable[..., Daemon],
) -> None:
    # Offline, a provider's public API cannot be resolved: the 502 names where stasis went.
    if any(_resolvable(host) for host in PUBLIC_HOSTS):
        pytest.skip("the providers' public APIs resolve here: this test would call them")
    daemon = start(bare=False, env={**DAEMON_AWS, "AWS_REGION": "ap-south-1"})
    bedrock_path = f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/converse"
    bedrock_body = json.dumps({"messages": BEDROCK_MESSAGES}).encode()
    cases = [
        ("/v1/chat/completions", "{}", {"Authorization": f"Bearer {OPENAI_KEY}"}),
        ("/v1/messages", "{}", {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}),
        (f"{GEMINI_PATH}:generateContent", GEMINI_BODY, {"x-goog-api-key": GEMINI_KEY}),
        # The region of a SigV4 request is its signature's.
        (
            bedrock_path,
            bedrock_body,
            sign(daemon.url + bedrock_path, bedrock_body, region="eu-west-3"),
        ),
        # A Bedrock API key names no region: the daemon's AWS_REGION does.
        (bedrock_path, bedrock_body, {"Authorization": f"Bearer {BEDROCK_API_KEY}"}),
    ]
    went = []
    for path, body, headers in cases:
        status, _, answer = post(daemon, path, body, headers)
        assert status == 502, answer
        error = error_of(answer)
        assert error["type"] == "stasis_upstream_unreachable", error
        went.append(error["upstream"])
    assert went == [
        "https://api.openai.com",
        "https://api.anthropic.com",
        "https://generativelanguage.googleapis.com",
        "https://bedrock-runtime.eu-west-3.amazonaws.com",
        "https://bedrock-runtime.ap-south-1.amazonaws.com",
    ]


# --- what is stored -------------------------------------------------------------------------


def test_token_usage_and_model_are_stored_per_provider(
    daemon: Daemon, fakes: dict[str, FakeUpstream]
) -> None:
    client = bedrock(daemon)
    client.converse(modelId=BEDROCK_MODEL, messages=BEDROCK_MESSAGES)
    client.invoke_model(modelId=BEDROCK_MODEL, body=INVOKE_BODY)
    # A Llama answer has no usage in its body: only the token count headers tell.
    client.invoke_model(modelId=LLAMA_MODEL, body=json.dumps({"prompt": "Hello"}).encode())
    post(daemon, f"{GEMINI_PATH}:generateContent", GEMINI_BODY, {"x-goog-api-key": GEMINI_KEY})
    openai.AzureOpenAI(
        azure_endpoint=daemon.url, api_key=AZURE_KEY, api_version=AZURE_API_VERSION, max_retries=0
    ).chat.completions.create(model=AZURE_DEPLOYMENT, messages=MESSAGES)  # type: ignore[arg-type]
    openai_client(daemon).responses.create(model="gpt-4o-mini", input="Hello")
    stored = [(e["provider"], e["model"], usage_of(e)) for e in wait_for_entries(daemon, 6)]
    assert sorted(stored) == sorted(
        [
            ("bedrock", BEDROCK_MODEL, tuple(BEDROCK_USAGE.values())),
            (
                "bedrock",
                BEDROCK_MODEL,
                (
                    INVOKE_INPUT_TOKENS,
                    INVOKE_OUTPUT_TOKENS,
                    INVOKE_INPUT_TOKENS + INVOKE_OUTPUT_TOKENS,
                ),
            ),
            (
                "bedrock",
                LLAMA_MODEL,
                (LLAMA_INPUT_TOKENS, LLAMA_OUTPUT_TOKENS, LLAMA_INPUT_TOKENS + LLAMA_OUTPUT_TOKENS),
            ),
            ("gemini", GEMINI_MODEL, (8, 5, GEMINI_USAGE["totalTokenCount"])),
            ("azure", AZURE_DEPLOYMENT, (11, 7, 18)),
            (
                "openai",
                "gpt-4o-mini",
                (
                    RESPONSES_USAGE["input_tokens"],
                    RESPONSES_USAGE["output_tokens"],
                    RESPONSES_USAGE["total_tokens"],
                ),
            ),
        ]
    )
    assert fakes["anthropic"].calls() == []
