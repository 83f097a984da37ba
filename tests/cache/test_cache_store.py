"""CacheStore behaviour: fills, tiers, eviction, pins, purge, persistence, damage, locking."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mediacache.cache import (
    CachedObject,
    CacheError,
    CacheKey,
    CacheLockedError,
    CacheStore,
    Fill,
    TrackMeta,
)

QT_A = CacheKey.make("quicktime", "rtsp://origin/a.mov")
QT_B = CacheKey.make("quicktime", "rtsp://origin/b.mov")
QT_C = CacheKey.make("quicktime", "rtsp://origin/c.mov")
QT_D = CacheKey.make("quicktime", "rtsp://origin/d.mov")
MB = 1 << 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0  # every reading is a distinct, later time
        return self.now


class Reports:
    def __init__(self) -> None:
        self.damaged: list[tuple[CacheKey | None, str]] = []
        self.errors: list[tuple[CacheKey | None, str]] = []

    def on_damaged(self, key: CacheKey | None, reason: str) -> None:
        self.damaged.append((key, reason))

    def on_error(self, key: CacheKey | None, message: str) -> None:
        self.errors.append((key, message))


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def open_store(tmp_path: Path, reports: Reports) -> Iterator[Callable[..., CacheStore]]:
    """Opens stores over tmp_path/cache (by default); closes them all at the end."""
    stores: list[CacheStore] = []

    def make(directory: Path | str | None = "default", **kwargs: object) -> CacheStore:
        options: dict[str, object] = {
            "memory_limit": 10 * MB,
            "disk_limit": 100 * MB,
            "clock": FakeClock(),
            "on_damaged": reports.on_damaged,
            "on_error": reports.on_error,
        }
        options.update(kwargs)
        path = tmp_path / "cache" if directory == "default" else directory
        store = CacheStore(path, **options)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def packets_for(key: CacheKey, n: int = 5, size: int = 100) -> list[tuple[int, float, bytes]]:
    seed = key.digest.encode()
    return [
        (i % 2, i * 0.1, (seed + bytes([i % 256])) * (size // 33) + bytes(size % 33))
        for i in range(n)
    ]


def fill_object(
    store: CacheStore, key: CacheKey, n: int = 5, size: int = 100, **meta: object
) -> CachedObject:
    fill = store.begin_fill(key, description=b"v=0\r\n" + key.url.encode(), **meta)  # type: ignore[arg-type]
    for track, t, payload in packets_for(key, n, size):
        fill.add_packet(track, t, payload)
    return fill.commit()


def content(obj: CachedObject | Fill) -> list[tuple[int, float, bytes]]:
    return [
        (p.track, p.time, bytes(p.payload))
        for p in map(obj.packet, range(obj.packet_count if isinstance(obj, Fill) else len(obj)))
    ]


def object_files(store: CacheStore) -> list[str]:
    assert store.directory is not None
    return sorted(p.name for p in (store.directory / "objects").iterdir())


# -- fills -------------------------------------------------------------------------------------


def test_fill_commit_get_round_trip(open_store: Callable[..., CacheStore]) -> None:
    store = open_store()
    tracks = [TrackMeta(0, "trackID=0", 90000, "H264"), TrackMeta(1, "trackID=1", 48000, "AAC")]
    fill = store.begin_fill(QT_A, description=b"v=0", tracks=tracks, validators={"ETag": "1"})
    for track, t, payload in packets_for(QT_A):
        fill.add_packet(track, t, payload)
    fill.set_meta(duration=0.4, format_data={"range": "npt=0-0.4"})
    assert store.get(QT_A) is None, "not servable before commit"
    committed = fill.commit()
    obj = store.get(QT_A)
    assert obj is committed
    assert content(obj) == packets_for(QT_A)
    meta = obj.meta
    assert (meta.description, meta.tracks, meta.validators) == (b"v=0", tracks, {"ETag": "1"})
    assert (meta.duration, meta.format_data) == (0.4, {"range": "npt=0-0.4"})
    assert meta.size == 500 and meta.packet_count == 5 and len(meta.checksum) == 64
    assert store.contains(QT_A)
    [info] = store.list()
    assert (info.key, info.size, info.hits, info.on_disk, info.in_memory) == (
        QT_A,
        500,
        1,
        True,
        True,
    )
    assert object_files(store) == [QT_A.digest + ".mco"]


def test_abort_and_unfinished_fills_leave_nothing(open_store: Callable[..., CacheStore]) -> None:
    store = open_store()
    fill = store.begin_fill(QT_A)
    fill.add_packet(0, 0.0, b"x" * 10)
    seen: list[str] = []
    fill.subscribe(lambda f: seen.append(f.state))
    assert fill.abort("origin closed")
    assert seen == ["aborted"] and fill.abort_reason == "origin closed"
    assert not fill.abort("again")
    with pytest.raises(CacheError):
        fill.add_packet(0, 0.1, b"y")
    with pytest.raises(CacheError):
        fill.commit()
    with pytest.raises(CacheError):
        fill.packet(0)
    assert store.get(QT_A) is None and store.get_fill(QT_A) is None

    # A fill its owner drops is garbage-collected: the key is free again, nothing is stored.
    fill = store.begin_fill(QT_B)
    fill.add_packet(0, 0.0, b"z" * 10)
    del fill
    gc.collect()
    assert store.get_fill(QT_B) is None
    store.begin_fill(QT_B).abort()
    assert store.list() == [] and object_files(store) == []
    assert store.stats().objects == 0


def test_one_fill_per_key(open_store: Callable[..., CacheStore]) -> None:
    store = open_store()
    fill = store.begin_fill(QT_A)
    with pytest.raises(CacheError, match="already in progress"):
        store.begin_fill(QT_A)
    assert store.get_fill(QT_A) is fill
    fill.commit()
    store.begin_fill(QT_A).abort()  # free once committed


def test_fill_in_progress_is_readable_by_joiners(open_store: Callable[..., CacheStore]) -> None:
    store = open_store()
    fill = store.begin_fill(QT_A, description=b"sdp")
    fill.add_packet(0, 0.0, b"first")

    joiner = store.get_fill(QT_A)
    assert joiner is fill and joiner.meta.description == b"sdp"
    wakeups: list[tuple[str, int]] = []
    unsubscribe = joiner.subscribe(lambda f: wakeups.append((f.state, f.packet_count)))
    read = [joiner.packet(i) for i in range(joiner.packet_count)]
    fill.add_packet(1, 0.5, b"second")
    fill.add_packet(0, 1.0, b"third")
    assert wakeups == [("filling", 2), ("filling", 3)]
    read += [joiner.packet(i) for i in range(len(read), joiner.packet_count)]
    assert [(p.track, p.time, p.payload) for p in read] == [
        (0, 0.0, b"first"),
        (1, 0.5, b"second"),
        (0, 1.0, b"third"),
    ]
    assert isinstance(read[0].payload, bytes)
    assert joiner.first_index_at(0.7) == 1
    version = joiner.version
    obj = fill.commit()
    assert wakeups[-1] == ("committed", 3) and joiner.version > version
    assert joiner.result is obj and joiner.done
    assert bytes(joiner.packet(2).payload) == b"third"  # still readable, now from the object
    assert store.get_fill(QT_A) is None
    unsubscribe()
    unsubscribe()


def test_failing_subscriber_is_dropped_and_reported(
    open_store: Callable[..., CacheStore], reports: Reports
) -> None:
    store = open_store()
    fill = store.begin_fill(QT_A)

    def broken(_: Fill) -> None:
        raise RuntimeError("boom")

    fill.subscribe(broken)
    fill.add_packet(0, 0.0, b"a")
    fill.add_packet(0, 0.0, b"b")  # no second report: it was unsubscribed
    assert len(reports.errors) == 1 and "boom" in reports.errors[0][1]
    assert fill.packet_count == 2


def test_add_packet_keeps_times_sorted_and_validates(open_store: Callable[..., CacheStore]) -> None:
    store = open_store()
    fill = store.begin_fill(QT_A)
    fill.add_packet(0, -1.0, b"a")  # before the start: sent at the start
    fill.add_packet(0, 2.0, b"b")
    fill.add_packet(1, 1.5, b"c")  # cannot be sent before the packet stored ahead of it
    with pytest.raises(OverflowError):
        fill.add_packet(70000, 3.0, b"d")
    with pytest.raises(TypeError):
        fill.add_packet(0, 3.0, "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fill.add_packet(0, float("nan"), b"e")
    assert [(p.track, p.time) for p in map(fill.packet, range(fill.packet_count))] == [
        (0, 0.0),
        (0, 2.0),
        (1, 2.0),
    ]
    assert content(fill.commit())[2] == (1, 2.0, b"c")


def test_commit_replaces_previous_object_keeping_hits_and_old_holders(
    open_store: Callable[..., CacheStore],
) -> None:
    store = open_store()
    old = fill_object(store, QT_A, n=3)
    assert store.get(QT_A) is old
    fill = store.begin_fill(QT_A)
    assert store.get(QT_A) is old, "old object served while the refill runs"
    fill.add_packet(0, 0.0, b"new")
    new = fill.commit()
    assert store.get(QT_A) is new and content(new) == [(0, 0.0, b"new")]
    assert content(old) == packets_for(QT_A, 3), "holders of the old object keep it"
    assert store.list()[0].hits == 3, "hits survive a refill"
    store.close()
    again = open_store()
    reloaded = again.get(QT_A)
    assert reloaded is not None and content(reloaded) == [(0, 0.0, b"new")]


# -- persistence, atomicity, damage ------------------------------------------------------------


def test_restart_sees_objects_pins_and_hits(open_store: Callable[..., CacheStore]) -> None:
    store = open_store()
    fill_object(store, QT_A)
    fill_object(store, QT_B, n=50, size=1000)
    store.get(QT_A)
    store.get(QT_A)
    store.pin(QT_B)
    store.pin("rtsp://origin/not-yet-cached.mov")
    store.close()

    again = open_store()
    infos = {info.key: info for info in again.list()}
    assert set(infos) == {QT_A, QT_B}
    assert infos[QT_A].hits == 2 and not infos[QT_A].pinned
    assert infos[QT_B].pinned and infos[QT_B].on_disk and not infos[QT_B].in_memory
    assert infos[QT_A].last_use > infos[QT_B].last_use
    obj = again.get(QT_B)
    assert obj is not None and content(obj) == packets_for(QT_B, 50, 1000)
    assert again.list()[0].in_memory
    later = CacheKey.make("realmedia", "rtsp://origin/not-yet-cached.mov", "rules=1,2")
    fill_object(again, later)
    assert again.info(later) is not None and again.info(later).pinned  # type: ignore[union-attr]
    assert set(again.pins()) == {QT_B, "rtsp://origin/not-yet-cached.mov"}


def test_memory_only_store_forgets_on_restart(open_store: Callable[..., CacheStore]) -> None:
    store = open_store(None, memory_limit=1000, disk_limit=0)
    fill_object(store, QT_A, size=100)  # 500 bytes
    fill_object(store, QT_B, size=100)
    assert store.stats().memory_bytes == 1000
    fill_object(store, QT_C, size=100)  # evicts A: there is no disk to fall back on
    assert store.get(QT_A) is None and store.get(QT_B) is not None
    assert all(info.in_memory and not info.on_disk for info in store.list())
    assert store.directory is None
    store.close()
    assert open_store(None).list() == []


_CRASH_BEFORE_RENAME = """
import os, sys
from mediacache.cache import CacheKey, CacheStore
from mediacache.cache import disk
store = CacheStore(sys.argv[1], memory_limit=1 << 30, disk_limit=1 << 30)
key = CacheKey.make("quicktime", "rtsp://origin/a.mov")
fill = store.begin_fill(key)
fill.add_packet(0, 0.0, b"replacement" * 1000)
store.pin("rtsp://origin/pinned-before-crash")
disk.os.replace = lambda *a: os._exit(9)  # die after the temp file is written, before rename
fill.commit()
"""


def test_crash_mid_write_keeps_previous_object_and_cleans_temp_file(
    open_store: Callable[..., CacheStore], tmp_path: Path
) -> None:
    store = open_store()
    fill_object(store, QT_A)
    store.close()
    result = subprocess.run([sys.executable, "-c", _CRASH_BEFORE_RENAME, str(tmp_path / "cache")])
    assert result.returncode == 9
    leftovers = [p.name for p in (tmp_path / "cache" / "objects").iterdir()]
    assert any(name.startswith(".tmp-") for name in leftovers)

    again = open_store()
    assert object_files(again) == [QT_A.digest + ".mco"], "temp file deleted at start"
    obj = again.get(QT_A)
    assert obj is not None and content(obj) == packets_for(QT_A), "old content, not half of new"
    assert "rtsp://origin/pinned-before-crash" in again.pins(), "pins are saved at once"


def test_truncated_or_foreign_files_are_dropped_at_start(
    open_store: Callable[..., CacheStore], reports: Reports
) -> None:
    store = open_store()
    fill_object(store, QT_A)
    fill_object(store, QT_B)
    fill_object(store, QT_C)
    directory = store.directory
    assert directory is not None
    store.close()
    path_a = directory / "objects" / (QT_A.digest + ".mco")
    path_a.write_bytes(path_a.read_bytes()[:-7])  # killed mid-write without the rename dance
    path_b = directory / "objects" / (QT_B.digest + ".mco")
    data = bytearray(path_b.read_bytes())
    data[8] = 99  # version
    path_b.write_bytes(data)
    (directory / "objects" / (QT_D.digest + ".mco")).write_bytes(b"not an object at all" * 10)

    again = open_store()
    assert [info.key for info in again.list()] == [QT_C]
    assert object_files(again) == [QT_C.digest + ".mco"]
    reasons = " | ".join(reason for _, reason in reports.damaged)
    assert "length" in reasons and "version 99" in reasons and "magic" in reasons
    assert again.get(QT_A) is None and again.stats().damaged == 3


def test_bit_flip_is_caught_on_load(
    open_store: Callable[..., CacheStore], reports: Reports
) -> None:
    store = open_store()
    fill_object(store, QT_A, n=20, size=500)
    directory = store.directory
    assert directory is not None
    store.close()
    path = directory / "objects" / (QT_A.digest + ".mco")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the payload blob
    path.write_bytes(data)

    again = open_store()
    assert again.contains(QT_A), "a scan reads headers only"
    assert again.get(QT_A) is None
    assert reports.damaged == [(QT_A, "checksum mismatch: content differs from what was written")]
    assert not path.exists() and not again.contains(QT_A)
    assert again.stats().misses == 1 and again.stats().damaged == 1


def test_verify_all_scrubs_every_file(
    open_store: Callable[..., CacheStore], reports: Reports
) -> None:
    store = open_store()
    fill_object(store, QT_A)
    fill_object(store, QT_B)
    path = store.directory / "objects" / (QT_A.digest + ".mco")  # type: ignore[operator]
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(data)
    assert store.verify_all() == 1
    info = store.info(QT_A)
    assert info is not None and info.in_memory and not info.on_disk, "memory copy is intact"
    assert [key for key, _ in reports.damaged] == [QT_A]


def test_damaged_state_file_resets_counters_only(
    open_store: Callable[..., CacheStore], reports: Reports
) -> None:
    store = open_store()
    fill_object(store, QT_A)
    store.pin(QT_A)
    directory = store.directory
    assert directory is not None
    store.close()
    (directory / "state.msgpack").write_bytes(b"\xc1garbage")
    again = open_store()
    assert [info.key for info in again.list()] == [QT_A]
    assert not again.list()[0].pinned
    assert reports.damaged and reports.damaged[0][0] is None


# -- eviction ----------------------------------------------------------------------------------


def test_memory_lru_eviction_keeps_files_and_skips_pinned(
    open_store: Callable[..., CacheStore],
) -> None:
    store = open_store(memory_limit=1500)  # three 500-byte objects
    for key in (QT_A, QT_B, QT_C):
        fill_object(store, key)
    store.pin(QT_A)  # A is the least recently used, but pinned
    store.get(QT_B)  # order of use: A, C, B
    fill_object(store, QT_D)  # over by 500: C goes (A is pinned)
    in_memory = {info.key for info in store.list() if info.in_memory}
    assert in_memory == {QT_A, QT_B, QT_D}
    assert all(info.on_disk for info in store.list()), "evicted from memory, still on disk"
    assert store.get(QT_C) is not None  # loaded back from disk; B is now the LRU unpinned one
    assert {info.key for info in store.list() if info.in_memory} == {QT_A, QT_D, QT_C}
    stats = store.stats()
    assert stats.memory_bytes == 1500 and stats.memory_evictions == 2


def test_disk_lru_eviction_deletes_files_and_skips_pinned(
    open_store: Callable[..., CacheStore],
) -> None:
    store = open_store()
    fill_object(store, QT_A)
    file_size = store.stats().disk_bytes
    store.set_limits(disk_limit=3 * file_size, memory_limit=0)
    assert store.stats().memory_bytes == 0 and store.contains(QT_A)
    fill_object(store, QT_B)
    fill_object(store, QT_C)
    store.pin("rtsp://origin/a.mov")
    store.get(QT_B)  # use order: A (pinned), C, B
    fill_object(store, QT_D)
    assert [info.key for info in store.list()] == [QT_D, QT_B, QT_A]
    assert not (store.directory / "objects" / (QT_C.digest + ".mco")).exists()  # type: ignore[operator]
    assert store.stats().disk_evictions == 1
    store.unpin("rtsp://origin/a.mov")
    store.set_limits(disk_limit=file_size)  # only the most recently used one fits
    assert [info.key for info in store.list()] == [QT_D]


def test_everything_pinned_may_exceed_limits(open_store: Callable[..., CacheStore]) -> None:
    store = open_store(memory_limit=600, disk_limit=700)
    store.pin("rtsp://origin/a.mov")
    store.pin(QT_B)
    fill_object(store, QT_A)
    fill_object(store, QT_B)
    stats = store.stats()
    assert stats.memory_bytes == 1000 > store.memory_limit
    assert stats.disk_bytes > store.disk_limit
    assert stats.pinned_objects == 2
    assert store.unpin(QT_B) == 1  # now B can go from both tiers: it is gone
    assert [info.key for info in store.list()] == [QT_A]


def test_object_larger_than_disk_limit_stays_in_memory_only(
    open_store: Callable[..., CacheStore],
) -> None:
    store = open_store(disk_limit=1000)
    obj = fill_object(store, QT_A, n=10, size=200)
    info = store.info(QT_A)
    assert info is not None and info.in_memory and not info.on_disk
    assert store.get(QT_A) is obj and object_files(store) == []


def test_newcomer_that_cannot_fit_evicts_nothing_but_a_pinned_one_always_enters(
    open_store: Callable[..., CacheStore],
) -> None:
    store = open_store(None, memory_limit=1000, disk_limit=0)
    fill_object(store, QT_A, size=100)  # 500, pinned
    store.pin(QT_A)
    fill_object(store, QT_B, size=80)  # 400
    fill_object(store, QT_C, n=10, size=100)  # 1000: could fit only by evicting the pinned A
    assert [info.key for info in store.list()] == [QT_B, QT_A], "B was not evicted for nothing"
    store.pin(QT_D)
    fill_object(store, QT_D, n=10, size=100)  # pinned: evicts what it can (B), then enters
    assert [info.key for info in store.list()] == [QT_D, QT_A]
    assert store.stats().memory_bytes == 1500


def test_refill_too_big_for_disk_removes_the_old_file(
    open_store: Callable[..., CacheStore],
) -> None:
    store = open_store(memory_limit=0)
    fill_object(store, QT_A, n=2, size=10)
    store.set_limits(disk_limit=store.stats().disk_bytes * 2)
    fill_object(store, QT_A, n=20, size=500)  # the new content fits no tier
    assert store.get(QT_A) is None, "the old content must not be served after a refill"
    assert object_files(store) == []


# -- purge and pins ----------------------------------------------------------------------------


def test_purge_url_removes_every_variant_and_format(open_store: Callable[..., CacheStore]) -> None:
    store = open_store()
    url = "rtsp://origin/movie.mov"
    keys = [
        CacheKey.make("quicktime", url, "bitrate=300k"),
        CacheKey.make("quicktime", url, "bitrate=56k"),
        CacheKey.make("realmedia", url, "rules=0,1"),
    ]
    for key in [*keys, QT_A]:
        fill_object(store, key)
    running = store.begin_fill(CacheKey.make("wmt", url, "streams=1"))
    assert store.purge_url("RTSP://admin:pw@ORIGIN/movie.mov") == 3
    assert running.state == "aborted" and running.abort_reason == "purged"
    assert [info.key for info in store.list()] == [QT_A]
    assert object_files(store) == [QT_A.digest + ".mco"]
    assert store.purge(QT_A) and not store.purge(QT_A)
    assert store.list() == [] and object_files(store) == []


def test_purge_all_keeps_pins(open_store: Callable[..., CacheStore]) -> None:
    store = open_store()
    fill_object(store, QT_A)
    fill_object(store, QT_B)
    store.pin(QT_A)
    assert store.purge_all() == 2
    assert store.list() == [] and store.pins() == [QT_A]
    fill_object(store, QT_A)
    assert store.list()[0].pinned


def test_pin_and_unpin_report_covered_objects(open_store: Callable[..., CacheStore]) -> None:
    store = open_store()
    variant = CacheKey.make("quicktime", "rtsp://origin/a.mov", "v2")
    fill_object(store, QT_A)
    fill_object(store, variant)
    assert store.pin(QT_A) == 1
    assert store.pin("rtsp://origin/a.mov") == 2
    assert store.unpin(QT_A) == 0, "still pinned by its URL"
    assert store.is_pinned(QT_A)
    assert store.pin(QT_A) == 1
    assert store.unpin("rtsp://origin/a.mov") == 2, "a URL unpin removes its keys' pins too"
    assert store.pins() == []


def test_stats_count_hits_and_misses(open_store: Callable[..., CacheStore]) -> None:
    store = open_store()
    fill_object(store, QT_A)
    store.get(QT_A)
    store.get(QT_B)
    fill = store.begin_fill(QT_C)  # held: the store keeps fills only weakly
    fill.add_packet(0, 0, b"abc")
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.objects, stats.fills) == (1, 1, 1, 1)
    assert stats.fill_bytes == 3 and stats.disk_objects == 1 and stats.memory_objects == 1


def test_readers_of_a_fill_are_hits_of_its_object(open_store: Callable[..., CacheStore]) -> None:
    """A client that joins a fill in progress (the proxy asks get, then get_fill) is a hit:
    in the stats at once, in the object's hits and last use once the fill commits."""
    clock = FakeClock()
    store = open_store(clock=clock)
    assert store.get(QT_A) is None and store.get_fill(QT_A) is None  # the filler: a miss
    fill = store.begin_fill(QT_A)
    fill.add_packet(0, 0.0, b"abc")
    for _ in range(2):  # two joiners
        assert store.get(QT_A) is None and store.get_fill(QT_A) is fill
    stats = store.stats()
    assert (stats.hits, stats.misses) == (2, 1)
    before = clock.now
    fill.commit()
    [info] = store.list()
    assert info.hits == 2 and info.last_use > before
    assert store.get(QT_A) is not None and store.list()[0].hits == 3
    store.close()
    assert open_store().list()[0].hits == 3, "saved like any hit"


