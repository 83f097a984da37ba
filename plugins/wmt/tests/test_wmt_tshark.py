"""Wireshark's msmms dissector (tshark) as an independent reader of what the builders write.

The pcap is written here (IPv4 + TCP/UDP with consistent sequence numbers, checksums 0), so the
test needs no capture rights. Findings: every command decodes; TCP data packets decode only with
AFFlags 0x00/0x04/0x08/0x0C/0x10 (the dissector's heuristic), so media packets here carry 0;
UDP data is found through the conversation the ``\\\\ip\\UDP\\port`` funnel name sets up.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from wmt_peers import TSHARK, clip

from mediacache_wmt.wire import asf, mms

pytestmark = [pytest.mark.peers, pytest.mark.skipif(not TSHARK, reason="needs tshark")]
CLIENT, SERVER = bytes((127, 0, 0, 1)), bytes((127, 0, 0, 2))


def ipv4(proto: int, src: bytes, dst: bytes, l4: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, src, dst) + l4


def write_pcap(path: Path, packets: list[bytes]) -> None:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 228)  # LINKTYPE_IPV4
    for n, p in enumerate(packets):
        out += struct.pack("<IIII", 1, n, len(p), len(p)) + p
    path.write_bytes(out)


class Conversation:
    """One TCP connection client:40000 -> server:1755 (and UDP datagrams beside it)."""

    def __init__(self) -> None:
        self.seq = {CLIENT: 1000, SERVER: 5000}
        self.packets: list[bytes] = []
        self.commands = 0
        self._tcp(CLIENT, b"", 0x02, -1)
        self._tcp(SERVER, b"", 0x12, -1)
        self._tcp(CLIENT, b"", 0x10)

    def _tcp(self, src: bytes, payload: bytes, flags: int = 0x18, shift: int = 0) -> None:
        dst = SERVER if src == CLIENT else CLIENT
        ports = (40000, 1755) if src == CLIENT else (1755, 40000)
        tcp = struct.pack("!HHIIBBHHH", *ports, self.seq[src] + shift, self.seq[dst],
                          5 << 4, flags, 65535, 0, 0)
        self.packets.append(ipv4(6, src, dst, tcp + payload))
        self.seq[src] += len(payload)

    def command(self, cmd: mms.MmsCommand) -> None:
        src = CLIENT if cmd.direction is mms.Direction.TO_SERVER else SERVER
        self._tcp(src, mms.build_command(cmd, sequence=self.commands))
        self.commands += 1

    def server_data(self, packet: bytes) -> None:
        self._tcp(SERVER, packet)

    def udp_data(self, packet: bytes, port: int) -> None:
        udp = struct.pack("!HHHH", 1755, port, 8 + len(packet), 0)
        self.packets.append(ipv4(17, SERVER, CLIENT, udp + packet))


def session(transport: str) -> Conversation:
    """A whole MMS session: every message of [MS-MMSP], header parts, data packets."""
    data = clip("clip.wmv").read_bytes()
    h = asf.parse_asf_header(data)
    c = Conversation()
    c.command(mms.Connect("NSPlayer/7.0.0.1956; {7E667F5D-A661-495E-A512-F55686DDA178}; "
                          "Host: 127.0.0.2"))
    c.command(mms.ReportConnectedEx(authen_package="NTLM"))
    c.command(mms.FunnelInfo())
    c.command(mms.ReportFunnelInfo(client_id=0x1234))
    c.command(mms.ConnectFunnel.for_transport("127.0.0.1", transport, 7000))
    c.command(mms.ReportConnectedFunnel())
    c.command(mms.OpenFile("clip.wmv"))
    c.command(mms.ReportOpenFile(file_duration=h.duration, file_blocks=4,
                                 file_packet_size=h.packet_size, file_packet_count=h.packet_count,
                                 file_bit_rate=364000, file_header_size=len(h.raw)))
    c.command(mms.ReadBlock())
    c.command(mms.ReportReadBlock())
    for part in mms.header_packets(h.raw, max_payload=500):
        c.server_data(part)
    c.command(mms.StreamSwitch.select({1: mms.Thinning.ALL, 2: mms.Thinning.OFF}))
    c.command(mms.ReportStreamSwitch())
    c.command(mms.StartPlaying(play_incarnation=5))
    c.command(mms.ReportStartedPlaying(play_incarnation=5))
    packets = asf.iter_data_packets(data[h.data_offset :], h.packet_size, 3)
    for n, packet in enumerate(packets):
        if transport == "TCP":
            c.server_data(mms.build_data_packet(n, 5, 0, packet))
        else:
            c.udp_data(mms.build_data_packet(n, 5, n & 0xFF, packet), 7000)
    c.command(mms.Ping())
    c.command(mms.Pong())
    c.command(mms.StopPlaying())
    c.command(mms.ReportEndOfStream())
    c.command(mms.StartStriding(2.0))
    c.command(mms.ReportStartStriding())
    c.command(mms.ReportStreamChange(3200, 809, 364000))
    c.command(mms.ReportDisconnectedFunnel())
    c.command(mms.SecurityChallenge(b"r\x00"))
    c.command(mms.SecurityResponse(b"user:pw\x00"))
    c.command(mms.ReportRedirect("mms://other/clip.wmv"))
    c.command(mms.Logging(bytes(1496)))
    c.command(mms.CloseFile())
    return c


def tshark(path: Path, *args: str) -> str:
    return subprocess.run(
        [TSHARK or "tshark", "-r", str(path), "-d", "tcp.port==1755,msmms", *args],
        check=True, capture_output=True, timeout=120,
    ).stdout.decode()


@pytest.mark.parametrize("transport", ["TCP", "UDP"])
def test_tshark_decodes_a_whole_session_without_malformed(tmp_path, transport):
    conv = session(transport)
    pcap = tmp_path / "mms.pcap"
    write_pcap(pcap, conv.packets)
    verbose = tshark(pcap, "-V")
    assert "Malformed" not in verbose
    summary = tshark(pcap).splitlines()
    assert sum("MSMMS" in line and "Command:" in line for line in summary) == conv.commands
    assert sum("MSMMS" in line and "Data: seq=" in line for line in summary) == 5  # 2 + 3
    # fields read back as written
    assert "Player info: NSPlayer/7.0.0.1956" in verbose
    assert "Server file: clip.wmv" in verbose
    assert f"Transport: (\\\\127.0.0.1\\{transport}\\7000)" in verbose
    assert "Server version: 4.1.0.3928" in verbose
    assert "Password encryption type: NTLM" in verbose
    assert "Media packet length (bytes): 3200" in verbose
    assert "Pre-recorded media length (seconds): 4" in verbose
    assert "Action: No stream, switch it off (2)" in verbose or "Stream structure count: 2" in (
        verbose)


def test_tshark_check_has_teeth(tmp_path):
    # a stream selection with no entry is legal for us but the dissector reads one entry:
    # it must say Malformed, which shows the check above would see a wire bug
    conv = Conversation()
    conv.command(mms.StreamSwitch())
    pcap = tmp_path / "bad.pcap"
    write_pcap(pcap, conv.packets)
    assert "Malformed" in tshark(pcap, "-V")
