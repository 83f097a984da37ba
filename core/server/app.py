"""The running proxy: one listener and one UDP pool per enabled format, sessions, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from loguru import logger

from mediacache.access import AccessList
from mediacache.cache.service import CacheService
from mediacache.cache.store import CacheStore, DiskWriter
from mediacache.config import (
    Config,
    FormatConfig,
    format_settings,
    parse_port_range,
    split_host_port,
    validate_routes,
)
from mediacache.formats import FormatSpec, OriginOptions
from mediacache.plugins import PluginHost
from mediacache.sansio.layer import Layer, SessionContext
from mediacache.server.admin import AdminServer
from mediacache.server.httptunnel import TunnelBroker, TunnellingClientProtocol
from mediacache.server.playout import PlayoutScheduler
from mediacache.server.session import ClientProtocol, SessionDriver
from mediacache.server.udp import UdpPool
from mediacache.splitter import SplitterService


@dataclass
class FormatService:
    """One format's listener, UDP pool and live sessions."""

    spec: FormatSpec
    settings: FormatConfig
    server: asyncio.Server | None = None
    extra_servers: list[asyncio.Server] = field(default_factory=list)
    """Listeners of ``also_listen`` (same sessions, same UDP pool)."""
    pool: UdpPool | None = None
    sessions: set[SessionDriver] = field(default_factory=set)
    listen: tuple[str, int] = ("", 0)
    make_layer: Callable[[SessionContext], Layer] | None = None
    """Serves this factory's layers instead of asking ``mediacache_make_layer`` (a reference
    origin is served this way)."""

    @property
    def port(self) -> int:
        """The bound control port (the configured one, or the kernel's pick for port 0)."""
        if self.server is not None and self.server.sockets:
            return self.server.sockets[0].getsockname()[1]
        return self.listen[1]


