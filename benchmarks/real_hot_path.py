"""What the Real proxy adds per RDT packet, in microseconds: the per-viewer set-id rewrite of a
split or pass-through (``SetIdSink``), the recorder of a MISS, the replay's per-packet rewrite
of a HIT, and the stream-end check every origin frame of a live feed goes through.

Prints one line per path; run: ``python benchmarks/real_hot_path.py [-n PACKETS]``. Needs the
core and the realmedia plugin installed; no network.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mediacache.cache.objects import CacheKey, TrackMeta
from mediacache.cache.store import CacheStore
from mediacache_realmedia.caching import SetIdSink, ends_stream, make_recorder
from mediacache_realmedia.origin import rdt_data_packet
from mediacache_realmedia.wire.rdt import rewrite_rdt_data


class NullSink:
    bytes_sent = 0
    packets_sent = 0

    def send(self, payload: bytes) -> None:
        self.packets_sent += 1


def per_packet(fn: Callable[[bytes], object], packets: list[bytes], repeat: int = 5) -> float:
    """Median over ``repeat`` runs of the time per packet, in microseconds."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for p in packets:
            fn(p)
        runs.append((time.perf_counter() - start) / len(packets) * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=100_000, help="packets per run")
    args = parser.parse_args()
    payload = bytes(range(256)) * 4  # a 1 kB .rm packet
    packets = [rdt_data_packet(0, i % 0xFF00, i & 1, i * 40, payload) for i in range(args.n)]

    same = SetIdSink(NullSink(), 0)
    other = SetIdSink(NullSink(), 1)
    print(f"SetIdSink.send, set id unchanged  {per_packet(same.send, packets):6.2f} us/packet")
    print(f"SetIdSink.send, set id rewritten  {per_packet(other.send, packets):6.2f} us/packet")
    print(f"ends_stream on a data packet       {per_packet(ends_stream, packets):6.2f} us/packet")
    seq = iter(range(10**9))
    rewrite = lambda p: rewrite_rdt_data(p, set_id=2, seq=next(seq) % 0xFF00)  # noqa: E731
    print(f"rewrite_rdt_data (HIT replay)      {per_packet(rewrite, packets):6.2f} us/packet")

    with tempfile.TemporaryDirectory() as tmp:
        store = CacheStore(Path(tmp), memory_limit=1 << 30, disk_limit=1 << 31)
        fill = store.begin_fill(
            CacheKey.make("realmedia", "rtsp://o/clip.rm", "bench"),
            description=b"v=0\r\n",
            tracks=[TrackMeta(track_id=0, control="streamid=0", clock_rate=1000, codec="x")],
            validators={},
            duration=None,
        )
        recorder = make_recorder(fill, [0], 0.0)
        clock = iter(range(10**9))
        record = lambda p: recorder.on_frame(0, p, next(clock) / 1000)  # noqa: E731
        print(f"RdtRecorder.on_frame (MISS)        {per_packet(record, packets, 1):6.2f} us/packet")
        fill.abort("benchmark")


if __name__ == "__main__":
    main()
