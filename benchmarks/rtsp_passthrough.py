"""Benchmark of the RTSP proxy as it is today: pass-through, one origin session per viewer.

Starts ``replay_origin.py`` (live, cheap: no encoder), then for each N (default 10, 100, 500) a
fresh ``mediacache serve`` with a reverse route to it, and ``loadclient.py`` with N UDP viewers
playing ~10 s. Around each run it samples the proxy's CPU time (utime+stime of /proc/PID/stat)
and memory (VmRSS, VmHWM of /proc/PID/status) every 0.1 s and prints, per N:

* delivered packets/s, loss %, lateness p50/p99 (and % > 50 ms), time to first packet;
* proxy CPU: % of one core, CPU-seconds per 1,000 packets, packets per CPU-second, measured over
  the steady window (every viewer playing) so set-up and teardown do not blur it; the whole-run
  figure (set-up included) is printed too;
* proxy peak RSS, and memory per viewer = (VmHWM - idle VmRSS) / N.

Then it profiles one N=100 run with ``py-spy record --format raw`` (needs ptrace: root, or
CAP_SYS_PTRACE) and prints the 15 functions with the most own time. Without py-spy it profiles
the proxy with the standard library's cProfile (``python -m cProfile -m mediacache.cli serve``),
which slows every call but still ranks them.

The proxy runs with ``[cache] enabled = false`` and ``[split] enabled = false``, so every
viewer has its own origin session (pass-through); ``--split`` turns live splitting back on and
measures the fan-out instead. Everything listens on 127.0.0.1; every process started here is
stopped in a ``finally`` with bounded waits. Usage::

    python benchmarks/rtsp_passthrough.py                  # about 2 min 10 s
    python benchmarks/rtsp_passthrough.py --sizes 10 --repeat 1 --no-profile
    python benchmarks/rtsp_passthrough.py --json results.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import pstats
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: CPU lists for ``taskset -c`` (set by ``--pin``; empty: no pinning).
PIN = {"proxy": "", "rig": ""}


def pinned(role: str, cmd: list[str]) -> list[str]:
    cpus = PIN.get(role, "")
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


# -- processes --------------------------------------------------------------------------------


class Processes:
    """Every process this script starts, stopped in reverse order by :meth:`stop_all`."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[bytes] = subprocess.Popen(args, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """SIGINT (the proxy's clean stop), then SIGKILL after ``timeout`` s."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def read_line(stream: IO[bytes], prefix: str, timeout: float) -> str:
    """The first line of ``stream`` starting with ``prefix``, read in a thread (bounded)."""
    found: queue.Queue[str] = queue.Queue()

    def reader() -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in stream:
                line = raw.decode(errors="replace").strip()
                if line.startswith(prefix):
                    found.put(line)
                    break
        found.put("")

    threading.Thread(target=reader, daemon=True).start()
    try:
        return found.get(timeout=timeout)
    except queue.Empty:
        return ""


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


# -- /proc sampling -----------------------------------------------------------------------------


def proc_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` in seconds: Python and kernel (syscalls) time."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds."""
    return sum(proc_times(pid))


def proc_status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class Sampler:
    """Samples (time, user CPU s, system CPU s) of a process every ``interval`` s in a thread."""

    pid: int
    interval: float = 0.1
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            user, system = proc_times(self.pid)
            self.samples.append((time.time(), user, system))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self.sample()

    def cpu_at(self, t: float, column: int = 0) -> float:
        """CPU seconds (0: user + system, 1: user, 2: system) at wall time ``t``, interpolated."""

        def value(sample: tuple[float, float, float]) -> float:
            return sample[1] + sample[2] if column == 0 else sample[column]

        s = self.samples
        if not s:
            return 0.0
        if t <= s[0][0]:
            return value(s[0])
        for a, b in itertools.pairwise(s):
            if a[0] <= t <= b[0]:
                frac = (t - a[0]) / (b[0] - a[0]) if b[0] > a[0] else 0.0
                return value(a) + (value(b) - value(a)) * frac
        return value(s[-1])


# -- the pieces ---------------------------------------------------------------------------------


def start_origin(procs: Processes, workdir: Path, max_seconds: float) -> tuple[Any, str]:
    """The live replay origin on a free port; returns (process, base URL)."""
    subprocess.run(
        [sys.executable, str(HERE / "replay_origin.py"), "--record-only"],
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )
    err = open(workdir / "origin.err", "wb")  # noqa: SIM115 - closed with the process
    proc = procs.start(
        pinned(
            "rig",
            [
                sys.executable,
                str(HERE / "replay_origin.py"),
                "--port",
                "0",
                "--max-seconds",
                str(int(max_seconds)),
            ],
        ),
        stdout=subprocess.PIPE,
        stderr=err,
    )
    assert proc.stdout is not None
    line = read_line(proc.stdout, "READY ", 30.0)
    if not line:
        raise RuntimeError(f"replay origin did not start: {(workdir / 'origin.err').read_text()}")
    return proc, line.split()[1]


def other_formats() -> list[str]:
    """Installed formats besides QuickTime (disabled in the benchmark config)."""
    try:
        from mediacache.plugins import load_plugins

        return [name for name in load_plugins().registry.names() if name != "quicktime"]
    except Exception:
        return []


def write_config(workdir: Path, port: int, origin: str, name: str, split: bool) -> Path:
    from mediacache.testing.proxy import free_udp_range

    lines = [
        f'cache_dir = "{workdir / "cache"}"',  # top-level keys come before any table
        "",
        "[formats.quicktime]",
        f'listen = "127.0.0.1:{port}"',
        f'udp_ports = "{free_udp_range(4)}"',
        "",
        "[[routes]]",
        'format = "quicktime"',
        'prefix = "/live/"',
        f'origin = "{origin}"',
        "",
        "[log]",
        'level = "INFO"',
        f'file = "{workdir / (name + ".log")}"',
        "",
        "[admin]",
        "enabled = false",
        "",
        "[cache]",  # pass-through: nothing cached, and (below) no live splitting
        "enabled = false",
        "",
        "[split]",
        f"enabled = {'true' if split else 'false'}",
    ]
    for other in other_formats():
        lines += ["", f"[formats.{other}]", "enabled = false"]
    path = workdir / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def proxy_command(config: Path, cprofile: Path | None = None) -> list[str]:
    if cprofile is not None:
        return [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(cprofile),
            "-m",
            "mediacache.cli",
            "serve",
            "-c",
            str(config),
        ]
    script = Path(sys.executable).with_name("mediacache")
    if script.exists():
        return [str(script), "serve", "-c", str(config)]
    return [sys.executable, "-m", "mediacache.cli", "serve", "-c", str(config)]


def start_proxy(
    procs: Processes,
    workdir: Path,
    origin: str,
    name: str,
    split: bool,
    cprofile: Path | None = None,
) -> tuple[Any, int]:
    port = free_tcp_port()
    config = write_config(workdir, port, origin, name, split)
    err = open(workdir / f"{name}.stderr", "wb")  # noqa: SIM115 - closed with the process
    proc = procs.start(pinned("proxy", proxy_command(config, cprofile)), stdout=err, stderr=err)
    wait_port(port, proc)
    return proc, port


def run_load(
    url: str, n: int, duration: float, ramp: float, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        str(HERE / "loadclient.py"),
        url,
        "-n",
        str(n),
        "--duration",
        str(duration),
        "--ramp",
        str(ramp),
        *(extra or []),
    ]
    return subprocess.Popen(pinned("rig", args), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)


def load_result(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)
        raise RuntimeError("the load client overran its time") from None
    text = out.decode(errors="replace")
    start = text.find("{")
    if start < 0:
        raise RuntimeError(f"the load client printed no JSON (exit {proc.returncode})")
    return json.loads(text[start:])


def interp_packets(timeline: list[list[float]], t: float) -> float:
    """Packets received by wall time ``t`` from the load client's timeline."""
    prev = None
    for row in timeline:
        if row[0] >= t:
            if prev is None or row[0] == prev[0]:
                return row[1]
            frac = (t - prev[0]) / (row[0] - prev[0])
            return prev[1] + (row[1] - prev[1]) * frac
        prev = row
    return timeline[-1][1] if timeline else 0.0


# -- one measurement ------------------------------------------------------------------------------


def measure(
    procs: Processes, workdir: Path, origin_url: str, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    proxy, port = start_proxy(procs, workdir, origin_url, f"proxy-n{n}", args.split)
    try:
        time.sleep(0.3)
        idle_rss = proc_status_kb(proxy.pid, "VmRSS")
        sampler = Sampler(proxy.pid).start()
        t_start = time.time()
        cpu_start = proc_cpu(proxy.pid)
        url = f"rtsp://127.0.0.1:{port}/live/stream"
        budget = n / args.ramp + args.duration + 90
        result = load_result(run_load(url, n, args.duration, args.ramp), budget)
        t_end = time.time()
        sampler.stop()
        cpu_end = proc_cpu(proxy.pid)
        peak_kb = proc_status_kb(proxy.pid, "VmHWM")
        alive = proxy.poll() is None
    finally:
        procs.stop(proxy)
    row: dict[str, Any] = {
        "n": n,
        "ok": result["viewers_ok"],
        "failed": result["viewers_failed"],
        "failures": result["failures"],
        "packets": result["packets_received"],
        "loss_pct": result["loss_pct"],
        "late_p50_ms": result["lateness_ms"]["p50"],
        "late_p99_ms": result["lateness_ms"]["p99"],
        "late_max_ms": result["lateness_ms"]["max"],
        "late_over_50ms_pct": result["late_over_50ms_pct"],
        "first_packet_p50_ms": result["first_packet_ms"]["p50"],
        "first_packet_p99_ms": result["first_packet_ms"]["p99"],
        "client_cpu_s": result["client_cpu_s"],
        "run_s": round(t_end - t_start, 2),
        "run_cpu_s": round(cpu_end - cpu_start, 3),
        "proxy_alive": alive,
        "idle_rss_mb": round(idle_rss / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "kb_per_viewer": round((peak_kb - idle_rss) / n, 1) if n else None,
    }
    run_pkts = result["packets_received"]
    if row["run_cpu_s"] > 0:
        row["run_pkts_per_cpu_s"] = round(run_pkts / row["run_cpu_s"])
    window = result.get("steady_window_s")
    if window and window[1] - window[0] > 1.0:
        t0, t1 = window[0] + 0.25, window[1] - 0.25
        pkts = interp_packets(result["timeline"], t1) - interp_packets(result["timeline"], t0)
        cpu = sampler.cpu_at(t1) - sampler.cpu_at(t0)
        row["steady_s"] = round(t1 - t0, 2)
        row["pps"] = round(pkts / (t1 - t0))
        row["cpu_pct"] = round(100 * cpu / (t1 - t0), 1)
        system = sampler.cpu_at(t1, 2) - sampler.cpu_at(t0, 2)
        row["sys_share_pct"] = round(100 * system / cpu) if cpu > 0 else None
        if pkts > 0 and cpu > 0:
            row["cpu_s_per_1k_pkts"] = round(1000 * cpu / pkts, 5)
            row["pkts_per_cpu_s"] = round(pkts / cpu)
            row["us_per_pkt"] = round(1e6 * cpu / pkts, 2)
    return row


# -- profiling ------------------------------------------------------------------------------------


def parse_raw(path: Path) -> tuple[int, int, Counter[str], Counter[str]]:
    """py-spy raw (collapsed) stacks: (busy samples, samples waiting in the selector, own
    counts by leaf function, inclusive counts).

    In ``--nonblocking`` mode py-spy cannot always tell a thread blocked in ``epoll_wait`` from
    a running one (compared with ``--idle`` runs and /proc CPU time: those samples are nearly
    all idle), so stacks whose leaf is the selector's ``select`` are counted apart.
    """
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    busy = waiting = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(("EpollSelector.select (", "select (selectors.py")):
            waiting += c
            continue
        busy += c
        own[frames[-1]] += c
        for frame in set(frames):
            incl[frame] += c
    return busy, waiting, own, incl


def profile_pyspy(
    procs: Processes, workdir: Path, origin_url: str, args: argparse.Namespace
) -> dict[str, Any] | None:
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        return None
    n = args.profile_n
    proxy, port = start_proxy(procs, workdir, origin_url, f"proxy-profile-n{n}", args.split)
    out = workdir / "profile.txt"
    try:
        duration = args.duration + 4
        load = run_load(f"rtsp://127.0.0.1:{port}/live/stream", n, duration, args.ramp)
        time.sleep(n / args.ramp + 1.5)
        cpu0 = proc_cpu(proxy.pid)
        seconds = int(max(2, args.duration - 1))
        cmd = [pyspy, "record", "-p", str(proxy.pid), "-d", str(seconds), "-r", str(args.rate)]
        cmd += ["-f", "raw", "-F", "--nonblocking", "-o", str(out)]
        spy = subprocess.run(
            cmd,
            capture_output=True,
            timeout=seconds + 30,
        )
        cpu = proc_cpu(proxy.pid) - cpu0
        result = load_result(load, duration + 60)
    finally:
        procs.stop(proxy)
    if spy.returncode != 0 or not out.exists():
        print(f"py-spy failed: {spy.stderr.decode(errors='replace')[-400:]}", file=sys.stderr)
        return None
    total, waiting, own, incl = parse_raw(out)
    if not total:
        return None
    return {
        "tool": f"py-spy record -r {args.rate} -F --nonblocking ({seconds} s, N={n})",
        "samples": total,
        "waiting_samples": waiting,
        "proxy_cpu_s": round(cpu, 2),
        "packets": result["packets_received"],
        "top": [
            {
                "function": frame,
                "own_pct": round(100 * c / total, 1),
                "incl_pct": round(100 * incl[frame] / total, 1),
            }
            for frame, c in own.most_common(15)
        ],
        "raw": str(out),
    }


def profile_cprofile(
    procs: Processes, workdir: Path, origin_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    n = args.profile_n
    stats_path = workdir / "proxy.cprofile"
    proxy, port = start_proxy(
        procs, workdir, origin_url, "proxy-cprofile", args.split, cprofile=stats_path
    )
    try:
        load = run_load(f"rtsp://127.0.0.1:{port}/live/stream", n, args.duration, args.ramp)
        result = load_result(load, n / args.ramp + args.duration + 60)
    finally:
        procs.stop(proxy, timeout=15.0)  # SIGINT: the CLI exits and cProfile writes its file
    st = pstats.Stats(str(stats_path))
    rows = dict(st.stats)  # type: ignore[attr-defined]
    # cProfile measures wall time: time blocked in epoll is idle, not work; set it apart.
    idle = [k for k in rows if "select.epoll" in k[2] or (k[2] == "select" and "selectors" in k[0])]
    waiting = sum(rows.pop(k)[2] for k in idle)
    total = sum(v[2] for v in rows.values()) or 1.0
    ranked = sorted(rows.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    return {
        "tool": f"cProfile (whole run, N={n}; deterministic, inflates call-heavy code; "
        f"{waiting:.1f} s blocked in epoll left out; % of the rest)",
        "samples": None,
        "packets": result["packets_received"],
        "top": [
            {
                "function": f"{func} ({Path(file).name}:{line})",
                "own_pct": round(100 * v[2] / total, 1),
                # the loop's own frames include the idle time set apart above
                "incl_pct": round(100 * v[3] / total, 1) if v[3] <= total else None,
                "calls": v[1],
            }
            for (file, line, func), v in ranked
        ],
    }


# -- output ---------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per N, the run with the median packets per CPU-second, plus the range over runs."""
    out = []
    for n in dict.fromkeys(r["n"] for r in rows):
        runs = sorted((r for r in rows if r["n"] == n), key=lambda r: r.get("pkts_per_cpu_s") or 0)
        row = dict(runs[(len(runs) - 1) // 2])
        values = [r.get("pkts_per_cpu_s") or 0 for r in runs]
        row["pkts_per_cpu_s_range"] = f"{min(values) / 1000:.0f}k-{max(values) / 1000:.0f}k"
        row["runs"] = len(runs)
        out.append(row)
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [
        ("N", "n", ""),
        ("ok", "ok", ""),
        ("pkt/s", "pps", ",d"),
        ("loss %", "loss_pct", ".3f"),
        ("late p50 ms", "late_p50_ms", ".1f"),
        ("late p99 ms", "late_p99_ms", ".1f"),
        (">50ms %", "late_over_50ms_pct", ".3f"),
        ("1st pkt p50/p99 ms", None, ""),
        ("proxy CPU %", "cpu_pct", ".1f"),
        ("of it sys %", "sys_share_pct", ""),
        ("CPU-s/1k pkt", "cpu_s_per_1k_pkts", ".4f"),
        ("pkt/CPU-s", "pkts_per_cpu_s", ",d"),
        ("range", "pkts_per_cpu_s_range", ""),
        ("run pkt/CPU-s", "run_pkts_per_cpu_s", ",d"),
        ("peak RSS MB", "peak_rss_mb", ".1f"),
        ("KB/viewer", "kb_per_viewer", ".1f"),
    ]
    header = [c[0] for c in cols]
    table = []
    for row in rows:
        cells = []
        for _, key, spec in cols:
            if key is None:
                cells.append(
                    f"{fmt(row['first_packet_p50_ms'], '.0f')}/"
                    f"{fmt(row['first_packet_p99_ms'], '.0f')}"
                )
            else:
                cells.append(fmt(row.get(key), spec))
        table.append(cells)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for cells in table:
        print("| " + " | ".join(cells) + " |")


def print_profile(prof: dict[str, Any]) -> None:
    print(f"\nprofile: {prof['tool']}")
    if prof.get("samples"):
        print(
            f"  {prof['samples']} busy samples (+{prof.get('waiting_samples')} in epoll_wait, "
            f"left out); proxy CPU {prof.get('proxy_cpu_s')} s while sampled; "
            f"{prof['packets']} packets in the run; % of busy samples"
        )
    print(f"  {'own %':>6} {'incl %':>7}  function")
    for item in prof["top"]:
        print(f"  {item['own_pct']:6.1f} {fmt(item['incl_pct'], '7.1f'):>7}  {item['function']}")


def core_revision() -> str:
    """``git describe`` of the tree the proxy runs from (+ dirty), for the record."""
    try:
        import mediacache

        root = Path(mediacache.__file__).resolve().parent.parent
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "core"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return f"{rev}{' (core/ modified)' if dirty else ''}"
    except (OSError, subprocess.SubprocessError, ImportError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10,100,500", help="viewer counts, comma-separated")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of PLAY per viewer")
    p.add_argument("--ramp", type=float, default=200.0, help="viewers started per second")
    p.add_argument("--repeat", type=int, default=3, help="runs per N (the median is shown)")
    p.add_argument(
        "--split",
        action="store_true",
        help="leave live splitting on ([split] enabled): measures the fan-out, not pass-through",
    )
    p.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="proxy alone on CPU 0, origin and load client on the others (needs 2+ CPUs and "
        "taskset; off by default: on 2 cores it crowds origin and client onto one, which "
        "inflates lateness, and did not make the CPU figures steadier)",
    )
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--profile-n", type=int, default=100)
    p.add_argument("--profiler", choices=("auto", "py-spy", "cprofile"), default="auto")
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    p.add_argument("--json", type=Path, help="also write every figure to this file")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, profile)")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) >= 2 and shutil.which("taskset"):
        PIN["proxy"] = str(cpus[0])
        PIN["rig"] = ",".join(str(c) for c in cpus[1:])
    workdir = Path(tempfile.mkdtemp(prefix="mediacache-bench-"))
    procs = Processes()
    rows: list[dict[str, Any]] = []
    prof: dict[str, Any] | None = None
    started = time.monotonic()
    try:
        budget = args.repeat * sum(n / args.ramp + args.duration + 30 for n in sizes) + 120
        _origin, origin_url = start_origin(procs, workdir, budget)
        for rep in range(args.repeat):
            for n in sizes:
                row = measure(procs, workdir, origin_url, n, args)
                row["repeat"] = rep
                rows.append(row)
                print(
                    f"run {rep + 1}/{args.repeat} "
                    f"N={n}: {row['ok']}/{n} ok, {fmt(row.get('pps'))} pkt/s, "
                    f"loss {fmt(row['loss_pct'])} %, proxy {fmt(row.get('cpu_pct'))} % CPU, "
                    f"{fmt(row.get('pkts_per_cpu_s'))} pkt/CPU-s"
                    + (f", failures {row['failures']}" if row["failures"] else ""),
                    flush=True,
                )
        if not args.no_profile:
            if args.profiler in ("auto", "py-spy"):
                prof = profile_pyspy(procs, workdir, origin_url, args)
            if prof is None and args.profiler in ("auto", "cprofile"):
                prof = profile_cprofile(procs, workdir, origin_url, args)
    finally:
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    mode = "split ([split] enabled = true)" if args.split else "pass-through"
    revision = core_revision()
    pin = f"proxy on CPU {PIN['proxy']}, rig on {PIN['rig']}" if PIN["proxy"] else "not pinned"
    from replay_origin import stream_rate

    pps, kbit = stream_rate()
    print(f"\nmode: {mode}; core {revision}; {os.cpu_count()} CPUs, {pin}")
    print(f"one viewer's stream: {pps:.0f} RTP packets/s, {kbit:.0f} kbit/s (RTP, headers in)")
    print(f"median run of {args.repeat} per N (by pkt/CPU-s); range = min-max over the runs")
    print_table(median_rows(rows))
    if prof is not None:
        print_profile(prof)
    print(
        f"\n(total {time.monotonic() - started:.0f} s; work dir {workdir}"
        f"{'' if args.keep else ', removed'})"
    )
    if args.json:
        doc = {"mode": mode, "core": revision, "pin": PIN, "runs": rows, "profile": prof}
        args.json.write_text(json.dumps(doc, indent=1))
    return 0 if rows and all(r["ok"] == r["n"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
