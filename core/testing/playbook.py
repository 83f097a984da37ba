"""Playbook helpers: drive a sans-I/O layer with events and look at the commands it yields.

Shipped with mediacache so format-plugin authors test their layers the same way::

    pb = Playbook(make_layer, settings=QuickTimeConfig())
    pb.start()
    out = pb.client_sends(b"OPTIONS * RTSP/1.0\\r\\nCSeq: 1\\r\\n\\r\\n")
    assert pb.sent_to_client(out)[0].startswith(b"RTSP/1.0 200")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mediacache.config import Config, FormatConfig, Route
from mediacache.sansio.commands import Command, OpenConnection, SendData
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
from mediacache.sansio.layer import Layer, SessionContext


@dataclass(eq=False)
class RecordingSink:
    """A sink that keeps what it was sent."""

    kind: str
    target: Any
    payloads: list[bytes] = field(default_factory=list)
    bytes_sent: int = 0
    packets_sent: int = 0

    def send(self, payload: bytes) -> None:
        self.payloads.append(payload)
        self.bytes_sent += len(payload)
        self.packets_sent += 1


@dataclass
class RecordingDataPlane:
    """A data plane whose sinks record; ``sinks`` lists them in creation order."""

    server_ports: tuple[int, int] = (6970, 6971)
    sinks: list[RecordingSink] = field(default_factory=list)
    writable: bool = True
    has_udp: bool = True

    def udp_sink(self, addr: tuple[str, int], *, rtcp: bool) -> RecordingSink:
        sink = RecordingSink("udp-rtcp" if rtcp else "udp", addr)
        self.sinks.append(sink)
        return sink

    def interleaved_sink(self, conn: Connection, channel: int) -> RecordingSink:
        sink = RecordingSink("interleaved", (conn, channel))
        self.sinks.append(sink)
        return sink

    def stream_sink(self, conn: Connection) -> RecordingSink:
        sink = RecordingSink("stream", conn)
        self.sinks.append(sink)
        return sink

    def client_writable(self, conn: Connection) -> bool:
        return self.writable


class Clock:
    """A settable clock for timers and access records."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Playbook:
    """One layer, one client connection, and the commands each event produced."""

    def __init__(
        self,
        make_layer: Callable[[SessionContext], Layer],
        *,
        settings: FormatConfig,
        format_name: str = "test",
        routes: Sequence[Route] = (),
        listen_port: int = 1091,
        client_addr: tuple[str, int] = ("127.0.0.1", 40000),
        hook: Any = None,
        access_allowed: Callable[[str], bool] = lambda host: True,
        parent: str | None = None,
    ) -> None:
        self.client = Connection("client", client_addr, connected=True)
        self._posted: list[Event] = []
        self.dataplane = RecordingDataPlane()
        self.clock = Clock()
        self.ctx = SessionContext(
            format_name=format_name,
            settings=settings,
            config=Config(),
            client=self.client,
            dataplane=self.dataplane,
            listen_port=listen_port,
            routes=list(routes),
            hook=hook,
            access_allowed=access_allowed,
            clock=self.clock,
            monotonic=self.clock,
            parent=parent,
            post=self._posted.append,
        )
        self.layer = make_layer(self.ctx)
        self.history: list[tuple[Event, list[Command]]] = []

    def feed(self, event: Event) -> list[Command]:
        """The commands of ``event`` and of the events the layer posted to itself meanwhile
        (the server delivers those right after, in order)."""
        out = self.layer.handle(event)
        self.history.append((event, out))
        while self._posted:
            posted = self._posted.pop(0)
            more = self.layer.handle(posted)
            self.history.append((posted, more))
            out = [*out, *more]
        return out

    def start(self) -> list[Command]:
        return self.feed(Start())

    def client_sends(self, data: bytes) -> list[Command]:
        return self.feed(DataReceived(self.client, data))

    def origin_sends(self, conn: Connection, data: bytes) -> list[Command]:
        return self.feed(DataReceived(conn, data))

    def opened(self, conn: Connection, error: str | None = None, **kw: Any) -> list[Command]:
        return self.feed(OpenCompleted(conn, error, **kw))

    def closed(self, conn: Connection, error: str | None = None) -> list[Command]:
        return self.feed(ConnectionClosed(conn, error))

    def timer(self, name: str) -> list[Command]:
        return self.feed(TimerFired(name))

    def datagram(self, addr: tuple[str, int], data: bytes, rtcp: bool = True) -> list[Command]:
        return self.feed(DatagramReceived(addr, data, rtcp))

    # -- reading commands -----------------------------------------------------------------

    def sent_to_client(self, out: list[Command]) -> list[bytes]:
        return [c.data for c in out if isinstance(c, SendData) and c.conn is self.client]

    @staticmethod
    def sent_to(conn: Connection, out: list[Command]) -> list[bytes]:
        return [c.data for c in out if isinstance(c, SendData) and c.conn is conn]

    @staticmethod
    def opened_connections(out: list[Command]) -> list[Connection]:
        return [c.conn for c in out if isinstance(c, OpenConnection)]

    @staticmethod
    def of_type(out: list[Command], kind: type[Command]) -> list[Any]:
        return [c for c in out if isinstance(c, kind)]
