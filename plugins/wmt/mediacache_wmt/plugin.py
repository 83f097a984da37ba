"""The Windows Media format plugin (entry point ``PLUGIN``): MMS on port 1755."""

from __future__ import annotations

from mediacache.config import FormatConfig, Port
from mediacache.formats import FormatPlugin, FormatSpec
from mediacache_wmt import __version__
from mediacache_wmt.layer import make_layer
from mediacache_wmt.origin import reference_origin
from mediacache_wmt.prefetch import prefetch_mms


class WmtConfig(FormatConfig, kw_only=True, forbid_unknown_fields=True):
    """``[formats.wmt]``: Windows Media Services' ports by default.

    Players connect to TCP 1755 and ask for MMSU data on a UDP port of their own; the server
    sends it from ``udp_ports``.
    """

    listen: str = "0.0.0.0:1755"
    origin_port: Port = 1755
    udp_ports: str = "1024-5000"


WMT = FormatSpec(
    name="wmt",
    version=__version__,
    description="Windows Media: MMS ([MS-MMSP]) with MMST (TCP) and MMSU (UDP) data, ASF",
    protocols=("MMS", "MMST", "MMSU"),
    config_type=WmtConfig,
    has_reference_origin=True,
    origin_schemes=("mms", "mmst", "mmsu"),
)


PLUGIN = FormatPlugin(WMT, make_layer, reference_origin=reference_origin, prefetch=prefetch_mms)
