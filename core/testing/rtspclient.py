"""A small blocking RTSP client for tests: what ffmpeg cannot do (absolute forward URLs,
hostile input, raw interleaved frames), built on the core's own RTSP codec."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable

from mediacache.rtp import rtcp_has_bye
from mediacache.rtsp.message import (
    Headers,
    InterleavedFrame,
    Request,
    Response,
    RtspReader,
    build_request,
)
from mediacache.rtsp.sdp import parse_sdp
from mediacache.rtsp.url import resolve_url


class MiniRtspClient:
    """One TCP connection; ``request`` sends and waits for the response, keeping any frames."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = RtspReader(max_body=4 * 1024 * 1024)
        self.cseq = 0
        self.frames: list[InterleavedFrame] = []
        self.session: str | None = None
        self.timeout = timeout

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MiniRtspClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self, method: str, url: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
    ) -> Response:
        self.cseq += 1
        pairs = [("CSeq", str(self.cseq)), *headers]
        if self.session and not any(k.lower() == "session" for k, _ in pairs):
            pairs.append(("Session", self.session))
        self.send_raw(build_request(Request(method, url, Headers(pairs), body)))
        resp = self.read_response()
        if "Session" in resp.headers and resp.status < 300:
            self.session = (resp.headers.get("Session") or "").split(";")[0]
        return resp

    def read_response(self) -> Response:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            ev = self.reader.next_event()
            if isinstance(ev, Response):
                return ev
            if isinstance(ev, InterleavedFrame):
                self.frames.append(ev)
                continue
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.reader.receive_data(data)
        raise TimeoutError("no RTSP response in time")

    def read_frames(self, seconds: float, *, until_bye: bool = True) -> list[InterleavedFrame]:
        """Collect interleaved frames for up to ``seconds`` (stops early once every RTCP channel
        carried a BYE, i.e. the origin ended the clip)."""
        deadline = time.monotonic() + seconds
        byes: set[int] = set()
        rtcp_channels = {f.channel for f in self.frames if f.channel % 2}
        self.sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            self.reader.receive_data(data)
            while (ev := self.reader.next_event()) is not None:
                if isinstance(ev, InterleavedFrame):
                    self.frames.append(ev)
                    if ev.channel % 2:
                        rtcp_channels.add(ev.channel)
                        if rtcp_has_bye(ev.payload):
                            byes.add(ev.channel)
            if until_bye and rtcp_channels and byes >= rtcp_channels and len(byes) >= 1:
                break
        self.sock.settimeout(self.timeout)
        return self.frames

    def play_all_tcp(self, url: str, seconds: float = 15) -> list[InterleavedFrame]:
        """DESCRIBE, SETUP every track interleaved, PLAY, and read until the clip ends."""
        resp = self.request("DESCRIBE", url, [("Accept", "application/sdp")])
        if resp.status != 200:
            raise RuntimeError(f"DESCRIBE {url}: {resp.status}")
        base = resp.headers.get("Content-Base") or url
        sdp = parse_sdp(resp.body)
        for i, media in enumerate(sdp.media):
            control = resolve_url(base, media.control or "")
            r = self.request(
                "SETUP",
                control,
                [("Transport", f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}")],
            )
            if r.status != 200:
                raise RuntimeError(f"SETUP {control}: {r.status}")
        r = self.request("PLAY", base, [("Range", "npt=0-")])
        if r.status != 200:
            raise RuntimeError(f"PLAY: {r.status}")
        self.expected_tracks = len(sdp.media)
        return self.read_frames(seconds)


def rtp_payloads(frames: Iterable[InterleavedFrame], channel: int) -> list[bytes]:
    """RTP payloads (header and CSRCs stripped) of one channel: comparable across sessions,
    whose sequence numbers and timestamps start at random values."""
    out = []
    for f in frames:
        if f.channel != channel or len(f.payload) < 12:
            continue
        cc = f.payload[0] & 0x0F
        out.append(bytes(f.payload[12 + 4 * cc :]))
    return out
