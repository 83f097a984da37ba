"""Shared set-up of the reference-origin tests: a media root, expected packets, VLC as nobody.

Not a test module (no ``test_`` prefix) and not a conftest (another plugin's tests own the
name ``conftest`` in this repository's rootdir-less layout): the test modules import it.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import functools
import os
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from mediacache.testing import peers
from mediacache_wmt.wire import asf

CLIP_SECONDS = 3
NOBODY = 65534
VLC_UDP_LOCK = Path(tempfile.gettempdir()) / "mediacache-vlc-mmsu-7000.lock"


def have(*names: str) -> bool:
    return not peers.missing_peers(*names)


@functools.cache
def media_root() -> Path:
    """A root for ``mediacache origin wmt``, made once per process (xdist worker).

    ``clip.wmv`` (wmv2 + wmav2), ``multi.wmv`` (3 video rates + audio), the same under
    ``live/``, a ``bad.wmv`` that is not ASF and a ``notes.txt`` that is not media.
    """
    root = Path(tempfile.mkdtemp(prefix="mediacache-wmt-origin-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    (root / "live").mkdir()
    for name, kind in (("clip.wmv", "wmv2_wmav2"), ("multi.wmv", "wmv_multirate")):
        for dest in (root / name, root / "live" / name):
            peers.make_clip(dest, seconds=CLIP_SECONDS, kind=kind)  # type: ignore[arg-type]
    (root / "bad.wmv").write_bytes(b"not an ASF file" * 10)
    (root / "notes.txt").write_text("not media\n")
    return root


def clip(name: str) -> Path:
    return media_root() / name


def file_packets(path: Path) -> tuple[asf.AsfHeader, list[bytes]]:
    data = path.read_bytes()
    h = asf.parse_asf_header(data)
    return h, list(asf.iter_data_packets(data[h.data_offset :], h.packet_size, h.packet_count))


def filtered(packets: Iterable[bytes], keep: Iterable[int], size: int) -> list[bytes]:
    wanted = frozenset(keep)
    return [k for p in packets if (k := asf.filter_streams(p, wanted, size)) is not None]


def by_stream(rows: Iterable[tuple[int, int, str]]) -> dict[int, list[tuple[int, str]]]:
    """framemd5 rows (stream, size, md5) grouped per stream index."""
    out: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for stream, size, md5 in rows:
        out[stream].append((size, md5))
    return dict(out)


# --- VLC, which refuses to run as root ------------------------------------------------------------


def nobody_dir(prefix: str) -> Path:
    """A fresh directory VLC (running as nobody) can write; pytest's tmp_path is 0700."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o777)
    with contextlib.suppress(OSError):
        os.chown(path, NOBODY, NOBODY)
    return path


def vlc_dump(
    url: str, group: peers.ProcessGroup, *, seconds: float = 40.0
) -> tuple[bytes, str, int | None]:
    """What VLC's MMS access delivers for ``url`` (``--demux=dump``), its log, its exit code.

    The dump is the ASF header and every data packet VLC received, padded to the packet size:
    for a clip that must be the header plus the packets of the streams VLC selected.
    """
    work = nobody_dir("mediacache-wmt-vlc-")
    try:
        out = work / "dump.asf"
        args = [
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "env", f"HOME={work}", "cvlc", "-I", "dummy", "--no-dbus", "--play-and-exit", "-v",
            url, "--demux=dump", f"--demuxdump-file={out}",
        ]
        with tempfile.TemporaryFile() as err:
            proc = group.start(args, stdout=subprocess.DEVNULL, stderr=err)
            try:
                proc.wait(seconds)
            except subprocess.TimeoutExpired:
                pass
            finally:
                group.stop(proc, timeout=3.0)
            err.seek(0)
            log = err.read().decode(errors="replace")
        data = out.read_bytes() if out.exists() else b""
        return data, log, proc.returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def vlc_udp_port_lock(timeout: float = 240.0) -> Iterator[None]:
    """VLC's mmsu always binds UDP port 7000: one VLC mmsu client per host at a time.

    An flock shared by every xdist worker (and every concurrent test run on the machine).
    """
    with open(VLC_UDP_LOCK, "a+b") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ffmpeg_rows(
    url: str, group: peers.ProcessGroup, *, input_args: Iterable[str] = (),
    output_args: Iterable[str] = (), timeout: float = 60.0,
) -> tuple[int, list[list[str]], str]:
    """ffmpeg's framemd5 of ``url`` with every column (timestamps too), and its stderr."""
    args = ["ffmpeg", "-nostdin", "-v", "error", *input_args, "-i", url, "-map", "0",
            "-c", "copy", *output_args, "-f", "framemd5", "-"]
    proc = group.start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        group.stop(proc)
        raise peers.PeerError(f"timed out: {' '.join(args)}") from None
    finally:
        group.stop(proc, timeout=1.0)
    rows = [
        [f.strip() for f in line.split(",")]
        for line in out.decode(errors="replace").splitlines()
        if line and not line.startswith("#")
    ]
    return proc.returncode or 0, rows, err.decode(errors="replace")
