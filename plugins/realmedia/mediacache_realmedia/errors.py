"""The RealMedia plugin's one error type.

Every parser in this package raises :class:`RealProtocolError` and nothing else on bad input, so
the layer above can answer with its status hint without knowing which parser failed.
"""

from __future__ import annotations

from mediacache.errors import RemoteProtocolError

__all__ = ["RealProtocolError"]


class RealProtocolError(RemoteProtocolError):
    """Bytes from a Real peer (RTSP dialect, RDT, SDP or a .rm file) that break the format."""
