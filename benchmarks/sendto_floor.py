"""The floor of a Python UDP fan-out on this rig: sendto to N loopback receivers that read.

A sender process sends one 200-byte datagram to each of N receiver sockets, 72 rounds a second
(the replayed clip's packet rate per viewer) for a few seconds, while a forked receiver process
drains the sockets with epoll as the load client does. The sender's CPU time per packet is the
floor any sendto-per-packet data path pays here: on loopback the sender's system call also does
the receiver's delivery and wake-up, so it is mostly kernel time.

Modes: ``bare`` is a loop of ``sock.sendto(payload, addr)``; ``core`` sends through the core's
own hot path (``mediacache.splitter.FanOut`` over ``mediacache.server.udp.UdpSink``), so the
difference is what the Python layers add per packet.

Usage::

    python benchmarks/sendto_floor.py -n 500            # both modes, ~12 s
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import time
from collections.abc import Callable

RATE = 72  # rounds per second: packets per second of one viewer of the replayed clip


def receiver(socks: list[socket.socket], stop_fd: int, timestamps: bool) -> None:
    """Drain every socket until ``stop_fd`` is readable (runs in the forked child)."""
    sel = selectors.DefaultSelector()
    buf = bytearray(2048)
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    sel.register(stop_fd, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select(5.0):
            if key.fileobj == stop_fd:
                return
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                while True:
                    if timestamps:
                        sock.recvmsg_into([buf], 64)
                    else:
                        sock.recv_into(buf)
            except BlockingIOError:
                pass


def make_sender(mode: str, addrs: list[tuple[str, int]]) -> Callable[[bytes], None]:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    if mode == "core":
        from mediacache.server.udp import UdpSink
        from mediacache.splitter import FanOut

        fan = FanOut()
        for addr in addrs:
            fan.add(UdpSink(tx, addr))
        return fan.send
    sendto = tx.sendto
    drops = [0]

    def bare(payload: bytes) -> None:
        for addr in addrs:
            try:
                sendto(payload, addr)
            except OSError:
                drops[0] += 1

    return bare


def run(n: int, mode: str, seconds: float, timestamps: bool) -> dict[str, float]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        if timestamps:
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_TIMESTAMPNS", 35), 1)
        socks.append(s)
    addrs = [s.getsockname() for s in socks]
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the receiver
        try:
            receiver(socks, stop_r, timestamps)
        finally:
            os._exit(0)
    for s in socks:
        s.close()
    try:
        send = make_sender(mode, addrs)
        payload = bytes(200)
        rounds = int(RATE * seconds)
        before = os.times()
        start = time.monotonic()
        for k in range(rounds):
            send(payload)
            time.sleep(max(0.0, start + (k + 1) / RATE - time.monotonic()))
        after = os.times()
    finally:
        os.write(stop_w, b"x")
        os.waitpid(pid, 0)
        os.close(stop_r)
        os.close(stop_w)
    user = after.user - before.user
    system = after.system - before.system
    packets = rounds * n
    return {
        "packets": packets,
        "us_per_pkt": 1e6 * (user + system) / packets,
        "sys_us_per_pkt": 1e6 * system / packets,
        "pkts_per_cpu_s": packets / (user + system) if user + system else float("inf"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=500, help="receivers")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--modes", default="bare,core")
    p.add_argument("--no-timestamps", action="store_true", help="receivers without SO_TIMESTAMPNS")
    args = p.parse_args(argv)
    for mode in args.modes.split(","):
        r = run(args.n, mode, args.seconds, not args.no_timestamps)
        print(
            f"{mode:5} N={args.n}: {r['us_per_pkt']:.2f} us/packet "
            f"({r['sys_us_per_pkt']:.2f} in the kernel), {r['pkts_per_cpu_s']:,.0f} packets "
            f"per CPU-second ({r['packets']} packets)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
