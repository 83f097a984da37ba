"""Test helpers for RealMedia: a raw Real RTSP client for the reference origin, and
SureStream clips (which no encoder here writes).

Shipped in the package (like :mod:`mediacache.testing`) because the proxy's tests will need a
Real origin and a client that shows what a player hides: status codes, set ids, ASM rules,
timestamps, stream-end packets.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from mediacache.rtsp import InterleavedFrame, Request, Response, RtspReader, build_request
from mediacache.rtsp.message import Headers
from mediacache_realmedia.challenge import real_challenge_response
from mediacache_realmedia.wire.rdt import RdtData, RdtPacket, RdtStreamEnd, parse_rdt
from mediacache_realmedia.wire.rmf import (
    DataPacket,
    MultiRateHeader,
    RmFile,
    RmQuirks,
    build_mlti,
    build_rm,
    parse_rm,
)

__all__ = [
    "RealClient",
    "Received",
    "ffmpeg_rm",
    "surestream_clip",
]


@dataclasses.dataclass
class Received:
    """What a raw client got: RDT packets with the channel (or UDP) they came on."""

    packets: list[tuple[int, RdtPacket]] = dataclasses.field(default_factory=list)

    @property
    def data(self) -> list[tuple[int, RdtData]]:
        return [(ch, p) for ch, p in self.packets if isinstance(p, RdtData)]

    @property
    def ends(self) -> list[RdtStreamEnd]:
        return [p for _, p in self.packets if isinstance(p, RdtStreamEnd)]


class RealClient:
    """A blocking Real RTSP client that speaks only what the tests need, and shows everything.

    Interleaved frames arriving between replies are parsed as RDT and kept in ``received``.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.host, self.port = host, port
        self.reader = RtspReader()
        self.cseq = 0
        self.session: str | None = None
        self.challenge: str | None = None
        self.received = Received()
        self.udp: socket.socket | None = None
        self.events: list[Response] = []

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.udp is not None:
            self.udp.close()

    def __enter__(self) -> RealClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        return f"rtsp://{self.host}:{self.port}/{path.lstrip('/')}"

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]] | None = None,
        *,
        session: bool = True,
        body: bytes = b"",
    ) -> Response:
        """Send a request (with our Session once we have one) and return its reply."""
        self.cseq += 1
        pairs = [("CSeq", str(self.cseq))]
        if session and self.session:
            pairs.append(("Session", self.session))
        pairs += headers or []
        self.sock.sendall(build_request(Request(method, url, Headers(pairs), body)))
        return self.response()

    def response(self) -> Response:
        while True:
            event = self._next()
            if event is None:
                raise ConnectionError("the origin closed the connection")
            if isinstance(event, Response):
                self.events.append(event)
                if event.headers.get("Session"):
                    self.session = event.headers["Session"].split(";")[0]
                return event

    def _next(self, deadline: float | None = None) -> Any:
        """The next event; None at EOF (or at ``deadline``, when given)."""
        while True:
            event = self.reader.next_event()
            if isinstance(event, InterleavedFrame):
                for p in parse_rdt(event.payload):
                    self.received.packets.append((event.channel, p))
                continue
            if event is not None:
                return event
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            finally:
                if deadline is not None:
                    self.sock.settimeout(5.0)
            if not data:
                return None
            self.reader.receive_data(data)

    def collect(self, seconds: float, until_ends: int | None = None) -> Received:
        """Read TCP (and UDP) data for ``seconds``, or until ``until_ends`` stream ends."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until_ends is not None and len(self.received.ends) >= until_ends:
                break
            if self.udp is not None:
                self._drain_udp(min(0.05, max(0.0, deadline - time.monotonic())))
                step = time.monotonic() + 0.01
                self._next(step)
            else:
                if self._next(min(deadline, time.monotonic() + 0.2)) is None and self.closed():
                    break
        return self.received

    def closed(self) -> bool:
        try:
            self.sock.setblocking(False)
            try:
                data = self.sock.recv(65536, socket.MSG_PEEK)
            finally:
                self.sock.setblocking(True)
                self.sock.settimeout(5.0)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return data == b""

    def _drain_udp(self, wait: float) -> None:
        assert self.udp is not None
        self.udp.settimeout(wait if wait > 0 else 0.001)
        while True:
            try:
                data, _ = self.udp.recvfrom(65536)
            except (TimeoutError, BlockingIOError):
                return
            for p in parse_rdt(data):
                self.received.packets.append((-1, p))
            self.udp.settimeout(0.001)

    # -- the Real dialect ---------------------------------------------------------------------

    def options(self, path: str = "") -> Response:
        """OPTIONS on ``path`` (a reverse proxy routes by path: give the clip's)."""
        reply = self.request(
            "OPTIONS", self.url(path), [("ClientChallenge", "9e26d33f2984236010ef6253fb1887f7")],
            session=False,
        )  # fmt: skip
        self.challenge = reply.headers.get("RealChallenge1")
        return reply

    def challenge2(self) -> str:
        assert self.challenge is not None
        response, sd = real_challenge_response(self.challenge)
        return f"{response}, sd={sd}"

    def setup(
        self,
        path: str,
        stream: int,
        transport: str = "x-pn-tng/tcp",
        extra: list[tuple[str, str]] | None = None,
    ) -> Response:
        """SETUP one stream; the session's first carries the answer to the RealChallenge."""
        headers = [("Transport", transport)]
        if self.session is None and self.challenge is not None:
            headers.append(("RealChallenge2", self.challenge2()))
        return self.request("SETUP", f"{self.url(path)}/streamid={stream}", headers + (extra or []))

    def udp_port(self) -> int:
        if self.udp is None:
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
        return int(self.udp.getsockname()[1])

    def subscribe(self, path: str, value: str) -> Response:
        return self.request("SET_PARAMETER", self.url(path), [("Subscribe", value)])

    def play(self, path: str, range_: str | None = "npt=0-") -> Response:
        headers = [("Range", range_)] if range_ else []
        return self.request("PLAY", self.url(path), headers)

    def start(
        self,
        path: str,
        streams: int = 2,
        *,
        udp: bool = False,
        subscribe: str | None = None,
        auth: list[tuple[str, str]] | None = None,
    ) -> None:
        """OPTIONS, DESCRIBE, SETUP each stream, Subscribe (all rules by default), PLAY.

        Raises :class:`RuntimeError` with the reply when a step is refused.
        """
        extra = auth or []
        _ok(self.options(path), "OPTIONS")
        _ok(self.request("DESCRIBE", self.url(path), extra), "DESCRIBE")
        for n in range(streams):
            transport = f"x-pn-tng/udp;client_port={self.udp_port()}" if udp else "x-pn-tng/tcp"
            _ok(self.setup(path, n, transport, extra), f"SETUP of stream {n}")
        if subscribe is None:
            subscribe = ",".join(f"stream={n};rule={r}" for n in range(streams) for r in (0, 1))
        url = self.url(path)
        _ok(self.request("SET_PARAMETER", url, [("Subscribe", subscribe), *extra]), "Subscribe")
        _ok(self.request("PLAY", url, [("Range", "npt=0-"), *extra]), "PLAY")


def reverse_route(origin_port: int, prefix: str = "/r/") -> str:
    """The config text of a Real reverse route ``prefix`` -> the origin on loopback."""
    return (
        f"[[routes]]\nformat='realmedia'\nprefix='{prefix}'\n"
        f"origin='rtsp://127.0.0.1:{origin_port}/'\n"
    )


def _ok(reply: Response, what: str) -> None:
    if reply.status != 200:
        raise RuntimeError(f"{what} refused: {reply.status} {reply.reason} {reply.headers!r}")


# --- clips ---------------------------------------------------------------------------------------


def ffmpeg_rm(path: Path, *options: str, seconds: int = 3) -> Path:
    """An .rm clip from ffmpeg's lavfi test sources (for layouts make_clip has no recipe for)."""
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", "testsrc=size=176x144:rate=15",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds), *options, "-f", "rm", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=60, capture_output=True)
    return path


def surestream_clip(path: Path, work: Path) -> RmFile:
    """A SureStream clip: one video stream at two rates (rules 0/1 low, 2/3 high), one audio.

    Two rv20 encodings of the same picture become one MDPR whose type-specific data is an
    ``MLTI`` header holding both codec headers (rule -> header 0, 0, 1, 1), and version-1
    packets carrying their rule; audio is the low file's.
    """
    low = parse_rm(ffmpeg_rm(work / "low.rm", "-c:v", "rv20", "-b:v", "60k", "-c:a", "ac3",
                             "-b:a", "64k").read_bytes())  # fmt: skip
    high = parse_rm(ffmpeg_rm(work / "high.rm", "-c:v", "rv20", "-b:v", "400k", "-an")
                    .read_bytes())  # fmt: skip
    vlow, audio = low.stream(0), low.stream(1)
    vhigh = high.stream(0)
    mlti = build_mlti(
        MultiRateHeader((0, 0, 1, 1), (vlow.type_specific_data, vhigh.type_specific_data))
    )
    video = dataclasses.replace(vhigh, type_specific_data=mlti, stream_name="Video SureStream")

    def v1(p: DataPacket, rule_base: int) -> DataPacket:
        rule = rule_base + (0 if p.keyframe else 1)
        return dataclasses.replace(p, asm_rule=rule, flags=1 if p.keyframe else 0)

    packets = [v1(p, 0) for p in low.packets if p.stream == 0]
    packets += [v1(p, 2) for p in high.packets if p.stream == 0]
    packets += [p for p in low.packets if p.stream == 1]
    packets.sort(key=lambda p: p.timestamp_ms)
    rm = dataclasses.replace(
        low,
        streams=(video, audio),
        packets=tuple(packets),
        indexes=(),
        quirks=RmQuirks(),
    )
    path.write_bytes(build_rm(rm))
    return parse_rm(path.read_bytes())


# --- GStreamer ------------------------------------------------------------------------------------


def gstreamer_rdt_sizes(url: str, group: Any) -> list[list[int]]:
    """Sizes of the packets GStreamer's ``rtspsrc ! rdtdepay`` gives each of two sinks, over
    TCP (``group``: the test's ProcessGroup). It never ends by itself (no EOS on a stream end),
    so it gets SIGINT after 9 s."""
    args = [
        "gst-launch-1.0", "-v", "rtspsrc", f"location={url}", "protocols=tcp", "name=s",
        "s.", "!", "rdtdepay", "!", "fakesink", "name=f0", "silent=false",
        "s.", "!", "rdtdepay", "!", "fakesink", "name=f1", "silent=false",
    ]  # fmt: skip
    proc = group.start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, _ = proc.communicate(timeout=9)
    except subprocess.TimeoutExpired:
        group.send_signal(proc, signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        group.stop(proc)
    sizes: dict[bytes, list[int]] = collections.defaultdict(list)
    for m in re.finditer(rb"last-message = chain +\*+ \((f\d):sink\) \((\d+) bytes.*?flags: "
                         rb"[0-9a-f]+ ?([a-z ]*)", out):  # fmt: skip
        if b"header" not in m.group(3):
            sizes[m.group(1)].append(int(m.group(2)))
    return sorted(sizes.values(), key=len)


def assert_gstreamer_got_the_clip(got: list[list[int]], rm: RmFile) -> None:
    """rdtdepay gives each packet back as a .rm packet: 12 header bytes, then the payload.

    GStreamer's RDT jitter buffer orders by arrival, not sequence number (its own source notes
    it should use the sequence number), and rdtdepay then drops what looks old: a loaded
    machine loses a few packets (up to 1 in 10 seen) and repeats a few now and then (CI once
    saw 97 of 87). The raw client shows the server sends each packet once, in order; the upper
    bound here only catches a clip sent twice.
    """
    expected = [[len(p.payload) + 12 for p in rm.packets if p.stream == s] for s in (0, 1)]
    assert len(got) == 2
    for received, sent in zip(got, sorted(expected, key=len), strict=True):
        common = collections.Counter(received) & collections.Counter(sent)
        detail = f"got {len(received)} of {len(sent)}, {sum(common.values())} in common"
        assert sum(common.values()) >= 0.85 * len(sent), detail
        assert len(received) < 1.5 * len(sent), detail
