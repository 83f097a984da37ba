"""Paced playout of a cached clip (or of a fill in progress) to one viewer. Sans-I/O.

A cached packet carries ``time``: the time it left the origin, in seconds from the start of the
clip (pauses of the filling session removed). Playing from index ``i`` at wall time ``now``
anchors ``t[i]`` to ``now``; every later packet is due at ``now + (t - t[i])``. ``pump(now)``
hands every packet due by ``now + lead`` to the format's ``emit`` and returns when it wants to
be called again, so one scheduler in the server can drive thousands of playouts with one timer.

A fill in progress grows while it is read: the playout waits (polls) at its end until the fill
commits (then it ends normally) or aborts (then it ends with the fill's reason).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from mediacache.cache.objects import Packet

PlayState = Literal["idle", "playing", "paused", "ended"]
FILL_POLL = 0.02


class PacketSource(Protocol):
    """A :class:`~mediacache.cache.objects.CachedObject` or a growing ``Fill``."""

    def packet(self, i: int) -> Packet: ...

    def first_index_at(self, t: float) -> int: ...


def available(source: object) -> int:
    """Packets readable now (a fill's ``packet_count`` grows; an object's ``len`` does not)."""
    count = getattr(source, "packet_count", None)
    if count is not None and hasattr(source, "state"):
        return int(count)
    return len(source)  # type: ignore[arg-type]


def source_finished(source: object) -> tuple[bool, str | None]:
    """(no more packets will come, abort reason or None)."""
    state = getattr(source, "state", "committed")
    if state == "filling":
        return False, None
    if state == "aborted":
        return True, getattr(source, "abort_reason", None) or "fill aborted"
    return True, None


class Playout:
    """Where one viewer is in one clip, and when its next packet is due."""

    def __init__(
        self,
        source: PacketSource,
        emit: Callable[[Packet], None],
        *,
        lead: float = 0.01,
    ) -> None:
        self.source = source
        self.emit = emit
        self.lead = lead
        self.index = 0
        self.state: PlayState = "idle"
        self.end_reason: str | None = None
        self._anchor_wall = 0.0
        self._anchor_t = 0.0
        self._source = source

    @property
    def position(self) -> float:
        """Clip time of the next packet (the end of what is readable when past it)."""
        n = available(self.source)
        if n == 0:
            return 0.0
        return self.source.packet(min(self.index, n - 1)).time

    def play(self, now: float, index: int | None = None) -> None:
        """Start (or resume) at ``index`` (None: where we are)."""
        if index is not None:
            self.index = index
        self._anchor_wall = now
        n = available(self.source)
        self._anchor_t = self.source.packet(self.index).time if self.index < n else self.position
        self.state = "playing"

    def pause(self) -> None:
        if self.state == "playing":
            self.state = "paused"

    def pump(self, now: float) -> float | None:
        """Emit every due packet; the next time to call, or None when paused or ended."""
        if self.state != "playing":
            return None
        source = self.source
        horizon = now + self.lead
        anchor = self._anchor_wall - self._anchor_t
        n = available(source)
        i = self.index
        emit = self.emit
        while i < n:
            packet = source.packet(i)
            due = anchor + packet.time
            if due > horizon:
                self.index = i
                return due - self.lead
            emit(packet)
            i += 1
        self.index = i
        finished, reason = source_finished(source)
        if not finished:
            return now + FILL_POLL
        if available(source) > i:  # the fill committed with packets we have not sent yet
            return now
        self.state = "ended"
        self.end_reason = reason
        return None
