"""Test helpers for Windows Media: a blocking MMS client for the reference origin.

Shipped in the package (like :mod:`mediacache.testing`) because the proxy's tests need an MMS
origin and a player that shows what a real one hides (``hr`` values, LocationIds, stream
payloads, the authentication exchange no open-source player implements).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from mediacache.testing.origin import OriginThread
from mediacache_wmt.wire import asf, mms

__all__ = ["MmsClient", "Received", "connected"]

C = TypeVar("C", bound=mms.MmsCommand)


@dataclass
class Received:
    """What a play returned: the data packets in arrival order and the command that ended it."""

    packets: list[mms.MmsDataPacket] = field(default_factory=list)
    end: mms.MmsCommand | None = None
    commands: list[mms.MmsCommand] = field(default_factory=list)

    def asf_packets(self, packet_size: int) -> list[bytes]:
        """The ASF data packets, padded to the packet size as players do."""
        return [p.payload + bytes(packet_size - len(p.payload)) for p in self.packets]

    def stream_numbers(self, packet_size: int) -> set[int]:
        """Every stream number with a payload in what was received."""
        return {
            s.stream & 0x7F
            for p in self.asf_packets(packet_size)
            for s in asf.scan_payloads(p, packet_size)
        }


class MmsClient:
    """A blocking MMS player over a real socket, for tests: speaks commands, shows everything.

    ``udp=True`` opens a UDP socket for MMSU data (``funnel`` names its port). Every wait has a
    timeout; a closed connection reads as ``None``.
    """

    def __init__(
        self, host: str, port: int, *, timeout: float = 10.0, udp: bool = False
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.reader = mms.MmsStreamReader()
        self.seq = 0
        self.udp_sock: socket.socket | None = None
        if udp:
            self.udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp_sock.bind(("127.0.0.1", 0))
            self.udp_sock.settimeout(timeout)

    def close(self) -> None:
        for s in (self.sock, self.udp_sock):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- wire -----------------------------------------------------------------------------

    def send(self, cmd: mms.MmsCommand) -> None:
        self.send_raw(mms.build_command(cmd, sequence=self.seq))
        self.seq += 1

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float | None = None) -> mms.MmsCommand | mms.MmsDataPacket | None:
        """The next packet from the TCP connection; None once the server closed it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if self.reader.at_eof:
                return None
            event = self.reader.next_event()
            if event is not None:
                return event
            if self.reader.at_eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no MMS packet from the server")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.reader.receive_data(data)

    def command(self, timeout: float | None = None) -> mms.MmsCommand | None:
        """The next command (TCP data packets before it are an error here)."""
        event = self.recv(timeout)
        if isinstance(event, mms.MmsDataPacket):
            raise AssertionError(f"expected a command, got a data packet {event.sequence}")
        return event

    def request(self, cmd: mms.MmsCommand, reply: type[C]) -> C:
        """Send ``cmd`` and return its reply, which must be a ``reply``."""
        self.send(cmd)
        got = self.command()
        if not isinstance(got, reply):
            raise AssertionError(f"{type(cmd).__name__}: expected {reply.__name__}, got {got!r}")
        return got

    def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection within ``timeout`` (its bytes are dropped)."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                continue
            except OSError:
                return True
        return False

    # -- the player's sequence ------------------------------------------------------------

    def connect(self) -> mms.ReportConnectedEx:
        return self.request(
            mms.Connect("NSPlayer/7.0.0.1956; {3300AD50-2C39-46C0-AE0A-000000000000}; "
                        "Host: 127.0.0.1"),
            mms.ReportConnectedEx,
        )

    def funnel(self) -> mms.MmsCommand | None:
        """Protocol selection: TCP, or UDP to this client's UDP socket. Returns 0x02 or 0x03."""
        if self.udp_sock is not None:
            cmd = mms.ConnectFunnel.for_transport(
                "127.0.0.1", "UDP", self.udp_sock.getsockname()[1]
            )
        else:
            cmd = mms.ConnectFunnel.for_transport("127.0.0.1", "TCP", 1037)
        self.send(cmd)
        return self.command()

    def open(self, name: str, *, token: bytes = b"") -> mms.MmsCommand | None:
        """OpenFile: returns 0x06 (maybe with an error ``hr``) or a SecurityChallenge."""
        self.send(mms.OpenFile(name, token_data=token))
        return self.command()

    def handshake(self, name: str) -> mms.ReportOpenFile:
        """Connect, funnel info, protocol selection, open ``name``: the 0x06 reply."""
        self.connect()
        self.request(mms.FunnelInfo(), mms.ReportFunnelInfo)
        funnel = self.funnel()
        assert isinstance(funnel, mms.ReportConnectedFunnel), funnel
        opened = self.open(name)
        assert isinstance(opened, mms.ReportOpenFile) and opened.hr == 0, opened
        return opened

    def read_header(self, incarnation: int = mms.HEADER_PACKET_ID) -> bytes:
        """ReadBlock: 0x11, then the header parts (over UDP for MMSU) joined."""
        self.request(mms.ReadBlock(play_incarnation=incarnation), mms.ReportReadBlock)
        header = b""
        while True:
            packet = self._next_data()
            assert packet.packet_id == incarnation & 0xFF, packet
            header += packet.payload
            if packet.header_ends:
                return header

    def select(self, streams: Iterable[int], every: Iterable[int]) -> mms.ReportStreamSwitch:
        """StreamSwitch: ``streams`` on, the rest of ``every`` off (VLC's way)."""
        keep = set(streams)
        choice = {s: mms.Thinning.ALL if s in keep else mms.Thinning.OFF for s in sorted(every)}
        return self.request(mms.StreamSwitch.select(choice), mms.ReportStreamSwitch)

    def start(self, packet_id: int = 5, **kw: Any) -> mms.ReportStartedPlaying:
        return self.request(mms.StartPlaying(play_incarnation=packet_id, **kw),
                            mms.ReportStartedPlaying)

    def play(
        self, packet_id: int = 5, *, seconds: float | None = None, **kw: Any
    ) -> Received:
        """StartPlaying and read until 0x1E (or for ``seconds`` of a live stream)."""
        self.start(packet_id, **kw)
        return self.collect(packet_id, seconds=seconds)

    def collect(self, packet_id: int, *, seconds: float | None = None) -> Received:
        got = Received()
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            left = None if deadline is None else max(0.05, deadline - time.monotonic())
            try:
                event = self._next_any(left)
            except TimeoutError:
                if deadline is not None:
                    break
                raise
            if event is None:
                got.end = None
                break
            if isinstance(event, mms.MmsDataPacket):
                if event.packet_id == packet_id and got.end is None:
                    got.packets.append(event)
                continue
            got.commands.append(event)
            if isinstance(event, mms.Ping):
                self.send(mms.Pong(event.param1, event.param2))
            elif isinstance(event, mms.ReportEndOfStream):
                got.end = event
                break
        return got

    def _next_data(self) -> mms.MmsDataPacket:
        event = self._next_any(None)
        if not isinstance(event, mms.MmsDataPacket):
            raise AssertionError(f"expected a data packet, got {event!r}")
        return event

    def _next_any(self, timeout: float | None) -> mms.MmsCommand | mms.MmsDataPacket | None:
        """The next packet from TCP, or from UDP for an MMSU client (whichever comes first)."""
        if self.udp_sock is None:
            return self.recv(timeout)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            with contextlib.suppress(TimeoutError):
                return self.recv(0.01)
            self.udp_sock.settimeout(0.01)
            try:
                datagram = self.udp_sock.recv(65536)
                return mms.parse_data_packet(datagram)
            except TimeoutError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("no MMS packet from the server")


@contextlib.contextmanager
def connected(origin: OriginThread, **kw: Any) -> Iterator[MmsClient]:
    """An :class:`MmsClient` to ``origin``, closed afterwards."""
    client = MmsClient("127.0.0.1", origin.port, **kw)
    try:
        yield client
    finally:
        client.close()
