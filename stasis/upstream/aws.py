"""
SigV4 for Bedrock: verifying what a client signed, and re-signing it for the real host.

A client pointed at the proxy signs for the proxy's host, which AWS rejects;
so every forwarded request is signed again, with botocore's signer and the
daemon's own credentials (the standard chain: environment, shared config and
profiles, SSO), for the host it is really sent to. The access key ID in a
signature is no secret, so before anything is served or forwarded the
client's signature is checked with those same credentials: only a client that
holds the secret key may read what was cached under that key.

botocore comes with the ``stasis[bedrock]`` extra.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from attrs import define, field
from twisted.internet.threads import deferToThread

from stasis.errors import AwsCredentialsMissing, SignatureRejected, SignatureUnverifiable
from stasis.headers import Pairs
from stasis.sigv4 import SigV4Authorization

__all__ = ["AwsSigner"]

#: AWS refuses signatures more than this far from its clock; so does stasis.
MAX_SKEW_SECONDS = 15 * 60

#: Headers the re-signed request must not carry over from the client's signature.
_SIGNATURE_HEADERS = frozenset(
    {b"authorization", b"x-amz-date", b"x-amz-security-token", b"x-amz-content-sha256"}
)


_resolved: list[Any] = []


def _load_credentials() -> Any:
    """
    The daemon's credentials from botocore's chain, frozen; blocking (runs in a thread).

    The chain is resolved once; botocore's refreshable credentials (SSO, assumed
    roles) then refresh themselves inside ``get_frozen_credentials``.
    """
    try:
        import botocore.session
    except ImportError:
        raise AwsCredentialsMissing(
            "Bedrock requests need botocore: pip install 'stasis[bedrock]'"
        ) from None
    try:
        if not _resolved:
            credentials = botocore.session.get_session().get_credentials()
            if credentials is not None:
                _resolved.append(credentials)
        frozen = _resolved[0].get_frozen_credentials() if _resolved else None
    except Exception as e:  # botocore raises many kinds (SSO token expired, bad profile, …)
        _resolved.clear()
        raise AwsCredentialsMissing(f"cannot load stasis's AWS credentials: {e}") from e
    if frozen is None or not frozen.access_key:
        raise AwsCredentialsMissing(
            "stasis has no AWS credentials to verify and re-sign Bedrock requests with: "
            "give the daemon AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an SSO login"
        )
    return frozen


def _signer(credentials: Any, region: str, service: str) -> Any:
    from botocore.auth import SigV4Auth

    return SigV4Auth(credentials, service, region)


@define
class AwsSigner:
    """
    Verifies and re-signs SigV4 requests with the daemon's credentials.

    ``load`` is injectable for tests; credentials are loaded (in a thread,
    since the chain may read files or call SSO) on each use, so rotated or
    refreshed credentials are picked up.
    """

    load: Callable[[], Any] = _load_credentials
    now: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))

    async def credentials(self) -> Any:
        return await deferToThread(self.load)

    async def verify(
        self,
        signed: SigV4Authorization,
        method: str,
        host: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        """
        Raise :class:`SignatureRejected` unless ``signed`` is a valid signature
        of this request by the holder of the daemon's secret key.
        """
        credentials = await self.credentials()
        fix = (
            "sign requests with the same AWS credentials stasis runs with, or use a "
            "Bedrock API key (AWS_BEARER_TOKEN_BEDROCK)"
        )
        if not hmac.compare_digest(signed.access_key, credentials.access_key):
            raise SignatureUnverifiable(
                f"the request is signed with access key {signed.access_key}, but stasis holds "
                f"{credentials.access_key} and cannot verify it; {fix}"
            )
        timestamp = headers.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise SignatureRejected("the signed request has no valid X-Amz-Date") from None
        if abs((self.now() - signed_at).total_seconds()) > MAX_SKEW_SECONDS:
            raise SignatureRejected(
                f"the request was signed at {timestamp}, more than 15 minutes from now"
            )
        declared = headers.get("x-amz-content-sha256")
        if declared is not None and declared != hashlib.sha256(body).hexdigest():
            raise SignatureRejected("X-Amz-Content-SHA256 does not match the request body")
        missing = [name for name in signed.signed_headers if name != "host" and name not in headers]
        if missing:
            raise SignatureRejected(f"signed headers are missing: {', '.join(missing)}")

        from botocore.awsrequest import AWSRequest

        request = AWSRequest(
            method=method,
            url=f"http://{host}{target}",
            headers={
                name: (host if name == "host" else headers[name]) for name in signed.signed_headers
            },
            data=body,
        )
        request.context["timestamp"] = timestamp
        signer = _signer(credentials, signed.region, signed.service)
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        if not hmac.compare_digest(expected, signed.signature):
            raise SignatureRejected(
                f"the request's signature does not verify with stasis's credentials; {fix}"
            )

    async def sign(
        self, signed: SigV4Authorization, method: str, url: str, headers: Pairs, body: bytes
    ) -> list[tuple[bytes, bytes]]:
        """``headers`` for ``url``, with the client's signature replaced by a fresh one."""
        credentials = await self.credentials()
        from botocore.awsrequest import AWSRequest

        wanted = {name.encode() for name in signed.signed_headers} - _SIGNATURE_HEADERS
        wanted.discard(b"host")
        kept: list[tuple[bytes, bytes]] = []
        to_sign: dict[str, list[bytes]] = {}
        for name, value in headers:
            lower = name.lower()
            if lower in _SIGNATURE_HEADERS:
                continue
            kept.append((name, value))
            if lower in wanted:
                to_sign.setdefault(lower.decode("latin-1"), []).append(value)
        request = AWSRequest(
            method=method,
            url=url,
            headers={name: b",".join(values).decode("latin-1") for name, values in to_sign.items()},
            data=body,
        )
        _signer(credentials, signed.region, signed.service).add_auth(request)
        for added in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if added in request.headers:
                kept.append((added.encode(), request.headers[added].encode("latin-1")))
        return kept
