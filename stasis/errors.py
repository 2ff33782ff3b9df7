"""
The errors stasis itself answers with, each a type the caller can act on.

Every one becomes a JSON body ``{"error": {"type": "stasis_…", "message": …}}``
with the HTTP status that fits, so an SDK surfaces the message instead of a
parse error, and a human reading it knows what to change.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

__all__ = [
    "AdminForbidden",
    "AdminUnauthorized",
    "AwsCredentialsMissing",
    "BadRequest",
    "BodyTooLarge",
    "InternalError",
    "MethodNotAllowed",
    "NotFound",
    "ReplayMiss",
    "RequestTimeout",
    "SignatureRejected",
    "SignatureUnverifiable",
    "StasisError",
    "StoreUnreadable",
    "UpstreamTimeout",
    "UpstreamUnreachable",
]


class StasisError(Exception):
    """A failure stasis reports to the client itself; subclasses fix status and type."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "stasis_error"
    #: Whether sending the same request again could succeed. When it cannot,
    #: the answer carries ``x-should-retry: false``, which the openai and
    #: anthropic SDKs obey instead of retrying twice with back-off.
    retryable: ClassVar[bool] = True
    #: What the access log line says of it, in a word (``replay-miss``): an
    #: operator reading ``504`` needs to know which 504.
    reason: ClassVar[str] = "stasis-error"
    #: Headers the answer carries besides the usual ones (``WWW-Authenticate``, ``Allow``).
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, message: str, *, log_reason: str | None = None, **details: Any) -> None:
        """
        ``log_reason``: :attr:`reason` made precise for the log line (``upstream
        refused http://host:1``); never sent to the client. It must hold no
        credential and no URL query.
        """
        super().__init__(message)
        self.message = message
        self.details = details
        self.log_reason = log_reason or self.reason

    def to_json(self) -> bytes:
        """
        The body: ``{"error": {...}}`` as the OpenAI and Anthropic SDKs read it,
        and the message again at the top level, where botocore (Bedrock) looks.
        """
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        error.update(self.details)
        return json.dumps({"error": error, "message": self.message}).encode("utf-8")


class BadRequest(StasisError):
    """The request cannot be served as sent: a bad stasis header, a missing Host."""

    reason = "bad-request"

    status = 400
    type = "stasis_bad_request"
    retryable = False


class BodyTooLarge(StasisError):
    status = 413
    type = "stasis_body_too_large"
    reason = "body-too-large"
    retryable = False


class RequestTimeout(StasisError):
    """
    The client did not send its whole request within ``--header-timeout`` or
    ``--body-timeout``. Retryable: a client that was merely slow once may be
    quick enough the next time.
    """

    reason = "request-timeout"

    status = 408
    type = "stasis_request_timeout"


class UpstreamUnreachable(StasisError):
    """No answer could be had: refused, reset, DNS failure, TLS failure."""

    reason = "upstream-unreachable"

    status = 502
    type = "stasis_upstream_unreachable"


class UpstreamTimeout(StasisError):
    status = 504
    type = "stasis_upstream_timeout"
    reason = "upstream-timeout"


class ReplayMiss(StasisError):
    """Replay mode forbids the upstream, and the cache has no answer."""

    reason = "replay-miss"

    status = 504
    type = "stasis_replay_miss"
    retryable = False


class SignatureRejected(StasisError):
    """A SigV4 (Bedrock) signature that the daemon's credentials cannot verify."""

    reason = "signature-rejected"

    status = 403
    type = "stasis_signature_rejected"
    retryable = False


class SignatureUnverifiable(SignatureRejected):
    """
    A SigV4 signature by an access key the daemon does not hold: it may be
    genuine, but stasis cannot tell, so it may read only the shared scope.
    """

    reason = "signature-unverifiable"


class AwsCredentialsMissing(StasisError):
    """The daemon has no AWS credentials to verify or re-sign with."""

    reason = "aws-credentials-missing"

    status = 502
    type = "stasis_aws_credentials_missing"
    retryable = False


class StoreUnreadable(StasisError):
    """The cache database cannot be read for ``/health`` or ``/stats``."""

    reason = "store-unavailable"

    status = 503
    type = "stasis_store_unavailable"


class InternalError(StasisError):
    status = 500
    type = "stasis_internal_error"
    reason = "internal-error"


class NotFound(StasisError):
    """A path of stasis's own (``/_stasis/…``) that names nothing, or an entry that is not there."""

    status = 404
    type = "stasis_not_found"
    reason = "not-found"
    retryable = False


class MethodNotAllowed(StasisError):
    """A method one of stasis's own paths does not answer (an ``OPTIONS`` preflight among them)."""

    status = 405
    type = "stasis_method_not_allowed"
    reason = "method-not-allowed"
    retryable = False

    def __init__(self, message: str, allowed: tuple[bytes, ...]) -> None:
        super().__init__(message)
        self.headers = ((b"allow", b", ".join(allowed)),)


class AdminForbidden(StasisError):
    """
    The admin API refuses this request whoever sends it: a cross-site or
    DNS-rebound request from a browser, a write that is not JSON, or a write on
    a listener open to the network without ``--admin-token``.
    """

    status = 403
    type = "stasis_admin_forbidden"
    reason = "admin-forbidden"
    retryable = False


class AdminUnauthorized(StasisError):
    """A write that needs ``Authorization: Bearer`` with the admin token, and lacks it."""

    status = 401
    type = "stasis_admin_unauthorized"
    reason = "admin-unauthorized"
    retryable = False
    headers = ((b"www-authenticate", b'Bearer realm="stasis"'),)
