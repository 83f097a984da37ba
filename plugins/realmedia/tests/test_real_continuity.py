"""The RDT continuity of a live feed's handover (sans-I/O): a successor's session repeats what
the viewers had (the key frame before "now" on the shared live clock) and numbers RDT from its
own base; the viewers must see neither a repeat nor a jump back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mediacache.splitter import FeedTrack
from mediacache.testing.playbook import RecordingSink
from mediacache_realmedia.caching import RdtContinuity
from mediacache_realmedia.dialect import RealDialect
from mediacache_realmedia.errors import RealProtocolError
from mediacache_realmedia.wire.rdt import (
    RdtData,
    RdtStreamEnd,
    build_data_packet,
    build_latency_report,
    build_rdt_datagram,
    build_stream_end,
    parse_rdt,
    split_rdt,
)


def pkt(seq: int, ts: int, body: bytes, *, key: bool = True) -> bytes:
    return build_data_packet(0, seq, ts, body, keyframe=key)


def feed(*former: bytes) -> tuple[FeedTrack, RecordingSink, list[tuple[object, object]]]:
    """A track whose viewer got ``former`` from the former owner; the routes asked for."""
    track = FeedTrack("streamid=0")
    viewer = RecordingSink("rtp", None)
    track.rtp.add(viewer)
    for payload in former:
        track.rtp.send(payload)
    viewer.payloads.clear()
    return track, viewer, []


def continuity(track: FeedTrack, routes: list[tuple[object, object]]) -> RdtContinuity:
    return RdtContinuity(track, lambda rtp, rtcp: routes.append((rtp, rtcp)))


def seqs_and_bodies(payloads: list[bytes]) -> list[tuple[int, int, bytes]]:
    out = []
    for payload in payloads:
        for p in parse_rdt(payload):
            assert isinstance(p, RdtData | RdtStreamEnd)
            out.append((p.seq, p.timestamp, p.payload if isinstance(p, RdtData) else b"END"))
    return out


def test_what_the_viewers_had_is_dropped_and_the_numbering_goes_on() -> None:
    # the former owner was cut inside the frame at 1100 (fragments a1, a2 of a1..a3 sent)
    track, viewer, routes = feed(pkt(10, 1000, b"k"), pkt(11, 1100, b"a1", key=False),
                                 pkt(12, 1100, b"a2", key=False))  # fmt: skip
    cont = continuity(track, routes)
    successor = [
        pkt(0, 1000, b"k"),  # the key frame before "now": the viewers had it
        pkt(1, 1100, b"a1", key=False),
        pkt(2, 1100, b"a2", key=False),  # the last one sent: dropped, and the rest goes on
        pkt(3, 1100, b"a3", key=False),  # same timestamp, never sent: must not be lost
        pkt(4, 1200, b"b", key=False),
    ]
    for payload in successor:
        cont.send(payload)
    assert seqs_and_bodies(viewer.payloads) == [(13, 1100, b"a3"), (14, 1200, b"b")]
    assert cont.mode == "renumber" and routes == []  # stays in the feed path
    assert viewer.payloads[0][3:] == successor[3][3:]  # only the sequence bytes changed


def test_at_the_same_timestamp_with_no_match_none_is_repeated() -> None:
    track, viewer, routes = feed(pkt(10, 1000, b"x"))
    cont = continuity(track, routes)
    for payload in (pkt(0, 1000, b"other"), pkt(1, 1040, b"next")):
        cont.send(payload)
    assert seqs_and_bodies(viewer.payloads) == [(11, 1040, b"next")]


def test_renumbering_continues_across_the_wrap_and_stream_end_follows() -> None:
    track, viewer, routes = feed(pkt(0xFEFE, 5000, b"k"))
    cont = continuity(track, routes)
    for seq, ts in ((5, 5000), (6, 5100), (7, 5200), (8, 5300)):
        cont.send(pkt(seq, ts, b"k" if ts == 5000 else b"v"))
    cont.send(build_stream_end(0, 9, 5300))  # seq: the next data packet's
    got = seqs_and_bodies(viewer.payloads)
    assert [s for s, _, _ in got] == [0xFEFF, 0, 1, 2]  # RDT counts to 0xFEFF, then wraps
    assert got[-1] == (2, 5300, b"END")


def test_a_stream_end_before_anything_new_gets_the_viewers_next_number() -> None:
    track, viewer, routes = feed(pkt(41, 900, b"k"))
    cont = continuity(track, routes)
    cont.send(pkt(0, 900, b"k"))
    cont.send(build_stream_end(0, 1, 900))
    assert seqs_and_bodies(viewer.payloads) == [(42, 900, b"END")]


def test_other_rdt_packets_pass_as_they_are_and_frames_are_renumbered_whole() -> None:
    track, viewer, routes = feed(pkt(10, 1000, b"k"))
    cont = continuity(track, routes)
    report = build_latency_report(77, length_included=True)
    cont.send(report)  # before anything new
    cont.send(build_rdt_datagram(parse_rdt(report) + parse_rdt(pkt(3, 1100, b"v"))))
    cont.send(build_rdt_datagram(parse_rdt(report) + parse_rdt(pkt(4, 1200, b"w"))))
    assert viewer.payloads[0] == report
    for payload, seq in zip(viewer.payloads[1:], (11, 12), strict=True):
        first, data = split_rdt(payload)
        assert first == report and seqs_and_bodies([data])[0][0] == seq


def test_a_stream_already_continuous_goes_straight_to_the_fan_out() -> None:
    """The successor's numbering already goes on (a shared sequence): once the repeat is
    dropped, the channel is routed straight to the fan-outs (no per-packet cost)."""
    track, viewer, routes = feed(pkt(10, 1000, b"k"))
    cont = continuity(track, routes)
    cont.send(pkt(10, 1000, b"k"))
    new = pkt(11, 1100, b"v")
    cont.send(new)
    assert viewer.payloads == [new] and cont.mode == "direct"
    assert routes == [(track.rtp, track.rtcp)]


def test_nothing_sent_before_means_nothing_to_continue() -> None:
    track, viewer, routes = feed()
    cont = continuity(track, routes)
    first = pkt(0, 1000, b"k")
    cont.send(first)
    assert viewer.payloads == [first] and routes == [(track.rtp, track.rtcp)]


def test_a_stream_on_another_clock_is_renumbered_not_dropped() -> None:
    track, viewer, routes = feed(pkt(10, 500_000, b"k"))
    cont = continuity(track, routes)
    cont.send(pkt(0, 0, b"k"))  # minutes behind: not the viewers' live clock
    cont.send(pkt(1, 40, b"v"))
    assert seqs_and_bodies(viewer.payloads) == [(11, 0, b"k"), (12, 40, b"v")]


def test_the_dialect_gives_one_continuity_per_track() -> None:
    track = FeedTrack("streamid=0")
    sinks = RealDialect().feed_continuity(track, lambda rtp, rtcp: None)
    assert sinks is not None and isinstance(sinks[0], RdtContinuity) and sinks[1] is track.rtcp


@given(st.binary(max_size=64), st.booleans())
def test_garbage_never_raises_and_what_is_not_rdt_passes(junk: bytes, renumbering: bool) -> None:
    track, viewer, routes = feed(pkt(10, 1000, b"k"))
    cont = continuity(track, routes)
    if renumbering:
        cont.send(pkt(0, 1100, b"v"))
        viewer.payloads.clear()
    cont.send(junk)  # the owner's path forwards what it cannot read: so does this
    try:
        split_rdt(junk)
    except RealProtocolError:
        assert viewer.payloads == ([junk] if junk else [])


def test_renumbering_leaves_the_payload_alone() -> None:
    """(Its cost per packet is measured by benchmarks/handover_continuity.py.)"""
    track, viewer, routes = feed(pkt(10, 1000, b"k"))
    cont = continuity(track, routes)
    cont.send(pkt(0, 1100, bytes(1200), key=False))
    cont.send(pkt(1, 1140, b"next", key=False))
    assert cont.mode == "renumber" and routes == []
    assert seqs_and_bodies(viewer.payloads) == [(11, 1100, bytes(1200)), (12, 1140, b"next")]
