"""The cache object store: fills, two tiers (memory, disk), pins, eviction, persistence.

Theory of operation
-------------------
An object is born in a :class:`Fill`, which appends packets to one bytearray and three arrays.
Nothing of a fill is visible to :meth:`CacheStore.get` or written to disk until
:meth:`Fill.commit`; a fill that is aborted, or dropped by its owner and garbage-collected (the
store holds fills weakly), leaves nothing behind. While it grows, a fill is readable by joiners
through :meth:`CacheStore.get_fill`.

``commit`` turns the buffers into a :class:`PacketTable` without copying them, hashes them once
(blake2b; the digest is the metadata's checksum), writes the file atomically (see ``disk``) and
puts the object in the memory tier. Each tier is an LRU over one ordered dict of entries (oldest
use first); eviction walks it from the front, skipping pinned objects and objects not in that
tier. Evicting from memory keeps the file; evicting from disk deletes the file and keeps the
memory copy, if any. An entry in neither tier is forgotten.

``get`` of an object that is only on disk maps its file (mmap) and verifies the checksum before
serving it; a damaged file is deleted, reported to ``on_damaged`` and the call is a miss.

The set of objects on disk is the set of ``objects/*.mco`` files: a restart rebuilds it by
scanning headers. Hit counts, last-use times and pins live in ``state.msgpack``, rewritten
atomically: at once for pins, at most every ``state_interval`` seconds otherwise, and on close.

The store is synchronous and not thread-safe: one thread (the event loop) calls it. With a
:class:`DiskWriter` (the server gives one), the slow half of a commit (hashing, writing and
fsyncing a file of tens of MB: about 3 ms per MB here) runs on the writer's one thread instead:
the object is servable from memory at once, its bytes are reserved on the disk tier, and the
file counts as on disk when the write is done (back on the loop thread). Every change to object
files then goes through that thread, in order: a purge or eviction during a pending write
queues an unlink behind it, and the write's late result is ignored (each write carries the
entry's generation). ``close`` waits for the writer.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import time
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from mediacache.cache import disk
from mediacache.cache.objects import (
    CachedObject,
    CacheError,
    CacheKey,
    CacheStats,
    DamagedObjectError,
    ObjectInfo,
    ObjectMeta,
    Packet,
    PacketTable,
    TrackMeta,
    first_index_at,
    normalize_url,
)

__all__ = ["CacheStore", "DiskWriter", "Fill", "FillState"]

FillState = Literal["filling", "committed", "aborted"]
Reporter = Callable[[CacheKey | None, str], None]

STATE_FILE = "state.msgpack"
OBJECTS_DIR = "objects"
_STATE_VERSION = 1


class _EntryState(msgspec.Struct):
    hits: int = 0
    last_use: float = 0.0


class _StoreState(msgspec.Struct):
    """What ``state.msgpack`` holds: per-object use counters (by key digest) and pins."""

    version: int = _STATE_VERSION
    objects: dict[str, _EntryState] = msgspec.field(default_factory=dict)
    pin_keys: list[CacheKey] = msgspec.field(default_factory=list)
    pin_urls: list[str] = msgspec.field(default_factory=list)


_STATE_DECODER = msgspec.msgpack.Decoder(_StoreState)


@dataclass(slots=True, eq=False)
class _Entry:
    """A stored object and where it lives: ``obj`` set = in memory, ``file_size`` set = on disk."""

    key: CacheKey
    meta: ObjectMeta
    hits: int = 0
    last_use: float = 0.0
    obj: CachedObject | None = None
    file_size: int | None = None
    writing: int | None = None
    """Disk bytes reserved for a file the :class:`DiskWriter` is writing."""
    generation: int = 0
    """Bumped whenever a pending write stops being wanted (its result is then ignored)."""


class DiskWriter:
    """One thread that writes object files in order; each result is handed back with
    ``deliver(callback, future)`` (the server's ``loop.call_soon_threadsafe``)."""

    def __init__(
        self, deliver: Callable[[Callable[[Future[object]], None], Future[object]], None]
    ) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mediacache-disk")
        self._deliver = deliver
        self.pending: dict[Future[object], Callable[[Future[object]], None]] = {}

    def submit(
        self, job: Callable[[], object], done: Callable[[Future[object]], None] | None = None
    ) -> None:
        future = self._pool.submit(job)
        if done is not None:
            self.pending[future] = done
            future.add_done_callback(self._hand_back)

    def _hand_back(self, future: Future[object]) -> None:
        try:
            self._deliver(self._finish, future)
        except RuntimeError:  # the loop is gone: drain() applies it
            return

    def _finish(self, future: Future[object]) -> None:
        done = self.pending.pop(future, None)
        if done is not None:
            done(future)

    def drain(self) -> None:
        """Wait for every queued job; apply the results not yet delivered (at close)."""
        self._pool.shutdown(wait=True)
        for future in builtins.list(self.pending):
            self._finish(future)


class Fill:
    """An object being written. Only :meth:`commit` makes it servable.

    Joiners read it while it grows: ``packet_count`` only increases, ``packet(i)`` is valid for
    ``i < packet_count``, and callbacks registered with :meth:`subscribe` run after every
    change (packet added, metadata set, commit, abort). An asyncio server typically subscribes
    ``event.set`` and awaits the event, then reads up to ``packet_count``.
    """

    __slots__ = (
        "__weakref__",
        "_abort_reason",
        "_blob",
        "_hits",
        "_last_t",
        "_meta",
        "_offsets",
        "_result",
        "_state",
        "_store",
        "_subscribers",
        "_times",
        "_tracks",
        "version",
    )

    def __init__(self, store: CacheStore, meta: ObjectMeta) -> None:
        self._store = store
        self._meta = meta
        self._blob = bytearray()
        self._offsets = array("Q", [0])
        self._times = array("d")
        self._tracks = array("H")
        self._last_t = 0.0
        self._state: FillState = "filling"
        self._abort_reason: str | None = None
        self._result: CachedObject | None = None
        self._hits = 0  # clients that read this fill: hits of the object it becomes
        self._subscribers: list[Callable[[Fill], None]] = []
        #: Increases on every change; a poller compares it with the value it last saw.
        self.version = 0

    def __repr__(self) -> str:
        return f"<Fill {self.key!r} {self._state} packets={self.packet_count}>"

    @property
    def key(self) -> CacheKey:
        return self._meta.key

    @property
    def state(self) -> FillState:
        return self._state

    @property
    def done(self) -> bool:
        """True once committed or aborted: no more packets will come."""
        return self._state != "filling"

    @property
    def abort_reason(self) -> str | None:
        return self._abort_reason

    @property
    def result(self) -> CachedObject | None:
        """The committed object, once :meth:`commit` has run."""
        return self._result

    @property
    def packet_count(self) -> int:
        if self._result is not None:
            return len(self._result)
        return len(self._times)

    @property
    def size(self) -> int:
        """Payload bytes so far."""
        if self._result is not None:
            return self._result.meta.size
        return len(self._blob)

    @property
    def meta(self) -> ObjectMeta:
        """Metadata as it stands (size and packet count so far; no checksum until commit)."""
        if self._result is not None:
            return self._result.meta
        return msgspec.structs.replace(
            self._meta, size=len(self._blob), packet_count=len(self._times)
        )

    def add_packet(self, track: int, t: float, payload: bytes | bytearray | memoryview) -> None:
        """Append one packet: send it ``t`` seconds after the clip's start on track ``track``.

        Packets are served in the order added, so a ``t`` smaller than the previous packet's
        (or negative, for the first) is raised to it: that is when it would be sent anyway,
        and it keeps the times sorted for seeking. ``track`` must fit 0..65535.
        """
        if self._state != "filling":
            raise CacheError(f"fill for {self._meta.key} is {self._state}")
        if not t >= self._last_t:
            if t != t:
                raise ValueError("packet time is NaN")
            t = self._last_t
        self._tracks.append(track)  # validates the track index before anything else changes
        blob = self._blob
        try:
            blob += payload
        except BaseException:
            self._tracks.pop()
            raise
        self._offsets.append(len(blob))
        self._times.append(t)
        self._last_t = t
        self.version += 1
        if self._subscribers:
            self._notify()

    def set_meta(
        self,
        *,
        description: bytes | msgspec.UnsetType = msgspec.UNSET,
        tracks: list[TrackMeta] | msgspec.UnsetType = msgspec.UNSET,
        validators: dict[str, str] | msgspec.UnsetType = msgspec.UNSET,
        duration: float | msgspec.UnsetType | None = msgspec.UNSET,
        format_data: dict[str, str] | msgspec.UnsetType = msgspec.UNSET,
    ) -> None:
        """Replace the given metadata fields (origin answers may arrive after packets start)."""
        if self._state != "filling":
            raise CacheError(f"fill for {self._meta.key} is {self._state}")
        changes = {
            name: value
            for name, value in (
                ("description", description),
                ("tracks", tracks),
                ("validators", validators),
                ("duration", duration),
                ("format_data", format_data),
            )
            if value is not msgspec.UNSET
        }
        if "description" in changes:
            changes["description"] = bytes(changes["description"])
        if "tracks" in changes:
            changes["tracks"] = list(changes["tracks"])
        self._meta = msgspec.structs.replace(self._meta, **changes)
        self.version += 1
        if self._subscribers:
            self._notify()

    def packet(self, i: int) -> Packet:
        """Packet ``i`` (``i < packet_count``).

        While filling, the payload is a ``bytes`` copy: a view would pin the growing buffer.
        After commit it is a memoryview of the committed object.
        """
        if self._result is not None:
            return self._result.packet(i)
        if self._state == "aborted":
            raise CacheError(f"fill for {self._meta.key} was aborted: {self._abort_reason}")
        if not 0 <= i < len(self._times):
            raise IndexError(f"packet index {i} out of range")
        start, end = self._offsets[i], self._offsets[i + 1]
        payload = memoryview(self._blob)[start:end].tobytes()
        return Packet(self._tracks[i], self._times[i], payload)

    def first_index_at(self, t: float) -> int:
        """Seek within what has arrived so far (see :func:`mediacache.cache.first_index_at`)."""
        if self._result is not None:
            return self._result.first_index_at(t)
        return first_index_at(self._times, t)

    def subscribe(self, callback: Callable[[Fill], None]) -> Callable[[], None]:
        """Call ``callback(fill)`` after every change; returns a function that unsubscribes.

        Callbacks run inside ``add_packet`` and must be quick (set an event). One that raises
        is unsubscribed and reported to the store's ``on_error``.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def commit(self) -> CachedObject:
        """Seal the fill: the object becomes servable (and is written to disk) now."""
        if self._state != "filling":
            raise CacheError(f"fill for {self._meta.key} is {self._state}")
        return self._store._commit(self)

    def abort(self, reason: str = "aborted") -> bool:
        """Drop everything written; joiners see ``state == "aborted"``. False if already done."""
        if self._state != "filling":
            return False
        self._store._forget_fill(self)
        self._state = "aborted"
        self._abort_reason = reason
        self._release_buffers()
        self.version += 1
        self._notify()
        return True

    # -- used by the store ------------------------------------------------------------------

    def _table(self) -> PacketTable:
        return PacketTable(
            memoryview(self._blob).toreadonly(),
            self._offsets,
            self._times,
            self._tracks,
            owner=self._blob,
        )

    def _finish(self, result: CachedObject) -> None:
        self._state = "committed"
        self._result = result
        self._release_buffers()
        self.version += 1
        self._notify()

    def _release_buffers(self) -> None:
        self._blob = bytearray()
        self._offsets = array("Q", [0])
        self._times = array("d")
        self._tracks = array("H")

    def _notify(self) -> None:
        for callback in tuple(self._subscribers):
            try:
                callback(self)
            except Exception as exc:
                with contextlib.suppress(ValueError):
                    self._subscribers.remove(callback)
                self._store._report_error(
                    self._meta.key, f"fill subscriber {callback!r} raised {exc!r}; unsubscribed"
                )


class CacheStore:
    """Format-neutral object store with a memory tier and an optional disk tier.

    ``directory`` None keeps objects in memory only. ``memory_limit`` counts payload bytes of
    objects held in memory; ``disk_limit`` counts object file bytes. Pinned objects are never
    evicted, so a tier may exceed its limit when what remains is pinned.

    ``on_damaged(key, reason)`` is called when a stored file is dropped as damaged (``key`` is
    None when the file was too broken to name it); ``on_error(key, message)`` when something
    failed that the store worked around (an object could not be written and stays in memory
    only; a state file could not be saved; a fill subscriber raised). Neither is called with
    the store in an inconsistent state, and neither should raise.
    """

    def __init__(
        self,
        directory: Path | str | None,
        *,
        memory_limit: int,
        disk_limit: int,
        clock: Callable[[], float] = time.time,
        on_damaged: Reporter | None = None,
        on_error: Reporter | None = None,
        state_interval: float = 10.0,
        writer: DiskWriter | None = None,
    ) -> None:
        self._clock = clock
        self._writer = writer
        self._on_damaged = on_damaged
        self._on_error = on_error
        self._memory_limit = memory_limit
        self._disk_limit = disk_limit
        self._state_interval = state_interval
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()  # oldest use first
        self._fills: weakref.WeakValueDictionary[CacheKey, Fill] = weakref.WeakValueDictionary()
        self._pin_keys: set[CacheKey] = set()
        self._pin_urls: set[str] = set()
        self._memory_bytes = 0
        self._disk_bytes = 0
        self._hits = self._misses = 0
        self._memory_evictions = self._disk_evictions = self._damaged = 0
        self._dirty = False
        self._last_flush = clock()
        self._closed = False
        self._lock: disk.DirectoryLock | None = None
        self._directory = Path(directory) if directory is not None else None
        if self._directory is not None:
            self._open_directory(self._directory)

    # -- opening ------------------------------------------------------------------------------

    def _open_directory(self, directory: Path) -> None:
        objects = directory / OBJECTS_DIR
        objects.mkdir(parents=True, exist_ok=True)
        self._lock = disk.DirectoryLock(directory)
        self._lock.acquire()
        try:
            disk.remove_temp_files(directory)
            disk.remove_temp_files(objects)
            state = self._load_state(directory)
            self._pin_keys = set(state.pin_keys)
            self._pin_urls = set(state.pin_urls)
            entries = []
            for path in objects.glob("*" + disk.OBJECT_SUFFIX):
                entry = self._scan_file(path, state)
                if entry is not None:
                    entries.append(entry)
            entries.sort(key=lambda e: (e.last_use, e.meta.created))
            for entry in entries:
                self._entries[entry.key] = entry
                self._disk_bytes += entry.file_size or 0
            self._evict_disk()
        except BaseException:
            self._lock.release()
            raise

    def _load_state(self, directory: Path) -> _StoreState:
        path = directory / STATE_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return _StoreState()
        try:
            state = _STATE_DECODER.decode(data)
        except msgspec.MsgspecError as exc:
            self._report_damaged(None, f"{path.name}: {exc}; hit counts and pins reset")
            return _StoreState()
        if state.version != _STATE_VERSION:
            self._report_damaged(None, f"{path.name}: unknown version {state.version}; reset")
            return _StoreState()
        return state

    def _scan_file(self, path: Path, state: _StoreState) -> _Entry | None:
        try:
            meta, length = disk.read_meta(path)
            if meta.key.digest != path.stem:
                raise DamagedObjectError(f"holds {meta.key} whose digest is not its file name")
        except (DamagedObjectError, OSError) as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            self._damaged += 1
            self._report_damaged(None, f"{path.name}: {exc}")
            return None
        saved = state.objects.get(path.stem)
        return _Entry(
            key=meta.key,
            meta=meta,
            hits=saved.hits if saved else 0,
            last_use=saved.last_use if saved else meta.created,
            file_size=length,
        )

    # -- properties -----------------------------------------------------------------------------

    @property
    def directory(self) -> Path | None:
        return self._directory

    @property
    def memory_limit(self) -> int:
        return self._memory_limit

    @property
    def disk_limit(self) -> int:
        return self._disk_limit

    @property
    def closed(self) -> bool:
        return self._closed

    # -- fills ----------------------------------------------------------------------------------

    def begin_fill(
        self,
        key: CacheKey,
        *,
        description: bytes = b"",
        tracks: builtins.list[TrackMeta] | tuple[TrackMeta, ...] = (),
        validators: dict[str, str] | None = None,
        duration: float | None = None,
        format_data: dict[str, str] | None = None,
    ) -> Fill:
        """Start writing the object for ``key``.

        Raises :class:`CacheError` if a fill for ``key`` is already in progress: join that one
        (:meth:`get_fill`) instead of opening a second origin feed. An existing committed object
        for ``key`` stays servable until this fill commits and replaces it.
        """
        self._check_open()
        if self._fills.get(key) is not None:
            raise CacheError(f"a fill for {key} is already in progress")
        meta = ObjectMeta(
            key=key,
            description=bytes(description),
            tracks=list(tracks),
            validators=dict(validators or {}),
            duration=duration,
            format_data=dict(format_data or {}),
        )
        fill = Fill(self, meta)
        self._fills[key] = fill
        return fill

    def get_fill(self, key: CacheKey) -> Fill | None:
        """The fill in progress for ``key``, for a client to join; None if there is none.

        A client reading a fill is a hit of the object it becomes: counted in :meth:`stats`
        now, and in the object's ``hits`` (with its last use) when the fill commits."""
        fill = self._fills.get(key)
        if fill is not None:
            self._hits += 1
            fill._hits += 1
        return fill

    def _forget_fill(self, fill: Fill) -> None:
        if self._fills.get(fill.key) is fill:
            del self._fills[fill.key]

    def _commit(self, fill: Fill) -> CachedObject:
        self._check_open()
        key = fill.key
        table = fill._table()
        later = self._writer is not None and self._directory is not None
        hasher = None if later else disk.packet_hasher(table)  # later: on the writer's thread
        now = self._clock()
        meta = msgspec.structs.replace(
            fill._meta,
            created=now,
            size=len(table.blob),
            packet_count=len(table),
            checksum=hasher.hexdigest() if hasher is not None else "",
        )
        obj = CachedObject(meta, table)
        self._forget_fill(fill)

        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(key=key, meta=meta, hits=fill._hits)
        else:
            entry.hits += fill._hits
            self._entries.move_to_end(key)
            if entry.obj is not None:  # the previous content is never served again
                self._memory_bytes -= entry.meta.size
                entry.obj = None
            entry.meta = meta
        entry.last_use = now
        if self._make_room(entry, meta.size, disk_tier=False):
            entry.obj = obj
            self._memory_bytes += meta.size
        if self._directory is not None:
            if hasher is not None:
                self._store_on_disk(entry, table, hasher)
            else:
                self._store_on_disk_later(entry, table)
        if entry.obj is None and entry.file_size is None and entry.writing is None:
            # fits no tier: served to this fill only
            del self._entries[key]
        self._dirty = True
        fill._finish(obj)
        self._maybe_flush()
        return obj

    def _store_on_disk(self, entry: _Entry, table: PacketTable, hasher: hashlib._Hash) -> None:
        path = self._object_path(entry.key)
        replacing = entry.file_size is not None
        if replacing:  # the old file is about to be replaced or removed: stop charging it
            self._disk_bytes -= entry.file_size or 0
            entry.file_size = None
        meta_bytes = disk.encode_meta(entry.meta)
        length = disk.file_length(meta_bytes, table)
        if self._make_room(entry, length, disk_tier=True):
            try:
                entry.file_size = disk.write_object(path, meta_bytes, table, hasher)
            except OSError as exc:
                self._report_error(entry.key, f"not written to disk ({exc}); kept in memory only")
            else:
                self._disk_bytes += entry.file_size
                return
        if replacing:  # never leave the previous content behind under this key
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _store_on_disk_later(self, entry: _Entry, table: PacketTable) -> None:
        """Queue the file of ``entry`` on the writer (see the module docstring)."""
        assert self._writer is not None
        path = self._object_path(entry.key)
        if entry.file_size is not None:  # the rename replaces it (a failed write removes it)
            self._disk_bytes -= entry.file_size
            entry.file_size = None
        self._forget_write(entry)
        placeholder = msgspec.structs.replace(entry.meta, checksum="0" * 2 * disk.CHECKSUM_SIZE)
        length = disk.file_length(disk.encode_meta(placeholder), table)
        if not self._make_room(entry, length, disk_tier=True):
            self._writer.submit(lambda: _unlink(path))
            return
        entry.writing = length
        self._disk_bytes += length
        generation = entry.generation
        meta = entry.meta

        def write() -> tuple[ObjectMeta, int]:
            hasher = disk.packet_hasher(table)
            full = msgspec.structs.replace(meta, checksum=hasher.hexdigest())
            try:
                return full, disk.write_object(path, disk.encode_meta(full), table, hasher)
            except BaseException:
                _unlink(path)  # never leave the previous content behind under this key
                raise

        self._writer.submit(write, lambda f: self._written(entry, generation, f))

    def _written(self, entry: _Entry, generation: int, future: Future[object]) -> None:
        """A write's result, on the loop thread; ignored if no longer wanted."""
        if entry.generation != generation or entry.writing is None or self._closed:
            return
        self._disk_bytes -= entry.writing
        entry.writing = None
        exc = future.exception()
        if exc is not None:
            self._report_error(entry.key, f"not written to disk ({exc}); kept in memory only")
            if entry.obj is None:
                self._entries.pop(entry.key, None)
            return
        full, size = future.result()  # type: ignore[misc]
        entry.meta = full
        if entry.obj is not None:
            entry.obj.meta = full
        entry.file_size = size
        self._disk_bytes += size
        self._dirty = True

    def _forget_write(self, entry: _Entry) -> None:
        """A pending write of ``entry`` is no longer wanted: unreserve it, ignore its result."""
        if entry.writing is not None:
            self._disk_bytes -= entry.writing
            entry.writing = None
            entry.generation += 1

    # -- reading --------------------------------------------------------------------------------

    def get(self, key: CacheKey) -> CachedObject | None:
        """The committed object for ``key``, loading it from disk if needed; None on a miss.

        Counts a hit or a miss and makes the object the most recently used. A file that fails
        its checks is deleted and reported to ``on_damaged``; the call is then a miss. With no
        committed object but a fill of ``key`` in progress it counts nothing: the caller joins
        that fill, and :meth:`get_fill` counts the hit.
        """
        self._check_open()
        entry = self._entries.get(key)
        obj = None
        if entry is not None:
            obj = entry.obj if entry.obj is not None else self._load(entry)
        if obj is None or entry is None:
            if self._fills.get(key) is None:
                self._misses += 1
            return None
        self._hits += 1
        entry.hits += 1
        entry.last_use = self._clock()
        self._entries.move_to_end(key)
        self._dirty = True
        self._maybe_flush()
        return obj

    def _load(self, entry: _Entry) -> CachedObject | None:
        """Map and verify the file of a disk-only entry; keep it in memory if it fits."""
        try:
            meta, table = disk.open_object(self._object_path(entry.key))
            if meta.key != entry.key:
                raise DamagedObjectError(f"file holds {meta.key}")
        except (DamagedObjectError, OSError) as exc:
            self._drop_damaged(entry, str(exc))
            return None
        entry.meta = meta
        obj = CachedObject(meta, table)
        if self._make_room(entry, meta.size, disk_tier=False):
            entry.obj = obj
            self._memory_bytes += meta.size
        return obj

    def contains(self, key: CacheKey) -> bool:
        """Whether a committed object for ``key`` is stored (no hit counted, nothing loaded)."""
        return key in self._entries

    def list(self) -> builtins.list[ObjectInfo]:
        """Every stored object, most recently used first."""
        return [self._info(entry) for entry in reversed(self._entries.values())]

    def info(self, key: CacheKey) -> ObjectInfo | None:
        """The :meth:`list` row for ``key`` (no hit counted), or None if it is not stored."""
        entry = self._entries.get(key)
        return self._info(entry) if entry is not None else None

    def _info(self, entry: _Entry) -> ObjectInfo:
        return ObjectInfo(
            key=entry.key,
            size=entry.meta.size,
            hits=entry.hits,
            last_use=entry.last_use,
            pinned=self._is_pinned(entry.key),
            created=entry.meta.created,
            on_disk=entry.file_size is not None,
            in_memory=entry.obj is not None,
        )

    def stats(self) -> CacheStats:
        entries = self._entries.values()
        fills = builtins.list(self._fills.values())
        return CacheStats(
            objects=len(self._entries),
            memory_objects=sum(1 for e in entries if e.obj is not None),
            memory_bytes=self._memory_bytes,
            disk_objects=sum(1 for e in entries if e.file_size is not None),
            disk_bytes=self._disk_bytes,
            pinned_objects=sum(1 for e in entries if self._is_pinned(e.key)),
            fills=len(fills),
            fill_bytes=sum(f.size for f in fills),
            hits=self._hits,
            misses=self._misses,
            memory_evictions=self._memory_evictions,
            disk_evictions=self._disk_evictions,
            damaged=self._damaged,
        )

    # -- pins -----------------------------------------------------------------------------------

    def pin(self, target: CacheKey | str) -> int:
        """Never evict ``target``: one key, or every object of a URL (any format or variant).

        The pin is a rule, not a flag on an object: it holds for objects that do not exist yet
        (a later fill or prefetch of the key or URL is pinned), and it survives purges and
        restarts. Returns how many stored objects it covers now.
        """
        self._check_open()
        if isinstance(target, CacheKey):
            self._pin_keys.add(target)
            covered = int(target in self._entries)
        else:
            url = normalize_url(target)
            self._pin_urls.add(url)
            covered = sum(1 for key in self._entries if key.url == url)
        self._flush_now()
        return covered

    def unpin(self, target: CacheKey | str) -> int:
        """Remove pins: a key's own pin, or a URL's pin together with the pins of its keys.

        A key stays pinned while its URL is. Tiers over their limit are trimmed at once.
        Returns how many stored objects are no longer pinned.
        """
        self._check_open()
        before = {key for key in self._entries if self._is_pinned(key)}
        if isinstance(target, CacheKey):
            self._pin_keys.discard(target)
        else:
            url = normalize_url(target)
            self._pin_urls.discard(url)
            self._pin_keys = {key for key in self._pin_keys if key.url != url}
        self._evict_memory()
        self._evict_disk()
        self._flush_now()
        return sum(1 for key in before if not self._is_pinned(key))

    def pins(self) -> builtins.list[CacheKey | str]:
        """The pin rules: keys and URLs."""
        keys = sorted(self._pin_keys, key=lambda k: (k.format, k.url, k.variant))
        return [*sorted(self._pin_urls), *keys]

    def is_pinned(self, key: CacheKey) -> bool:
        """Whether ``key`` is covered by a pin rule (whether or not it is stored)."""
        return self._is_pinned(key)

    def _is_pinned(self, key: CacheKey) -> bool:
        return key in self._pin_keys or key.url in self._pin_urls

    # -- purge ----------------------------------------------------------------------------------

    def purge(self, key: CacheKey) -> bool:
        """Delete the object for ``key`` from both tiers and abort a fill of it in progress.

        Pins are kept (a purge forces a refetch; it does not change policy). Holders of the
        object keep a valid copy. Returns whether an object was stored.
        """
        self._check_open()
        fill = self._fills.get(key)
        if fill is not None:
            fill.abort("purged")
        entry = self._entries.get(key)
        if entry is None:
            return False
        self._remove(entry)
        self._dirty = True
        self._maybe_flush()
        return True

    def purge_url(self, url: str) -> int:
        """Purge every object of ``url`` (credentials ignored), all formats and variants."""
        url = normalize_url(url)
        keys = {key for key in self._entries if key.url == url}
        keys.update(key for key in self._fills if key.url == url)
        return sum(self.purge(key) for key in keys)

    def purge_all(self) -> int:
        """Purge every object and abort every fill; pins are kept."""
        keys = set(self._entries) | set(self._fills)
        return sum(self.purge(key) for key in keys)

    # -- limits and eviction --------------------------------------------------------------------

    def set_limits(self, *, memory_limit: int | None = None, disk_limit: int | None = None) -> None:
        """Change limits (on configuration reload) and evict down to them."""
        self._check_open()
        if memory_limit is not None:
            self._memory_limit = memory_limit
        if disk_limit is not None:
            self._disk_limit = disk_limit
        self._evict_memory()
        self._evict_disk()
        self._maybe_flush()

    def _evict_memory(self) -> None:
        """Trim the memory tier to its limit (least recently used unpinned objects first)."""
        over = self._memory_bytes - self._memory_limit
        if over > 0:
            self._evict(self._victims(over, disk_tier=False)[0], disk_tier=False)

    def _evict_disk(self) -> None:
        """Trim the disk tier to its limit (least recently used unpinned files first)."""
        over = self._disk_bytes - self._disk_limit
        if over > 0 and self._directory is not None:
            self._evict(self._victims(over, disk_tier=True)[0], disk_tier=True)

    def _make_room(self, newcomer: _Entry, size: int, *, disk_tier: bool) -> bool:
        """Evict so that ``size`` more bytes fit in a tier; whether the newcomer may enter.

        An unpinned newcomer that cannot fit even then (pinned objects hold the rest) evicts
        nothing and stays out, so it never empties a tier for nothing. A pinned newcomer
        always enters, after evicting every unpinned object it can.
        """
        used, limit = (
            (self._disk_bytes, self._disk_limit)
            if disk_tier
            else (self._memory_bytes, self._memory_limit)
        )
        over = used + size - limit
        if over <= 0:
            return True
        victims, over = self._victims(over, disk_tier=disk_tier, keep=newcomer)
        if over > 0 and not self._is_pinned(newcomer.key):
            return False
        self._evict(victims, disk_tier=disk_tier)
        return True

    def _victims(
        self, over: int, *, disk_tier: bool, keep: _Entry | None = None
    ) -> tuple[builtins.list[_Entry], int]:
        """Least recently used unpinned entries of a tier freeing ``over`` bytes, and what is
        still over after them (> 0 when pinned objects hold the rest)."""
        victims = []
        for entry in self._entries.values():
            if over <= 0:
                break
            charge = (
                (entry.file_size or entry.writing)
                if disk_tier
                else (entry.meta.size if entry.obj else 0)
            )
            if charge and entry is not keep and not self._is_pinned(entry.key):
                victims.append(entry)
                over -= charge
        return victims, over

    def _evict(self, victims: builtins.list[_Entry], *, disk_tier: bool) -> None:
        for entry in victims:
            if disk_tier:
                self._disk_evictions += 1
                self._drop_file(entry)
            else:
                self._memory_evictions += 1
                self._drop_memory(entry)
        self._dirty = self._dirty or bool(victims)

    def _drop_memory(self, entry: _Entry) -> None:
        if entry.obj is not None:
            entry.obj = None  # holders keep theirs; the mapping or buffer goes with the last one
            self._memory_bytes -= entry.meta.size
        if entry.file_size is None and entry.writing is None:
            self._entries.pop(entry.key, None)

    def _drop_file(self, entry: _Entry) -> None:
        pending = entry.writing is not None
        self._forget_write(entry)
        if entry.file_size is not None or pending:
            path = self._object_path(entry.key)
            if self._writer is not None:
                self._writer.submit(lambda: _unlink(path))  # behind any write of this file
            else:
                _unlink(path)
            self._disk_bytes -= entry.file_size or 0
            entry.file_size = None
        if entry.obj is None:
            self._entries.pop(entry.key, None)

    def _remove(self, entry: _Entry) -> None:
        self._entries.pop(entry.key, None)
        if entry.obj is not None:
            entry.obj = None
            self._memory_bytes -= entry.meta.size
        self._drop_file(entry)

    def _drop_damaged(self, entry: _Entry, reason: str) -> None:
        self._remove(entry)
        self._damaged += 1
        self._report_damaged(entry.key, reason)

    def verify_all(self) -> int:
        """Check every object file's checksum now (a scrub); drop damaged ones. Returns how many.

        A damaged file of an object that is also in memory is deleted; the memory copy stays.
        """
        self._check_open()
        dropped = 0
        for entry in builtins.list(self._entries.values()):
            if entry.file_size is None:
                continue
            try:
                meta, _table = disk.open_object(self._object_path(entry.key))
                if meta.key != entry.key:
                    raise DamagedObjectError(f"file holds {meta.key}")
            except (DamagedObjectError, OSError) as exc:
                dropped += 1
                self._damaged += 1
                self._drop_file(entry)
                self._report_damaged(entry.key, str(exc))
        return dropped

    # -- persistence ----------------------------------------------------------------------------

    def _object_path(self, key: CacheKey) -> Path:
        assert self._directory is not None
        return self._directory / OBJECTS_DIR / (key.digest + disk.OBJECT_SUFFIX)

    def flush(self) -> None:
        """Write hit counts, last-use times and pins now."""
        self._check_open()
        self._flush_now()

    def _maybe_flush(self) -> None:
        if self._dirty and self._clock() - self._last_flush >= self._state_interval:
            self._flush_now()

    def _flush_now(self) -> None:
        self._dirty = False
        self._last_flush = self._clock()
        if self._directory is None:
            return
        state = _StoreState(
            objects={
                e.key.digest: _EntryState(hits=e.hits, last_use=e.last_use)
                for e in self._entries.values()
                if e.file_size is not None
            },
            pin_keys=sorted(self._pin_keys, key=lambda k: (k.format, k.url, k.variant)),
            pin_urls=sorted(self._pin_urls),
        )
        try:
            disk.atomic_write(self._directory / STATE_FILE, [msgspec.msgpack.encode(state)])
        except OSError as exc:
            self._dirty = True
            self._report_error(None, f"cannot save {STATE_FILE}: {exc}")

    def close(self) -> None:
        """Save state, abort fills in progress, drop memory, release the directory lock."""
        if self._closed:
            return
        try:
            for fill in builtins.list(self._fills.values()):
                fill.abort("cache closed")
            if self._writer is not None:
                self._writer.drain()  # every file written (or removed) before the lock goes
            self._flush_now()
        finally:
            self._closed = True
            self._entries.clear()
            self._memory_bytes = self._disk_bytes = 0
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> CacheStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise CacheError("cache store is closed")

    def _report_damaged(self, key: CacheKey | None, reason: str) -> None:
        if self._on_damaged is not None:
            self._on_damaged(key, reason)

    def _report_error(self, key: CacheKey | None, message: str) -> None:
        if self._on_error is not None:
            self._on_error(key, message)

    # -- listing without owning the directory ---------------------------------------------------

    @staticmethod
    def read_only_listing(directory: Path | str) -> builtins.list[ObjectInfo]:
        """List the objects in ``directory`` without taking its lock or changing anything.

        For ``mediacache cache list`` when no proxy runs. Damaged and temporary files are
        skipped (the owner deletes them at its next start); the result may be stale if a
        proxy is writing at the same time.
        """
        directory = Path(directory)
        try:
            state = _STATE_DECODER.decode((directory / STATE_FILE).read_bytes())
        except (OSError, msgspec.MsgspecError):
            state = _StoreState()
        pin_keys, pin_urls = set(state.pin_keys), set(state.pin_urls)
        infos = []
        for path in (directory / OBJECTS_DIR).glob("*" + disk.OBJECT_SUFFIX):
            try:
                meta, _length = disk.read_meta(path)
            except (DamagedObjectError, OSError):
                continue
            saved = state.objects.get(path.stem)
            infos.append(
                ObjectInfo(
                    key=meta.key,
                    size=meta.size,
                    hits=saved.hits if saved else 0,
                    last_use=saved.last_use if saved else meta.created,
                    pinned=meta.key in pin_keys or meta.key.url in pin_urls,
                    created=meta.created,
                    on_disk=True,
                    in_memory=False,
                )
            )
        infos.sort(key=lambda info: info.last_use, reverse=True)
        return infos


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
