"""Prefetch of Real clips: fill the cache without a viewer, through a viewer's MISS path.

The core's prefetcher (:mod:`mediacache.server.prefetch`) speaks plain RTSP/RTP, which a Real
listener refuses: its SETUP wants the answer to the RealChallenge and an ``x-pn-tng``
transport, what is played is chosen by ``SET_PARAMETER Subscribe`` (which is also part of the
cache variant), and a stream ends with an RDT stream-end packet, not an RTCP BYE. This is the
same client speaking Real: OPTIONS (with a ``ClientChallenge``), DESCRIBE, SETUP of every
stream interleaved on its stream number, Subscribe (every rule of every stream, as a
single-rate player does, unless one SureStream variant is asked for), PLAY, then the clip is
read to its end and discarded. The proxy sees a Real player like any other, so the fill, the
validators and the access-log record (user agent ``mediacache-prefetch``) are a MISS's.
"""

from __future__ import annotations

import asyncio
import re
import time

from mediacache.errors import ProtocolError
from mediacache.rtsp.message import InterleavedFrame, Response
from mediacache.rtsp.sdp import MediaDescription, parse_sdp
from mediacache.rtsp.url import resolve_url
from mediacache.server.prefetch import PrefetchClient, PrefetchResult, prefetch_result
from mediacache_realmedia.caching import ends_stream
from mediacache_realmedia.challenge import real_challenge_response
from mediacache_realmedia.errors import RealProtocolError
from mediacache_realmedia.sdp import format_subscribe, parse_asm_rulebook, parse_subscribe

__all__ = ["prefetch_real"]

REPLY_TIMEOUT = 30.0
"""Longest wait for one reply: the proxy may first have to reach the origin."""
CLIENT_CHALLENGE = "9e26d33f2984236010ef6253fb1887f7"
"""Any 32 hex digits: the proxy answers a client challenge with its own RealChallenge1."""
_STREAMID = re.compile(r"streamid=(\d+)/?$")


class _RealClient(PrefetchClient):
    """The core prefetcher's client, with stream ends read from RDT instead of RTCP BYEs.

    A Real stream's interleaved channel is its stream number (we ask for it), so the
    channels that sent a stream-end packet are the streams that ended: they go where the core
    keeps the channels that sent a BYE, and its ``drain_until_bye`` waits for them.
    """

    def _frame(self, frame: InterleavedFrame) -> None:
        self.media_bytes += len(frame.payload)
        if ends_stream(frame.payload):
            self.byes.add(frame.channel)

    async def ask(self, method: str, url: str, *headers: tuple[str, str]) -> Response:
        """A request whose reply must come within :data:`REPLY_TIMEOUT` (a stuck proxy or
        origin must not hold a prefetch, and the admin API's task, forever)."""
        return await asyncio.wait_for(self.request(method, url, *headers), REPLY_TIMEOUT)


def _stream_number(media: MediaDescription, index: int) -> int:
    """N of the stream's ``a=control:streamid=N`` (what Subscribe names), else its index."""
    match = _STREAMID.search(media.control or "")
    return int(match.group(1)) if match else index


def _all_rules(media: MediaDescription) -> frozenset[int]:
    """Every rule of the stream's ASM rule book (a SureStream stream has a pair per rate);
    a stream without a book gets the single-rate pair, 0 and 1, as Real players assume."""
    for value in media.attributes("ASMRuleBook"):
        _, _, book = value.partition(";")  # "string;\"...\""
        rules = parse_asm_rulebook(book or value)
        if rules:
            return frozenset(rule.number for rule in rules)
    return frozenset({0, 1})


async def prefetch_real(
    url: str,
    host: str,
    port: int,
    *,
    subscribe: str | None = None,
    limit: float = 3600.0,
) -> PrefetchResult:
    """Play ``url`` through the proxy's Real listener at ``host:port`` to its end.

    ``subscribe`` (a ``Subscribe`` value such as ``stream=0;rule=2,stream=0;rule=3``) fills
    one SureStream variant; by default every rule of every stream is subscribed. ``ok`` is
    True when every stream sent its stream-end packet within the clip's time (twice its
    duration plus 30 s, at most ``limit``).
    """
    started = time.monotonic()
    if subscribe is not None:
        try:
            subscribe = format_subscribe(parse_subscribe(subscribe))
        except RealProtocolError as exc:
            return PrefetchResult(url, False, f"bad subscribe value: {exc}", 0.0)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, TimeoutError) as exc:
        return PrefetchResult(url, False, f"cannot reach the proxy: {exc}", 0.0)
    client = _RealClient(reader, writer)
    try:
        resp = await client.ask("OPTIONS", url, ("ClientChallenge", CLIENT_CHALLENGE))
        if resp.status != 200:
            return prefetch_result(
                url, False, f"OPTIONS: {resp.status} {resp.reason}", started, client
            )
        challenge = resp.headers.get("RealChallenge1")
        resp = await client.ask(
            "DESCRIBE",
            url,
            ("Accept", "application/sdp"),
            ("Require", "com.real.retain-entity-for-setup"),
        )
        if resp.status != 200:
            return prefetch_result(
                url, False, f"DESCRIBE: {resp.status} {resp.reason}", started, client
            )
        sdp = parse_sdp(resp.body)
        duration = sdp.range.end if sdp.range is not None and sdp.range.end else None
        if duration is None:
            return prefetch_result(
                url, False, "not an on-demand clip (no known end)", started, client
            )
        if not sdp.media:
            return prefetch_result(url, False, "the SDP has no streams", started, client)
        base = resp.headers.get("Content-Base") or sdp.control or url
        if not base.endswith("/"):
            base += "/"  # Real's controls are "streamid=N" below the clip's URL
        rules: dict[int, frozenset[int]] = {}
        for i, media in enumerate(sdp.media):
            stream = _stream_number(media, i)
            headers = [("Transport", f"x-pn-tng/tcp;interleaved={stream}")]
            if not rules and challenge is not None:
                response, checksum = real_challenge_response(challenge)
                headers.append(("RealChallenge2", f"{response}, sd={checksum}"))
            r = await client.ask("SETUP", resolve_url(base, media.control or ""), *headers)
            if r.status != 200:
                return prefetch_result(url, False, f"SETUP: {r.status} {r.reason}", started, client)
            rules[stream] = _all_rules(media)
        value = subscribe or format_subscribe(rules)
        r = await client.ask("SET_PARAMETER", url, ("Subscribe", value))
        if r.status != 200:
            return prefetch_result(url, False, f"Subscribe: {r.status} {r.reason}", started, client)
        r = await client.ask("PLAY", url, ("Range", "npt=0-"))
        if r.status != 200:
            return prefetch_result(url, False, f"PLAY: {r.status} {r.reason}", started, client)
        whole = await client.drain_until_bye(len(rules), min(limit, duration * 2 + 30))
        await client.ask("TEARDOWN", url)
        return prefetch_result(url, whole, "complete" if whole else "timed out", started, client)
    except (ProtocolError, ConnectionError, OSError, TimeoutError) as exc:
        detail = str(exc) or ("no reply in time" if isinstance(exc, TimeoutError) else repr(exc))
        return prefetch_result(url, False, detail, started, client)
    finally:
        writer.close()
