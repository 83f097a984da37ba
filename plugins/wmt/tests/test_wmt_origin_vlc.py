"""VLC against the reference origin, over mmst:// and mmsu://.

VLC's MMS access selects one video stream and the audio (Intelligent Streaming, 0x33 with the
others OFF). Its ``--demux=dump`` output is what the access delivered: it must be the file's
header plus exactly the packets of the selected streams, and ffmpeg must decode those streams
from it as from the file. VLC's mmsu always binds UDP port 7000, so mmsu runs hold a lock.
"""

from __future__ import annotations

import contextlib
import shutil

import pytest
from wmt_origin_env import (
    by_stream,
    clip,
    file_packets,
    filtered,
    have,
    media_root,
    nobody_dir,
    vlc_dump,
    vlc_udp_port_lock,
)

from mediacache.testing import peers
from mediacache.testing.origin import OriginThread

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(not have("vlc", "ffmpeg"), reason="needs VLC and ffmpeg"),
]


@pytest.fixture
def origin():
    with OriginThread.loopback("wmt", media_root(), scheme="mmst") as o:
        yield o
        assert o.wait_idle(), "a session outlived its client"


@pytest.fixture
def group():
    with peers.ProcessGroup() as g:
        yield g


@pytest.mark.parametrize("scheme", ["mmst", "mmsu"])
def test_vlc_plays_the_streams_it_selected(origin, group, scheme):
    lock = vlc_udp_port_lock() if scheme == "mmsu" else contextlib.nullcontext()
    with lock:
        dump, log, code = vlc_dump(origin.url("multi.wmv", scheme), group)
    assert code == 0, log
    assert "connection successful" in log and "end of media stream" in log, log[-4000:]
    [record] = origin.wait_records(1)
    assert record.transport == ("MMSU" if scheme == "mmsu" else "MMST")
    selected = {int(n) for n in record.variant.split(",")}
    assert len(selected) == 2 and 4 in selected  # one video of three, and the audio
    h, packets = file_packets(clip("multi.wmv"))
    assert dump == h.raw + b"".join(filtered(packets, selected, h.packet_size))
    # and what VLC received decodes, for its streams, exactly like the file
    work = nobody_dir("mediacache-wmt-vlc-check-")
    try:
        path = work / "dump.asf"
        path.write_bytes(dump)
        ours, theirs = by_stream(peers.ffmpeg_framemd5_file(path)), by_stream(
            peers.ffmpeg_framemd5_file(clip("multi.wmv")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for number in selected:
        assert ours[number - 1] == theirs[number - 1]


def test_vlc_plays_the_clip_over_mmst(origin, group):
    dump, log, code = vlc_dump(origin.url("clip.wmv"), group)
    assert code == 0, log
    h, packets = file_packets(clip("clip.wmv"))
    assert dump == h.raw + b"".join(packets)


def test_vlc_is_refused_where_authentication_is_required(group):
    with OriginThread.loopback("wmt", media_root(), auth="alice:s3cret", scheme="mmst") as o:
        dump, log, _ = vlc_dump(o.url("clip.wmv"), group, seconds=20)
        assert "id/password requested (not yet supported)" in log
        assert not dump
        assert o.wait_idle()
