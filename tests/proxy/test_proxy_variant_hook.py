"""``mediacache_cache_variant``: a plugin sees the format's own variant key and may replace it."""

from __future__ import annotations

from typing import Any

from test_proxy_layer import ORIGIN_SDP, connect, make, req, resp

from mediacache.cache.service import CacheService
from mediacache.cache.store import CacheStore
from mediacache.testing.playbook import Playbook


class VariantHook:
    """A policy plugin with only an opinion on variants (the other hooks have none)."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    def mediacache_cache_variant(self, **kw: Any) -> str | None:
        self.calls.append(kw)
        return self.answer

    def mediacache_access_check(self, **kw: Any) -> None:
        return None

    def mediacache_resolve_origin(self, **kw: Any) -> None:
        return None

    def mediacache_is_live(self, **kw: Any) -> None:
        return None

    def mediacache_cache_allowed(self, **kw: Any) -> None:
        return None


def _play_a_miss(hook: VariantHook) -> Playbook:
    pb = make(hook=hook)
    pb.ctx.cache = CacheService(CacheStore(None, memory_limit=10**7, disk_limit=0))
    origin, _ = connect(pb, req("DESCRIBE", "rtsp://127.0.0.1:8554/vod/clip.mp4", 1))
    pb.origin_sends(origin, resp(200, 1, body=ORIGIN_SDP))
    control = "rtsp://127.0.0.1:8554/vod/clip.mp4/stream=0"
    pb.client_sends(req("SETUP", control, 2, "Transport: RTP/AVP/TCP;interleaved=0-1"))
    pb.origin_sends(
        origin, resp(200, 2, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: s")
    )
    session = pb.layer.session_id  # type: ignore[attr-defined]
    pb.client_sends(req("PLAY", "rtsp://127.0.0.1:8554/vod/clip.mp4", 3, f"Session: {session}"))
    return pb


def test_the_hook_sees_the_formats_own_key() -> None:
    hook = VariantHook(None)
    pb = _play_a_miss(hook)
    assert hook.calls == [
        {
            "format_name": "quicktime",
            "url": "rtsp://127.0.0.1:8554/vod/clip.mp4",
            "variant": "stream=0",
        }
    ]
    assert pb.layer.cache_mode == "MISS"  # type: ignore[attr-defined]
    assert pb.layer.cache_key.variant == "stream=0"  # type: ignore[attr-defined]


def test_the_hooks_answer_becomes_the_key() -> None:
    pb = _play_a_miss(VariantHook("every-track"))
    assert pb.layer.cache_key.variant == "every-track"  # type: ignore[attr-defined]
    assert pb.layer.stats.variant == "every-track"  # type: ignore[attr-defined]
