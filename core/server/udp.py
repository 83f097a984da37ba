"""Shared UDP sockets: every client of a format is served from a few RTP/RTCP socket pairs.

A socket pair per viewer cannot reach 10,000 viewers (a process holds at most 20,000 file
descriptors here), so each format binds ``udp_socket_pairs`` pairs from its port range and
sends to every client with ``sendto``. Datagrams coming back (RTCP receiver reports, NAT
keep-alive packets) are routed to the session that watches the sender's address.

The send path is the per-packet hot path: a sink is two attributes and a bound ``sendto``;
a full socket buffer drops the packet (counted) rather than blocking the loop, which is what a
UDP sender must do anyway. A fan-out of one packet to many sinks of the same socket is sent
with one ``sendmmsg(2)`` call where the platform has it (:class:`UdpBatch`): the kernel still
delivers one datagram per viewer, but the system call, the Python call and the counting are
paid once per packet instead of once per viewer.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

DatagramHandler = Callable[[tuple[str, int], bytes, bool], None]


class UdpSink:
    """One client address on one shared socket.

    Its counters are its own sends plus, while it is a member of a :class:`UdpBatch`, the
    packets the batch sent to every member (so reading them is exact at any time).
    """

    __slots__ = (
        "_base_bytes",
        "_base_packets",
        "_batch",
        "_bytes",
        "_packets",
        "_sendto",
        "_sockaddr",
        "addr",
        "batch_group",
        "dropped",
    )

    def __init__(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        self._sendto = sock.sendto
        self.addr = addr
        self.batch_group: socket.socket | None = None
        """Sinks with the same group can be sent to together (see :meth:`make_batch`)."""
        self._sockaddr = b""
        if HAVE_SENDMMSG:
            try:
                self._sockaddr = _sockaddr(sock.family, addr)
            except (OSError, ValueError):  # not a numeric address of the socket's family
                pass
            else:
                self.batch_group = sock
        self._bytes = 0
        self._packets = 0
        self._batch: UdpBatch | None = None
        self._base_bytes = 0
        self._base_packets = 0
        self.dropped = 0

    @property
    def packets_sent(self) -> int:
        batch = self._batch
        if batch is None:
            return self._packets
        return self._packets + batch.packets - self._base_packets

    @property
    def bytes_sent(self) -> int:
        batch = self._batch
        if batch is None:
            return self._bytes
        return self._bytes + batch.bytes - self._base_bytes

    def send(self, payload: bytes) -> None:
        try:
            self._sendto(payload, self.addr)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
            return
        except OSError:  # ICMP unreachable from an earlier packet, etc.: the client decides
            self.dropped += 1
            return
        self._packets += 1
        self._bytes += len(payload)

    def make_batch(self) -> UdpBatch:
        """An empty batch sender for sinks of this sink's ``batch_group``, kept by a fan-out."""
        if self.batch_group is None:
            raise ValueError("this sink cannot be batched")
        return UdpBatch(self.batch_group)

    def _attach(self, batch: UdpBatch) -> None:
        self._batch = batch
        self._base_bytes = batch.bytes
        self._base_packets = batch.packets

    def _detach(self) -> None:
        batch = self._batch
        if batch is not None:
            self._packets += batch.packets - self._base_packets
            self._bytes += batch.bytes - self._base_bytes
            self._batch = None


# -- sendmmsg(2) through ctypes ------------------------------------------------------------
#
# The standard library has sendmsg but no sendmmsg. The message vector is built once per
# batch (one sockaddr and one mmsghdr per viewer, every header pointing at one shared iovec),
# so a packet costs one pointer store and one call, whatever the number of viewers.


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_char_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


