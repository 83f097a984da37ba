"""A light RTSP load client: N viewers, each DESCRIBE / SETUP every track / PLAY, then counting.

Each viewer sets up every track of the SDP over UDP (an even/odd ``client_port`` pair per track)
or, with ``--tcp``, interleaved on its RTSP connection; plays for ``--duration`` seconds; sends
TEARDOWN. Per viewer and track it counts RTP packets, finds loss from sequence gaps per SSRC
(expected = extended highest seq - first seq + 1) and measures lateness::

    lateness = arrival - (first arrival + (rtp_ts - first_ts) / clock_rate)

with the clock rate from the SDP's ``a=rtpmap``. A packet's arrival time is the kernel's receive
timestamp (``SO_TIMESTAMPNS``) for UDP, so a busy client does not inflate lateness; for TCP it is
when the data reached the event loop. Lateness goes into a 0.1 ms histogram (-1 s to +30 s).

A process may hold at most 20,000 descriptors and a UDP viewer needs 1 + 2 per track, so viewers
are spread over ``--procs`` worker processes (default ceil(N / 2000)), each with its own event
loop; each prints its figures as JSON on stdout and the parent merges them.

Per-packet work is one ``recvmsg_into`` into a preallocated buffer and one ``struct.unpack_from``
of seq/timestamp/SSRC (UDP), or an in-place walk over the ``$`` frames of the TCP buffer.

Usage::

    python benchmarks/loadclient.py rtsp://127.0.0.1:1091/live/x -n 100 --duration 10 --ramp 100

Prints one JSON object: viewers ok/failed (with reasons), packets received/expected, loss %,
lateness p50/p99/max and % later than 50 ms, time to first packet from PLAY p50/p99, the client's
own CPU time, and a timeline (every 0.25 s: packets received so far, viewers playing) that
``rtsp_passthrough.py`` lines up with the proxy's CPU samples.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import socket
import struct
import subprocess
import sys
import time
from array import array
from collections import Counter
from typing import Any

from mediacache.rtsp import (
    Headers,
    Request,
    Response,
    RtspReader,
    build_request,
    parse_sdp,
    parse_transports,
    resolve_url,
)

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS is the same
ANC_SIZE = socket.CMSG_SPACE(16)
TICK = 0.25  # timeline resolution, seconds (aligned to wall-clock multiples)
HIST_RES = 10_000.0  # buckets per second: 0.1 ms
HIST_MIN = -1.0  # seconds
HIST_MAX = 30.0
HIST_OFF = int(-HIST_MIN * HIST_RES)
HIST_N = int((HIST_MAX - HIST_MIN) * HIST_RES) + 1
FDS_PER_PROC = 2000  # viewers per worker by default (2 tracks: 5 descriptors each)
_HDR = struct.Struct(">HII").unpack_from  # seq, timestamp, ssrc at offset 2
_FRAME = struct.Struct(">xBH").unpack_from  # channel, length of a "$" frame
_TS = struct.Struct("=qq").unpack_from  # struct timespec
_RTPMAP_RE = re.compile(r"a=rtpmap:\d+\s+[^/\s]+/(\d+)")
_CL_RE = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class TrackStats:
    """Loss and lateness of one track of one viewer (per SSRC: a new SSRC starts over)."""

    __slots__ = (
        "cycles",
        "done_expected",
        "done_received",
        "first_arrival",
        "first_seq",
        "first_ts",
        "hist",
        "inv_clock",
        "max_late",
        "max_seq",
        "received",
        "rtcp",
        "ssrc",
        "viewer",
    )

    def __init__(self, clock_rate: int, hist: array, viewer: Viewer) -> None:
        self.inv_clock = 1.0 / clock_rate
        self.hist = hist
        self.viewer = viewer
        self.received = 0
        self.rtcp = 0
        self.ssrc = -1
        self.first_seq = self.max_seq = self.cycles = 0
        self.first_ts = 0
        self.first_arrival = 0.0
        self.max_late = -1e9
        self.done_expected = 0
        self.done_received = 0

    def packet(self, seq: int, ts: int, ssrc: int, now: float) -> None:
        """Account one RTP packet: the per-packet hot path."""
        if ssrc != self.ssrc:
            self._new_source(seq, ts, ssrc, now)
            return
        self.received += 1
        max_seq = self.max_seq
        if (seq - max_seq) & 0xFFFF < 0x8000:  # forward (possibly across a wrap)
            if seq < max_seq:
                self.cycles += 0x10000
            self.max_seq = seq
        d = (ts - self.first_ts) & 0xFFFFFFFF
        if d >= 0x80000000:
            d -= 0x100000000
        late = now - self.first_arrival - d * self.inv_clock
        if late > self.max_late:
            self.max_late = late
        b = int(late * HIST_RES) + HIST_OFF
        if b < 0:
            b = 0
        elif b >= HIST_N:
            b = HIST_N - 1
        self.hist[b] += 1

    def _new_source(self, seq: int, ts: int, ssrc: int, now: float) -> None:
        if self.ssrc != -1:  # close the previous source's books
            self.done_expected += self.expected_current()
            self.done_received += self.received
        else:
            self.viewer.first_packet(now)
        self.ssrc = ssrc
        self.first_seq = self.max_seq = seq
        self.cycles = 0
        self.first_ts = ts
        self.first_arrival = now
        self.received = 1
        self.hist[HIST_OFF] += 1
        if self.max_late < 0.0:
            self.max_late = 0.0

    def expected_current(self) -> int:
        if self.ssrc == -1:
            return 0
        return self.cycles + self.max_seq - self.first_seq + 1

    @property
    def total_received(self) -> int:
        return self.done_received + self.received

    @property
    def total_expected(self) -> int:
        return self.done_expected + self.expected_current()


class UdpTrack:
    """The RTP/RTCP socket pair of one UDP track, read with ``add_reader``."""

    def __init__(self, rtp: socket.socket, rtcp: socket.socket, stats: TrackStats) -> None:
        self.rtp = rtp
        self.rtcp = rtcp
        self.stats = stats

    def read_rtp(self, buf: bytearray, bufs: list[bytearray], kernel_ts: bool) -> None:
        """Drain the RTP socket (bounded, so other sockets get their turn)."""
        recvmsg_into = self.rtp.recvmsg_into
        recv_into = self.rtp.recv_into
        packet = self.stats.packet
        now = time.time()
        for _ in range(128):
            try:
                if kernel_ts:
                    n, anc, _f, _a = recvmsg_into(bufs, ANC_SIZE)
                    if anc:
                        sec, nsec = _TS(anc[0][2])
                        now = sec + nsec * 1e-9
                else:
                    n = recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            if n >= 12:
                seq, ts, ssrc = _HDR(buf, 2)
                packet(seq, ts, ssrc, now)

    def read_rtcp(self, buf: bytearray) -> None:
        for _ in range(16):
            try:
                self.rtcp.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self.stats.rtcp += 1


class PortAllocator:
    """Even/odd UDP port pairs from a range, probed in order (busy ports are skipped)."""

    def __init__(self, low: int, high: int) -> None:
        self.next = low + (low & 1)
        self.high = high

    def pair(self, host: str) -> tuple[socket.socket, socket.socket]:
        while self.next + 1 <= self.high:
            port = self.next
            self.next += 2
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                a.bind((host, port))
                b.bind((host, port + 1))
            except OSError:
                a.close()
                b.close()
                continue
            for s in (a, b):
                s.setblocking(False)
            a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 512 * 1024)
            return a, b
        raise OSError("UDP port range exhausted")


class ViewerError(Exception):
    """A viewer failed; the message is the reason counted in the summary."""


class ControlProtocol(asyncio.Protocol):
    """The viewer's RTSP connection: responses, and (TCP mode) interleaved RTP walked in place."""

    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.viewer.connection_lost()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        channels = self.viewer.channels
        now = 0.0
        while pos < end:
            byte = buf[pos]
            if byte == 0x24:  # "$" frame
                if end - pos < 4:
                    break
                channel, length = _FRAME(buf, pos)
                stop = pos + 4 + length
                if stop > end:
                    break
                stats = channels.get(channel)
                if stats is not None:
                    if not now:
                        now = time.time()
                    if length >= 12:
                        seq, ts, ssrc = _HDR(buf, pos + 6)
                        stats.packet(seq, ts, ssrc, now)
                elif (rtcp := channels.get(channel - 1)) is not None:
                    rtcp.rtcp += 1
                pos = stop
            elif byte == 0x0D or byte == 0x0A:
                pos += 1
            else:  # an RTSP message: cut it out whole and let the codec parse it
                head_end = buf.find(b"\r\n\r\n", pos)
                if head_end < 0:
                    if end - pos > 65536:
                        self._fail("RTSP message head too long")
                        return
                    break
                m = _CL_RE.search(buf, pos, head_end + 2)
                stop = head_end + 4 + (int(m.group(1)) if m else 0)
                if stop > end:
                    break
                self.viewer.message(bytes(buf[pos:stop]))
                pos = stop
        if pos:
            del buf[:pos]

    def _fail(self, why: str) -> None:
        self.viewer.error = self.viewer.error or why
        if self.transport is not None:
            self.transport.abort()


