"""Shared fixtures: .rm clips made by the installed ffmpeg, once per test session; and, for the
proxy tests that need no other layout, a root with ``clip.rm`` (3 s, rv20 + ac3) and
``sure.rm`` (SureStream), its reference origin, and a proxy with the route ``/r/`` to it.
A module that defines its own ``root``/``origin``/``proxy`` uses those instead."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediacache.testing.origin import OriginThread
from mediacache.testing.peers import ffprobe_packets, make_clip
from mediacache.testing.proxy import ProxyThread
from mediacache_realmedia.testing import reverse_route, surestream_clip

#: name -> ffmpeg output options (inputs are a 176x144 test pattern and a sine tone)
CLIPS = {
    "rv20_ac3": ["-c:v", "rv20", "-c:a", "ac3"],
    "rv10_ra144": ["-c:v", "rv10", "-c:a", "real_144", "-ar", "8000", "-ac", "1"],
}


def _make_clip(path: Path, options: list[str], *, seconds: int = 3, pipe: bool = False) -> None:
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", "testsrc=size=176x144:rate=15",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds), *options, "-f", "rm",
    ]  # fmt: skip
    if pipe:  # a non-seekable output: what a live encoder writes
        out = subprocess.run([*cmd, "-"], check=True, capture_output=True, timeout=60).stdout
        path.write_bytes(out)
    else:
        subprocess.run([*cmd, str(path)], check=True, timeout=60)


@pytest.fixture(scope="session")
def rm_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of ffmpeg-made clips: every entry of CLIPS, plus "live" written to a pipe."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    root = tmp_path_factory.mktemp("rm")
    clips = {}
    for name, options in CLIPS.items():
        clips[name] = root / f"{name}.rm"
        _make_clip(clips[name], options)
    clips["live"] = root / "live.rm"
    _make_clip(clips["live"], CLIPS["rv10_ra144"], seconds=1, pipe=True)
    return clips


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real-root")
    shutil.copy(make_clip(seconds=3, kind="rv20_ac3"), root / "clip.rm")
    surestream_clip(root / "sure.rm", tmp_path_factory.mktemp("work"))
    return root


@pytest.fixture(scope="module")
def origin(root: Path) -> Iterator[OriginThread]:
    with OriginThread.loopback("realmedia", root) as o:
        yield o


@pytest.fixture
def proxy(origin: OriginThread) -> Iterator[ProxyThread]:
    with ProxyThread(reverse_route(origin.port)) as p:
        yield p


@pytest.fixture(scope="module")
def file_video(root: Path) -> list[tuple[str, int, str]]:
    """ffprobe's video packets of ``clip.rm`` read as a file: the judge of the proxy tests."""
    return [p for p in ffprobe_packets(str(root / "clip.rm"), 20) if p[0] == "video"]
