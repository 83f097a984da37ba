"""RDT packets we build, decoded by Wireshark's own dissector (tshark) as an independent check.

The datagrams go into a pcap as UDP over loopback; ``-d udp.port==6970,rdt`` is enough for
tshark to decode them, no RTSP SETUP needed in the capture.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mediacache_realmedia.wire.rdt import (
    RdtAck,
    RdtBufferInfo,
    RdtBwProbing,
    RdtCongestion,
    RdtData,
    RdtLatencyReport,
    RdtReport,
    RdtRttRequest,
    RdtStreamEnd,
    RdtTransportInfoRequest,
    RdtTransportInfoResponse,
    RdtUnknownControl,
    StreamEndReason,
    build_asm_action,
    build_bandwidth_report,
    build_data_packet,
    build_rdt,
    build_rdt_datagram,
    build_rtt_response,
    build_stream_end,
    parse_rdt,
)

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
]

PORT = 6970


def write_pcap(path: Path, datagrams: list[bytes]) -> None:
    """A classic pcap (Ethernet, IPv4, UDP 127.0.0.1:PORT -> 127.0.0.1:PORT+1)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for n, payload in enumerate(datagrams):
        udp = struct.pack(">HHHH", PORT, PORT + 1, 8 + len(payload), 0) + payload
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n, 0, 64, 17, 0,
                         b"\x7f\x00\x00\x01", b"\x7f\x00\x00\x01")  # fmt: skip
        total = sum(struct.unpack(">10H", ip))
        total = (total & 0xFFFF) + (total >> 16)
        ip = ip[:10] + struct.pack(">H", ~total & 0xFFFF) + ip[12:]
        frame = bytes(12) + b"\x08\x00" + ip + udp
        out.append(struct.pack("<IIII", n + 1, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


# (datagram, packet kinds tshark must show, expected field values in its JSON)
CASES = [
    (build_data_packet(1, 5, 1000, b"payload"), ["Data"],
     {"rdt.stream-id": "1", "rdt.sequence-number": "5", "rdt.asm-rule": "0",
      "rdt.timestamp": "1000", "rdt.need-reliable": "1", "rdt.total-reliable": "0"}),
    (build_data_packet(3, 0xFEFF, 7, b"x", stream_id=2, keyframe=False, total_reliable=None),
     ["Data"], {"rdt.stream-id": "3", "rdt.asm-rule": "5", "rdt.need-reliable": "0"}),
    (build_rdt(RdtData(40, 7, 70, 55, b"xy", total_reliable=9, length_included=True)), ["Data"],
     {"rdt.stream-id-expansion": "40", "rdt.asm-rule-expansion": "70",
      "rdt.packet-length": "18", "rdt.total-reliable": "9"}),
    (build_rdt_datagram([RdtLatencyReport(99, length_included=True), RdtRttRequest(),
                         RdtStreamEnd(1, 8, 55, total_reliable=3),
                         RdtData(2, 7, 0, 55, b"xy", length_included=True)]),
     ["Latency report", "RTT request", "Stream end", "Data"],
     {"rdt.lrpt-server-out-time": "99", "rdt.stre-seqno": "8", "rdt.sequence-number": "7"}),
    (build_rtt_response(1, 2), ["RTT response"], {"rdt.rtrp-ts-sec": "1", "rdt.rtrp-ts-usec": "2"}),
    (build_rdt(RdtCongestion(5, 2)), ["Congestion"],
     {"rdt.cong-xmit-mult": "5", "rdt.cong-recv-mult": "2"}),
    (build_bandwidth_report(1000, 64000, 3), ["Bandwidth report"],
     {"rdt.bwid-report-interval": "1000", "rdt.bwid-report-bandwidth": "64000",
      "rdt.bwid-report-sequence": "3"}),
    (build_rdt(RdtAck(b"\x01\x02", lost_high=True)), ["Ack"], {"rdt.lost-high": "1"}),
    (build_asm_action(3, 9, b"zz", length_included=True), ["Asm action"],
     {"rdt.reliable-seq-no": "9", "rdt.packet-length": "9"}),
    (build_rdt(RdtTransportInfoRequest(123, True)), ["Transport info"],
     {"rdt.tirq-request-time-msec": "123", "rdt.tirq-request-buffer-info": "1"}),
    (build_rdt(RdtTransportInfoResponse(1, 2, (RdtBufferInfo(7, 2, 3, 4),))),
     ["Transport info response"],
     {"rdt.tirp-request-time-msec": "1", "rdt.tirp-response-time-msec": "2",
      "rdt.tirp-buffer-info-count": "1", "rdt.tirp-buffer-info-stream-id": "7",
      "rdt.tirp-buffer-info-bytes-buffered": "4"}),
    # Wireshark 4.0 reads only the first byte of the BW-probing timestamp: keep it below 2**24.
    (build_rdt(RdtBwProbing(1, 2)), ["BW probing"], {"rdt.bwpp-seqno": "1"}),
    (build_rdt(RdtReport(b"abc", length_included=True)), ["Report"], {"rdt.packet-length": "8"}),
    (build_stream_end(40, 3, 4, total_reliable=1), ["Stream end"],
     {"rdt.stre-stream-id": "31", "rdt.stream-id-expansion": "40", "rdt.stre-seqno": "3",
      "rdt.stre-need-reliable": "1", "rdt.stre-packet-sent": "1"}),
    (build_stream_end(0, 3, 4, reason=StreamEndReason(0x1234, b"bye", 0xFF, 0xFF08)),
     ["Stream end"], {"rdt.stre-ext-flag": "1", "rdt.stre-reason-code": "0x00001234"}),
    (build_rdt(RdtUnknownControl(0xFF0C, 0, b"?")), ["Unknown"], {}),
]  # fmt: skip


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[ET.Element], str]:
    """tshark's PDML (one <proto name="rdt"> per frame) and its -V text for all CASES."""
    pcap = tmp_path_factory.mktemp("tshark") / "rdt.pcap"
    write_pcap(pcap, [case[0] for case in CASES])
    base = ["tshark", "-r", str(pcap), "-d", f"udp.port=={PORT},rdt"]
    run = {"check": True, "capture_output": True, "text": True, "timeout": 60}
    pdml = ET.fromstring(subprocess.run([*base, "-T", "pdml"], **run).stdout)
    protos = [packet.find("proto[@name='rdt']") for packet in pdml.iter("packet")]
    verbose = subprocess.run([*base, "-V"], **run).stdout
    return protos, verbose


def test_tshark_finds_nothing_malformed(decoded: tuple[list[ET.Element], str]) -> None:
    protos, verbose = decoded
    assert len(protos) == len(CASES) and all(p is not None for p in protos)
    assert "Malformed" not in verbose and "Expert Info (Error" not in verbose
    assert "Packet length invalid" not in verbose


@pytest.mark.parametrize("index", range(len(CASES)))
def test_tshark_reads_our_fields(decoded: tuple[list[ET.Element], str], index: int) -> None:
    protos, _ = decoded
    datagram, kinds, expected = CASES[index]
    packets = protos[index].findall("field[@name='rdt.packet']")
    shown = [p.get("showname", "").removeprefix("RDT packet (").rstrip(")") for p in packets]
    assert shown == kinds
    assert len(parse_rdt(datagram)) == len(kinds)
    fields: dict[str, list[str]] = {}
    for field in protos[index].iter("field"):
        fields.setdefault(field.get("name", ""), []).append(field.get("show", ""))
    for name, value in expected.items():
        assert value in fields.get(name, []), (name, fields.get(name))


def test_data_packet_first_is_what_wireshark_calls_invalid(tmp_path: Path) -> None:
    """Why build_rdt_datagram keeps data last: Wireshark (like ffmpeg) gives a data packet the
    rest of the datagram, so a packet after it makes the length look wrong."""
    datagram = build_rdt(RdtData(2, 7, 0, 55, b"xy", length_included=True)) + build_rdt(
        RdtRttRequest()
    )
    pcap = tmp_path / "bad.pcap"
    write_pcap(pcap, [datagram])
    verbose = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", f"udp.port=={PORT},rdt", "-V"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert "Packet length invalid" in verbose
    assert len(parse_rdt(datagram)) == 2  # we (and GStreamer) honour the length field
