"""Windows Media for mediacache: MMS control (TCP 1755), MMST/MMSU data, ASF.

:mod:`mediacache_wmt.wire.mms` frames and parses MMS command and data packets,
:mod:`mediacache_wmt.wire.asf` reads and rewrites ASF headers and data packets,
:mod:`mediacache_wmt.origin` is the reference MMS origin (``mediacache origin wmt``) and
:mod:`mediacache_wmt.plugin` registers the ``wmt`` format, whose proxy layer is
:mod:`mediacache_wmt.layer` (targets in :mod:`mediacache_wmt.routing`, per-player data and the
cache replay in :mod:`mediacache_wmt.delivery`). :mod:`mediacache_wmt.testing` has a blocking MMS
client for tests.
"""

from __future__ import annotations

from mediacache_wmt.errors import MmsProtocolError

__version__ = "0.1.0"
__all__ = ["MmsProtocolError", "__version__"]
