"""Benchmark of live splitting (issue 4): one live origin, N UDP viewers through the proxy.

The rig is rtsp_passthrough.py's (replay origin, ``mediacache serve``, the multi-process load
client, CPU and memory sampling over the steady window, py-spy profile) with live splitting on:
one origin feed, fanned out to every viewer, while every viewer keeps its own accounting session
at the origin. Prints per N (default 100, 1000, 2000, 5000): delivered packets/s, loss %, lateness
p50/p99 and the share later than 50 ms, proxy CPU-seconds per 1,000 packets sent and packets
per CPU-second (live555ProxyServer: about 3.1-3.4 x 10^5 here, PEERS.md), proxy memory per
viewer; then the profile's top functions at ``--profile-n`` viewers (default 1000). Each viewer
plays the 300 kbit/s clip (74 RTP packets/s) for 20 s; 500 join per second.

Usage::

    python benchmarks/fanout.py                       # several minutes
    python benchmarks/fanout.py --sizes 100,1000 --repeat 1 --no-profile
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rtsp_passthrough import main

DEFAULTS = [
    "--split", "--sizes", "100,1000,2000,5000", "--repeat", "1", "--profile-n", "1000",
    "--ramp", "500", "--duration", "20",  # 5,000 viewers join in 10 s: a steady window is left
]  # fmt: skip

if __name__ == "__main__":
    sys.exit(main([*DEFAULTS, *sys.argv[1:]]))