class Viewer:
    """One player: the RTSP exchange, its tracks, its outcome."""

    def __init__(self, worker: Worker, index: int) -> None:
        self.worker = worker
        self.index = index
        self.reader = RtspReader(max_body=1024 * 1024)
        self.proto: ControlProtocol | None = None
        self.cseq = 0
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.session: str | None = None
        self.session_timeout = 60.0
        self.tracks: list[TrackStats] = []
        self.udp: list[UdpTrack] = []
        self.channels: dict[int, TrackStats] = {}  # TCP: RTP channel -> stats
        self.play_sent = 0.0
        self.first_arrival = 0.0
        self.playing = False
        self.error: str | None = None

    # -- RTSP ---------------------------------------------------------------------------------

    def message(self, raw: bytes) -> None:
        self.reader.receive_data(raw)
        for ev in self.reader.events():
            if isinstance(ev, Response):
                fut = self.pending.pop(ev.cseq, None) if ev.cseq is not None else None
                if fut is not None and not fut.done():
                    fut.set_result(ev)
            elif isinstance(ev, Request) and self.proto and self.proto.transport:
                # A server request (keep-alive): answer 200 so it keeps the session.
                reply = f"RTSP/1.0 200 OK\r\nCSeq: {ev.cseq or 0}\r\n\r\n".encode()
                self.proto.transport.write(reply)

    async def request(
        self, method: str, url: str, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        assert self.proto is not None and self.proto.transport is not None
        self.cseq += 1
        pairs = [("CSeq", str(self.cseq)), ("User-Agent", "mediacache-loadclient")]
        pairs += headers or []
        if self.session is not None:
            pairs.append(("Session", self.session))
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.pending[self.cseq] = fut
        if method == "PLAY":
            self.play_sent = time.time()
        self.proto.transport.write(build_request(Request(method, url, Headers(pairs))))
        try:
            resp = await asyncio.wait_for(fut, self.worker.request_timeout)
        except TimeoutError:
            raise ViewerError(f"{method} timeout") from None
        if resp.status != 200:
            raise ViewerError(f"{method} {resp.status}")
        if (sess := resp.headers.get("Session")) is not None:
            sid, _, params = sess.partition(";")
            self.session = sid.strip()
            m = re.search(r"timeout\s*=\s*(\d+)", params)
            if m:
                self.session_timeout = max(2.0, float(m.group(1)))
        return resp

    def connection_lost(self) -> None:
        if self.playing and not self.worker.stopping_viewer(self):
            self.error = self.error or "connection lost while playing"
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ViewerError("connection lost"))
        self.pending.clear()

    def first_packet(self, now: float) -> None:
        if not self.first_arrival:
            self.first_arrival = now

    # -- the whole run ------------------------------------------------------------------------

    async def run(self) -> None:
        w = self.worker
        loop = asyncio.get_running_loop()
        try:
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: ControlProtocol(self), w.host, w.port),
                    w.connect_timeout,
                )
            except TimeoutError:
                raise ViewerError("connect timeout") from None
            except OSError as exc:
                raise ViewerError(f"connect: {exc.strerror or exc}") from None
            self.proto = proto
            resp = await self.request("DESCRIBE", w.url, [("Accept", "application/sdp")])
            base = resp.headers.get("Content-Base") or resp.headers.get("Content-Location")
            base = base or w.url
            sdp = parse_sdp(resp.body)
            for i, media in enumerate(sdp.media):
                await self._setup(i, resolve_url(base, media.control or ""), media.lines)
            if not self.tracks:
                raise ViewerError("no track")
            await self.request("PLAY", base, [("Range", "npt=0-")])
            self.playing = True
            w.playing += 1
            await self._watch(base)
        except ViewerError as exc:
            self.error = self.error or str(exc)
        except Exception as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"[:80]
        finally:
            if self.playing:
                self.playing = False
                w.playing -= 1
            await self._close()

    async def _setup(self, i: int, url: str, lines: tuple[str, ...]) -> None:
        w = self.worker
        clock = 90000
        for line in lines:
            if m := _RTPMAP_RE.match(line):
                clock = int(m.group(1))
                break
        stats = TrackStats(clock, w.hist, self)
        if w.tcp:
            transport = f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}"
            resp = await self.request("SETUP", url, [("Transport", transport)])
            specs = parse_transports(resp.headers.get("Transport") or transport)
            channels = specs[0].interleaved or (2 * i, 2 * i + 1)
            self.channels[channels[0]] = stats
        else:
            rtp, rtcp = w.ports.pair(w.bind_host)
            track = UdpTrack(rtp, rtcp, stats)
            self.udp.append(track)  # registered now so _close releases the sockets
            port = rtp.getsockname()[1]
            if w.kernel_ts:
                rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            loop = asyncio.get_running_loop()
            loop.add_reader(rtp.fileno(), track.read_rtp, w.buf, w.bufs, w.kernel_ts)
            loop.add_reader(rtcp.fileno(), track.read_rtcp, w.buf)
            transport = f"RTP/AVP;unicast;client_port={port}-{port + 1}"
            await self.request("SETUP", url, [("Transport", transport)])
        self.tracks.append(stats)

    async def _watch(self, base: str) -> None:
        """Play for the duration, with a keep-alive every half session timeout."""
        w = self.worker
        assert self.proto is not None
        end = time.monotonic() + w.duration
        keepalive = self.session_timeout / 2
        while (left := end - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proto.closed), min(left, keepalive))
            if self.proto.closed.done():
                raise ViewerError(self.error or "connection lost while playing")
            if end - time.monotonic() > 1.0:
                await self.request("GET_PARAMETER", base)
        self.playing = False
        w.playing -= 1
        self.stop_base = base

    async def _close(self) -> None:
        proto = self.proto
        if proto is not None and proto.transport is not None and not proto.closed.done():
            base = getattr(self, "stop_base", None)
            if base is not None and self.error is None:
                try:
                    await self.request("TEARDOWN", base)
                except ViewerError as exc:
                    self.error = f"teardown: {exc}"
            proto.transport.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.closed), 2.0)
        loop = asyncio.get_running_loop()
        for track in self.udp:
            for s in (track.rtp, track.rtcp):
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(s.fileno())
                s.close()
        self.udp.clear()


