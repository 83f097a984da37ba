"""Real clients against a minimal scripted Real RTSP server built from this package's pieces.

The server (a thread in this test, not the plugin's origin) answers OPTIONS with
``RealChallenge1``, DESCRIBE with :func:`describe_rm`, SETUP and SET_PARAMETER with 200, and
on PLAY sends every packet of the clip as TCP-interleaved RDT built by
:func:`build_data_packet`, then stream-end packets, then closes. It records each request so the
tests can compare the clients' ``RealChallenge2`` with :func:`real_challenge_response`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mediacache_realmedia.challenge import real_challenge_response
from mediacache_realmedia.sdp import describe_rm, parse_subscribe
from mediacache_realmedia.wire.rdt import build_data_packet, build_stream_end
from mediacache_realmedia.wire.rmf import RmFile, parse_rm

pytestmark = pytest.mark.peers


@dataclass
class ScriptedRealServer:
    """One connection, one client; ``stop_after`` ends the session after that method."""

    rm: RmFile
    challenge: str
    stop_after: str = "PLAY"
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(30)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def header(self, method: str, name: str) -> str | None:
        for m, _, headers in self.requests:
            if m == method and name.lower() in headers:
                return headers[name.lower()]
        return None

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn, self.sock:
            conn.settimeout(30)
            self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        buf = b""
        channels: list[int] = []
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, url = lines[0].split()[:2]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(buf) < length:
                buf += conn.recv(65536)
            buf = buf[length:]
            self.requests.append((method, url, headers))

            reply = ["RTSP/1.0 200 OK", f"CSeq: {headers.get('cseq', '0')}",
                     "Server: RealServer Version 9.0.2.794"]  # fmt: skip
            body = b""
            if method == "OPTIONS":
                reply.append(f"RealChallenge1: {self.challenge}")
            elif method == "DESCRIBE":
                body = describe_rm(self.rm, url=url, live=False).encode()
                reply += ["ETag: 0123456789abcdef", "Content-Type: application/sdp",
                          f"Content-Base: {url}/", f"Content-Length: {len(body)}"]  # fmt: skip
            elif method == "SETUP":
                transport = headers.get("transport", "").split(",")[0]
                found = re.search(r"interleaved=(\d+)", transport)
                channel = int(found.group(1)) if found else len(channels)
                channels.append(channel)
                if not found:
                    transport += f";interleaved={channel}"
                reply += ["Session: 12345678", f"Transport: {transport}"]
            elif method in ("SET_PARAMETER", "PLAY"):
                reply.append("Session: 12345678")
            conn.sendall(("\r\n".join(reply) + "\r\n\r\n").encode() + body)
            if method == self.stop_after:
                if method == "PLAY":
                    self._play(conn, channels)
                return

    def _play(self, conn: socket.socket, channels: list[int]) -> None:
        """Every packet as interleaved RDT; set id = the channel (PEERS.md item 7)."""
        seqs = [0] * len(channels)
        for pkt in self.rm.packets:
            channel = channels[pkt.stream]
            rdt = build_data_packet(channel, seqs[pkt.stream], pkt.timestamp_ms, pkt.payload,
                                    keyframe=pkt.keyframe)  # fmt: skip
            seqs[pkt.stream] += 1
            conn.sendall(b"$" + bytes([channel]) + len(rdt).to_bytes(2, "big") + rdt)
        for stream, channel in enumerate(channels):
            end = build_stream_end(channel, seqs[stream], self.rm.props.duration_ms)
            conn.sendall(b"$" + bytes([channel]) + len(end).to_bytes(2, "big") + end)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=10)


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


def run_client(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(cmd, -1, exc.stdout or "", exc.stderr or "")


@pytest.fixture(scope="module")
def clip(rm_clips: dict[str, Path]) -> tuple[Path, RmFile]:
    path = rm_clips["rv20_ac3"]
    return path, parse_rm(path.read_bytes())


def test_ffprobe_receives_every_packet_we_build(clip: tuple[Path, RmFile]) -> None:
    """ffmpeg's Real client: handshake, SDP, Subscribe, and all 132 RDT packets, byte-exact."""
    need("ffprobe")
    path, rm = clip
    server = ScriptedRealServer(rm, challenge="31c0a0fd24c8c4a0fd24c8c4a0fd24c8")
    url = f"rtsp://127.0.0.1:{server.port}/clips/a.rm"
    probe = ["ffprobe", "-v", "error", "-show_packets", "-show_data_hash", "md5",
             "-show_entries", "packet=codec_type,size,data_hash", "-of", "csv=p=0"]  # fmt: skip
    result = run_client([*probe, "-rtsp_transport", "tcp", "-analyzeduration", "0",
                         "-probesize", "32", url])  # fmt: skip
    server.close()

    response, sd = real_challenge_response(server.challenge)
    assert server.header("SETUP", "RealChallenge2") == f"{response}, sd={sd}"
    setups = [u for m, u, _ in server.requests if m == "SETUP"]
    assert setups == [f"{url}/streamid=0", f"{url}/streamid=1"]
    assert parse_subscribe(server.header("SET_PARAMETER", "Subscribe") or "") == {
        0: frozenset({0, 1}), 1: frozenset({0, 1})
    }  # fmt: skip

    got = [line.split(",") for line in result.stdout.split()]
    assert len(got) == len(rm.packets), result.stderr
    # Video: what ffprobe reports for the file itself (PEERS.md's judge).
    direct = subprocess.run([*probe, str(path)], check=True, capture_output=True, text=True)
    file_video = [line for line in direct.stdout.split() if line.startswith("video")]
    assert [",".join(g) for g in got if g[0] == "video"] == file_video
    # Audio: ffmpeg's RDT path never learns the codec, so it hands out the payload unchanged.
    payloads = [p.payload for p in rm.packets if p.stream == 1]
    expected_audio = [["audio", str(len(p)), "MD5:" + hashlib.md5(p).hexdigest()] for p in payloads]
    assert [g for g in got if g[0] == "audio"] == expected_audio


