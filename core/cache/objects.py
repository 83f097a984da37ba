"""The cache's data model: keys, metadata, and the compact packet table.

Everything here is format-neutral. A cached clip is an :class:`ObjectMeta` (the session
description, tracks, validators) plus a packet table: one payload blob and three parallel
arrays (end offsets, send times, track indexes). Those four buffers are the whole per-packet
state, so a 60 000-packet clip costs four Python objects, not 60 000, and reading packet *i* is
two array lookups and a memoryview slice.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import msgspec

from mediacache.errors import MediacacheError

__all__ = [
    "CacheError",
    "CacheKey",
    "CacheLockedError",
    "CacheStats",
    "CachedObject",
    "DamagedObjectError",
    "ObjectInfo",
    "ObjectMeta",
    "Packet",
    "PacketTable",
    "TrackMeta",
    "first_index_at",
    "normalize_url",
]


class CacheError(MediacacheError):
    """A cache operation cannot be done: store closed, fill already active or finished."""


class DamagedObjectError(CacheError):
    """A stored object file fails a check (magic, version, lengths, checksum, metadata).

    The store never raises this to its callers: it drops the file and reports through
    ``on_damaged``. The disk codec raises it so that garbage input has exactly one outcome.
    """


class CacheLockedError(CacheError):
    """Another process owns the cache directory (it holds ``directory/lock``)."""

    def __init__(self, directory: object, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "another process (pid unknown)"
        super().__init__(f"cache directory {directory} is in use by {who}")
        self.directory = directory
        self.pid = pid


def normalize_url(url: str) -> str:
    """The form of an origin URL used in cache keys and URL pins.

    Credentials (``user:password@``) are removed so that they never reach file names, logs or
    listings, and so that two users of the same clip share one object. Scheme and host are
    case-insensitive and are lowered; the path and query are kept exactly.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # a bad IPv6 literal; never echo the URL: it may hold a password
        raise CacheError(f"invalid origin URL: {exc}") from None
    netloc = parts.netloc.rpartition("@")[2].lower()
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, parts.fragment))


_KEY_ENCODER = msgspec.msgpack.Encoder()


class CacheKey(msgspec.Struct, frozen=True):
    """One cache object's identity: format plugin name, origin URL, variant key.

    Build keys with :meth:`make`, which strips credentials from the URL; the plain
    constructor takes the URL as given (it is what decoding uses).
    """

    format: str
    url: str
    variant: str = ""

    @classmethod
    def make(cls, format: str, url: str, variant: str = "") -> CacheKey:
        """A key whose URL is normalized (credentials removed, scheme and host lowered)."""
        return cls(format, normalize_url(url), variant)

    @property
    def digest(self) -> str:
        """Stable 32-hex-digit name for files: blake2b-128 of the msgpack of the three fields."""
        data = _KEY_ENCODER.encode((self.format, self.url, self.variant))
        return hashlib.blake2b(data, digest_size=16).hexdigest()


class TrackMeta(msgspec.Struct, frozen=True):
    """One track (RTP stream, RDT stream, ASF stream) of a clip."""

    track_id: int
    control: str = ""
    clock_rate: int = 0
    codec: str = ""
    extra: dict[str, str] = msgspec.field(default_factory=dict)


class ObjectMeta(msgspec.Struct, frozen=True):
    """Everything about a cached object except its packets.

    ``size`` (payload bytes), ``packet_count`` and ``checksum`` (blake2b-256 hex of the packet
    section, see docs/cache.md) are set by the store at commit; a fill's values are provisional.
    """

    key: CacheKey
    description: bytes = b""
    tracks: list[TrackMeta] = msgspec.field(default_factory=list)
    validators: dict[str, str] = msgspec.field(default_factory=dict)
    duration: float | None = None
    created: float = 0.0
    format_data: dict[str, str] = msgspec.field(default_factory=dict)
    size: int = 0
    packet_count: int = 0
    checksum: str = ""


