"""pytest plugin shipped with mediacache: fixtures for plugin authors (real peers, playbooks).

Registered as the ``pytest11`` entry point ``mediacache``. Fixtures:

- ``clip_dir``: where made clips are cached (shared by xdist workers and later runs);
- ``h264_clip``: a 4 s H.264/AAC .mp4, made once per machine (see ``peers.make_clip``);
- ``peer_processes``: a ``ProcessGroup`` stopped after the test, pass or fail;
- ``gst_origin``: a GStreamer RTSP origin serving ``h264_clip`` at ``/vod/clip.mp4`` and a shared
  live stream at ``/live``.

Tests marked ``peers`` or ``realtime`` get one rerun when pytest-rerunfailures is installed (see
:func:`pytest_collection_modifyitems`).

``requires_peer("vlc", ...)`` (a function, or the marker ``@pytest.mark.requires_peer(...)``)
skips when a peer is missing. Under ``CI=true`` a missing peer fails the test instead: CI installs
every peer (``scripts/install-peers``), so a skip there would hide a broken install step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediacache.testing import peers


def requires_peer(*names: str) -> None:
    """Skip (fail under CI) the calling test unless every named peer is installed."""
    missing = peers.missing_peers(*names)
    if not missing:
        return
    reason = f"peer not installed: {', '.join(missing)} (run scripts/install-peers as root)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_peer(*names): skip unless these peers are installed "
        "(ffmpeg, gstreamer, vlc, tshark, slapd, haproxy)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``peers`` or ``realtime`` play in real time, several at once on a shared
    machine: a starved encoder or a late scheduler can fail one. Each gets one rerun (with
    pytest-rerunfailures; ``-ra`` lists every RERUN, so a flaky test stays visible); a broken
    feature fails both runs. Unit and property tests are never rerun."""
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return
    for item in items:
        timed = item.get_closest_marker("peers") or item.get_closest_marker("realtime")
        if timed and not item.get_closest_marker("flaky"):
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=1))


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires_peer"):
        requires_peer(*mark.args)


@pytest.fixture(scope="session")
def clip_dir() -> Path:
    return peers.clip_dir()


@pytest.fixture(scope="session")
def h264_clip(clip_dir: Path) -> Path:
    """The 4 s test clip of PEERS.md; the cached file itself, so do not modify it."""
    requires_peer("ffmpeg")
    return peers.make_clip(seconds=4, kind="h264_aac")


@pytest.fixture
def peer_processes() -> Iterator[peers.ProcessGroup]:
    with peers.ProcessGroup() as group:
        yield group


@pytest.fixture
def gst_origin(h264_clip: Path) -> Iterator[peers.GstRtspOrigin]:
    """A fresh origin per test, so its event counts belong to that test alone."""
    requires_peer("gstreamer")
    with peers.GstRtspOrigin({"clip.mp4": h264_clip}, live=("live",)) as origin:
        yield origin
