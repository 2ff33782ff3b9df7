"""
A database URL from ``--db``, and what of it may be shown.

``--db postgresql://user:password@host:port/name?sslmode=require`` carries a
password that must never be shown: not in log lines, ``/stats``, or an error.
:attr:`DatabaseURL.location` is the URL without it, and
:meth:`DatabaseURL.scrub` takes it out of any text (a driver's error message
can quote the URL it could not parse).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from attrs import field, frozen

__all__ = ["HIDDEN", "DatabaseURL"]

#: What stands in for a password in scrubbed text.
HIDDEN = "***"
#: Shorter passwords are not scrubbed from messages: every such run of
#: characters in the text would go with them, and one is guessed faster than
#: it is read from a log. (They are never in :attr:`DatabaseURL.location`.)
_SCRUBBED_FROM = 4


def _is_secret(parameter: str) -> bool:
    # password, and sslpassword (the client key's passphrase)
    return "password" in parameter.partition("=")[0].lower()


@frozen
class DatabaseURL:
    """A database URL as given; its repr, like everything shown, leaves the password out."""

    text: str = field(repr=False)

    @property
    def scheme(self) -> str:
        return self.text.partition("://")[0].lower()

    @property
    def conninfo(self) -> str:
        """The URL as the driver takes it: libpq knows its schemes in lower case only."""
        scheme, separator, rest = self.text.partition("://")
        return f"{scheme.lower()}{separator}{rest}"

    @property
    def location(self) -> str:
        """The URL without its password (nor any ``password`` query parameter)."""
        scheme, _, rest = self.text.partition("://")
        rest = rest.partition("#")[0]
        rest, question, query = rest.partition("?")
        authority, slash, path = rest.partition("/")
        userinfo, at, hosts = authority.rpartition("@")
        user = userinfo.partition(":")[0]
        at = at if user else ""
        kept = "&".join(part for part in query.split("&") if part and not _is_secret(part))
        return f"{scheme}://{user}{at}{hosts}{slash}{path}{question if kept else ''}{kept}"

    def secrets(self) -> tuple[str, ...]:
        """The passwords in the URL, as written and percent-decoded."""
        found: list[str] = []
        try:
            password = urlsplit(self.text).password
        except ValueError:
            password = None
        if password is None:
            # A URL urlsplit cannot read (a port that is not a number, say) may still hold one.
            authority = self.text.partition("://")[2].partition("/")[0].partition("?")[0]
            userinfo = authority.rpartition("@")[0]
            if ":" in userinfo:
                password = userinfo.partition(":")[2]
        if password:
            found.append(password)
        query = self.text.partition("?")[2].partition("#")[0]
        found += [part.partition("=")[2] for part in query.split("&") if _is_secret(part)]
        return tuple(dict.fromkeys(s for raw in found for s in (raw, unquote(raw)) if s))

    def scrub(self, text: str) -> str:
        """``text`` with every password of the URL in it replaced by :data:`HIDDEN`."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            if len(secret) >= _SCRUBBED_FROM:
                text = text.replace(secret, HIDDEN)
        return text
