"""
Azure OpenAI: OpenAI's wire format under ``/openai/deployments/{deployment}/``
(or ``/openai/v1/``) on a resource of the user's own, so it has no public
upstream: ``--upstream azure=https://RESOURCE.openai.azure.com`` names it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from stasis.providers._base import Provider, RequestView, body_model
from stasis.providers.openai import (
    OPENAI_CACHEABLE,
    openai_stream_done,
    openai_stream_text,
    openai_stream_usage,
    openai_usage,
)

__all__ = ["AZURE"]

_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/")


def _recognise(request: RequestView) -> bool:
    return request.path.startswith("/openai/")


def _model(path: str, document: Any) -> str | None:
    match = _DEPLOYMENT.search(path)
    return unquote(match.group(1)) if match else body_model(path, document)


AZURE = Provider(
    name="azure",
    public_upstream=lambda request: None,
    cacheable=OPENAI_CACHEABLE,
    recognise=_recognise,
    usage=openai_usage,
    model=_model,
    stream_done=openai_stream_done,
    stream_usage=openai_stream_usage,
    stream_text=openai_stream_text,
    routing_hint="Azure OpenAI has no public endpoint: start stasis with "
    "--upstream azure=https://YOUR-RESOURCE.openai.azure.com",
)
