"""
The engine's in-memory layers, one family: what is kept in memory in front of the store.

- :class:`HotEntries`: recently used answers by key, bounded by bytes, so a hit
  skips the database's thread hop;
- :class:`KeyFilter`: which keys the store certainly lacks, so a first-time
  request skips its lookup;
- :class:`RequestKeys`: the key a byte-identical request resolved to, so a
  repeat skips parsing and key derivation;
- and, in the web adapter, :class:`~stasis.web.prepared.PreparedHeads`: a hit's
  header bytes, encoded once per entry.

Each is bounded, each only ever makes stasis faster (dropping one changes no
answer), and each follows the store's change feed: a key another process
deleted is forgotten within a second, and nothing is emptied wholesale unless
the feed itself lost track.
"""

from stasis.cache.memory.hot_entries import HotEntries
from stasis.cache.memory.key_filter import KeyFilter
from stasis.cache.memory.request_keys import RequestKeys

__all__ = ["HotEntries", "KeyFilter", "RequestKeys"]
