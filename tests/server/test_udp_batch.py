"""UDP fan-out batching: one sendmmsg per packet per shared socket, with exact per-viewer counts.

Real loopback sockets: every viewer must receive every packet sent while it was a member, byte
for byte, and its counters must say so, across joins, leaves and refused datagrams.
"""

from __future__ import annotations

import ctypes
import errno
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediacache.server import udp
from mediacache.server.udp import HAVE_SENDMMSG, UdpBatch, UdpSink
from mediacache.splitter import FanOut

pytestmark = pytest.mark.skipif(not HAVE_SENDMMSG, reason="no sendmmsg on this platform")


def _bound(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    return s


def _drain(sock: socket.socket) -> list[bytes]:
    got = []
    for _ in range(10_000):
        try:
            got.append(sock.recv(65536))
        except BlockingIOError:
            break
    return got


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    s = _bound()
    yield s
    s.close()


@pytest.fixture
def receivers() -> Iterator[list[socket.socket]]:
    socks = [_bound() for _ in range(5)]
    yield socks
    for s in socks:
        s.close()


def test_a_fan_out_of_one_socket_sends_through_one_batch(
    sender: socket.socket, receivers: list[socket.socket]
) -> None:
    fan = FanOut()
    sinks = [UdpSink(sender, r.getsockname()) for r in receivers]
    for s in sinks:
        fan.add(s)
    packets = [b"\x80\x00" + bytes([i]) + b"\x00" * 40 + bytes(range(i)) for i in range(20)]
    for p in packets:
        fan.send(p)
    assert fan._sends is not None and len(fan._sends) == 1  # one sender for five viewers
    for r, s in zip(receivers, sinks, strict=True):
        assert _drain(r) == packets  # NUL bytes included: the iovec has an explicit length
        assert s.packets_sent == 20 and s.bytes_sent == sum(map(len, packets))
        assert s.dropped == 0


def test_joins_and_leaves_keep_every_count_exact(
    sender: socket.socket, receivers: list[socket.socket]
) -> None:
    fan = FanOut()
    a, b, c = (UdpSink(sender, r.getsockname()) for r in receivers[:3])
    fan.add(a)
    fan.add(b)
    fan.send(b"one")
    fan.add(c)
    fan.send(b"two!")
    fan.remove(a)
    fan.send(b"three")
    a.send(b"own")  # a sink's own sends count too, batched or not
    assert [_drain(r) for r in receivers[:3]] == [
        [b"one", b"two!", b"own"],
        [b"one", b"two!", b"three"],
        [b"two!", b"three"],
    ]
    assert (a.packets_sent, a.bytes_sent) == (3, 3 + 4 + 3)
    assert (b.packets_sent, b.bytes_sent) == (3, 3 + 4 + 5)
    assert (c.packets_sent, c.bytes_sent) == (2, 4 + 5)


def test_a_refused_datagram_drops_for_that_viewer_only(
    sender: socket.socket, receivers: list[socket.socket]
) -> None:
    sinks = [UdpSink(sender, r.getsockname()) for r in receivers]
    sinks.insert(2, UdpSink(sender, ("127.0.0.1", 0)))  # port 0: the kernel refuses (EINVAL)
    batch = UdpBatch(sender)
    assert all(batch.add(s) for s in sinks)
    batch.send(b"payload")
    batch.send(b"payload")
    assert [len(_drain(r)) for r in receivers] == [2] * 5
    assert sinks[2].dropped == 2 and sinks[2].packets_sent == 0
    assert all(s.packets_sent == 2 and s.dropped == 0 for i, s in enumerate(sinks) if i != 2)


def test_a_full_send_buffer_drops_for_the_rest(
    sender: socket.socket, receivers: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = udp._sendmmsg
    assert real is not None
    calls: list[int] = []

    def two_then_full(fd: int, vector: int, n: int, flags: int) -> int:
        calls.append(n)
        if len(calls) == 1:
            return real(fd, vector, 2, flags)  # the kernel took two messages...
        ctypes.set_errno(errno.EAGAIN)  # ...then the buffer was full
        return -1

    monkeypatch.setattr(udp, "_sendmmsg", two_then_full)
    sinks = [UdpSink(sender, r.getsockname()) for r in receivers]
    batch = UdpBatch(sender)
    for s in sinks:
        batch.add(s)
    batch.send(b"x" * 100)
    assert calls == [5, 3]
    assert [len(_drain(r)) for r in receivers] == [1, 1, 0, 0, 0]
    assert [(s.packets_sent, s.dropped) for s in sinks] == [(1, 0), (1, 0), (0, 1), (0, 1), (0, 1)]


def test_ipv6_viewers_are_batched_too() -> None:
    try:
        tx = _bound(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    rx = [_bound(socket.AF_INET6, "::1") for _ in range(3)]
    try:
        fan = FanOut()
        for r in rx:
            fan.add(UdpSink(tx, r.getsockname()[:2]))
        fan.send(b"v6")
        assert [_drain(r) for r in rx] == [[b"v6"]] * 3
        assert fan._sends is not None and len(fan._sends) == 1
    finally:
        for s in (tx, *rx):
            s.close()


def test_sinks_of_different_sockets_are_not_mixed(receivers: list[socket.socket]) -> None:
    tx1, tx2 = _bound(), _bound()
    try:
        fan = FanOut()
        for i, r in enumerate(receivers):
            fan.add(UdpSink(tx1 if i % 2 else tx2, r.getsockname()))
        fan.send(b"p")
        assert fan._sends is not None and len(fan._sends) == 2
        ports = {tx1.getsockname()[1], tx2.getsockname()[1]}
        for i, r in enumerate(receivers):
            data, addr = r.recvfrom(100)
            assert data == b"p" and addr[1] in ports
            assert addr[1] == (tx1 if i % 2 else tx2).getsockname()[1]
        batch = UdpBatch(tx1)
        assert not batch.add(UdpSink(tx2, ("127.0.0.1", 9)))  # another socket's sink
        other = UdpBatch(tx1)
        member = UdpSink(tx1, ("127.0.0.1", 9))
        assert other.add(member) and not batch.add(member)  # a sink has one batch at a time
    finally:
        tx1.close()
        tx2.close()


def test_members_leave_from_the_middle_past_growth(sender: socket.socket) -> None:
    rx = [_bound() for _ in range(40)]  # past the first two capacities (16, 32)
    try:
        fan = FanOut()
        sinks = [UdpSink(sender, r.getsockname()) for r in rx]
        for s in sinks:
            fan.add(s)
        fan.send(b"all")
        gone = set(range(0, 40, 3))
        for i in gone:
            fan.remove(sinks[i])
        fan.send(b"rest")
        for i, r in enumerate(rx):
            assert _drain(r) == ([b"all"] if i in gone else [b"all", b"rest"])
            assert sinks[i].packets_sent == (1 if i in gone else 2)
    finally:
        for s in rx:
            s.close()


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 4)),
        st.tuples(st.just("remove"), st.integers(0, 4)),
        st.tuples(st.just("send"), st.binary(min_size=0, max_size=64)),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops=_ops)
def test_counts_match_what_each_viewer_received(ops: list[tuple[str, object]]) -> None:
    tx = _bound()
    rx = [_bound() for _ in range(5)]
    try:
        fan = FanOut()
        sinks = [UdpSink(tx, r.getsockname()) for r in rx]
        expected: list[list[bytes]] = [[] for _ in rx]
        members: set[int] = set()
        for op, arg in ops:
            if op == "add":
                assert isinstance(arg, int)
                fan.add(sinks[arg])
                members.add(arg)
            elif op == "remove":
                assert isinstance(arg, int)
                fan.remove(sinks[arg])
                members.discard(arg)
            else:
                assert isinstance(arg, bytes)
                fan.send(arg)
                for i in members:
                    expected[i].append(arg)
        for i, r in enumerate(rx):
            assert _drain(r) == expected[i]
            assert sinks[i].packets_sent == len(expected[i])
            assert sinks[i].bytes_sent == sum(map(len, expected[i]))
    finally:
        for s in (tx, *rx):
            s.close()
