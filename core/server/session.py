"""The command interpreter: runs one layer against real sockets, timers and UDP sockets.

This module and :mod:`mediacache.server.udp` are the only places that touch asyncio (besides
the listener set-up in :mod:`mediacache.server.app`). Events are queued and handled one at a
time, so a command that causes an event never re-enters the layer.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from loguru import logger

from mediacache.sansio.commands import (
    CancelTimer,
    CloseConnection,
    Command,
    EmitRecord,
    Log,
    OpenConnection,
    PauseReading,
    SendData,
    SetTimer,
    StartPlayout,
    StopPlayout,
    UnwatchDatagrams,
    WatchDatagrams,
)
from mediacache.sansio.connection import Connection
from mediacache.sansio.events import (
    ConnectionClosed,
    DatagramReceived,
    DataReceived,
    Event,
    OpenCompleted,
    Start,
    TimerFired,
)
from mediacache.server.playout import PlayoutScheduler
from mediacache.server.udp import UdpPool, UdpSink

if TYPE_CHECKING:
    from mediacache.sansio.layer import Layer

_INTERLEAVED = struct.Struct(">BBH")
WRITE_HIGH_WATER = 1024 * 1024
DRAIN_SECONDS = 2.0


class InterleavedSink:
    """One RTSP interleaved channel on a client's TCP connection.

    The viewer's bounded queue is its transport's send buffer. Past ``drop_at`` bytes
    (``tcp_send_limit``) new packets are dropped (the viewer sees a gap, as with UDP loss, and
    its decoder recovers at the next key frame); a viewer that stays over the limit for
    ``hopeless_after`` seconds (``tcp_hopeless_after``) is disconnected, with a log line. A
    slow viewer thus never stalls the feed of the others. Sessions that do not share their
    origin feed pause the origin instead (see :meth:`SessionDriver.pause_writing`), so for
    them this limit is rarely reached.
    """

    __slots__ = (
        "_channel",
        "_drop_at",
        "_hopeless_after",
        "_over_since",
        "_transport",
        "bytes_sent",
        "dropped",
        "packets_sent",
    )

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        channel: int,
        drop_at: int = 2 * 1024 * 1024,
        hopeless_after: float = 10.0,
    ) -> None:
        self._transport = transport
        self._channel = channel
        self._drop_at = drop_at
        self._hopeless_after = hopeless_after
        self._over_since = 0.0
        self.bytes_sent = 0
        self.packets_sent = 0
        self.dropped = 0

    def send(self, payload: bytes) -> None:
        transport = self._transport
        if transport.is_closing():
            self.dropped += 1
            return
        if transport.get_write_buffer_size() > self._drop_at:
            self.dropped += 1
            now = time.monotonic()
            if not self._over_since:
                self._over_since = now
            elif now - self._over_since > self._hopeless_after:
                peer = transport.get_extra_info("peername")
                logger.warning(
                    "client {} is hopelessly behind ({} packets dropped): disconnected",
                    peer,
                    self.dropped,
                )
                transport.abort()
            return
        self._over_since = 0.0
        if self._channel < 0:  # a self-framed stream (StreamSink)
            transport.write(payload)
        else:
            transport.write(_INTERLEAVED.pack(0x24, self._channel, len(payload)) + payload)
        self.packets_sent += 1
        self.bytes_sent += len(payload)


class StreamSink:
    """A format's self-framed data packets on a client's TCP connection (MMST), with the same
    bounded queue as :class:`InterleavedSink`."""

    __slots__ = ("_inner",)

    def __init__(self, inner: InterleavedSink) -> None:
        self._inner = inner

    @property
    def bytes_sent(self) -> int:
        return self._inner.bytes_sent

    @property
    def packets_sent(self) -> int:
        return self._inner.packets_sent

    def send(self, payload: bytes) -> None:
        self._inner.send(payload)


class SessionDataPlane:
    """The :class:`~mediacache.sansio.layer.DataPlane` the server gives one layer."""

    def __init__(self, driver: SessionDriver, pool: UdpPool | None) -> None:
        self._driver = driver
        self._pool = pool
        self._pair = pool.assign() if pool is not None and pool.pairs else None

    @property
    def has_udp(self) -> bool:
        return self._pair is not None

    @property
    def server_ports(self) -> tuple[int, int]:
        if self._pair is None:
            raise RuntimeError("this format has no UDP ports")
        return self._pair.ports

    def udp_sink(self, addr: tuple[str, int], *, rtcp: bool) -> UdpSink:
        if self._pair is None:
            raise RuntimeError("this format has no UDP ports")
        return UdpSink(self._pair.rtcp if rtcp else self._pair.rtp, addr)

    def interleaved_sink(self, conn: Connection, channel: int) -> InterleavedSink:
        transport = self._driver.transports[conn]
        drop_at, hopeless = self._driver.tcp_limits
        return InterleavedSink(transport, channel, drop_at, hopeless)  # type: ignore[arg-type]

    def stream_sink(self, conn: Connection) -> StreamSink:
        transport = self._driver.transports[conn]
        drop_at, hopeless = self._driver.tcp_limits
        return StreamSink(InterleavedSink(transport, -1, drop_at, hopeless))  # type: ignore[arg-type]

    def client_writable(self, conn: Connection) -> bool:
        transport = self._driver.transports.get(conn)
        return transport is not None and transport.get_write_buffer_size() < WRITE_HIGH_WATER


class _ConnProtocol(asyncio.Protocol):
    """Feeds one connection's bytes to the driver."""

    def __init__(self, driver: SessionDriver, conn: Connection) -> None:
        self.driver = driver
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.driver.feed(DataReceived(self.conn, data))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.driver.connection_lost(self.conn, exc)

    def pause_writing(self) -> None:
        self.driver.pause_writing(self.conn)

    def resume_writing(self) -> None:
        self.driver.resume_writing(self.conn)