CHALLENGES = {
    32: "31c0a0fd24c8c4a0fd24c8c4a0fd24c8",
    40: "abcdef0123456789abcdef0123456789abcdef01",  # only the first 32 count
    56: "0123456789abcdef" * 3 + "01234567",
    60: "fedcba9876543210" * 3 + "fedcba98ffff",  # cut to 56 (ffmpeg keeps up to 63)
}


def capture_challenge(
    rm: RmFile, challenge: str, client: list[str], url_path: str, timeout: float = 20
) -> str:
    server = ScriptedRealServer(rm, challenge=challenge, stop_after="SETUP")
    cmd = [arg.replace("{url}", f"127.0.0.1:{server.port}{url_path}") for arg in client]
    run_client(cmd, timeout=timeout)
    server.close()
    value = server.header("SETUP", "RealChallenge2")
    assert value is not None, server.requests
    return value


@pytest.mark.parametrize("length", sorted(CHALLENGES))
def test_ffmpeg_computes_the_same_challenge_response(clip, length: int) -> None:
    need("ffprobe")
    challenge = CHALLENGES[length]
    client = ["ffprobe", "-v", "quiet", "-rtsp_transport", "tcp", "rtsp://{url}"]
    response, sd = real_challenge_response(challenge)
    assert capture_challenge(clip[1], challenge, client, "/a.rm") == f"{response}, sd={sd}"


@pytest.mark.parametrize("length", [40, 60])
def test_gstreamer_computes_the_same_challenge_response(clip, length: int) -> None:
    need("gst-launch-1.0")
    challenge = CHALLENGES[length]
    client = ["gst-launch-1.0", "-q", "rtspsrc", "location=rtsp://{url}", "protocols=tcp", "!",
              "fakesink"]  # fmt: skip
    response, sd = real_challenge_response(challenge)
    assert capture_challenge(clip[1], challenge, client, "/a.rm") == f"{response}, sd={sd}"


def test_vlc_computes_the_same_challenge_response(clip, tmp_path: Path) -> None:
    """VLC's realrtsp (run as nobody: VLC refuses root); it also needs an ETag on DESCRIBE."""
    need("cvlc")
    need("setpriv")
    home = tmp_path / "vlchome"
    home.mkdir()
    os.chmod(home, 0o777)
    prefix = []
    if os.geteuid() == 0:
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    client = [*prefix, "env", f"HOME={home}", "cvlc", "-I", "dummy", "-V", "dummy", "-A", "dummy",
              "--play-and-exit", "realrtsp://{url}"]  # fmt: skip
    challenge = CHALLENGES[56]
    response, sd = real_challenge_response(challenge)
    value = capture_challenge(clip[1], challenge, client, "/a.rm", timeout=8)
    assert value == f"{response}, sd={sd}"
