"""Shared set-up of the MMS proxy tests: the reference origin, a proxy routed to it, players.

Not a test module and not a conftest (see wmt_origin_env): the test modules import it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from wmt_origin_env import clip, file_packets, filtered, media_root

from mediacache.testing.origin import OriginThread
from mediacache.testing.peers import ByteCountingRelay
from mediacache.testing.proxy import ProxyThread
from mediacache_wmt.testing import MmsClient, Received
from mediacache_wmt.wire import mms

PREFIX = "/w/"

CONNECT = mms.build_command(mms.Connect("NSPlayer/7.0.0.1956"), sequence=0)
BAD_INPUTS = {  # what a broken or hostile player may send first
    "garbage": b"\x17\x03\x03\x00\x10" + bytes(60),
    "wrong signature": CONNECT[:4] + b"\xcf\xfa\x0b\xb0" + CONNECT[8:],
    "absurd length": CONNECT[:8] + (1 << 30).to_bytes(4, "little") + CONNECT[12:],
    "short length": CONNECT[:8] + (8).to_bytes(4, "little") + CONNECT[12:],
    "a data packet": mms.build_data_packet(0, 5, 0, bytes(40)),
    "a server message": mms.build_command(mms.ReportOpenFile(), sequence=0),
    "a broken body": CONNECT[:40] + b"\xff" * 4,
}


def routed(origin_port: int, extra: str = "", *, live: bool | None = None) -> str:
    """Proxy config: ``/w/`` of the proxy is the origin's root."""
    text = f"[[routes]]\nformat = 'wmt'\nprefix = '{PREFIX}'\norigin = 'mms://127.0.0.1:{origin_port}/'\n"
    if live is not None:
        text += f"live = {'true' if live else 'false'}\n"
    return text + extra


def proxy_url(p: ProxyThread, name: str, scheme: str = "mmst") -> str:
    return f"{scheme}://127.0.0.1:{p.port('wmt')}{PREFIX}{name}"


@contextlib.contextmanager
def origin_thread(**kw: Any) -> Iterator[OriginThread]:
    with OriginThread.loopback("wmt", media_root(), scheme="mmst", **kw) as o:
        yield o


@contextlib.contextmanager
def player(p: ProxyThread, **kw: Any) -> Iterator[MmsClient]:
    """An :class:`MmsClient` connected to the proxy's MMS port."""
    c = MmsClient("127.0.0.1", p.port("wmt"), **kw)
    try:
        yield c
    finally:
        c.close()


def play_clip(
    p: ProxyThread, name: str, *, select: set[int] | None = None, udp: bool = False,
    **kw: Any,
) -> tuple[bytes, Received]:
    """One whole play through the proxy by the scripted player: (header, what it received)."""
    h, _ = file_packets(clip(name))
    with player(p, udp=udp) as c:
        c.handshake(PREFIX.lstrip("/") + name)
        header = c.read_header()
        if select is not None:
            c.select(select, h.stream_numbers)
        got = c.play(**kw)
    return header, got


def expected(name: str, select: set[int] | None = None) -> list[bytes]:
    """The ASF packets a play of ``name`` (restricted to ``select``) must deliver."""
    h, packets = file_packets(clip(name))
    if select is None or set(select) >= set(h.stream_numbers):
        return packets
    return filtered(packets, select, h.packet_size)


def cached_keys(p: ProxyThread) -> list[str]:
    return sorted(p.call(lambda: [f"{i.key.url} [{i.key.variant}]" for i in p.cache.store.list()]))


def fills(p: ProxyThread) -> int:
    return int(p.call(lambda: p.cache.store.stats().fills))


def in_threads(*jobs: Callable[[], Any], stagger: float = 0.0) -> list[Any]:
    """Run ``jobs`` in threads (``stagger`` s apart); their results, or raise the first error."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int, job: Callable[[], Any]) -> None:
        try:
            results[i] = job()
        except BaseException as exc:
            errors.append(exc)

    threads = []
    for i, job in enumerate(jobs):
        t = threading.Thread(target=run, args=(i, job), daemon=True)
        t.start()
        threads.append(t)
        if stagger:
            threading.Event().wait(stagger)
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


__all__ = [
    "BAD_INPUTS",
    "CONNECT",
    "PREFIX",
    "ByteCountingRelay",
    "cached_keys",
    "expected",
    "fills",
    "in_threads",
    "origin_thread",
    "play_clip",
    "player",
    "proxy_url",
    "routed",
]
