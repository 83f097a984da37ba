"""The on-disk object format: header round trip, checksum, garbage, the directory lock."""

from __future__ import annotations

import os
import subprocess
import sys
from array import array
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache.cache import (
    CacheKey,
    CacheLockedError,
    DamagedObjectError,
    ObjectMeta,
    TrackMeta,
    disk,
)
from mediacache.cache.objects import PacketTable
from mediacache.errors import MediacacheError

PACKETS = [(0, 0.0, b"\x80\x60" + bytes(30)), (1, 0.02, b"audio" * 7), (0, 0.04, b"")]


def _table(packets: list[tuple[int, float, bytes]]) -> PacketTable:
    blob = bytearray()
    offsets, times, tracks = array("Q", [0]), array("d"), array("H")
    for track, t, payload in packets:
        blob += payload
        offsets.append(len(blob))
        times.append(t)
        tracks.append(track)
    return PacketTable(memoryview(blob).toreadonly(), offsets, times, tracks, owner=blob)


def _write(path: Path, packets: list[tuple[int, float, bytes]] = PACKETS) -> ObjectMeta:
    table = _table(packets)
    hasher = disk.packet_hasher(table)
    meta = ObjectMeta(
        key=CacheKey("quicktime", "rtsp://h/clip", "v"),
        description=b"v=0\r\n",
        tracks=[TrackMeta(0, "trackID=0", 90000, "H264", {"fmtp": "x"})],
        validators={"ETag": '"1"'},
        duration=0.04,
        created=1.5,
        size=len(table.blob),
        packet_count=len(table),
        checksum=hasher.hexdigest(),
    )
    meta_bytes = disk.encode_meta(meta)
    length = disk.write_object(path, meta_bytes, table, hasher)
    assert length == path.stat().st_size == disk.file_length(meta_bytes, table)
    return meta


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("disk") / "x.mco"
    _write(path)
    return path.read_bytes()


headers = st.builds(
    disk.FileHeader,
    meta_length=st.integers(0, 2**32 - 1),
    packet_count=st.integers(0, 2**64 - 1),
    blob_length=st.integers(0, 2**64 - 1),
    checksum=st.binary(min_size=32, max_size=32),
)


@given(headers)
def test_header_build_parse_round_trip(header: disk.FileHeader) -> None:
    data = disk.build_header(header)
    assert len(data) == disk.HEADER_SIZE
    assert data.startswith(disk.MAGIC)
    assert disk.parse_header(data) == header


def test_header_rejects_wrong_magic_version_length() -> None:
    good = disk.build_header(disk.FileHeader(1, 2, 3, bytes(32)))
    with pytest.raises(DamagedObjectError, match="magic"):
        disk.parse_header(b"GIF89a\x00\x00" + good[8:])
    with pytest.raises(DamagedObjectError, match="version 2"):
        disk.parse_header(disk.build_header(disk.FileHeader(1, 2, 3, bytes(32), version=2)))
    with pytest.raises(DamagedObjectError, match="header length"):
        disk.parse_header(disk.build_header(disk.FileHeader(1, 2, 3, bytes(32), header_length=80)))
    with pytest.raises(DamagedObjectError, match="truncated"):
        disk.parse_header(good[:63])


def test_object_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.mco"
    meta = _write(path)
    loaded, table = disk.open_object(path)
    assert loaded == meta
    got = [(p.track, p.time, bytes(p.payload)) for p in map(table.packet, range(len(table)))]
    assert got == PACKETS
    assert disk.read_meta(path) == (meta, path.stat().st_size)


def test_empty_object_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "e.mco"
    meta = _write(path, [])
    loaded, table = disk.open_object(path)
    assert loaded == meta and len(table) == 0


@given(st.binary(max_size=400))
def test_garbage_raises_only_damaged_object_error(data: bytes) -> None:
    with pytest.raises(DamagedObjectError):
        disk.decode_object(data)


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=300),
)
def test_garbage_behind_a_valid_header_raises_only_damaged_object_error(
    meta_length: int, packet_count: int, blob_length: int, rest: bytes
) -> None:
    header = disk.build_header(disk.FileHeader(meta_length, packet_count, blob_length, bytes(32)))
    with pytest.raises(DamagedObjectError):
        disk.decode_object(header + rest)


@given(st.data())
def test_any_single_bit_flip_is_detected(valid_file: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(valid_file) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(valid_file)
    damaged[position] ^= 1 << bit
    with pytest.raises(DamagedObjectError):
        disk.decode_object(bytes(damaged))


@given(st.data())
def test_any_truncation_or_extension_is_detected(valid_file: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(valid_file) - 1))
    with pytest.raises(DamagedObjectError):
        disk.decode_object(valid_file[:cut])
    with pytest.raises(DamagedObjectError):
        disk.decode_object(valid_file + data.draw(st.binary(min_size=1, max_size=20)))


def test_damaged_object_error_is_a_mediacache_error() -> None:
    assert issubclass(DamagedObjectError, MediacacheError)
    assert issubclass(CacheLockedError, MediacacheError)


def test_atomic_write_leaves_no_temp_file_and_temp_files_are_removed(tmp_path: Path) -> None:
    disk.atomic_write(tmp_path / "f", [b"abc", memoryview(b"def")])
    assert (tmp_path / "f").read_bytes() == b"abcdef"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    (tmp_path / ".tmp-zzz.part").write_bytes(b"half")
    assert [p.name for p in disk.remove_temp_files(tmp_path)] == [".tmp-zzz.part"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


_HOLD_LOCK = """
import sys, pathlib
from mediacache.cache import disk
lock = disk.DirectoryLock(pathlib.Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_directory_lock_names_the_holder_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(CacheLockedError) as info:
            disk.DirectoryLock(tmp_path).acquire()
        assert info.value.pid == holder.pid
        assert f"is in use by pid {holder.pid}" in str(info.value)
    finally:
        holder.communicate("", timeout=30)
    lock = disk.DirectoryLock(tmp_path)
    lock.acquire()  # free again once the holder exits
    assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
    lock.release()
