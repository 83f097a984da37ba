"""RealMedia format plugin for mediacache: the .rm file format, RDT, RealChallenge, Real SDP.

The wire layer (pure functions, no I/O), the reference origin (:mod:`.origin`, run by
``mediacache origin realmedia``) and the format's registration (:mod:`.plugin`). The proxy
layer comes later: until then the format answers players with 501.
"""

from mediacache_realmedia.challenge import real_challenge_response
from mediacache_realmedia.errors import RealProtocolError
from mediacache_realmedia.sdp import (
    AsmRule,
    describe_rm,
    format_subscribe,
    parse_asm_rulebook,
    parse_subscribe,
)
from mediacache_realmedia.wire.rdt import (
    RdtData,
    RdtPacket,
    build_data_packet,
    build_rdt,
    build_rdt_datagram,
    build_stream_end,
    parse_rdt,
    rdt_data_header,
    rewrite_rdt_data,
)
from mediacache_realmedia.wire.rmf import (
    DataPacket,
    MediaProperties,
    RmFile,
    build_rm,
    iter_packets,
    parse_rm,
)

__version__ = "0.1.0"

__all__ = [
    "AsmRule",
    "DataPacket",
    "MediaProperties",
    "RdtData",
    "RdtPacket",
    "RealProtocolError",
    "RmFile",
    "__version__",
    "build_data_packet",
    "build_rdt",
    "build_rdt_datagram",
    "build_rm",
    "build_stream_end",
    "describe_rm",
    "format_subscribe",
    "iter_packets",
    "parse_asm_rulebook",
    "parse_rdt",
    "parse_rm",
    "parse_subscribe",
    "rdt_data_header",
    "real_challenge_response",
    "rewrite_rdt_data",
]