class ProxyServer:
    """Starts every enabled format of ``host`` with ``config``; ``stop()`` ends all sessions."""

    @classmethod
    def reference_origin(
        cls, spec: FormatSpec, options: OriginOptions, host: PluginHost
    ) -> ProxyServer:
        """A server running ``spec``'s reference origin instead of the proxy."""
        factory = host.hook.mediacache_reference_origin(format_name=spec.name, options=options)
        if factory is None:
            raise ValueError(f"format {spec.name!r} ships no reference origin")
        config = Config()
        config.cache.enabled = False
        config.admin.enabled = False
        config.access.allow = ["0.0.0.0/0", "::/0"]
        server = cls(config, host, formats=())
        settings = msgspec.structs.replace(
            spec.config_type(), listen=options.listen, udp_ports=options.udp_ports
        )
        service = FormatService(spec, settings, make_layer=factory)
        server.services[spec.name] = service
        return server

    def __init__(
        self, config: Config, host: PluginHost, formats: Iterable[str] | None = None
    ) -> None:
        self.config = config
        self.host = host
        self.access = AccessList(config.access.allow, config.access.deny)
        self.services: dict[str, FormatService] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.scheduler: PlayoutScheduler | None = None
        self.cache: CacheService | None = None
        self.splitter: SplitterService | None = None
        self.admin: AdminServer | None = None
        for warning in validate_routes(config, host.registry.names()):
            logger.warning("config {}: {}", config.source, warning)
        for spec in host.registry:
            if formats is not None and spec.name not in formats:
                continue
            settings = format_settings(config, spec.name, spec.config_type)
            if settings.enabled:
                self.services[spec.name] = FormatService(spec, settings)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        tune_gc()
        self.scheduler = PlayoutScheduler(self.loop)
        if self.config.cache.enabled:
            self.cache = CacheService(open_store(self.config, self.loop), self.config.cache)
        if self.config.split.enabled:
            self.splitter = SplitterService(
                linger=self.config.split.linger,
                reconnect_timeout=self.config.split.reconnect_timeout,
            )
        self.host.hook.mediacache_configure(config=self.config)
        if not self.services:
            logger.warning("no format is installed or enabled: nothing to serve")
        for service in self.services.values():
            await self._start_service(service)
        if self.config.admin.enabled and self.services:
            self.admin = AdminServer(self)
            await self.admin.start(*split_host_port(self.config.admin.listen, 8089))

    async def _start_service(self, service: FormatService) -> None:
        assert self.loop is not None
        settings = service.settings
        host, port = split_host_port(settings.listen)
        service.listen = (host, port)
        if settings.udp_ports:
            udp_host = "::" if ":" in host else host
            pool = UdpPool(
                udp_host, parse_port_range(settings.udp_ports), settings.udp_socket_pairs
            )
            pool.open(self.loop)
            service.pool = pool
        def make_session(conn: Any, transport: Any) -> SessionDriver:
            return self._new_session(service, conn, transport)

        if service.spec.http_tunnel:
            broker = TunnelBroker()
            protocol: Any = lambda: TunnellingClientProtocol(make_session, broker)  # noqa: E731
        else:
            protocol = lambda: ClientProtocol(make_session)  # noqa: E731
        service.server = await self._listen(protocol, host, port)
        for address in settings.also_listen:
            service.extra_servers.append(await self._listen(protocol, *split_host_port(address)))
        udp = f", UDP {service.pool.pairs[0].ports[0]}+" if service.pool else ""
        also = "".join(
            f", also {s.sockets[0].getsockname()[1]}" for s in service.extra_servers if s.sockets
        )
        logger.info(
            "{} {} listening on {}:{}{}{}",
            service.spec.name,
            service.spec.version,
            host,
            service.port,
            also,
            udp,
        )

    async def _listen(self, protocol: Any, host: str, port: int) -> asyncio.Server:
        assert self.loop is not None
        return await self.loop.create_server(
            protocol,
            host=host or None,
            port=port,
            reuse_address=True,
            family=socket.AF_INET6 if ":" in host else socket.AF_INET,
        )

    def _new_session(self, service: FormatService, conn: Any, transport: Any) -> SessionDriver:
        assert self.loop is not None
        driver = SessionDriver(
            self.loop,
            conn,
            transport,
            service.pool,
            self.host.hook,
            on_done=service.sessions.discard,
            scheduler=self.scheduler,
            tcp_limits=(service.settings.tcp_send_limit, service.settings.tcp_hopeless_after),
        )
        ctx = SessionContext(
            format_name=service.spec.name,
            settings=service.settings,
            config=self.config,
            client=conn,
            dataplane=driver.dataplane,
            listen_port=conn.local[1] if conn.local else service.port,  # the port it came in on
            routes=self.config.routes,
            hook=self.host.hook,
            access_allowed=self.access.allows,
            parent=self.config.parents.get(service.spec.name),
            monotonic=self.loop.time,
            cache=self.cache,
            splitter=self.splitter,
            post=lambda event: self.loop.call_soon(driver.feed, event),  # type: ignore[union-attr]
        )
        if service.make_layer is not None:
            layer = service.make_layer(ctx)
        else:
            layer = self.host.hook.mediacache_make_layer(format_name=service.spec.name, ctx=ctx)
        if layer is None:  # a plugin that registered a format but makes no layer for it
            raise RuntimeError(f"no plugin makes a layer for format {service.spec.name!r}")
        driver.layer = layer
        service.sessions.add(driver)
        return driver

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.stop()
        for service in self.services.values():
            for server in (service.server, *service.extra_servers):
                if server is not None:
                    server.close()
            for driver in list(service.sessions):
                for transport in list(driver.transports.values()):
                    transport.close()
        await asyncio.sleep(0)
        for service in self.services.values():
            for server in (service.server, *service.extra_servers):
                if server is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(server.wait_closed(), 2)
            for driver in list(service.sessions):
                driver._teardown()
            if service.pool is not None:
                service.pool.close()
        if self.scheduler is not None:
            self.scheduler.close()
        if self.cache is not None:
            self.cache.store.close()
            self.cache = None

    def session_count(self) -> int:
        return sum(len(s.sessions) for s in self.services.values())


async def serve_forever(server: ProxyServer) -> None:
    """Run until cancelled (SIGINT/SIGTERM end the loop in the CLI)."""
    await server.start()
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def open_store(config: Config, loop: asyncio.AbstractEventLoop | None = None) -> CacheStore:
    """The cache store of ``cache_dir``; a damaged object is reported and refetched later.
    With ``loop``, object files are written off it (a commit would otherwise stall every
    session for the hashing and fsync of the file: ~3 ms per MB)."""

    def damaged(key: Any, reason: str) -> None:
        logger.warning("cache: dropped a damaged object {}: {}", key, reason)

    def error(key: Any, message: str) -> None:
        logger.error("cache: {}: {}", key, message)

    writer = DiskWriter(loop.call_soon_threadsafe) if loop is not None else None
    return CacheStore(
        config.cache_dir,
        memory_limit=config.cache.memory_limit,
        disk_limit=config.cache.disk_limit,
        on_damaged=damaged,
        on_error=error,
        writer=writer,
    )


GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Keep the cyclic garbage collector from pausing the data path.

    With a thousand sessions alive, a full (generation 2) collection walks every session's
    objects and stalls the event loop for tens of milliseconds: measured with
    benchmarks/fanout.py at 1,000 viewers, p99 send lateness went from 89 ms to 24 ms with the
    collector off. Objects alive at start (modules, plugins, config) are frozen out of every
    collection, and the thresholds make full collections rare (about every 8 million tracked
    allocations) while young cycles are still collected often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
