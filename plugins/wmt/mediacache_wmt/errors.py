"""The one error the Windows Media wire layer raises.

Every parser here (MMS commands, MMS data packets, ASF headers and packets) turns whatever goes
wrong with peer bytes into :class:`MmsProtocolError`, so a layer has a single thing to catch.
"""

from __future__ import annotations

from mediacache.errors import RemoteProtocolError


class MmsProtocolError(RemoteProtocolError):
    """An MMS peer (player, origin server) or an ASF file broke the wire format."""
