"""
Reading an AWS Signature Version 4 ``Authorization`` header (pure, no I/O).

The cache key needs who signed (the access key ID and region of the
credential scope), never the signature, date or session token, which change
with every call. Verifying and re-signing live in :mod:`stasis.upstream.aws`.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen

__all__ = ["ALGORITHM", "SigV4Authorization", "parse_authorization", "sigv4_of"]

ALGORITHM = "AWS4-HMAC-SHA256"


@frozen
class SigV4Authorization:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> SigV4Authorization | None:
    """The parts of a SigV4 ``Authorization`` value, or None if it is not one."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, _, field_value = part.strip().partition("=")
        fields[name] = field_value
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not fields.get("Signature"):
        return None
    access_key, date, region, service, _ = scope
    return SigV4Authorization(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=tuple(fields.get("SignedHeaders", "").split(";")),
        signature=fields["Signature"],
    )


def sigv4_of(headers: Mapping[str, str]) -> SigV4Authorization | None:
    """The SigV4 authorization of a request (lower-case header names), if signed so."""
    return parse_authorization(headers.get("authorization", ""))
