"""Data packets to one player: restamped per player, paced from the cache. Sans-I/O.

Every player chooses its own packet id (``playIncarnation`` of StartPlaying and ReadBlock), and
an MMSU player wants a packet counter in AFFlags, so what the origin sent (or the cache kept, or a
live feed fans out) cannot go to a player as it is: :class:`ClientData` rewrites those two bytes
of the 8-byte pre-header and leaves the ASF packet untouched. ASF send times need no change for
on-demand clips (a player starting at packet *k* gets the file's own times, as from the origin).

Over MMSU, VLC must have read a command before the datagrams that follow it (see
:mod:`mediacache_wmt.origin`): while :meth:`ClientData.hold` is on, datagrams wait until the
layer releases them from a zero-delay timer, after the command has left.

:class:`CacheReplay` is a cached clip's playout for one player, driven by the server's playout
scheduler: the stored packets (whole MMS data packets as the origin sent them) at their ASF send
times, through the player's :class:`ClientData`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Final

from mediacache.cache.objects import Packet
from mediacache.cache.playout import PacketSource, Playout, available
from mediacache.sansio.layer import Sink
from mediacache_wmt.errors import MmsProtocolError
from mediacache_wmt.wire import asf, mms

__all__ = ["SEND_AHEAD", "CacheReplay", "ClientData", "start_index"]

SEND_AHEAD: Final = 0.04
"""Cached packets leave up to 40 ms early (one timer run serves a batch of players)."""
KEY_SEARCH: Final = 2000
"""How many packets a seek looks back for a video key frame."""


class ClientData:
    """The data path to one player: MMST on its TCP connection or MMSU to its UDP port.

    ``send`` (the :class:`~mediacache.sansio.layer.Sink` method, so a live feed's fan-out can
    hold it) takes a whole MMS data packet and restamps its packet id and AFFlags.
    """

    __slots__ = (
        "_held", "bytes_sent", "holding", "packet_id", "packets_sent", "tcp", "udp", "udp_count",
    )

    def __init__(self, tcp: Sink, udp: Sink | None) -> None:
        self.tcp = tcp
        self.udp = udp
        self.packet_id = 5
        self.udp_count = 0
        self.holding = False
        self._held: list[bytes] = []
        self.bytes_sent = 0
        self.packets_sent = 0

    def send(self, frame: bytes) -> None:
        """A media data packet: packet id of the current play, AFFlags 0 (TCP) or a counter."""
        flags = 0
        if self.udp is not None:
            flags = self.udp_count & 0xFF
            self.udp_count += 1
        if frame[4] != self.packet_id or frame[5] != flags:
            frame = frame[:4] + bytes((self.packet_id, flags)) + frame[6:]
        self._out(frame)

    def send_header_part(self, frame: bytes, packet_id: int) -> None:
        """A part of the ASF header: the player's header packet id, the flags kept (0x04...)."""
        if frame[4] != packet_id:
            frame = frame[:4] + bytes((packet_id & 0xFF,)) + frame[5:]
        self._out(frame)

    def hold(self) -> None:
        """A command just went out on TCP: datagrams wait for :meth:`release` (MMSU only)."""
        if self.udp is not None:
            self.holding = True

    @property
    def held(self) -> bool:
        return bool(self._held)

    def release(self) -> None:
        self.holding = False
        held, self._held = self._held, []
        for frame in held:
            self._out(frame)

    def _out(self, frame: bytes) -> None:
        if self.udp is None:
            self.tcp.send(frame)
        elif self.holding:
            self._held.append(frame)
            return
        else:
            self.udp.send(frame)
        self.bytes_sent += len(frame)
        self.packets_sent += 1


def start_index(
    source: PacketSource, *, location_id: int, position: float, video: frozenset[int]
) -> int:
    """Where a StartPlaying begins in a stored clip (packets are whole MMS data packets).

    ``location_id`` (an ASF packet number; 0xFFFFFFFF = unused) wins; else ``position`` seconds
    into the clip, moved back to the packet where a video key frame starts, as the origin does.
    """
    n = available(source)
    if n == 0:
        return 0
    if location_id not in (0, 0xFFFFFFFF):
        locations = _Locations(source)
        return min(bisect.bisect_left(locations, location_id, 0, n), n)
    if position <= 0:
        return 0
    index = min(source.first_index_at(position), n - 1)
    if not video:
        return index
    for i in range(index, max(-1, index - KEY_SEARCH), -1):
        if _starts_key_frame(source.packet(i).payload, video):
            return i
    return 0


class _Locations:
    """LocationIds of stored packets as a sequence, for bisect."""

    def __init__(self, source: PacketSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return available(self.source)

    def __getitem__(self, i: int) -> int:
        return mms.data_packet_header(self.source.packet(i).payload)[0]


def _starts_key_frame(frame: bytes | memoryview, video: frozenset[int]) -> bool:
    try:
        parsed = asf.parse_data_packet(bytes(frame[mms.DATA_PACKET_HEADER_SIZE:]))
    except MmsProtocolError:
        return False
    return any(
        p.key_frame and p.starts_media_object and p.stream_number in video for p in parsed.payloads
    )


class CacheReplay:
    """One player's playout of a cached clip (or of a fill in progress).

    ``on_end(reason)`` is called once when the playout is over (reason None: the clip ended;
    else the fill it read was aborted); the layer posts itself an event from it.
    """

    def __init__(
        self,
        source: PacketSource,
        data: ClientData,
        on_end: Callable[[str | None], None],
    ) -> None:
        self.source = source
        self.data = data
        self.on_end = on_end
        self.playout = Playout(source, self._emit, lead=SEND_AHEAD)
        self.ended = False

    def play(self, now: float, index: int) -> None:
        self.ended = False
        self.playout.play(now, index)

    def pause(self) -> None:
        self.playout.pause()

    def pump(self, now: float) -> float | None:
        wake = self.playout.pump(now)
        if self.playout.state == "ended" and not self.ended:
            self.ended = True
            self.on_end(self.playout.end_reason)
        return wake

    def _emit(self, packet: Packet) -> None:
        self.data.send(bytes(packet.payload))
