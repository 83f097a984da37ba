"""Sans-I/O RTSP codecs shared by every RTSP-based format: messages, headers, URLs, SDP, framing.

Nothing here touches a socket: the reader consumes bytes and yields events, the builders return
bytes. RTP/RTCP packet formats live in :mod:`mediacache.rtp`.
"""

from __future__ import annotations

from mediacache.rtsp.headers import (
    NptRange,
    RtpInfo,
    SessionHeader,
    TransportSpec,
    build_range,
    build_rtp_info,
    build_session,
    build_transports,
    parse_cseq,
    parse_public,
    parse_range,
    parse_rtp_info,
    parse_session,
    parse_transports,
)
from mediacache.rtsp.interleaved import (
    FRAME_HEADER,
    INTERLEAVED_HEADER,
    build_interleaved,
    parse_interleaved_header,
)
from mediacache.rtsp.message import (
    REASONS,
    Event,
    Headers,
    InterleavedFrame,
    Request,
    Response,
    RtspReader,
    build_message,
    build_request,
    build_response,
    make_response,
)
from mediacache.rtsp.sdp import (
    MediaDescription,
    SessionDescription,
    build_sdp,
    parse_sdp,
    rewrite_controls,
)
from mediacache.rtsp.url import DEFAULT_PORTS, RtspUrl, parse_url, rebase_url, resolve_url

__all__ = [
    "DEFAULT_PORTS",
    "FRAME_HEADER",
    "INTERLEAVED_HEADER",
    "REASONS",
    "Event",
    "Headers",
    "InterleavedFrame",
    "MediaDescription",
    "NptRange",
    "Request",
    "Response",
    "RtpInfo",
    "RtspReader",
    "RtspUrl",
    "SessionDescription",
    "SessionHeader",
    "TransportSpec",
    "build_interleaved",
    "build_message",
    "build_range",
    "build_request",
    "build_response",
    "build_rtp_info",
    "build_sdp",
    "build_session",
    "build_transports",
    "make_response",
    "parse_cseq",
    "parse_interleaved_header",
    "parse_public",
    "parse_range",
    "parse_rtp_info",
    "parse_sdp",
    "parse_session",
    "parse_transports",
    "parse_url",
    "rebase_url",
    "resolve_url",
    "rewrite_controls",
]
