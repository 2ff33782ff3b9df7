"""
The cache engine: everything stasis decides and does with a request, apart
from any web server; and the in-memory layers it keeps in front of the store.
"""

from stasis.cache.answers import Answer, Failed, Live, Stored
from stasis.cache.counters import Counters
from stasis.cache.engine import CacheEngine, CacheRequest

__all__ = ["Answer", "CacheEngine", "CacheRequest", "Counters", "Failed", "Live", "Stored"]
