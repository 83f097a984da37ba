"""The cache as the sessions see it: the store plus who is reading which fill."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mediacache.cache.objects import CacheKey
from mediacache.cache.store import CacheStore
from mediacache.config import CacheConfig


@dataclass
class CacheService:
    """Shared by every session of the process (one event loop, so no locking)."""

    store: CacheStore
    settings: CacheConfig = field(default_factory=CacheConfig)
    readers: Counter[CacheKey] = field(default_factory=Counter)
    """Clients currently served from the fill in progress (or object) of each key."""

    def join(self, key: CacheKey) -> None:
        self.readers[key] += 1

    def leave(self, key: CacheKey) -> None:
        self.readers[key] -= 1
        if self.readers[key] <= 0:
            del self.readers[key]
