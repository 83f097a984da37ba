"""The RealMedia format plugin (entry point ``PLUGIN``): Real RTSP with RDT, .rm files."""

from __future__ import annotations

from mediacache.config import FormatConfig, Port
from mediacache.formats import FormatPlugin, FormatSpec
from mediacache_realmedia import __version__
from mediacache_realmedia.layer import make_layer
from mediacache_realmedia.ldap import LdapSettings
from mediacache_realmedia.origin import reference_origin
from mediacache_realmedia.prefetch import prefetch_real


class RealConfig(FormatConfig, kw_only=True, forbid_unknown_fields=True):
    """``[formats.realmedia]``: RealServer's ports by default.

    Players connect to the proxy on 9231 (the guide's Real proxy port); origins listen on RTSP's
    554. RDT over UDP leaves from ``udp_ports``: the core binds only ``udp_socket_pairs`` pairs
    of that range, so a wide range costs nothing.
    """

    listen: str = "0.0.0.0:9231"
    origin_port: Port = 554
    udp_ports: str = "6970-32000"
    ldap: LdapSettings | None = None
    """``[formats.realmedia.ldap]``: authenticate players (RTSP Basic) against this directory
    before anything reaches the origin; such sessions are served over TCP only (461 for UDP).
    The player's credentials are the proxy's: they are not passed on to the origin."""


REALMEDIA = FormatSpec(
    name="realmedia",
    version=__version__,
    description="RealMedia: Real's RTSP dialect (RealChallenge, ASM Subscribe) with RDT, .rm",
    protocols=(
        "RTSP/1.0 (Real)",
        "x-pn-tng/x-real-rdt (UDP)",
        "RDT interleaved (TCP)",
        "RTSP over HTTP (tunnelled)",
    ),
    config_type=RealConfig,
    http_tunnel=True,
    has_reference_origin=True,
)


PLUGIN = FormatPlugin(
    REALMEDIA, make_layer, reference_origin=reference_origin, prefetch=prefetch_real
)
