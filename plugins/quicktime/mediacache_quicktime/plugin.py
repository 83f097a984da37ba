"""The QuickTime format plugin (entry point ``PLUGIN``); the RTSP layer is the core's."""

from __future__ import annotations

from mediacache.config import FormatConfig, Port
from mediacache.formats import FormatPlugin, FormatSpec
from mediacache.rtsp.proxy import RtspDialect, RtspProxyLayer
from mediacache.sansio.layer import SessionContext
from mediacache.server.prefetch import prefetch_rtsp
from mediacache_quicktime import __version__


class QuickTimeConfig(FormatConfig, kw_only=True, forbid_unknown_fields=True):
    """``[formats.quicktime]``: the guide's Table 5 ports by default."""

    listen: str = "0.0.0.0:1091"
    origin_port: Port = 554
    udp_ports: str = "6970-6999"


def make_layer(ctx: SessionContext) -> RtspProxyLayer:
    return RtspProxyLayer(ctx, RtspDialect())


QUICKTIME = FormatSpec(
    name="quicktime",
    version=__version__,
    description="QuickTime / standard RTSP (RFC 2326) with RTP/RTCP (RFC 3550)",
    protocols=(
        "RTSP/1.0",
        "RTP/AVP (UDP)",
        "RTP/AVP/TCP (interleaved)",
        "RTSP over HTTP (tunnelled)",
    ),
    config_type=QuickTimeConfig,
    http_tunnel=True,
)


PLUGIN = FormatPlugin(QUICKTIME, make_layer, prefetch=prefetch_rtsp)
