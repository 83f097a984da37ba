"""Run a real mediacache proxy inside a test: in a thread of its own, on loopback ports.

The proxy runs its own asyncio loop in a background thread, so a test can drive it with real
players (ffmpeg, VLC) in subprocesses and still look inside: live sessions, asyncio tasks, open
file descriptors. Plugin authors use it for their formats too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

from mediacache.config import Config, parse_config
from mediacache.hookspecs import hookimpl
from mediacache.logs import AccessRecord
from mediacache.plugins import PluginHost, load_plugins
from mediacache.server.app import ProxyServer


def free_udp_range(pairs: int = 2, low: int = 20000, high: int = 60000) -> str:
    """A ``LOW-HIGH`` range of ``pairs`` free even/odd UDP pairs on 127.0.0.1 (best effort)."""
    for _ in range(200):
        start = random.randrange(low, high - 2 * pairs) & ~1
        socks = []
        try:
            for port in range(start, start + 2 * pairs):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return f"{start}-{start + 2 * pairs - 1}"
    raise RuntimeError("no free UDP port range found")


@dataclass
class RecordingObserver:
    """A plugin that keeps every access record, so tests can assert on them."""

    records: list[AccessRecord] = field(default_factory=list)
    event: threading.Event = field(default_factory=threading.Event)

    @hookimpl
    def mediacache_session_closed(self, record: AccessRecord) -> None:
        self.records.append(record)
        self.event.set()


class ServerThread(ABC):
    """A :class:`ProxyServer` started in a daemon thread with its own asyncio loop.

    The base of :class:`ProxyThread` and :class:`mediacache.testing.origin.OriginThread`: a
    subclass says how to build the server (:meth:`_make_server`, called in the thread). Use as a
    context manager; every access record of a finished session is kept.
    """

    thread_name = "mediacache-server"
    label = "server"
    """Names the server in the error when it does not start."""

    def __init__(
        self,
        *,
        host: PluginHost | None = None,
        listen_host: str = "127.0.0.1",
        observer_name: str = "test-recorder",
    ) -> None:
        self.plugin_host = host or load_plugins()
        self.listen_host = listen_host
        self.observer = RecordingObserver()
        self._observer_name = observer_name
        self.loop = asyncio.new_event_loop()
        self.server: ProxyServer | None = None
        self.thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    @abstractmethod
    def _make_server(self) -> ProxyServer:
        """Build the server to run (a proxy, or a format's reference origin)."""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server = self._make_server()
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def __enter__(self) -> Self:
        self.plugin_host.pm.register(self.observer, name=self._observer_name)
        self.thread.start()
        if not self._started.wait(15):
            raise RuntimeError(f"{self.label} did not start in 15 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        with contextlib.suppress(ValueError):
            self.plugin_host.pm.unregister(self.observer)

    # -- looking inside -------------------------------------------------------------------

    def call(self, fn: Callable[[], Any], timeout: float = 5) -> Any:
        """Run ``fn`` on the server's loop and return its result (a consistent snapshot)."""
        fut: Any = asyncio.run_coroutine_threadsafe(_call(fn), self.loop)
        return fut.result(timeout)

    def session_count(self) -> int:
        assert self.server is not None
        return int(self.call(self.server.session_count))

    def task_count(self) -> int:
        return int(self.call(lambda: len([t for t in asyncio.all_tasks() if not t.done()]) - 1))

    def watcher_count(self) -> int:
        assert self.server is not None
        server = self.server
        return int(
            self.call(lambda: sum(len(s.pool.watchers) for s in server.services.values() if s.pool))
        )

    def records(self) -> list[AccessRecord]:
        return list(self.observer.records)

    def wait_records(self, n: int, timeout: float = 10) -> list[AccessRecord]:
        deadline = _now() + timeout
        while len(self.observer.records) < n and _now() < deadline:
            self.observer.event.wait(0.1)
            self.observer.event.clear()
        return self.records()

    def wait_record(
        self, predicate: Callable[[AccessRecord], bool], timeout: float = 10
    ) -> AccessRecord | None:
        """The first access record ``predicate`` accepts (None after ``timeout`` s)."""
        deadline = _now() + timeout
        while _now() < deadline:
            for record in self.records():
                if predicate(record):
                    return record
            self.observer.event.wait(0.1)
            self.observer.event.clear()
        return None

    def wait_idle(self, timeout: float = 10) -> bool:
        """True once no client session is left (each ended session has been released)."""
        deadline = _now() + timeout
        while _now() < deadline:
            if self.session_count() == 0:
                return True
            threading.Event().wait(0.05)
        return False


class ProxyThread(ServerThread):
    """A started :class:`ProxyServer` in a daemon thread; use as a context manager."""

    thread_name = "mediacache-proxy"
    label = "proxy"

    def __init__(
        self,
        config_text: str = "",
        *,
        host: PluginHost | None = None,
        listen_host: str = "127.0.0.1",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(host=host, listen_host=listen_host)
        self.config_text = config_text
        self._own_cache_dir = cache_dir is None
        self.cache_dir = (
            str(cache_dir) if cache_dir is not None else tempfile.mkdtemp(prefix="mc-cache-")
        )

    def _config(self) -> Config:
        config = parse_config(self.config_text, "<test>")
        if "cache_dir" not in self.config_text:
            config.cache_dir = self.cache_dir
        if "[admin]" not in self.config_text:
            config.admin.listen = _hostport(self.listen_host, 0)
        for spec in self.plugin_host.registry:
            table = config.formats.setdefault(spec.name, {})
            table.setdefault("listen", _hostport(self.listen_host, 0))
            if spec.defaults.udp_ports:
                table.setdefault("udp_ports", free_udp_range())
        return config

    def _make_server(self) -> ProxyServer:
        return ProxyServer(self._config(), self.plugin_host)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self._own_cache_dir:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

    def port(self, format_name: str) -> int:
        assert self.server is not None
        return self.server.services[format_name].port

    def udp_ports(self, format_name: str) -> list[tuple[int, int]]:
        assert self.server is not None
        pool = self.server.services[format_name].pool
        return [p.ports for p in pool.pairs] if pool else []

    @property
    def cache(self) -> Any:
        """The running proxy's CacheService (call its methods through :meth:`call`)."""
        assert self.server is not None
        return self.server.cache

    @property
    def admin_url(self) -> str:
        assert self.server is not None and self.server.admin is not None
        return f"http://{_hostport(self.listen_host, self.server.admin.port)}"


async def _call(fn: Callable[[], Any]) -> Any:
    return fn()


def _now() -> float:
    import time

    return time.monotonic()


def open_fds() -> int:
    """Open file descriptors of this process (the proxy thread shares them)."""
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def proxy(config_text: str = "", **kwargs: Any) -> Iterator[ProxyThread]:
    with ProxyThread(config_text, **kwargs) as p:
        yield p


def _hostport(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
