"""What a live-feed handover costs per packet in the feed path, in microseconds: the RTP
``Continuity`` rewriting a successor that numbers its packets itself (seq, timestamp, SSRC), and
Real's ``RdtContinuity`` renumbering RDT. Both run once per packet, not per viewer, and only
after a handover to such a successor; the fan-out behind them is empty, so only they count.

Prints one line per path; run: ``python benchmarks/handover_continuity.py [-n PACKETS]``.
Needs the core and the realmedia plugin installed; no network.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_hot_path import per_packet

from mediacache.splitter import Continuity, FeedTrack
from mediacache_realmedia.caching import RdtContinuity
from mediacache_realmedia.wire.rdt import build_data_packet


def rtp(seq: int, ts: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack(">BBHII", 0x80, 96, seq & 0xFFFF, ts, ssrc) + payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=100_000, help="packets per run")
    args = parser.parse_args()
    for size in (200, 1200):
        body = bytes(size)
        track = FeedTrack("t")
        track.rtp.send(rtp(7, 1000, 0xA1, body))  # what the viewers had
        cont = Continuity(track, 90000, 0.0, lambda: 0.0, lambda rtp_, rtcp_: None)
        packets = [rtp(500 + i, 5 + i * 3000, 0xB2, body) for i in range(args.n)]
        cont.rtp.send(packets[0])
        assert cont.mode == "rewrite"
        cost = per_packet(cont.rtp.send, packets)
        print(f"RTP Continuity, rewrite, {size:>4} B   {cost:6.2f} us/packet")

        track = FeedTrack("streamid=0")
        track.rtp.send(build_data_packet(0, 10, 1000, body, keyframe=True))
        rdt = RdtContinuity(track, lambda rtp_, rtcp_: None)
        packets = [
            build_data_packet(0, i % 0xFF00, 1100 + i, body, keyframe=False) for i in range(args.n)
        ]
        rdt.send(packets[0])
        assert rdt.mode == "renumber"
        cost = per_packet(rdt.send, packets)
        print(f"RdtContinuity, renumber, {size:>4} B   {cost:6.2f} us/packet")


if __name__ == "__main__":
    main()
