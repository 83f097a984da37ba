"""The layer interface: what a format plugin implements to serve one client connection.

A layer is a sans-I/O state machine. The server feeds it :mod:`events` and carries out the
:mod:`commands` it returns; it never sees a socket. Control traffic (RTSP, MMS commands) goes
through events and commands, one object per message. Media does not: one origin packet may go
to thousands of viewers, so the layer hands payloads to :class:`Sink` objects that the
:class:`DataPlane` made, and the server's sinks write to sockets directly (see
docs/architecture.md, "the data path"). Tests give the layer a recording data plane.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mediacache.sansio.connection import Connection

if TYPE_CHECKING:
    from mediacache.cache.service import CacheService
    from mediacache.config import Config, FormatConfig, Route
    from mediacache.sansio.commands import Command
    from mediacache.sansio.events import Event
    from mediacache.splitter import SplitterService


class Sink(Protocol):
    """Where one track's packets go for one viewer. ``send`` must be cheap: it is per packet."""

    bytes_sent: int
    packets_sent: int

    def send(self, payload: bytes) -> None: ...


class DataPlane(Protocol):
    """Factory of sinks, given to each layer by the server (or by a test)."""

    @property
    def has_udp(self) -> bool:
        """Does this format send data over UDP at all (``udp_ports`` configured)?"""
        ...

    @property
    def server_ports(self) -> tuple[int, int]:
        """The (RTP, RTCP) UDP ports this session's UDP data leaves from."""
        ...

    def udp_sink(self, addr: tuple[str, int], *, rtcp: bool) -> Sink: ...

    def interleaved_sink(self, conn: Connection, channel: int) -> Sink: ...

    def stream_sink(self, conn: Connection) -> Sink:
        """Payloads written as they are on ``conn`` (MMST data packets carry their own framing)."""
        ...

    def client_writable(self, conn: Connection) -> bool:
        """False while ``conn``'s send buffer is over its high-water mark."""
        ...


class Layer(Protocol):
    """One client control connection's protocol state machine."""

    def handle(self, event: Event) -> list[Command]: ...


@dataclass
class SessionContext:
    """Everything a layer may consult: config, routes, policy hooks, its data plane, a clock."""

    format_name: str
    settings: FormatConfig
    config: Config
    client: Connection
    dataplane: DataPlane
    listen_port: int
    routes: list[Route] = field(default_factory=list)
    hook: Any = None
    """The pluggy hook relay (``hook.mediacache_access_check(...)`` etc.), or None in tests."""
    access_allowed: Callable[[str], bool] = lambda host: True
    clock: Callable[[], float] = time.time
    """Wall clock, for records and RTCP."""
    monotonic: Callable[[], float] = time.monotonic
    """The clock of timers and playout (the server's loop time)."""
    cache: CacheService | None = None
    splitter: SplitterService | None = None
    post: Callable[[Event], None] = lambda event: None
    """Deliver ``event`` to this session later (another session's feed uses it to notify)."""
    parent: str | None = None
    """``[parents] NAME``: a parent proxy URL every origin request is sent through."""