def test_closed_store_refuses_work_and_aborts_fills(open_store: Callable[..., CacheStore]) -> None:
    store = open_store()
    fill = store.begin_fill(QT_A)
    store.close()
    assert fill.state == "aborted" and fill.abort_reason == "cache closed"
    with pytest.raises(CacheError, match="closed"):
        store.get(QT_A)
    store.close()  # idempotent


def test_write_failure_keeps_object_in_memory(
    open_store: Callable[..., CacheStore], reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store()
    from mediacache.cache import disk

    def full(*args: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(disk, "write_object", full)
    obj = fill_object(store, QT_A)
    assert store.get(QT_A) is obj
    assert reports.errors and "No space left" in reports.errors[0][1]
    info = store.info(QT_A)
    assert info is not None and not info.on_disk


# -- locking and listing without the lock -----------------------------------------------------

_HOLD_STORE = """
import sys
from mediacache.cache import CacheStore
store = CacheStore(sys.argv[1], memory_limit=1 << 20, disk_limit=1 << 20)
print("open", flush=True)
sys.stdin.read()
store.close()
"""


def test_second_process_gets_a_clear_error(
    open_store: Callable[..., CacheStore], tmp_path: Path
) -> None:
    directory = tmp_path / "cache"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_STORE, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(
            CacheLockedError, match=f"cache directory .* is in use by pid {holder.pid}"
        ):
            CacheStore(directory, memory_limit=MB, disk_limit=MB)
    finally:
        holder.communicate("", timeout=30)
    store = open_store()  # free once the holder exits
    assert (directory / "lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(CacheLockedError):  # a second store in this process is refused too
        CacheStore(directory, memory_limit=MB, disk_limit=MB)
    store.close()


def test_read_only_listing_works_while_the_owner_runs(
    open_store: Callable[..., CacheStore],
) -> None:
    store = open_store(state_interval=0)
    fill_object(store, QT_A)
    fill_object(store, QT_B)
    store.get(QT_A)
    store.pin(QT_B)
    assert store.directory is not None
    listing = CacheStore.read_only_listing(store.directory)
    assert [(i.key, i.hits, i.pinned, i.on_disk) for i in listing] == [
        (QT_A, 1, False, True),
        (QT_B, 0, True, True),
    ]
    assert CacheStore.read_only_listing(store.directory / "nowhere") == []
