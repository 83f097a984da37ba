"""Back-pressure in the session driver: a slow client pauses its origin connection, unless
that connection feeds a live stream other viewers watch (the layer's ``backpressure``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from mediacache.rtsp.proxy import RtspProxyLayer
from mediacache.sansio.connection import Connection
from mediacache.server.session import SessionDriver
from mediacache.testing.playbook import Playbook
from mediacache_quicktime.plugin import QuickTimeConfig


@dataclass
class FakeTransport:
    reading: bool = True

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


@dataclass
class StubLayer:
    backpressure: bool


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _driver(loop: asyncio.AbstractEventLoop) -> tuple[SessionDriver, FakeTransport]:
    client = Connection("client", ("127.0.0.1", 40000), connected=True)
    driver = SessionDriver(loop, client, FakeTransport(), None, None)  # type: ignore[arg-type]
    origin_transport = FakeTransport()
    driver.transports[Connection("origin", ("192.0.2.7", 554))] = origin_transport  # type: ignore[assignment]
    return driver, origin_transport


def test_a_slow_client_pauses_its_own_origin(loop: asyncio.AbstractEventLoop) -> None:
    driver, origin = _driver(loop)
    driver.layer = StubLayer(backpressure=True)  # type: ignore[assignment]
    driver.pause_writing(driver.client)
    assert not origin.reading
    driver.resume_writing(driver.client)
    assert origin.reading


def test_a_slow_feed_owner_never_pauses_the_feed(loop: asyncio.AbstractEventLoop) -> None:
    driver, origin = _driver(loop)
    driver.layer = StubLayer(backpressure=False)  # type: ignore[assignment]
    driver.pause_writing(driver.client)
    assert origin.reading
    # the real layer says so while it owns a feed
    pb = Playbook(RtspProxyLayer, settings=QuickTimeConfig(), format_name="quicktime")
    pb.layer.feed_role = "owner"  # type: ignore[attr-defined]
    driver.layer = pb.layer
    driver.pause_writing(driver.client)
    assert origin.reading
    pb.layer.feed_role = "joiner"  # type: ignore[attr-defined]
    driver.pause_writing(driver.client)
    assert not origin.reading
