"""Commands a layer yields; the server in :mod:`mediacache.server` is the one interpreter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mediacache.sansio.connection import Connection

if TYPE_CHECKING:
    from mediacache.logs import AccessRecord


@dataclass(frozen=True, slots=True)
class Command:
    """Base of every command."""


@dataclass(frozen=True, slots=True)
class SendData(Command):
    conn: Connection
    data: bytes


@dataclass(frozen=True, slots=True)
class OpenConnection(Command):
    """Connect ``conn`` to ``conn.peer`` over TCP; answered by an ``OpenCompleted`` event."""

    conn: Connection
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class CloseConnection(Command):
    """Close after what was sent has been flushed (``abort`` drops it).

    ``drain``: half-close (send FIN) and read and discard what the peer still sends for a short
    while before closing, so an error reply is not destroyed by a TCP reset when the peer is
    still sending (a client streaming a 1 MB header line must still read our 414).
    """

    conn: Connection
    abort: bool = False
    drain: bool = False


@dataclass(frozen=True, slots=True)
class PauseReading(Command):
    """Stop (``paused``) or resume reading from ``conn``: back-pressure toward a sender."""

    conn: Connection
    paused: bool


@dataclass(frozen=True, slots=True)
class SetTimer(Command):
    """(Re)arm the layer's timer ``name``; a ``TimerFired`` event follows after ``delay`` s."""

    name: str
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer(Command):
    name: str


@dataclass(frozen=True, slots=True)
class WatchDatagrams(Command):
    """Deliver datagrams arriving from ``addr`` on the format's UDP sockets to this layer."""

    addr: tuple[str, int]


@dataclass(frozen=True, slots=True)
class UnwatchDatagrams(Command):
    addr: tuple[str, int]


class Pumped(Protocol):
    """Something the server's playout scheduler drives (a cached clip's replay)."""

    def pump(self, now: float) -> float | None:
        """Send what is due at ``now`` (monotonic); the next time to call, or None to stop."""
        ...


@dataclass(frozen=True, slots=True, eq=False)
class StartPlayout(Command):
    """Call ``player.pump`` at the times it asks, starting now, until it returns None."""

    player: Pumped


@dataclass(frozen=True, slots=True, eq=False)
class StopPlayout(Command):
    player: Pumped


@dataclass(frozen=True, slots=True)
class Log(Command):
    """A line for the operational log: protocol code never calls loguru itself."""

    level: str
    message: str


@dataclass(frozen=True, slots=True)
class EmitRecord(Command):
    """The session's access-log record: emitted exactly once per client session."""

    record: AccessRecord
