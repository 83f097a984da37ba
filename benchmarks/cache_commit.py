"""How long a cache commit holds the event loop, with and without the ``DiskWriter``.

Every session of a proxy process waits while its loop is busy, so a commit that hashes, writes
and fsyncs a 75 MB object on the loop is a 75 MB-sized stall for every viewer. The server gives
the store a ``DiskWriter`` (one thread) for that; this prints both figures for 5, 20 and 75 MB
objects of 1 200-byte packets, in a temporary directory on the disk that holds ``--dir``.

Run: ``python benchmarks/cache_commit.py [--dir /var/tmp]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mediacache.cache.objects import CacheKey, TrackMeta
from mediacache.cache.store import CacheStore, DiskWriter

PACKET = bytes(1200)


def commit_ms(directory: Path, megabytes: int, *, writer: bool) -> float:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        delivered: list[object] = []
        store = CacheStore(
            Path(tmp),
            memory_limit=1 << 31,
            disk_limit=1 << 33,
            writer=DiskWriter(lambda callback, future: delivered.append(future))
            if writer
            else None,
        )
        try:
            track = TrackMeta(track_id=0, control="c", clock_rate=90000, codec="H264")
            fill = store.begin_fill(CacheKey.make("bench", "rtsp://o/x", "v"), tracks=[track])
            for i in range(megabytes * 1024 * 1024 // len(PACKET)):
                fill.add_packet(0, i / 1000, PACKET)
            start = time.perf_counter()
            fill.commit()
            return (time.perf_counter() - start) * 1000
        finally:
            store.close()  # with a writer: waits for the file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    print(f"{'object':>8} {'on the loop':>14} {'with DiskWriter':>16}")
    for megabytes in (5, 20, 75):
        sync = commit_ms(args.dir, megabytes, writer=False)
        behind = commit_ms(args.dir, megabytes, writer=True)
        print(f"{megabytes:>6} MB {sync:>11.1f} ms {behind:>13.2f} ms")


if __name__ == "__main__":
    main()
