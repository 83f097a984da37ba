"""The per-viewer bounded queue of TCP viewers: drop past the limit, disconnect the hopeless."""

from __future__ import annotations

import time

from loguru import logger

from mediacache.server.session import InterleavedSink


class FakeTransport:
    def __init__(self, buffered: int) -> None:
        self.buffered = buffered
        self.written: list[bytes] = []
        self.aborted = False

    def is_closing(self) -> bool:
        return self.aborted

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 1)


def test_frames_are_written_with_the_interleaved_header() -> None:
    t = FakeTransport(0)
    sink = InterleavedSink(t, 6)  # type: ignore[arg-type]
    sink.send(b"abc")
    assert t.written == [b"$\x06\x00\x03abc"]
    assert (sink.packets_sent, sink.bytes_sent, sink.dropped) == (1, 3, 0)


def test_a_viewer_over_the_limit_loses_packets_then_is_disconnected() -> None:
    lines: list[str] = []
    handler = logger.add(lines.append, format="{level} {message}", level="DEBUG")
    try:
        t = FakeTransport(100_000)
        sink = InterleavedSink(t, 0, drop_at=50_000, hopeless_after=0.2)  # type: ignore[arg-type]
        sink.send(b"x")
        assert t.written == [] and sink.dropped == 1 and not t.aborted
        assert not lines  # dropping alone is silent
        time.sleep(0.25)
        sink.send(b"x")
        assert t.aborted  # hopelessly behind
    finally:
        logger.remove(handler)
    assert [line.rstrip() for line in lines] == [
        "WARNING client ('127.0.0.1', 1) is hopelessly behind (2 packets dropped): disconnected"
    ]
    t2 = FakeTransport(100_000)
    sink2 = InterleavedSink(t2, 0, drop_at=50_000, hopeless_after=0.2)  # type: ignore[arg-type]
    sink2.send(b"x")
    t2.buffered = 0  # it caught up: the clock resets
    sink2.send(b"y")
    t2.buffered = 100_000
    time.sleep(0.25)
    sink2.send(b"z")
    assert not t2.aborted and len(t2.written) == 1


def test_a_stream_sink_writes_payloads_as_they_are() -> None:
    from mediacache.server.session import StreamSink

    t = FakeTransport(0)
    sink = StreamSink(InterleavedSink(t, -1))  # type: ignore[arg-type]
    sink.send(b"\x01\x00\x00\x00pkt")
    assert t.written == [b"\x01\x00\x00\x00pkt"] and sink.packets_sent == 1
