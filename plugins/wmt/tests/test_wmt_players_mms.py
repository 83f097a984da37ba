"""Real players against a scripted origin made of nothing but the wire functions.

ffmpeg (``mmst://``) must decode exactly the frames it decodes from the file; VLC's raw dump of
the stream must be the file's header and data packets byte for byte, and with Intelligent
Streaming (VLC turns off streams with StreamSwitch) the filtered variant.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from wmt_peers import FFMPEG, ScriptedOrigin, clip, framemd5

from mediacache_wmt.wire import asf, mms

pytestmark = pytest.mark.peers
CVLC = shutil.which("cvlc")
RUNUSER = shutil.which("runuser")


@pytest.mark.skipif(not FFMPEG, reason="needs ffmpeg")
@pytest.mark.parametrize("name", ["clip.wmv", "multi.wmv"])
def test_ffmpeg_mmst_decodes_the_same_frames(name):
    path = clip(name)
    origin = ScriptedOrigin(path.read_bytes())
    got = framemd5(f"mmst://127.0.0.1:{origin.port}/{name}")
    origin.thread.join(10)
    assert not origin.errors
    assert got == framemd5(str(path))
    kinds = [type(c) for c in origin.received]
    assert kinds == [mms.Connect, mms.FunnelInfo, mms.ConnectFunnel, mms.OpenFile,
                     mms.ReadBlock, mms.StreamSwitch, mms.StartPlaying]
    connect, *_, open_file, read_block, switch, start = origin.received
    assert connect.subscriber_name.startswith("NSPlayer/7.0.0.1956; {")
    assert open_file.file_name == name
    assert read_block.play_incarnation == mms.HEADER_PACKET_ID
    assert switch.selected == asf.parse_asf_header(path.read_bytes()).stream_numbers
    assert start.packet_id == 4


def vlc_dump(url: str, out: os.PathLike[str]) -> None:
    command = ["cvlc", "-I", "dummy", "--play-and-exit", url, "--demux=dump",
               f"--demuxdump-file={out}"]
    if os.geteuid() == 0:  # VLC refuses to run as root
        command = [RUNUSER or "runuser", "-u", "nobody", "--", *command]
    home = os.path.dirname(out)
    subprocess.run(command, check=True, capture_output=True, timeout=60,
                   env={"PATH": os.environ["PATH"], "HOME": home})


@pytest.mark.skipif(not CVLC or (os.geteuid() == 0 and not RUNUSER), reason="needs VLC")
@pytest.mark.parametrize("select", [False, True], ids=["all-streams", "vlc-selection"])
def test_vlc_mmst_receives_header_and_packets(select):
    # not tmp_path: VLC runs as nobody, who cannot enter pytest's private base directory
    tmp_path = Path(tempfile.mkdtemp(prefix="mediacache-wmt-vlc-"))
    tmp_path.chmod(0o777)
    try:
        _vlc_case(tmp_path, select)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _vlc_case(tmp_path: Path, select: bool) -> None:
    data = clip("multi.wmv").read_bytes()
    h = asf.parse_asf_header(data)
    origin = ScriptedOrigin(data, keep_all_streams=not select, end_ffmpeg=False)
    out = tmp_path / "dump.asf"
    vlc_dump(f"mmst://127.0.0.1:{origin.port}/multi.wmv", out)
    origin.thread.join(10)
    assert not origin.errors
    switch = next(c for c in origin.received if isinstance(c, mms.StreamSwitch))
    keep = switch.selected if select else h.stream_numbers
    packets = asf.iter_data_packets(data[h.data_offset :], h.packet_size, h.packet_count)
    kept = [k for p in packets if (k := asf.filter_streams(p, keep, h.packet_size)) is not None]
    assert out.read_bytes() == h.raw + b"".join(kept)
    if select:
        # VLC keeps one video (of 3) and the audio, and turns the others off
        assert len(keep) == 2 and 4 in keep
        assert {e.thinning for e in switch.entries if e.dst not in keep} == {mms.Thinning.OFF}
        video = sorted(keep)[0] - 1
        if FFMPEG:
            assert framemd5(str(out), f"0:{video}", "0:3") == framemd5(
                str(clip("multi.wmv")), f"0:{video}", "0:3")
