"""Real's RTSP dialect for the core's RTSP proxy layer.

* **Transports.** Clients get RDT over UDP (``x-pn-tng/udp``, ``x-real-rdt/udp``) or
  interleaved; the origin is always asked for ``x-pn-tng/tcp`` on the player's own channel,
  because an RDT packet's set id must equal the interleaved channel the player was given
  (ffmpeg routes by it).
* **RealChallenge, per hop.** The proxy answers the client's challenge itself and performs its
  own toward the origin: the client's OPTIONS goes on with our ``ClientChallenge``; the
  origin's ``RealChallenge1`` is kept and the client gets one of ours; the client's first
  SETUP must carry the answer to ours (else 400, and nothing reaches the origin), and goes on
  with our answer to the origin's. Each side thus talks to a peer it authenticated, and a
  cache HIT needs nothing of the origin's challenge state.
* **SureStream variant.** What a Real client receives is chosen by ``SET_PARAMETER Subscribe``
  (ASM rules per stream), so the cache variant is the set-up streams plus the subscribed rules.
  ffmpeg subscribes after its PLAY: until then the variant is unknown and the core answers the
  PLAY itself (see ``RtspDialect.variant``).
* **Caching.** :mod:`mediacache_realmedia.caching` records and replays RDT.
* **Splitting.** A live feed is shared as it comes; each viewer's sink gives the packets the set
  id its transport needs (:class:`~mediacache_realmedia.caching.SetIdSink`), and a stream-end
  packet on every stream ends the feed. At a handover the successor's RDT goes through an
  :class:`~mediacache_realmedia.caching.RdtContinuity` per stream: what the viewers had is
  dropped, sequence numbers go on from theirs.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

from mediacache.access import ClientAuthenticator
from mediacache.cache.objects import TrackMeta
from mediacache.cache.store import Fill
from mediacache.rtsp.caching import Recorder, variant_key
from mediacache.rtsp.headers import TransportSpec
from mediacache.rtsp.message import Headers, Request
from mediacache.rtsp.proxy import VIA, RtspDialect, Track
from mediacache.rtsp.replay import Replay
from mediacache.sansio.layer import Sink
from mediacache.splitter import FeedTrack
from mediacache_realmedia.caching import (
    RdtContinuity,
    RdtReplay,
    RdtReplayTrack,
    SetIdSink,
    ends_stream,
    make_recorder,
)
from mediacache_realmedia.challenge import real_challenge_response
from mediacache_realmedia.errors import RealProtocolError
from mediacache_realmedia.ldap import LdapAuthenticator
from mediacache_realmedia.sdp import format_subscribe, parse_subscribe

REAL_PROTOCOLS = ("x-pn-tng/", "x-real-rdt/")
SERVER = "mediacache (RealProxy-compatible)"
_STREAMID = re.compile(r"streamid=(\d+)/?$")


def _stream_number(uri: str) -> int | None:
    """N of a SETUP URL ending in ``streamid=N`` (Real's SDP controls)."""
    match = _STREAMID.search(uri)
    return int(match.group(1)) if match else None


class RealDialect(RtspDialect):
    origin_tcp_protocol = "x-pn-tng/tcp"
    rtp_info = False  # a split viewer's PLAY reply: RDT has no RTP seq/timestamp to give

    def __init__(self) -> None:
        self.subscription: dict[int, frozenset[int]] = {}
        self.client_challenge = secrets.token_hex(16)
        """The RealChallenge1 we give the client (32 characters: clients take up to 56)."""
        self.client_verified = False
        self.origin_challenge: str | None = None
        """The RealChallenge1 of the current origin connection."""
        self.origin_answered = False

    # -- transports -----------------------------------------------------------------------------

    def client_transport_usable(self, spec: TransportSpec) -> bool:
        if spec.unicast is False or spec.destination:
            return False
        if not spec.protocol.lower().startswith(REAL_PROTOCOLS):
            return False
        if spec.lower_transport == "UDP":
            return spec.client_port is not None
        return True

    def origin_transport(
        self, track_index: int, client: TransportSpec | None = None
    ) -> TransportSpec:
        channel = 2 * track_index
        if client is not None and client.lower_transport == "TCP" and client.interleaved:
            channel = client.interleaved[0]
        return TransportSpec(protocol=self.origin_tcp_protocol, interleaved=(channel, channel))

    def client_authenticator(self, settings: Any) -> ClientAuthenticator | None:
        ldap = getattr(settings, "ldap", None)
        return LdapAuthenticator(ldap) if ldap is not None else None

    def client_channels(self, track_index: int, req: Request, used: set[int]) -> tuple[int, int]:
        """One channel, the stream number, as the origin gives a player that named none: VLC
        routes RDT by set id, GStreamer by channel, and both must agree."""
        channel = _stream_number(req.uri)
        channel = track_index if channel is None else channel
        while channel in used:
            channel += 1
        return channel, channel

    def client_sink(
        self, sink: Sink, req: Request, origin_channel: int, client_channel: int | None
    ) -> Sink:
        set_id = client_channel if client_channel is not None else _stream_number(req.uri)
        if set_id is None or set_id == origin_channel or set_id >= 31:
            return sink
        return SetIdSink(sink, set_id)

    def ends_stream(self, payload: bytes) -> bool:
        return ends_stream(payload)

    def feed_continuity(
        self, track: FeedTrack, route: Callable[[Sink, Sink], None]
    ) -> tuple[Sink, Sink] | None:
        """A successor's session numbers RDT on its own and starts at the key frame before
        "now": one :class:`RdtContinuity` per stream drops the repeats and renumbers (RDT has
        one channel per stream, so the control side is never used)."""
        continuity = RdtContinuity(track, route)
        return continuity, track.rtcp

    # -- RealChallenge and Subscribe ------------------------------------------------------------

    def request_uri(self, uri: str) -> str:
        """VLC's realrtsp sends its SETUPs to ``HOST:PORT/path`` (no scheme), which a
        RealServer takes: so do we."""
        if uri != "*" and "://" not in uri and not uri.startswith("/") and "/" in uri:
            return "rtsp://" + uri
        return uri

    def options_headers(self) -> list[tuple[str, str]]:
        # VLC takes a server for Real only if its name says so, and answers our challenge
        return [("Server", SERVER), ("RealChallenge1", self.client_challenge)]

    def origin_greeting(self) -> Headers:
        """Every origin connection starts with our OPTIONS: its RealChallenge1 is what our
        first SETUP there must answer (also after a live feed reconnects)."""
        self.origin_challenge = None
        self.origin_answered = False
        return Headers([("ClientChallenge", secrets.token_hex(16)), ("Via", VIA)])

    def origin_greeted(self, headers: Headers) -> None:
        self.origin_challenge = headers.get("RealChallenge1") or self.origin_challenge

    def refuse(self, req: Request) -> tuple[int, str] | None:
        answer = req.headers.get("RealChallenge2")
        if req.method != "SETUP" or answer is None or self.client_verified:
            return None
        response, _, rest = answer.partition(",")
        sd = rest.strip()
        if sd.lower().startswith("sd="):
            sd = sd[3:].strip()
        want, want_sd = real_challenge_response(self.client_challenge)
        if response.strip().lower() != want or (sd and sd.lower() != want_sd):
            return 400, "wrong RealChallenge2"
        self.client_verified = True
        return None

    def request_to_origin(self, req: Request, headers: Headers) -> Headers:
        if req.method == "OPTIONS" and "ClientChallenge" in headers:
            headers = headers.with_("ClientChallenge", secrets.token_hex(16))
        elif req.method == "SETUP":
            headers = headers.without("RealChallenge2")
            if not self.origin_answered and self.origin_challenge is not None:
                response, checksum = real_challenge_response(self.origin_challenge)
                headers = headers.add("RealChallenge2", f"{response}, sd={checksum}")
                self.origin_answered = True
        elif req.method == "SET_PARAMETER":
            self._note_subscription(headers)
        return headers

    def response_to_client(self, req: Request, headers: Headers) -> Headers:
        challenge = headers.get("RealChallenge1")
        if challenge is not None:
            if not self.origin_answered:
                self.origin_challenge = challenge
            headers = headers.with_("RealChallenge1", self.client_challenge)
        return headers

    def _note_subscription(self, headers: Headers) -> None:
        """Follow the client's rule set (a malformed value is the origin's to refuse)."""
        try:
            for name, add in (("Unsubscribe", False), ("Subscribe", True)):
                value = headers.get(name)
                if value is None:
                    continue
                for stream, rules in parse_subscribe(value).items():
                    now = self.subscription.get(stream, frozenset())
                    now = now | rules if add else now - rules
                    if now:
                        self.subscription[stream] = now
                    else:
                        self.subscription.pop(stream, None)
        except RealProtocolError:
            return

    # -- caching ------------------------------------------------------------------------------

    def variant(self, relative_controls: list[str]) -> str | None:
        if not self.subscription:
            return None
        return f"{variant_key(relative_controls)}|{format_subscribe(self.subscription)}"

    def make_recorder(self, fill: Fill, tracks: list[Track], now: float) -> Recorder:
        return make_recorder(fill, [t.origin_channels[0] for t in tracks], now)

    def continue_numbering(self, old: Replay, new: Replay, old_sink: Sink, new_sink: Sink) -> None:
        """A rate switch during a HIT: the new rate's packets go on from the old sequence."""
        if isinstance(old, RdtReplay) and isinstance(new, RdtReplay):
            before = next((t for t in old.tracks if t.sink is old_sink), None)
            after = next((t for t in new.tracks if t.sink is new_sink), None)
            if before is not None and after is not None:
                after.seq, after.last_ts = before.seq, before.last_ts

    def make_replay(
        self, source: Any, pairs: list[tuple[Track, TrackMeta]], wallclock: Any
    ) -> Replay:
        tracks = []
        for track, meta in pairs:
            if track.client_channels is not None:  # TCP: the set id is the channel
                set_id = track.client_channels[0]
            else:  # UDP: the stream number, as the origin does
                set_id = int(meta.extra.get("media-index", meta.track_id))
            video = "video" in meta.codec.lower()
            tracks.append(RdtReplayTrack(sink=track.rtp_sink, set_id=set_id, video=video))
        return RdtReplay(source, tracks)