class ClientProtocol(_ConnProtocol):
    """The accepted client connection; builds the driver once the socket is known."""

    def __init__(self, make_driver: Any) -> None:
        self._make_driver = make_driver

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername") or ("?", 0)
        sock = transport.get_extra_info("sockname") or ("?", 0)
        conn = Connection("client", (peer[0], peer[1]), local=(sock[0], sock[1]), connected=True)
        self.conn = conn
        self.driver = self._make_driver(conn, transport)
        self.driver.feed(Start())


class SessionDriver:
    """Runs one layer: interprets its commands with sockets, timers and the UDP pool."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: Connection,
        client_transport: asyncio.Transport,
        pool: UdpPool | None,
        hook: Any,
        on_done: Any = None,
        scheduler: PlayoutScheduler | None = None,
        tcp_limits: tuple[int, float] = (2 * 1024 * 1024, 10.0),
    ) -> None:
        self.loop = loop
        self.client = client
        self.transports: dict[Connection, asyncio.Transport] = {client: client_transport}
        self.pool = pool
        self.hook = hook
        self.on_done = on_done
        self.scheduler = scheduler
        self.tcp_limits = tcp_limits
        self.players: set[Any] = set()
        self.dataplane = SessionDataPlane(self, pool)
        self.layer: Layer | None = None
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.watched: set[tuple[str, int]] = set()
        self.opening: dict[Connection, asyncio.Task[None]] = {}
        self._queue: deque[Event] = deque()
        self._busy = False
        self.done = False

    # -- events in ------------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        self._queue.append(event)
        if self._busy:
            return
        self._busy = True
        try:
            while self._queue:
                ev = self._queue.popleft()
                if self.layer is None:
                    continue
                try:
                    commands = self.layer.handle(ev)
                except Exception:
                    logger.exception("layer failed on {}; closing the session", type(ev).__name__)
                    self._layer_failed()
                    return
                for command in commands:
                    self.execute(command)
        finally:
            self._busy = False
        self._maybe_finished()

    def _layer_failed(self) -> None:
        """The layer raised: let it release what others depend on (a fill joiners read, a
        live feed, its access record) through its ``abort``, if it has one, then drop the
        session whatever happens."""
        layer, self.layer = self.layer, None
        abort = getattr(layer, "abort", None)
        if abort is not None:
            try:
                for command in abort("internal error"):
                    self.execute(command)
            except Exception:
                logger.exception("layer failed again while aborting; session dropped")
        self._teardown()

    def _maybe_finished(self) -> None:
        """The client is gone, nothing is open or opening, and the layer keeps nothing going
        in the background (a fill, a live feed waiting to reconnect): release the session."""
        if (
            not self.done
            and self.client.closed
            and not self.transports
            and not self.opening
            and not getattr(self.layer, "background", False)
        ):
            self._teardown()

    def connection_lost(self, conn: Connection, exc: Exception | None) -> None:
        conn.closed = True
        self.transports.pop(conn, None)
        if not self.done:
            self.feed(ConnectionClosed(conn, str(exc) if exc else None))
        if conn is self.client and not getattr(self.layer, "background", False):
            self._teardown()
        else:
            self._maybe_finished()  # a background session (a cache fill, a feed) may be done

    def pause_writing(self, conn: Connection) -> None:
        """A slow client: stop reading from its origin connections (back-pressure), unless
        that origin connection feeds other viewers too (the layer says so)."""
        if conn is self.client and getattr(self.layer, "backpressure", True):
            for other, transport in self.transports.items():
                if other.role == "origin" and not transport.is_closing():
                    transport.pause_reading()

    def resume_writing(self, conn: Connection) -> None:
        if conn is self.client:
            for other, transport in self.transports.items():
                if other.role == "origin" and not transport.is_closing():
                    transport.resume_reading()

    def _datagram(self, addr: tuple[str, int], data: bytes, rtcp: bool) -> None:
        self.feed(DatagramReceived(addr, data, rtcp))

    # -- commands out ---------------------------------------------------------------------

    def execute(self, command: Command) -> None:
        kind = type(command)
        if kind is SendData:
            transport = self.transports.get(command.conn)  # type: ignore[attr-defined]
            if transport is not None and not transport.is_closing():
                transport.write(command.data)  # type: ignore[attr-defined]
        elif kind is SetTimer:
            self._set_timer(command.name, command.delay)  # type: ignore[attr-defined]
        elif kind is CancelTimer:
            handle = self.timers.pop(command.name, None)  # type: ignore[attr-defined]
            if handle is not None:
                handle.cancel()
        elif kind is OpenConnection:
            self._open(command)  # type: ignore[arg-type]
        elif kind is CloseConnection:
            self._close(command)  # type: ignore[arg-type]
        elif kind is WatchDatagrams:
            if self.pool is not None:
                self.pool.watchers[command.addr] = self._datagram  # type: ignore[attr-defined]
                self.watched.add(command.addr)  # type: ignore[attr-defined]
        elif kind is UnwatchDatagrams:
            self._unwatch(command.addr)  # type: ignore[attr-defined]
        elif kind is PauseReading:
            transport = self.transports.get(command.conn)  # type: ignore[attr-defined]
            if transport is not None and not transport.is_closing():
                if command.paused:  # type: ignore[attr-defined]
                    transport.pause_reading()
                else:
                    transport.resume_reading()
        elif kind is StartPlayout:
            if self.scheduler is not None:
                self.players.add(command.player)  # type: ignore[attr-defined]
                self.scheduler.start(command.player)  # type: ignore[attr-defined]
        elif kind is StopPlayout:
            self.players.discard(command.player)  # type: ignore[attr-defined]
            if self.scheduler is not None:
                self.scheduler.stop(command.player)  # type: ignore[attr-defined]
        elif kind is Log:
            logger.log(command.level, command.message)  # type: ignore[attr-defined]
        elif kind is EmitRecord:
            try:
                self.hook.mediacache_session_closed(record=command.record)  # type: ignore[attr-defined]
            except Exception:
                logger.exception("an access-log observer failed")
        else:
            logger.error("unknown command {!r}", command)

    def _set_timer(self, name: str, delay: float) -> None:
        old = self.timers.pop(name, None)
        if old is not None:
            old.cancel()
        self.timers[name] = self.loop.call_later(delay, self._fire, name)

    def _fire(self, name: str) -> None:
        self.timers.pop(name, None)
        self.feed(TimerFired(name))

    def _unwatch(self, addr: tuple[str, int]) -> None:
        self.watched.discard(addr)
        if self.pool is not None and self.pool.watchers.get(addr) == self._datagram:
            del self.pool.watchers[addr]

    def _open(self, command: OpenConnection) -> None:
        conn = command.conn
        task = self.loop.create_task(self._connect(conn, command.timeout))
        self.opening[conn] = task

    async def _connect(self, conn: Connection, timeout: float) -> None:
        host, port = conn.peer
        try:
            transport, _ = await asyncio.wait_for(
                self.loop.create_connection(lambda: _ConnProtocol(self, conn), host, port),
                timeout,
            )
        except TimeoutError:
            self.opening.pop(conn, None)
            self.feed(OpenCompleted(conn, "connect timed out", timed_out=True))
            return
        except OSError as exc:
            self.opening.pop(conn, None)
            self.feed(OpenCompleted(conn, exc.strerror or str(exc)))
            return
        self.opening.pop(conn, None)
        if self.done:
            transport.close()
            return
        sock = transport.get_extra_info("sockname")
        conn.local = (sock[0], sock[1]) if sock else None
        conn.connected = True
        self.transports[conn] = transport  # type: ignore[assignment]
        self.feed(OpenCompleted(conn))

    def _close(self, command: CloseConnection) -> None:
        conn = command.conn
        task = self.opening.pop(conn, None)
        if task is not None:
            task.cancel()
        transport = self.transports.get(conn)
        if transport is None:
            return
        if command.abort:
            transport.abort()
        elif command.drain and transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(DRAIN_SECONDS, transport.close)
        else:
            transport.close()

    def retire(self) -> None:
        """End this session without a word to its layer and without closing its client
        connection, which now serves another purpose (the POST half of an HTTP tunnel)."""
        self.transports.pop(self.client, None)
        self.layer = None
        self._teardown()

    def _teardown(self) -> None:
        """Release everything this session holds, whatever the layer did."""
        if self.done:
            return
        self.done = True
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        if self.scheduler is not None:
            for player in self.players:
                self.scheduler.stop(player)
        self.players.clear()
        for addr in list(self.watched):
            self._unwatch(addr)
        for task in self.opening.values():
            task.cancel()
        self.opening.clear()
        for transport in list(self.transports.values()):
            transport.close()
        self._queue.clear()
        if self.on_done is not None:
            self.on_done(self)
