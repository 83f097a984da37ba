"""Events the core feeds into a layer. Frozen and slotted: cheap, and safe to keep in tests."""

from __future__ import annotations

from dataclasses import dataclass

from mediacache.sansio.connection import Connection


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event."""


@dataclass(frozen=True, slots=True)
class Start(Event):
    """The client connection was accepted; the layer may greet, set timers."""


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    conn: Connection
    data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed ``conn`` (or it failed); the layer must not send on it any more."""

    conn: Connection
    error: str | None = None


@dataclass(frozen=True, slots=True)
class OpenCompleted(Event):
    """Reply to :class:`~mediacache.sansio.commands.OpenConnection`; ``error`` None on success."""

    conn: Connection
    error: str | None = None
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class TimerFired(Event):
    name: str


@dataclass(frozen=True, slots=True)
class Notify(Event):
    """A message from another session of the process (e.g. a live feed ended)."""

    topic: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DatagramReceived(Event):
    """A datagram from an address the layer watches (e.g. a client's RTCP receiver report)."""

    addr: tuple[str, int]
    data: bytes
    rtcp: bool
