"""Real's RTSP dialect for the core's RTSP proxy layer: transports and what is not ready yet.

Pass-through works with the core's ``RtspProxyLayer``: OPTIONS, DESCRIBE, SETUP and
``SET_PARAMETER Subscribe`` are relayed, so the origin's RealChallenge1 reaches the player and
the player's RealChallenge2 reaches the origin unchanged (the proxy does not need to answer the
challenge while it relays). RDT data is forwarded as it comes: an RDT packet's set id must equal
the interleaved channel the player was given (ffmpeg routes by it), so the origin is asked for
the player's own channels.

Not yet: caching (the cache replays RTP; RDT needs its own restamping) and splitting; Real
sessions are passed through (access log PASS) until those land.
"""

from __future__ import annotations

from mediacache.rtsp.headers import TransportSpec
from mediacache.rtsp.proxy import RtspDialect

REAL_PROTOCOLS = ("x-pn-tng/", "x-real-rdt/")


class RealDialect(RtspDialect):
    origin_tcp_protocol = "x-pn-tng/tcp"
    can_cache = False
    can_split = False

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
