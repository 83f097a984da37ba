"""HAProxy as the L4 load balancer in front of proxy nodes (DESIGN.md, "Deployment").

``HaproxyBalancer([(host_a, port), (host_b, port)], listen=(host, port))`` runs a real
``haproxy`` in TCP mode on ``listen`` (default: a free 127.0.0.1 port), round robin over the
given backends, in the foreground (``-db``) under a
:class:`~mediacache.testing.peers.ProcessGroup`, and stops it on exit. Its stats socket is not
used: the tests read what each node served from the nodes' own access records.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from mediacache.testing.peers import PeerError, ProcessGroup, free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


class HaproxyBalancer:
    """``haproxy`` balancing TCP connections over ``backends`` ((host, port) pairs)."""

    def __init__(
        self,
        backends: Sequence[tuple[str, int]],
        *,
        listen: tuple[str, int] | None = None,
        balance: str = "roundrobin",
        start_timeout: float = 10.0,
        group: ProcessGroup | None = None,
    ) -> None:
        self.backends = list(backends)
        self.balance = balance
        self.start_timeout = start_timeout
        self.group = group or ProcessGroup()
        self.fixed = listen is not None
        self.host, self.port = listen if listen is not None else ("127.0.0.1", 0)
        self._work: tempfile.TemporaryDirectory[str] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        servers = "\n".join(
            f"  server node{i} {host}:{port}" for i, (host, port) in enumerate(self.backends)
        )
        return (
            "global\n  maxconn 1000\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n"
            "  timeout client 120s\n  timeout server 120s\n"
            f"frontend rtsp\n  bind {self.host}:{self.port}\n  default_backend nodes\n"
            f"backend nodes\n  balance {self.balance}\n{servers}\n"
        )

    def start(self) -> Self:
        self._work = tempfile.TemporaryDirectory(prefix="mediacache-haproxy-")
        config = Path(self._work.name) / "haproxy.cfg"
        for _ in range(5):  # the free port can be taken before haproxy binds it: retry
            if not self.fixed:
                self.port = free_port()
            config.write_text(self.config_text())
            check = subprocess.run(
                [HAPROXY, "-c", "-q", "-f", str(config)], capture_output=True, timeout=20
            )
            if check.returncode != 0:
                raise PeerError(f"haproxy refused its config: {check.stderr.decode()[-500:]}")
            proc = self.group.start(
                [HAPROXY, "-db", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_listening(proc):
                self.process = proc
                return self
            self.group.stop(proc)
        raise PeerError("haproxy did not start listening")

    def _wait_listening(self, proc: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            # bound yet? (a probe connection would reach a node and take a round-robin turn)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((self.host, self.port))
                except OSError:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None:
            self.group.stop(self.process)
            self.process = None
        if self._work is not None:
            self._work.cleanup()
            self._work = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