class ObjectInfo(msgspec.Struct, frozen=True):
    """One row of :meth:`CacheStore.list`: what an operator wants to see about an object."""

    key: CacheKey
    size: int
    hits: int
    last_use: float
    pinned: bool
    created: float
    on_disk: bool
    in_memory: bool


class CacheStats(msgspec.Struct, frozen=True):
    """Counters for metrics. Byte counts are what each tier charges against its limit."""

    objects: int
    memory_objects: int
    memory_bytes: int
    disk_objects: int
    disk_bytes: int
    pinned_objects: int
    fills: int
    fill_bytes: int
    hits: int
    misses: int
    memory_evictions: int
    disk_evictions: int
    damaged: int


class Packet(NamedTuple):
    """One stored packet: send it ``time`` seconds after the clip's start, on ``track``."""

    track: int
    time: float
    payload: bytes | memoryview


def first_index_at(times: Any, t: float) -> int:
    """Index of the first packet of the latest send time not after ``t`` (0 if none).

    Serving from that index sends every packet whose time is >= that send time, so a seek
    never skips a packet due at ``t``. ``times`` is any sorted sequence of floats.
    """
    if math.isnan(t):
        raise ValueError("seek time is NaN")
    last = bisect_right(times, t) - 1
    if last <= 0:
        return 0
    return bisect_left(times, times[last], 0, last)


class PacketTable:
    """Packets as four buffers: payload blob, end offsets (n+1), send times, track indexes.

    The buffers are ``array``s (fresh fill) or memoryviews cast over an mmap (loaded from
    disk); both index in O(1) without creating per-packet objects until a packet is read.
    """

    __slots__ = ("_count", "_owner", "blob", "offsets", "times", "tracks")

    def __init__(
        self,
        blob: memoryview,
        offsets: array[int] | memoryview,
        times: array[float] | memoryview,
        tracks: array[int] | memoryview,
        owner: object = None,
    ) -> None:
        self.blob = blob
        self.offsets = offsets
        self.times = times
        self.tracks = tracks
        self._count = len(times)
        # The mmap (or bytearray) the views point into: kept alive while the table lives.
        self._owner = owner

    def __len__(self) -> int:
        return self._count

    def packet(self, i: int) -> Packet:
        """Packet ``i``; the payload is a read-only memoryview into the blob (no copy)."""
        if not 0 <= i < self._count:
            raise IndexError(f"packet index {i} out of range 0..{self._count - 1}")
        offsets = self.offsets
        return Packet(self.tracks[i], self.times[i], self.blob[offsets[i] : offsets[i + 1]])


class CachedObject:
    """A committed, immutable cache object as handed to servers.

    An object stays valid for whoever holds it even after it is evicted or purged: eviction
    only drops the store's reference (the memory or mapping goes when the last holder does).
    """

    __slots__ = ("_table", "meta")

    def __init__(self, meta: ObjectMeta, table: PacketTable) -> None:
        self.meta = meta
        self._table = table

    @property
    def key(self) -> CacheKey:
        return self.meta.key

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"<CachedObject {self.meta.key!r} packets={len(self)} size={self.meta.size}>"

    def packet(self, i: int) -> Packet:
        """Packet ``i`` in O(1); the payload is a read-only memoryview."""
        return self._table.packet(i)

    def time(self, i: int) -> float:
        """Send time of packet ``i``, without slicing its payload (for pacing loops)."""
        if not 0 <= i < len(self._table):
            raise IndexError(f"packet index {i} out of range")
        return self._table.times[i]

    def first_index_at(self, t: float) -> int:
        """Where to start serving for a seek to ``t`` (see :func:`first_index_at`)."""
        return first_index_at(self._table.times, t)

    def iter_from(self, i: int = 0) -> Iterator[Packet]:
        """Packets ``i``, ``i+1``, ... to the end."""
        packet = self._table.packet
        for j in range(max(i, 0), len(self._table)):
            yield packet(j)
