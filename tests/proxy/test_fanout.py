"""FanOut: every member gets every packet; joins and leaves take effect at the next packet."""

from __future__ import annotations

from mediacache.splitter import FanOut
from mediacache.testing.playbook import RecordingSink


def test_members_get_each_packet_once() -> None:
    fan = FanOut()
    a, b = RecordingSink("udp", 1), RecordingSink("udp", 2)
    fan.add(a)
    fan.add(a)
    fan.send(b"1")
    fan.add(b)
    fan.send(b"2")
    fan.remove(a)
    fan.remove(a)
    fan.send(b"3")
    assert a.payloads == [b"1", b"2"] and b.payloads == [b"2", b"3"]
    assert fan.sinks == [b] and fan.packets_sent == 3 and fan.last == b"3"


def test_many_leave_at_once_cheaply() -> None:
    fan = FanOut()
    sinks = [RecordingSink("udp", i) for i in range(5000)]
    for s in sinks:
        fan.add(s)
    fan.send(b"x")
    for s in sinks[1:]:
        fan.remove(s)
    fan.send(b"y")
    assert sinks[0].payloads == [b"x", b"y"] and sinks[1].payloads == [b"x"]
