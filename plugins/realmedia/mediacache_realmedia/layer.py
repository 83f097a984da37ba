"""The client-facing layer of the realmedia format: the core's RTSP proxy layer, Real dialect.

What works (tested with ffprobe through the proxy against the reference origin): pass-through
in forward and reverse mode, RDT over UDP and TCP interleaved, RealChallenge and Subscribe
relayed. Not yet: caching and splitting of Real streams (sessions are PASS), the proxy answering
the RealChallenge itself, LDAP authentication at the proxy (see mediacache_realmedia.dialect).
"""

from __future__ import annotations

from mediacache.rtsp.proxy import RtspProxyLayer
from mediacache.sansio.layer import SessionContext
from mediacache_realmedia.dialect import RealDialect

__all__ = ["make_layer"]


def make_layer(ctx: SessionContext) -> RtspProxyLayer:
    return RtspProxyLayer(ctx, RealDialect())
