"""The admin HTTP API (127.0.0.1:8089 by default): status, cache management, metrics.

Why an API rather than the CLI opening the store: the running proxy owns the cache directory
(an exclusive lock) and keeps hit counts and objects in memory, so pins, purges and prefetches
go through it and take effect at once. ``mediacache cache ...`` is a client of this API.

    GET  /status                      formats, sessions, cache stats (JSON)
    GET  /cache                       every object: key, size, hits, last use, pinned (JSON)
    POST /cache/pin?url=U             never evict U (any format/variant; also later fills)
    POST /cache/unpin?url=U
    POST /cache/purge?url=U | ?all=1
    POST /cache/prefetch?url=U[&format=F][&wait=1]
    GET  /metrics                     Prometheus text format

Deliberately small: HTTP/1.1 without keep-alive, requests bounded in size and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from loguru import logger

from mediacache import __version__

if TYPE_CHECKING:
    from mediacache.server.app import ProxyServer

MAX_HEAD = 16 * 1024
_json = msgspec.json.Encoder()


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


class AdminServer:
    def __init__(self, proxy: ProxyServer) -> None:
        self.proxy = proxy
        self.server: asyncio.Server | None = None
        self.prefetches: set[asyncio.Task[Any]] = set()
        self.started = time.time()
        self.routes: dict[
            tuple[str, str], Callable[[dict[str, str]], Awaitable[tuple[int, Any]]]
        ] = {
            ("GET", "/status"): self.status,
            ("GET", "/cache"): self.cache_list,
            ("POST", "/cache/pin"): self.cache_pin,
            ("POST", "/cache/unpin"): self.cache_unpin,
            ("POST", "/cache/purge"): self.cache_purge,
            ("POST", "/cache/prefetch"): self.cache_prefetch,
            ("GET", "/metrics"): self.metrics,
        }

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, host or None, port)
        logger.info("admin API on http://{}:{}/", host, self.port)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
        for task in self.prefetches:
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            except asyncio.LimitOverrunError:
                raise HttpError(413, "request head too large") from None
            except (asyncio.IncompleteReadError, TimeoutError):
                return
            if len(head) > MAX_HEAD:
                raise HttpError(413, "request head too large")
            method, target = _request_line(head)
            parts = urlsplit(target)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            handler = self.routes.get((method, parts.path))
            if handler is None:
                known = any(path == parts.path for _, path in self.routes)
                raise HttpError(405 if known else 404, f"no {method} {parts.path}")
            status, body = await handler(query)
        except HttpError as exc:
            status, body = exc.status, {"error": str(exc)}
        except Exception as exc:
            logger.exception("admin request failed")
            status, body = 500, {"error": repr(exc)}
        if isinstance(body, str):
            payload, ctype = body.encode(), "text/plain; version=0.0.4"
        else:
            payload, ctype = _json.encode(body) + b"\n", "application/json"
        head_out = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head_out.encode() + payload)
            await writer.drain()
        writer.close()

    # -- handlers -------------------------------------------------------------------------

    def _store(self) -> Any:
        if self.proxy.cache is None:
            raise HttpError(409, "the cache is disabled")
        return self.proxy.cache.store

    async def status(self, query: dict[str, str]) -> tuple[int, Any]:
        formats = {
            name: {"port": s.port, "sessions": len(s.sessions), "version": s.spec.version}
            for name, s in self.proxy.services.items()
        }
        cache = msgspec.to_builtins(self.proxy.cache.store.stats()) if self.proxy.cache else None
        return 200, {
            "version": __version__,
            "uptime": round(time.time() - self.started, 3),
            "formats": formats,
            "cache": cache,
            "prefetches": len(self.prefetches),
        }

    async def cache_list(self, query: dict[str, str]) -> tuple[int, Any]:
        return 200, [msgspec.to_builtins(info) for info in self._store().list()]

    def _url(self, query: dict[str, str]) -> str:
        url = query.get("url")
        if not url:
            raise HttpError(400, "url= is required")
        return url

    async def cache_pin(self, query: dict[str, str]) -> tuple[int, Any]:
        url = self._url(query)
        return 200, {"url": url, "objects": self._store().pin(self._origin_url(url))}

    async def cache_unpin(self, query: dict[str, str]) -> tuple[int, Any]:
        url = self._url(query)
        return 200, {"url": url, "objects": self._store().unpin(self._origin_url(url))}

    async def cache_purge(self, query: dict[str, str]) -> tuple[int, Any]:
        store = self._store()
        if query.get("all") in ("1", "true", "yes"):
            return 200, {"purged": store.purge_all()}
        url = self._url(query)
        return 200, {"url": url, "purged": store.purge_url(self._origin_url(url))}

    async def cache_prefetch(self, query: dict[str, str]) -> tuple[int, Any]:
        self._store()
        url = self._url(query)
        name = query.get("format") or next(iter(self.proxy.services), "")
        service = self.proxy.services.get(name)
        host = "127.0.0.1"
        if service is not None and service.listen[0] not in ("", "0.0.0.0", "::"):
            host = service.listen[0]
        fill = None
        if service is not None:
            fill = self.proxy.host.hook.mediacache_prefetch(
                format_name=name, url=url, proxy_host=host, proxy_port=service.port
            )
        if fill is None:
            raise HttpError(400, f"format {name!r} is not served or cannot prefetch")
        task = asyncio.ensure_future(fill)
        self.prefetches.add(task)
        task.add_done_callback(self._prefetch_done)
        if query.get("wait") in ("1", "true", "yes"):
            result = await task
            return (200 if result.ok else 502), msgspec.to_builtins(result)
        return 202, {"url": url, "format": name, "state": "started"}

    def _prefetch_done(self, task: asyncio.Task[Any]) -> None:
        self.prefetches.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            logger.error("prefetch failed: {!r}", task.exception())
            return
        result = task.result()
        level = "INFO" if result.ok else "WARNING"
        logger.log(
            level, "prefetch of {}: {} ({:.1f} s)", result.url, result.detail, result.seconds
        )

    def _origin_url(self, url: str) -> str:
        """A proxy URL of a reverse route names its origin URL (what cache keys hold)."""
        for route in self.proxy.config.routes:
            parts = urlsplit(url)
            if parts.path.startswith(route.prefix):
                port = parts.port
                if any(s.port == port for s in self.proxy.services.values()):
                    return route.origin + parts.path[len(route.prefix) :]
        return url

    async def metrics(self, query: dict[str, str]) -> tuple[int, Any]:
        lines = [
            "# HELP mediacache_sessions Client sessions open now.",
            "# TYPE mediacache_sessions gauge",
        ]
        for name, service in self.proxy.services.items():
            lines.append(f'mediacache_sessions{{format="{name}"}} {len(service.sessions)}')
        if self.proxy.cache is not None:
            stats = msgspec.to_builtins(self.proxy.cache.store.stats())
            for key, value in stats.items():
                if isinstance(value, int | float):
                    lines.append(f"# TYPE mediacache_cache_{key} gauge")
                    lines.append(f"mediacache_cache_{key} {value}")
        observer = self.proxy.host.pm.get_plugin("builtin-metrics")
        if observer is not None:
            lines += observer.exposition()
        return 200, "\n".join(lines) + "\n"


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "bad request line")
    return parts[0], parts[1]