def _load_sendmmsg() -> Callable[[int, int, int, int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        func = ctypes.CDLL(name, use_errno=True).sendmmsg
    except (OSError, AttributeError):  # no libc by that name, or no sendmmsg (not Linux)
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    func.restype = ctypes.c_int
    return func  # type: ignore[no-any-return]


_sendmmsg = _load_sendmmsg()
HAVE_SENDMMSG = _sendmmsg is not None
_MMSG_SIZE = ctypes.sizeof(_Mmsghdr)
_SOCKADDR_SIZE = 28  # sockaddr_in6; a sockaddr_in uses the first 16 bytes
_SOCKADDR_IN = struct.Struct("=H2s4s8x")
_SOCKADDR_IN6 = struct.Struct("=H2sI16sI")


def _sockaddr(family: int, addr: tuple[str, int]) -> bytes:
    """The C ``sockaddr_in``/``sockaddr_in6`` of a numeric address."""
    port = addr[1].to_bytes(2, "big")
    if family == socket.AF_INET6:
        host = socket.inet_pton(socket.AF_INET6, addr[0])
        return _SOCKADDR_IN6.pack(family, port, 0, host, 0)
    if family != socket.AF_INET:
        raise ValueError(f"no sockaddr for address family {family}")
    return _SOCKADDR_IN.pack(family, port, socket.inet_pton(socket.AF_INET, addr[0]))


class UdpBatch:
    """Sends each packet to every member sink (all on one socket) with one ``sendmmsg`` call.

    Members join and leave in O(1): a leaving member's slot is taken by the last one, and the
    C arrays grow by doubling. Counters are kept once for the batch (a member reads its share
    through its properties); only a packet the kernel did not take for every member is counted
    per sink. A full send buffer drops the packet for the members not yet sent to, as
    :meth:`UdpSink.send` does.
    """

    __slots__ = (
        "_capacity",
        "_iov",
        "_msgs",
        "_names",
        "_sinks",
        "_slots",
        "_vector",
        "bytes",
        "fd",
        "packets",
        "sock",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self._sinks: list[UdpSink] = []
        self._slots: dict[UdpSink, int] = {}
        self._iov = _Iovec()
        self._capacity = 0
        self._names = ctypes.create_string_buffer(0)
        self._msgs = (_Mmsghdr * 0)()
        self._vector = 0
        self.packets = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._sinks)

    def add(self, sink: UdpSink) -> bool:
        """Make ``sink`` a member; False if it cannot be one (another socket, another batch)."""
        if sink in self._slots:
            return True
        if sink.batch_group is not self.sock or sink._batch is not None:
            return False
        i = len(self._sinks)
        if i == self._capacity:
            self._grow()
        self._write_slot(i, sink)
        self._sinks.append(sink)
        self._slots[sink] = i
        sink._attach(self)
        return True

    def remove(self, sink: UdpSink) -> None:
        i = self._slots.pop(sink, None)
        if i is None:
            return
        last = self._sinks.pop()
        if last is not sink:  # the last member moves into the freed slot
            self._sinks[i] = last
            self._slots[last] = i
            self._write_slot(i, last)
        sink._detach()

    def _write_slot(self, i: int, sink: UdpSink) -> None:
        raw = sink._sockaddr
        ctypes.memmove(ctypes.addressof(self._names) + i * _SOCKADDR_SIZE, raw, len(raw))
        self._msgs[i].msg_hdr.msg_namelen = len(raw)

    def _grow(self) -> None:
        capacity = max(16, 2 * self._capacity)
        names = ctypes.create_string_buffer(_SOCKADDR_SIZE * capacity)
        msgs = (_Mmsghdr * capacity)()
        ctypes.memmove(names, self._names, ctypes.sizeof(self._names))
        base = ctypes.addressof(names)
        iov = ctypes.pointer(self._iov)
        for i in range(capacity):
            hdr = msgs[i].msg_hdr
            hdr.msg_name = base + i * _SOCKADDR_SIZE
            hdr.msg_iov = iov
            hdr.msg_iovlen = 1
            if i < self._capacity:
                hdr.msg_namelen = self._msgs[i].msg_hdr.msg_namelen
        self._names, self._msgs, self._capacity = names, msgs, capacity
        self._vector = ctypes.addressof(msgs)

    def send(self, payload: bytes) -> None:
        n = len(self._sinks)
        if not n:
            return
        if type(payload) is not bytes:  # the iovec points into a bytes object's own buffer
            payload = bytes(payload)
        iov = self._iov
        iov.iov_base = payload
        iov.iov_len = len(payload)
        sent = _sendmmsg(self.fd, self._vector, n, 0)  # type: ignore[misc]
        if sent == n:
            self.packets += 1
            self.bytes += len(payload)
            return
        self._send_rest(payload, max(sent, 0), ctypes.get_errno() if sent < 0 else 0)

    def _send_rest(self, payload: bytes, done: int, err: int) -> None:
        """The kernel stopped before the last member: go on past the members it refused (one
        call per refusal, bounded by the member count) and count this packet per sink."""
        n = len(self._sinks)
        failed: list[int] = []
        for _ in range(n + 1):
            if done >= n:
                break
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                failed.extend(range(done, n))  # send buffer full: dropped for the rest
                break
            if err:  # this member's datagram was refused (an ICMP error, ...): skip it
                failed.append(done)
                done += 1
                if done >= n:
                    break
            sent = _sendmmsg(self.fd, self._vector + done * _MMSG_SIZE, n - done, 0)  # type: ignore[misc]
            if sent > 0:
                done, err = done + sent, 0
            else:
                err = ctypes.get_errno() if sent < 0 else errno.EAGAIN
        size = len(payload)
        refused = set(failed)
        for i, sink in enumerate(self._sinks):
            if i in refused:
                sink.dropped += 1
            else:
                sink._packets += 1
                sink._bytes += size


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
