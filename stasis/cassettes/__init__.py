"""
Cassettes: the cache as files to commit, so that CI replays what a developer recorded.

``export_cassette`` writes a store's entries as JSON documents (a directory of
one file per entry, or JSON Lines), deterministic, readable in a diff, without
any credential, fingerprint or account-identifying header; ``import_cassette``
reads them back into a store's shared credential scope, all or nothing, so a
recording made with one API key replays with any key or none. The CLI's
``export``/``import`` commands and the pytest plugin call these; the format is
described in docs/cassettes.md.

Importing this package loads no database driver, web server or botocore.
"""

from __future__ import annotations

from stasis.cassettes._document import entry_document, entry_from_document
from stasis.cassettes._format import FORMAT_VERSION, CassetteError
from stasis.cassettes._transfer import Progress, export_cassette, import_cassette

__all__ = [
    "FORMAT_VERSION",
    "CassetteError",
    "Progress",
    "entry_document",
    "entry_from_document",
    "export_cassette",
    "import_cassette",
]
