"""The cache data model: keys, URL normalization, seeking, packet tables."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache.cache import CacheError, CacheKey, first_index_at, normalize_url
from mediacache.cache.objects import CachedObject, ObjectMeta, PacketTable
from mediacache.errors import MediacacheError


def test_make_strips_credentials_and_lowers_scheme_and_host() -> None:
    key = CacheKey.make("quicktime", "RTSP://alice:s3cret@Media.Example.COM:554/Clip.mov?a=B", "hi")
    assert key.url == "rtsp://media.example.com:554/Clip.mov?a=B"
    assert key == CacheKey("quicktime", "rtsp://media.example.com:554/Clip.mov?a=B", "hi")


def test_make_handles_user_without_password_and_at_in_password() -> None:
    assert normalize_url("rtsp://bob@h/x") == "rtsp://h/x"
    assert normalize_url("rtsp://bob:p@ss@h/x") == "rtsp://h/x"
    assert normalize_url("mms://h/x") == "mms://h/x"


def test_bad_url_error_does_not_leak_the_password() -> None:
    with pytest.raises(CacheError) as info:
        normalize_url("rtsp://u:topsecret@[::1/x")
    assert "topsecret" not in str(info.value)
    assert isinstance(info.value, MediacacheError)


def test_digest_is_stable_hex_and_distinguishes_fields() -> None:
    key = CacheKey("quicktime", "rtsp://h/x", "")
    assert len(key.digest) == 32
    int(key.digest, 16)
    others = {
        CacheKey("quicktime", "rtsp://h/x", "a").digest,
        CacheKey("realmedia", "rtsp://h/x", "").digest,
        CacheKey("quicktime", "rtsp://h/y", "").digest,
        # field boundaries matter: no concatenation ambiguity
        CacheKey("quicktimertsp://h/x", "", "").digest,
    }
    assert key.digest not in others and len(others) == 4


def test_digest_known_value() -> None:
    # If this changes, every cache directory in the field is orphaned: bump the file version.
    assert CacheKey("quicktime", "rtsp://h/x", "").digest == "4b397f9c8dfbf521086e1d15540b5931"
    assert CacheKey.make("quicktime", "rtsp://user:pw@H/x").digest == (
        "4b397f9c8dfbf521086e1d15540b5931"
    )


def test_first_index_at_lands_on_first_packet_of_latest_time_not_after_t() -> None:
    times = array("d", [0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 3.5])
    assert first_index_at(times, -1.0) == 0
    assert first_index_at(times, 0.0) == 0
    assert first_index_at(times, 0.5) == 0
    assert first_index_at(times, 1.0) == 2
    assert first_index_at(times, 1.9) == 2
    assert first_index_at(times, 2.0) == 5
    assert first_index_at(times, 99.0) == 6
    assert first_index_at(array("d"), 5.0) == 0
    with pytest.raises(ValueError):
        first_index_at(times, float("nan"))


@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=50), st.floats(-1, 101))
def test_first_index_at_never_lands_after_t_nor_skips_a_due_packet(
    raw: list[float], t: float
) -> None:
    times = array("d", sorted(raw))
    i = first_index_at(times, t)
    assert 0 <= i <= max(len(times) - 1, 0)
    if times and times[0] <= t:
        assert times[i] <= t
        # every packet due at or before t but after the landing point is still served
        assert all(times[j] < times[i] for j in range(i))


def _table(packets: list[tuple[int, float, bytes]]) -> PacketTable:
    blob = bytearray()
    offsets, times, tracks = array("Q", [0]), array("d"), array("H")
    for track, t, payload in packets:
        blob += payload
        offsets.append(len(blob))
        times.append(t)
        tracks.append(track)
    return PacketTable(memoryview(blob).toreadonly(), offsets, times, tracks, owner=blob)


def test_cached_object_reads_packets_in_o1_and_iterates_from_index() -> None:
    packets = [(0, 0.0, b"aa"), (1, 0.5, b""), (0, 1.0, b"ccc")]
    obj = CachedObject(ObjectMeta(key=CacheKey("f", "u", "")), _table(packets))
    assert len(obj) == 3
    track, t, payload = obj.packet(2)
    assert (track, t, bytes(payload)) == (0, 1.0, b"ccc")
    assert isinstance(payload, memoryview) and payload.readonly
    assert [(p.track, p.time, bytes(p.payload)) for p in obj.iter_from(1)] == packets[1:]
    assert obj.time(1) == 0.5
    assert obj.first_index_at(0.7) == 1
    with pytest.raises(IndexError):
        obj.packet(3)
    with pytest.raises(IndexError):
        obj.packet(-1)
