"""Benchmark of serving one cached on-demand clip to N concurrent UDP viewers (issue 3).

Starts ``replay_origin.py --vod`` (each PLAY plays the recorded clip once), a ``mediacache
serve`` with the cache on and a reverse route to the origin, fills the cache once through the
admin API (prefetch: the same path as a viewer's miss), then for each N (default 10, 100, 1000)
runs ``loadclient.py`` with N UDP viewers of the cached clip. Every viewer still has its own
accounting session at the origin (DESCRIBE, SETUP, keep-alives), so the origin's CPU is part of
the rig, not of the proxy. Prints per N: packets/s sent, loss %, lateness p50/p99 and the share
of packets more than 50 ms late, proxy CPU-seconds per 1,000 packets and packets per
CPU-second (over the steady window, as in rtsp_passthrough.py), proxy peak RSS.

Then time to first packet (from PLAY sent, p50 over 5 single viewers each) for a hit, a miss
(the object purged first) and directly from the origin.

Usage::

    python benchmarks/cache_serve.py                      # ~2-3 min
    python benchmarks/cache_serve.py --sizes 10 100 --json out.json

Targets (issue 3): first packet of a hit < 50 ms; 1,000 concurrent ~300 kbit/s viewers from
the cache with < 0.1 % of packets more than 50 ms late.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from replay_origin import stream_rate  # noqa: E402 - the shared rig lives there
from rtsp_passthrough import (  # noqa: E402 - the shared rig lives there
    Processes,
    Sampler,
    free_tcp_port,
    interp_packets,
    load_result,
    other_formats,
    proc_cpu,
    proc_status_kb,
    proxy_command,
    read_line,
    run_load,
    wait_port,
)


def start_vod_origin(procs: Processes, workdir: Path) -> tuple[Any, str]:
    import subprocess

    subprocess.run(
        [sys.executable, str(HERE / "replay_origin.py"), "--record-only"],
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )
    err = open(workdir / "origin.err", "wb")  # noqa: SIM115 - closed with the process
    proc = procs.start(
        [sys.executable, str(HERE / "replay_origin.py"), "--port", "0", "--vod",
         "--max-seconds", "900"],
        stdout=subprocess.PIPE, stderr=err,
    )  # fmt: skip
    assert proc.stdout is not None
    line = read_line(proc.stdout, "READY ", 30.0)
    if not line:
        raise RuntimeError("replay origin did not start")
    return proc, line.split()[1]


def start_cached_proxy(procs: Processes, workdir: Path, origin: str) -> tuple[Any, int, int]:

    from mediacache.testing.proxy import free_udp_range

    port, admin = free_tcp_port(), free_tcp_port()
    lines = [
        f'cache_dir = "{workdir / "cache"}"',
        "[formats.quicktime]",
        f'listen = "127.0.0.1:{port}"',
        f'udp_ports = "{free_udp_range(4)}"',
        "udp_socket_pairs = 4",
        "[[routes]]",
        'format = "quicktime"',
        'prefix = "/vod/"',
        f'origin = "{origin}"',
        "[log]",
        'level = "WARNING"',
        f'file = "{workdir / "proxy.log"}"',
        "[admin]",
        f'listen = "127.0.0.1:{admin}"',
    ]
    for other in other_formats():
        lines += [f"[formats.{other}]", "enabled = false"]
    config = workdir / "proxy.toml"
    config.write_text("\n".join(lines) + "\n")
    err = open(workdir / "proxy.stderr", "wb")  # noqa: SIM115 - closed with the process
    proc = procs.start(proxy_command(config), stdout=err, stderr=err)
    wait_port(port, proc)
    return proc, port, admin


def admin_call(admin: int, path: str, timeout: float = 120) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def first_packet_ms(url: str, times: int = 5) -> float | None:
    """p50 time to first packet from PLAY over ``times`` single-viewer runs."""
    values = []
    for _ in range(times):
        res = load_result(run_load(url, 1, 1.0, 100, ["--no-timeline"]), 60)
        value = res["first_packet_ms"]["p50"]
        if value is not None:
            values.append(value)
    values.sort()
    return values[len(values) // 2] if values else None


def measure(proxy: Any, url: str, n: int, duration: float, ramp: float) -> dict[str, Any]:
    idle_rss = proc_status_kb(proxy.pid, "VmRSS")
    sampler = Sampler(proxy.pid).start()
    cpu0 = proc_cpu(proxy.pid)
    res = load_result(run_load(url, n, duration, ramp), n / ramp + duration + 120)
    sampler.stop()
    row: dict[str, Any] = {
        "n": n,
        "ok": res["viewers_ok"],
        "failed": res["viewers_failed"],
        "packets": res["packets_received"],
        "loss_pct": res["loss_pct"],
        "late_p50_ms": res["lateness_ms"]["p50"],
        "late_p99_ms": res["lateness_ms"]["p99"],
        "late_over_50ms_pct": res["late_over_50ms_pct"],
        "run_cpu_s": round(proc_cpu(proxy.pid) - cpu0, 3),
        "peak_rss_mb": round(proc_status_kb(proxy.pid, "VmHWM") / 1024, 1),
        "kb_per_viewer": round((proc_status_kb(proxy.pid, "VmHWM") - idle_rss) / n, 1),
    }
    window = res.get("steady_window_s")
    if window and window[1] - window[0] > 1.0:
        t0, t1 = window[0] + 0.25, window[1] - 0.25
        pkts = interp_packets(res["timeline"], t1) - interp_packets(res["timeline"], t0)
        cpu = sampler.cpu_at(t1) - sampler.cpu_at(t0)
        row["pps"] = round(pkts / (t1 - t0))
        stream_pps, stream_kbit = stream_rate()
        row["kbit_per_viewer"] = round(row["pps"] / n * stream_kbit / stream_pps, 1)
        if pkts > 0 and cpu > 0:
            row["cpu_s_per_1k_pkts"] = round(1000 * cpu / pkts, 5)
            row["pkts_per_cpu_s"] = round(pkts / cpu)
            row["cpu_pct"] = round(100 * cpu / (t1 - t0), 1)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--ramp", type=float, default=200.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    procs = Processes()
    out: dict[str, Any] = {"rows": []}
    with tempfile.TemporaryDirectory(prefix="mc-cache-bench-") as tmp:
        workdir = Path(tmp)
        try:
            _origin_proc, origin = start_vod_origin(procs, workdir)
            proxy, port, admin = start_cached_proxy(procs, workdir, origin)
            url = f"rtsp://127.0.0.1:{port}/vod/stream"
            direct = origin.rstrip("/") + "/stream"
            fill = admin_call(admin, f"/cache/prefetch?wait=1&url={url}")
            out["prefetch"] = fill
            for n in args.sizes:
                row = measure(proxy, url, n, args.duration, args.ramp)
                out["rows"].append(row)
                print(json.dumps(row), flush=True)
                time.sleep(1.0)
            out["first_packet_hit_ms"] = first_packet_ms(url)
            out["first_packet_direct_ms"] = first_packet_ms(direct)
            misses = []
            for _ in range(3):
                admin_call(admin, "/cache/purge?all=1")
                misses.append(first_packet_ms(url, 1))
            out["first_packet_miss_ms"] = sorted(m for m in misses if m is not None)[1:2] or None
            out["proxy_peak_rss_mb"] = round(proc_status_kb(proxy.pid, "VmHWM") / 1024, 1)
        finally:
            procs.stop_all()
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def print_table(out: dict[str, Any]) -> None:
    pps, kbit = stream_rate()
    print()
    print(f"one viewer's stream: {pps:.0f} RTP packets/s, {kbit:.0f} kbit/s (RTP, headers in)")
    print("cached clip served over UDP (steady window):")
    print(
        f"{'N':>6} {'ok':>6} {'pkts/s':>8} {'loss%':>7} {'late p50':>9} {'late p99':>9} "
        f"{'>50ms%':>7} {'CPU-s/1k':>9} {'pkt/CPU-s':>10} {'CPU%':>6} {'RSS MB':>7} {'KB/view':>8}"
    )
    for r in out["rows"]:
        print(
            f"{r['n']:>6} {r['ok']:>6} {r.get('pps', '-')!s:>8} {r['loss_pct']!s:>7} "
            f"{r['late_p50_ms']!s:>9} {r['late_p99_ms']!s:>9} {r['late_over_50ms_pct']!s:>7} "
            f"{r.get('cpu_s_per_1k_pkts', '-')!s:>9} {r.get('pkts_per_cpu_s', '-')!s:>10} "
            f"{r.get('cpu_pct', '-')!s:>6} {r['peak_rss_mb']!s:>7} {r['kb_per_viewer']!s:>8}"
        )
    print()
    print(
        f"time to first packet from PLAY (p50): hit {out.get('first_packet_hit_ms')} ms, "
        f"miss {out.get('first_packet_miss_ms')} ms, direct {out.get('first_packet_direct_ms')} ms"
    )
    print(f"proxy peak RSS: {out.get('proxy_peak_rss_mb')} MB")


if __name__ == "__main__":
    sys.exit(main())
