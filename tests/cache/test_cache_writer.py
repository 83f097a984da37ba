"""The write-behind of object files (``DiskWriter``): commits do not wait for the disk, and a
purge, a replacement or a close during a pending write leave the right file (or none)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from test_cache_store import MB, content, fill_object, object_files, packets_for

from mediacache.cache import CacheKey, CacheStore
from mediacache.cache.store import DiskWriter

Delivered = list[tuple[Callable[[Future[object]], None], Future[object]]]


class Loop:
    """Stands for the event loop: results wait here until :meth:`run` (call_soon_threadsafe)."""

    def __init__(self) -> None:
        self.queue: Delivered = []

    def deliver(self, callback: Callable[[Future[object]], None], future: Future[object]) -> None:
        self.queue.append((callback, future))

    def run(self, expect: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.queue) < expect and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.queue) >= expect, f"{len(self.queue)} of {expect} writes came back"
        while self.queue:
            callback, future = self.queue.pop(0)
            callback(future)


@pytest.fixture
def loop() -> Loop:
    return Loop()


@pytest.fixture
def store(tmp_path: Path, loop: Loop) -> Iterator[CacheStore]:
    s = CacheStore(
        tmp_path / "cache", memory_limit=10 * MB, disk_limit=100 * MB,
        writer=DiskWriter(loop.deliver),
    )  # fmt: skip
    yield s
    s.close()


KEY = CacheKey.make("quicktime", "rtsp://o/a.mp4", "v")


def test_a_commit_is_served_at_once_and_on_disk_when_written(
    store: CacheStore, loop: Loop, tmp_path: Path
) -> None:
    obj = fill_object(store, KEY, n=50, size=2000)
    assert store.get(KEY) is obj and content(obj) == packets_for(KEY, 50, 2000)
    assert store.stats().disk_objects == 0 and obj.meta.checksum == ""  # not written yet
    loop.run(1)
    assert store.stats().disk_objects == 1 and len(obj.meta.checksum) == 64
    assert object_files(store) == [KEY.digest + ".mco"]
    store.close()
    again = CacheStore(tmp_path / "cache", memory_limit=10 * MB, disk_limit=100 * MB)
    try:
        back = again.get(KEY)  # read from the file, checksum verified
        assert back is not None and content(back) == content(obj)
        assert back.meta.checksum == obj.meta.checksum
    finally:
        again.close()


def test_a_purge_during_the_write_leaves_no_file(store: CacheStore, loop: Loop) -> None:
    fill_object(store, KEY, n=50, size=2000)
    assert store.purge(KEY)
    loop.run(1)  # the late result is ignored; the unlink queued behind the write ran
    store.close()
    assert object_files(store) == [] and store.stats().disk_bytes == 0


def test_a_new_commit_during_the_write_wins(store: CacheStore, loop: Loop, tmp_path: Path) -> None:
    fill_object(store, KEY, n=50, size=2000)
    newer = fill_object(store, KEY, n=7, size=300)
    loop.run(2)
    assert store.stats().disk_objects == 1
    store.close()
    again = CacheStore(tmp_path / "cache", memory_limit=10 * MB, disk_limit=100 * MB)
    try:
        back = again.get(KEY)
        assert back is not None and content(back) == content(newer)
    finally:
        again.close()


def test_close_waits_for_pending_writes(store: CacheStore, tmp_path: Path) -> None:
    obj = fill_object(store, KEY, n=200, size=4000)
    store.close()  # the loop never ran: close drains the writer and keeps the result
    again = CacheStore(tmp_path / "cache", memory_limit=10 * MB, disk_limit=100 * MB)
    try:
        back = again.get(KEY)
        assert back is not None and content(back) == content(obj)
    finally:
        again.close()


def test_a_failed_write_keeps_the_object_in_memory_and_reports(
    tmp_path: Path, loop: Loop
) -> None:
    errors: list[str] = []
    store = CacheStore(
        tmp_path / "cache", memory_limit=10 * MB, disk_limit=100 * MB,
        writer=DiskWriter(loop.deliver), on_error=lambda key, message: errors.append(message),
    )  # fmt: skip
    try:
        (tmp_path / "cache" / "objects" / (KEY.digest + ".mco")).mkdir()  # rename must fail
        obj = fill_object(store, KEY)
        loop.run(1)
        assert errors and "not written to disk" in errors[0]
        assert store.get(KEY) is obj and store.stats().disk_bytes == 0
    finally:
        store.close()


def test_disk_bytes_are_reserved_while_writing(store: CacheStore, loop: Loop) -> None:
    fill_object(store, KEY, n=50, size=2000)
    reserved = store.stats().disk_bytes
    assert reserved > 100_000  # counted at once, so eviction sees it
    loop.run(1)
    assert store.stats().disk_bytes == reserved
