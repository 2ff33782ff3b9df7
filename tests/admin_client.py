"""
Plain HTTP to a daemon's admin API, with every header under the test's control
(``Host`` and ``Origin`` included, which urllib would set itself).
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from attrs import frozen

from tests.daemon import Daemon

__all__ = ["Answer", "call", "chat"]

#: The credential every chat below is sent with: it must show nowhere in the API.
KEY = "sk-proj-Adm1nApiN0tStor3dAnywh3re"


@frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def call(
    daemon: Daemon,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    connect_to: str = "127.0.0.1",
) -> Answer:
    """One request to ``daemon`` (reached at ``connect_to``), headers exactly as given."""
    port = urlsplit(daemon.url).port
    connection = http.client.HTTPConnection(connect_to, port, timeout=30)
    try:
        given = {"Host": f"{connect_to}:{port}", **(headers or {})}
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in given.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


def chat(
    daemon: Daemon,
    content: str,
    model: str = "gpt-4o-mini",
    namespace: str | None = None,
    mode: str | None = None,
) -> Answer:
    """A chat completion through the proxy, with a credential."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]})
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    if namespace is not None:
        headers["X-Stasis-Namespace"] = namespace
    if mode is not None:
        headers["X-Stasis-Mode"] = mode
    return call(daemon, "POST", "/v1/chat/completions", body.encode(), headers)