class Worker:
    """Runs a share of the viewers on one event loop and reports JSON."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.url: str = cfg["url"]
        hostport = self.url.split("://", 1)[1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        self.host = host.strip("[]") or hostport
        self.port = int(port) if port else 554
        self.viewers_n: int = cfg["n"]
        self.first_index: int = cfg["first_index"]
        self.stride: int = cfg["stride"]
        self.ramp: float = cfg["ramp"]
        self.duration: float = cfg["duration"]
        self.tcp: bool = cfg["tcp"]
        self.kernel_ts: bool = cfg["kernel_ts"]
        self.connect_timeout: float = cfg["connect_timeout"]
        self.request_timeout: float = cfg["request_timeout"]
        self.max_time: float = cfg["max_time"]
        self.start_at: float = cfg["start_at"]
        self.bind_host: str = cfg["bind_host"]
        self.ports = PortAllocator(cfg["port_low"], cfg["port_high"])
        self.hist = array("I", bytes(4 * HIST_N))
        self.buf = bytearray(65536)
        self.bufs = [self.buf]
        self.playing = 0
        self.viewers: list[Viewer] = []
        self.timeline: list[tuple[int, int, int]] = []

    def stopping_viewer(self, viewer: Viewer) -> bool:
        return getattr(viewer, "stop_base", None) is not None

    def _sample(self) -> None:
        now = time.time()
        packets = sum(t.total_received for v in self.viewers for t in v.tracks)
        self.timeline.append((round(now / TICK), packets, self.playing))

    async def _sampler(self) -> None:
        while True:
            now = time.time()
            await asyncio.sleep((math.floor(now / TICK) + 1) * TICK - now + 0.001)
            self._sample()

    async def run(self) -> dict[str, Any]:
        with contextlib.suppress(ValueError, OSError):
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        delay = self.start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sampler = asyncio.create_task(self._sampler())
        tasks = []
        t0 = time.monotonic()
        for k in range(self.viewers_n):
            global_index = self.first_index + k * self.stride
            due = t0 + global_index / self.ramp
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            viewer = Viewer(self, global_index)
            self.viewers.append(viewer)
            tasks.append(asyncio.create_task(viewer.run()))
        if tasks:
            left = self.max_time - (time.monotonic() - t0)
            _, not_done = await asyncio.wait(tasks, timeout=max(left, 1.0))
            for task in not_done:
                viewer = self.viewers[tasks.index(task)]
                viewer.error = viewer.error or "run time cap reached"
                task.cancel()
            if not_done:
                await asyncio.wait(not_done, timeout=5.0)
        self._sample()
        sampler.cancel()
        return self.report()

    def report(self) -> dict[str, Any]:
        failures: Counter[str] = Counter()
        ok = 0
        received = expected = rtcp = 0
        first_packet_ms = []
        max_late = None
        for v in self.viewers:
            got = sum(t.total_received for t in v.tracks)
            if v.error is None and got > 0:
                ok += 1
            else:
                failures[v.error or "no packet received"] += 1
            received += got
            expected += sum(t.total_expected for t in v.tracks)
            rtcp += sum(t.rtcp for t in v.tracks)
            for t in v.tracks:
                if t.ssrc != -1 and (max_late is None or t.max_late > max_late):
                    max_late = t.max_late
            if v.first_arrival and v.play_sent:
                first_packet_ms.append(round((v.first_arrival - v.play_sent) * 1000, 2))
        hist = {i: c for i, c in enumerate(self.hist) if c}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "viewers": len(self.viewers),
            "ok": ok,
            "failures": dict(failures),
            "received": received,
            "expected": expected,
            "rtcp": rtcp,
            "max_late": max_late,
            "hist": hist,
            "first_packet_ms": first_packet_ms,
            "timeline": self.timeline,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }


# -- parent: split, run, merge --------------------------------------------------------------------


def percentile_from_hist(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile (0..1) of a bucket histogram, in milliseconds (bucket upper edge)."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return round((bucket + 1 - HIST_OFF) / HIST_RES * 1000, 2)
    return None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def merge_timelines(parts: list[list[list[int]]]) -> list[tuple[float, int, int]]:
    """Sum per-worker (tick, packets, playing) series on the common tick grid."""
    ticks = sorted({row[0] for part in parts for row in part})
    merged = []
    cursors = [0] * len(parts)
    last: list[tuple[int, int]] = [(0, 0)] * len(parts)
    for tick in ticks:
        for i, part in enumerate(parts):
            while cursors[i] < len(part) and part[cursors[i]][0] <= tick:
                row = part[cursors[i]]
                last[i] = (row[1], row[2])
                cursors[i] += 1
        merged.append(
            (round(tick * TICK, 3), sum(p for p, _ in last), sum(playing for _, playing in last))
        )
    return merged


def merge(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    hist: Counter[int] = Counter()
    for r in results:
        hist.update({int(k): v for k, v in r["hist"].items()})
    failures: Counter[str] = Counter()
    for r in results:
        failures.update(r["failures"])
    received = sum(r["received"] for r in results)
    expected = sum(r["expected"] for r in results)
    first = [x for r in results for x in r["first_packet_ms"]]
    lates = [r["max_late"] for r in results if r["max_late"] is not None]
    total = sum(hist.values())
    over = sum(c for b, c in hist.items() if (b - HIST_OFF) / HIST_RES > 0.050)
    timeline = merge_timelines([r["timeline"] for r in results])
    ok = sum(r["ok"] for r in results)
    # Steady state: while every successful viewer is playing.
    steady = [row for row in timeline if ok and row[2] >= ok]
    steady_pps = None
    if len(steady) >= 2 and steady[-1][0] > steady[0][0]:
        steady_pps = round((steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0]), 1)
    return {
        "url": args.url,
        "transport": "tcp" if args.tcp else "udp",
        "viewers": args.n,
        "procs": len(results),
        "duration_s": args.duration,
        "viewers_ok": ok,
        "viewers_failed": args.n - ok,
        "failures": dict(failures),
        "packets_received": received,
        "packets_expected": expected,
        "loss_pct": round(100.0 * (expected - received) / expected, 4) if expected else None,
        "rtcp_received": sum(r["rtcp"] for r in results),
        "lateness_ms": {
            "p50": percentile_from_hist(hist, 0.50),
            "p99": percentile_from_hist(hist, 0.99),
            "max": round(max(lates) * 1000, 2) if lates else None,
        },
        "late_over_50ms_pct": round(100.0 * over / total, 4) if total else None,
        "first_packet_ms": {
            "p50": _pct(first, 0.50),
            "p99": _pct(first, 0.99),
            "max": max(first) if first else None,
        },
        "steady_window_s": [steady[0][0], steady[-1][0]] if len(steady) >= 2 else None,
        "steady_pps": steady_pps,
        "client_cpu_s": round(sum(r["cpu_s"] for r in results), 3),
        "timeline": timeline,
    }


def run_parent(args: argparse.Namespace) -> dict[str, Any]:
    procs = args.procs or max(1, math.ceil(args.n / FDS_PER_PROC))
    procs = min(procs, max(1, args.n))
    low, high = (int(x) for x in args.udp_ports.split("-"))
    span = (high - low + 1) // procs
    ramp_time = args.n / args.ramp
    max_time = args.max_time or (ramp_time + args.duration + 2 * args.request_timeout + 30)
    start_at = time.time() + 0.5 + 0.1 * procs  # let every worker import first
    children = []
    for k in range(procs):
        share = len(range(k, args.n, procs))
        cfg = {
            "url": args.url,
            "n": share,
            "first_index": k,
            "stride": procs,
            "ramp": args.ramp,
            "duration": args.duration,
            "tcp": args.tcp,
            "kernel_ts": not args.no_kernel_ts,
            "connect_timeout": args.connect_timeout,
            "request_timeout": args.request_timeout,
            "max_time": max_time,
            "start_at": start_at,
            "bind_host": args.bind,
            "port_low": low + k * span,
            "port_high": low + (k + 1) * span - 1,
        }
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
        children.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL))
    results = []
    deadline = time.monotonic() + max_time + 20
    try:
        for child in children:
            try:
                out, _ = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                out, _ = child.communicate(timeout=5)
            lines = out.decode(errors="replace").strip().splitlines()
            if child.returncode != 0 or not lines:
                print(f"loadclient: worker exited {child.returncode}", file=sys.stderr)
                continue
            results.append(json.loads(lines[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(5)
    if not results:
        raise SystemExit("loadclient: no worker reported")
    summary = merge(results, args)
    missing = args.n - sum(r["viewers"] for r in results)
    if missing:
        summary["viewers_failed"] += missing
        summary["failures"]["worker lost"] = missing
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", nargs="?", help="rtsp://HOST:PORT/path")
    p.add_argument("-n", type=int, default=10, help="viewers")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of PLAY per viewer")
    p.add_argument("--ramp", type=float, default=100.0, help="viewers started per second")
    p.add_argument("--tcp", action="store_true", help="RTP/AVP/TCP interleaved instead of UDP")
    p.add_argument("--procs", type=int, default=0, help="worker processes (0: ceil(N/2000))")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--request-timeout", type=float, default=15.0)
    p.add_argument("--max-time", type=float, default=0, help="hard cap on a worker's run, s")
    p.add_argument("--udp-ports", default="10000-65535", help="client RTP ports LOW-HIGH")
    p.add_argument("--bind", default="127.0.0.1", help="address client UDP sockets bind to")
    p.add_argument("--no-kernel-ts", action="store_true", help="time packets in user space")
    p.add_argument("--no-timeline", action="store_true", help="leave the timeline out")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        cfg = json.loads(args.worker)
        result = asyncio.run(Worker(cfg).run())
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    if not args.url:
        build_parser().error("the URL is required")
    summary = run_parent(args)
    if args.no_timeline:
        summary.pop("timeline", None)
    print(json.dumps(summary, indent=1))
    return 0 if summary["viewers_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
