"""Windows Media for mediacache: MMS control (TCP 1755), MMST/MMSU data, ASF.

Only the wire layer exists so far: :mod:`mediacache_wmt.wire.mms` frames and parses MMS command
and data packets, :mod:`mediacache_wmt.wire.asf` reads and rewrites ASF headers and data packets.
"""

from __future__ import annotations

from mediacache_wmt.errors import MmsProtocolError

__version__ = "0.1.0"
__all__ = ["MmsProtocolError", "__version__"]
