"""
Who may use the admin API: the rules of docs/admin-api.md, *Who may use it*.

A cache of API answers is private, and a browser is the danger: any page the
user opens may send requests to ``127.0.0.1:4000``. So a read is answered only
when its ``Host`` names the daemon (a page on a rebound domain,
``evil.example`` resolving to 127.0.0.1, sends ``Host: evil.example``) and the
browser does not mark it cross-site (``Sec-Fetch-Site``, ``Origin``). A write
also needs a non-GET method, a JSON body (a cross-site ``<form>`` can send
neither without a CORS preflight, which is never granted), and a client on
this machine or the admin token. A listener open to the network makes every
"local" client possibly a reverse proxy's, so there writes need a token the
operator chose.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets

from attrs import define, field
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.web.server import Request

from stasis.errors import AdminForbidden, AdminUnauthorized, StasisError
from stasis.web.site import OWN_METHODS

__all__ = ["AdminAccess", "is_loopback", "new_token"]

_FIX = (
    "start stasis with --admin-token TOKEN (or $STASIS_ADMIN_TOKEN) and send "
    "'Authorization: Bearer TOKEN'"
)


def new_token() -> str:
    """A token for a daemon started without ``--admin-token``: 256 random bits."""
    return secrets.token_urlsafe(32)


def _loopback_ip(text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def is_loopback(address: IAddress | None) -> bool:
    """
    Whether ``address`` (a listener's or a peer's) is this machine only:
    127.0.0.0/8, ``::1`` (or IPv4-mapped loopback), or a unix socket.
    """
    if isinstance(address, UNIXAddress):
        return True
    if isinstance(address, IPv4Address | IPv6Address):
        return _loopback_ip(address.host)
    return False


def _host_name(host: str) -> str:
    """The name part of a ``Host`` value (``[::1]:4000`` -> ``::1``), lower-case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        host = name
    return host.rstrip(".")


def _media_type(value: bytes | None) -> str:
    return (value or b"").split(b";", 1)[0].strip().lower().decode("latin-1")


@define
class AdminAccess:
    """
    One service's admin access rules; :meth:`refusal` applies them to a request.

    ``token`` is the token a ``Bearer`` must match: ``--admin-token``'s when
    ``given``, else one made at start (see :meth:`announced`). Until
    :meth:`listening_on` says where the service listens, it counts as open to
    the network: writes need the given token.
    """

    token: str = field(repr=False)
    given: bool = False
    #: Whether every address the service listens on is loopback (or a unix socket).
    loopback: bool = False
    #: The addresses it listens on, as a ``Host`` header names them.
    _hosts: set[str] = field(factory=set)
    _listening: bool = False

    def listening_on(self, address: IAddress) -> None:
        """
        Note the address of a bound port: the real one, so that a socket
        systemd passed, or ``tcp:0``, is judged by where it listens.
        """
        self.loopback = is_loopback(address) and (self.loopback or not self._listening)
        self._listening = True
        if isinstance(address, IPv4Address | IPv6Address):
            self._hosts.add(address.host.lower())

    def announced(self) -> str | None:
        """The token to print at start: one made up, on a loopback listener; else None."""
        return self.token if self.loopback and not self.given else None

    def refusal(self, request: Request, page: bool = False) -> StasisError | None:
        """
        Why ``request`` may not be answered, or None when it may.

        A ``page`` (the UI's, not the API's) may also be opened by a link on
        another site: a top-level navigation shows that site nothing, and the
        page's own requests for data are same-origin.
        """
        refused = self._read_refusal(request, page and self._navigation(request))
        if refused is not None or request.method in OWN_METHODS:
            return refused
        return self._write_refusal(request)

    def _header(self, request: Request, name: bytes) -> bytes | None:
        value = request.getHeader(name)
        return value if isinstance(value, bytes) else None

    def _host_allowed(self, request: Request, name: str) -> bool:
        if name == "localhost" or name.endswith(".localhost") or _loopback_ip(name):
            return True
        if name in self._hosts:
            return True
        # The address the client connected to, named as an IP literal (a
        # listener on 0.0.0.0 reached at 192.0.2.10): a browser page sending
        # that Host is on that address's origin, not on a rebound name.
        local = request.getHost()
        return isinstance(local, IPv4Address | IPv6Address) and name == local.host.lower()

    def _navigation(self, request: Request) -> bool:
        """A browser's top-level navigation (a link followed, an address typed) with GET or HEAD."""
        return (
            request.method in OWN_METHODS
            and (self._header(request, b"sec-fetch-mode") or b"").lower() == b"navigate"
            and (self._header(request, b"sec-fetch-dest") or b"").lower() == b"document"
        )

    def _read_refusal(self, request: Request, navigation: bool = False) -> StasisError | None:
        host = self._header(request, b"host")
        if host is None:
            return AdminForbidden("the admin API needs a Host header")
        host_text = host.decode("latin-1")
        if not self._host_allowed(request, _host_name(host_text)):
            return AdminForbidden(
                f"the Host {host_text!r} does not name this daemon: use 127.0.0.1, "
                "localhost or the address it listens on"
            )
        if navigation:
            return None
        site = (self._header(request, b"sec-fetch-site") or b"").lower()
        if site in (b"cross-site", b"same-site"):
            return AdminForbidden("the admin API does not answer another site's pages")
        origin = self._header(request, b"origin")
        if origin is not None:
            scheme = "https" if request.isSecure() else "http"
            if origin.decode("latin-1").lower() != f"{scheme}://{host_text.strip().lower()}":
                return AdminForbidden("the admin API does not answer another origin's pages")
        return None

    def _write_refusal(self, request: Request) -> StasisError | None:
        if not self.given and not self.loopback:
            return AdminForbidden(
                "stasis listens on a non-loopback address without --admin-token, so the "
                f"admin API refuses every change; {_FIX}"
            )
        if self._has_body(request):
            content_type = _media_type(self._header(request, b"content-type"))
            if content_type != "application/json":
                return AdminForbidden(
                    "a change to the cache needs a JSON body "
                    f"(Content-Type: application/json), not {content_type or 'none'}"
                )
        authorization = self._header(request, b"authorization")
        if authorization is not None:
            if self._token_matches(authorization):
                return None
            return self._unauthorized("the admin token is wrong")
        if is_loopback(request.getClientAddress()):
            return None
        return self._unauthorized("a change from another machine needs the admin token")

    def _has_body(self, request: Request) -> bool:
        length = self._header(request, b"content-length")
        return (
            request.method == b"POST"
            or self._header(request, b"transfer-encoding") is not None
            or (length is not None and length.strip() not in (b"", b"0"))
        )

    def _token_matches(self, authorization: bytes) -> bool:
        scheme, _, credential = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        # Constant time: how much of a guess was right must not show in the timing.
        return hmac.compare_digest(credential.strip(), self.token.encode("utf-8"))

    def _unauthorized(self, why: str) -> AdminUnauthorized:
        where = "--admin-token" if self.given else "--admin-token, or the token printed at start"
        return AdminUnauthorized(f"{why}: send 'Authorization: Bearer TOKEN' with {where}")
