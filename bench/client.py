"""
One-off HTTP calls the harness makes between wrk runs: to warm, record and verify.

Blocking ``http.client`` is enough here: these calls are never timed, they
only establish facts (this request is a HIT, the answer has this size, the
daemon counted that many hits) that the timed runs rely on.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from attrs import frozen

__all__ = ["Answer", "get_json", "post"]


@frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def cache_status(self) -> str:
        return self.headers.get("x-stasis-status", "-")


def _connection(url: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.netloc, timeout=60), parts.path or "/"


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> Answer:
    connection, path = _connection(url)
    try:
        connection.request(
            "POST", path, body, {"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


def get_json(url: str) -> Any:
    connection, path = _connection(url)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()
