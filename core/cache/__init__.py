"""The format-neutral cache object store (pure storage: no asyncio, no sockets, no protocols).

One object per (format, origin URL, variant): a session description, track metadata,
validators, and each track's packets with the time to send them. See docs/cache.md.
"""

from __future__ import annotations

from mediacache.cache.objects import (
    CachedObject,
    CacheError,
    CacheKey,
    CacheLockedError,
    CacheStats,
    DamagedObjectError,
    ObjectInfo,
    ObjectMeta,
    Packet,
    TrackMeta,
    first_index_at,
    normalize_url,
)
from mediacache.cache.store import CacheStore, Fill, FillState

__all__ = [
    "CacheError",
    "CacheKey",
    "CacheLockedError",
    "CacheStats",
    "CacheStore",
    "CachedObject",
    "DamagedObjectError",
    "Fill",
    "FillState",
    "ObjectInfo",
    "ObjectMeta",
    "Packet",
    "TrackMeta",
    "first_index_at",
    "normalize_url",
]
