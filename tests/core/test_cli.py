"""``mediacache serve`` and ``check-config`` as a user runs them: a process, its exit code and
what it writes."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mediacache.plugins import load_plugins
from mediacache.testing.peers import ProcessGroup
from mediacache.testing.proxy import free_udp_range

CLI = [sys.executable, "-m", "mediacache.cli"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


@pytest.mark.parametrize(
    ("toml", "key_path", "says"),
    [
        ("[formats.quicktime]\norigin_port = 'x'\n", "$.formats.quicktime.origin_port", "int"),
        ("[split]\nlinger = 'long'\n", "$.split.linger", "float"),
        ("[log]\nlevl = 'INFO'\n", "$.log", "levl"),  # an unknown key: a typo stops the start
    ],
)
@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_a_bad_config_stops_with_the_file_and_key_path(
    tmp_path: Path, command: str, toml: str, key_path: str, says: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    args = [*CLI, "serve", "-c", str(bad)] if command == "serve" else [*CLI, command, str(bad)]
    t0 = time.monotonic()
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, env=ENV)
    assert out.returncode == 2, out.stderr
    assert time.monotonic() - t0 < 30  # refused at once, not after starting anything
    assert str(bad) in out.stderr and f"`{key_path}" in out.stderr and says in out.stderr
    assert "Traceback" not in out.stderr
    assert "listening" not in out.stderr and "OK" not in out.stdout


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[formats.quicktime]\norigin_port = 8554\n")
    out = subprocess.run(
        [*CLI, "check-config", str(good)], capture_output=True, text=True, timeout=60, env=ENV
    )
    assert out.returncode == 0 and out.stdout.strip() == f"{good}: OK"


def _read_until(
    proc: subprocess.Popen[bytes], done: re.Pattern[str], want: int, timeout: float
) -> str:
    """stderr of ``proc`` until ``done`` matched ``want`` times, EOF, or ``timeout`` s."""
    assert proc.stderr is not None
    text = ""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while len(done.findall(text)) < want and (left := deadline - time.monotonic()) > 0:
            if not sel.select(min(left, 0.5)):
                continue
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            text += chunk.decode(errors="replace")
    return text


@pytest.mark.realtime
def test_serve_starts_every_format_logs_its_listeners_and_stops_on_sigterm(
    tmp_path: Path, peer_processes: ProcessGroup
) -> None:
    formats = [spec.name for spec in load_plugins().registry]
    assert "quicktime" in formats
    config = tmp_path / "mc.toml"
    config.write_text(
        f"cache_dir = '{tmp_path / 'cache'}'\n[admin]\nlisten = '127.0.0.1:0'\n"
        + "".join(
            f"[formats.{name}]\nlisten = '127.0.0.1:0'\nudp_ports = '{free_udp_range()}'\n"
            for name in formats
        )
    )
    proc = peer_processes.start(
        [*CLI, "serve", "-c", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    listening = re.compile(r"(\w+) \S+ listening on 127\.0\.0\.1:(\d+)")
    text = _read_until(proc, listening, len(formats), 30)
    ports = {name: int(port) for name, port in listening.findall(text)}
    assert sorted(ports) == sorted(formats), text
    admin = re.compile(r"admin API on http://127\.0\.0\.1:[1-9]")  # started after the formats
    if not admin.search(text):
        text += _read_until(proc, admin, 1, 15)
    assert admin.search(text), text
    for port in ports.values():  # really listening, on the port the kernel picked
        assert port != 0
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert proc.poll() is None
    peer_processes.send_signal(proc, signal.SIGTERM)
    text += _read_until(proc, re.compile("stopped"), 1, 15)
    assert proc.wait(15) == 0
    assert "stopped" in text and "Traceback" not in text
