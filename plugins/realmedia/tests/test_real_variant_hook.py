"""``mediacache_cache_variant`` for Real: the hook sees the subscribed ASM rules (it is asked
once the Subscribe named them, not before) and its answer keys the cached object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediacache.hookspecs import hookimpl
from mediacache.plugins import load_plugins
from mediacache.testing.origin import OriginThread
from mediacache.testing.proxy import ProxyThread
from mediacache_realmedia.testing import RealClient, reverse_route
from mediacache_realmedia.wire.rmf import parse_rm

pytestmark = pytest.mark.peers

LOW = "stream=0;rule=0,stream=0;rule=1"


class TaggingHook:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def mediacache_cache_variant(self, format_name: str, url: str, variant: str) -> str | None:
        if format_name != "realmedia":
            return None
        self.seen.append(variant)
        return f"tagged:{variant}"


def test_the_hook_sees_the_rules_and_keys_the_object(origin: OriginThread, root: Path) -> None:
    hook = TaggingHook()
    host = load_plugins()
    host.register("variant-tagger", hook)
    rm = parse_rm((root / "sure.rm").read_bytes())
    want = [p.payload for p in rm.packets if p.stream == 0 and p.asm_rule in (0, 1)]
    with ProxyThread(reverse_route(origin.port), host=host) as proxy:
        for _ in range(2):  # a MISS, then a HIT of the object the hook named
            with RealClient(proxy.port("realmedia")) as c:
                c.start("r/sure.rm", subscribe=LOW)
                got = c.collect(10, until_ends=2)
                c.request("TEARDOWN", c.url("r/sure.rm"))
            assert [p.payload for _, p in got.data] == want
        records: list[Any] = proxy.wait_records(2)
    assert [r.result for r in records] == ["MISS", "HIT"]
    assert hook.seen and all("|" in v and "rule=0" in v and "rule=1" in v for v in hook.seen)
    assert {r.variant for r in records} == {f"tagged:{hook.seen[0]}"}
