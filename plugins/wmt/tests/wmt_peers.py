"""Test helpers for the Windows Media wire tests: clips made by ffmpeg, a scripted MMS origin.

Not a test module (no ``test_`` prefix): the test modules import it from this directory.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from mediacache_wmt.wire import asf, mms

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
TSHARK = shutil.which("tshark")

_SOURCES = [
    "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
]
CLIPS = {
    # a 3 s clip: one wmv2 video, one wmav2 audio
    "clip.wmv": [*_SOURCES, "-t", "3", "-c:v", "wmv2", "-b:v", "300k",
                 "-c:a", "wmav2", "-b:a", "64k"],
    # an Intelligent Streaming clip: three wmv2 renditions of one picture, one wmav2
    "multi.wmv": [*_SOURCES, "-t", "3", "-map", "0:v", "-map", "0:v", "-map", "0:v",
                  "-map", "1:a", "-c:v", "wmv2", "-b:v:0", "100k", "-b:v:1", "300k",
                  "-b:v:2", "600k", "-c:a", "wmav2", "-b:a", "64k"],
}


@functools.cache
def _clip_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="mediacache-wmt-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def clip(name: str) -> Path:
    """Make ``name`` (a key of CLIPS) with ffmpeg once per process and return its path."""
    path = _clip_dir() / name
    subprocess.run(
        [FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *CLIPS[name],
         str(path)],
        check=True, timeout=120,
    )
    return path


def ffprobe_json(path: Path, *args: str) -> dict:
    import json

    out = subprocess.run(
        [FFPROBE or "ffprobe", "-v", "error", "-of", "json", *args, str(path)],
        check=True, capture_output=True, timeout=60,
    ).stdout
    return json.loads(out)


def framemd5(source: str, *maps: str, timeout: float = 60) -> list[str]:
    """ffmpeg's per-frame MD5 lines of ``source`` (comments dropped)."""
    args = [a for m in maps for a in ("-map", m)] or ["-map", "0"]
    out = subprocess.run(
        [FFMPEG or "ffmpeg", "-v", "error", "-i", source, *args, "-f", "framemd5", "-"],
        check=True, capture_output=True, timeout=timeout,
    ).stdout.decode()
    return [line for line in out.splitlines() if line and not line.startswith("#")]


@dataclass
class ScriptedOrigin:
    """A one-connection MMS server made of the wire functions only, for real clients.

    It answers each command the way [MS-MMSP] says, sends the header after 0x11, and after 0x07
    every data packet (filtered to the streams the client selected), then 0x1E. Everything the
    client sent is kept in ``received``.
    """

    file: bytes
    keep_all_streams: bool = True
    end_ffmpeg: bool = True
    received: list[mms.MmsCommand] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.header = asf.parse_asf_header(self.file)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.listener.settimeout(30)
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(30)
                self._serve(conn)
        except BaseException as exc:  # reported by the test through .errors
            self.errors.append(exc)
        finally:
            self.listener.close()

    def _serve(self, conn: socket.socket) -> None:
        reader = mms.MmsStreamReader()
        seq = 0
        selected = self.header.stream_numbers
        h = self.header

        def send(cmd: mms.MmsCommand) -> None:
            nonlocal seq
            conn.sendall(mms.build_command(cmd, sequence=seq))
            seq += 1

        while True:
            data = conn.recv(65536)
            reader.receive_data(data)
            while (event := reader.next_event()) is not None:
                assert isinstance(event, mms.MmsCommand)
                self.received.append(event)
                match event:
                    case mms.Connect():
                        send(mms.ReportConnectedEx(play_incarnation=event.play_incarnation))
                    case mms.FunnelInfo():
                        send(mms.ReportFunnelInfo(client_id=0x1234))
                    case mms.ConnectFunnel():
                        send(mms.ReportConnectedFunnel())
                    case mms.OpenFile():
                        send(mms.ReportOpenFile(
                            play_incarnation=event.play_incarnation,
                            file_duration=h.duration,
                            file_blocks=mms.file_blocks_for(h.duration),
                            file_packet_size=h.packet_size,
                            file_packet_count=h.packet_count,
                            file_bit_rate=h.file_properties.max_bitrate,
                            file_header_size=len(h.raw),
                        ))
                    case mms.ReadBlock():
                        send(mms.ReportReadBlock(play_incarnation=event.play_incarnation))
                        for part in mms.header_packets(h.raw, packet_id=event.play_incarnation):
                            conn.sendall(part)
                    case mms.StreamSwitch():
                        if not self.keep_all_streams:
                            selected = event.selected
                        send(mms.ReportStreamSwitch())
                    case mms.StartPlaying():
                        send(mms.ReportStartedPlaying(play_incarnation=event.play_incarnation))
                        packets = asf.iter_data_packets(
                            self.file[h.data_offset :], h.packet_size, h.packet_count
                        )
                        for n, packet in enumerate(packets):
                            kept = asf.filter_streams(packet, selected, h.packet_size)
                            if kept is not None:
                                conn.sendall(mms.build_data_packet(n, event.packet_id, 0, kept))
                        send(mms.ReportEndOfStream(play_incarnation=event.play_incarnation))
                        if self.end_ffmpeg:
                            # ffmpeg 5.1's mms_read turns 0x1E and a closed socket into a
                            # 0-byte read that avio retries forever; a data packet longer than
                            # the ASF packet size is the one thing it ends the input on (EIO)
                            conn.sendall(mms.build_data_packet(
                                0, event.packet_id, 0, bytes(h.packet_size + 1)
                            ))
                        return
                    case mms.CloseFile():
                        return
            if not data:
                return
