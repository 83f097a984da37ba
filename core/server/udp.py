"""Shared UDP sockets: every client of a format is served from a few RTP/RTCP socket pairs.

A socket pair per viewer cannot reach 10,000 viewers (a process holds at most 20,000 file
descriptors here), so each format binds ``udp_socket_pairs`` pairs from its port range and
sends to every client with ``sendto``. Datagrams coming back (RTCP receiver reports, NAT
keep-alive packets) are routed to the session that watches the sender's address.

The send path is the per-packet hot path: a sink is two attributes and a bound ``sendto``;
a full socket buffer drops the packet (counted) rather than blocking the loop, which is what a
UDP sender must do anyway.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

DatagramHandler = Callable[[tuple[str, int], bytes, bool], None]


class UdpSink:
    """One client address on one shared socket."""

    __slots__ = ("_sendto", "addr", "bytes_sent", "dropped", "packets_sent")

    def __init__(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        self._sendto = sock.sendto
        self.addr = addr
        self.bytes_sent = 0
        self.packets_sent = 0
        self.dropped = 0

    def send(self, payload: bytes) -> None:
        try:
            self._sendto(payload, self.addr)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
            return
        except OSError:  # ICMP unreachable from an earlier packet, etc.: the client decides
            self.dropped += 1
            return
        self.packets_sent += 1
        self.bytes_sent += len(payload)


@dataclass
class _Pair:
    rtp: socket.socket
    rtcp: socket.socket
    ports: tuple[int, int]


@dataclass
class UdpPool:
    """The bound pairs of one format, and who listens for which client address."""

    host: str
    port_range: tuple[int, int]
    pairs_wanted: int
    pairs: list[_Pair] = field(default_factory=list)
    watchers: dict[tuple[str, int], DatagramHandler] = field(default_factory=dict)
    _next: int = 0
    _loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind up to ``pairs_wanted`` even/odd pairs inside the range, skipping busy ports."""
        self._loop = loop
        low, high = self.port_range
        port = low + (low % 2)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        while port + 1 <= high and len(self.pairs) < self.pairs_wanted:
            socks = []
            try:
                for p in (port, port + 1):
                    s = socket.socket(family, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.setblocking(False)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
                    s.bind((self.host, p))
            except OSError as exc:
                for s in socks:
                    s.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                port += 2
                continue
            pair = _Pair(socks[0], socks[1], (port, port + 1))
            loop.add_reader(pair.rtp.fileno(), self._readable, pair.rtp, False)
            loop.add_reader(pair.rtcp.fileno(), self._readable, pair.rtcp, True)
            self.pairs.append(pair)
            port += 2
        if not self.pairs:
            raise OSError(f"no free UDP port pair in {low}-{high} on {self.host}")

    def close(self) -> None:
        for pair in self.pairs:
            for s in (pair.rtp, pair.rtcp):
                if self._loop is not None:
                    self._loop.remove_reader(s.fileno())
                s.close()
        self.pairs.clear()
        self.watchers.clear()

    def assign(self) -> _Pair:
        """The pair for a new session (round robin spreads kernel work over the sockets)."""
        pair = self.pairs[self._next % len(self.pairs)]
        self._next += 1
        return pair

    def _readable(self, sock: socket.socket, rtcp: bool) -> None:
        for _ in range(64):  # bounded: other work must get the loop too
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable reported on the socket
                logger.debug("udp receive error on {}: {}", sock.getsockname(), exc)
                continue
            handler = self.watchers.get(addr[:2])
            if handler is not None:
                try:
                    handler(addr[:2], data, rtcp)
                except Exception:
                    logger.exception("datagram handler failed")
