"""The client-facing layer of the realmedia format: for now a placeholder that says so.

The proxy side of Real is not written yet: it will be the core's ``RtspProxyLayer`` with a Real
dialect (x-pn-tng/x-real-rdt transports, RealChallenge answered on each side, Subscribe
forwarded and recorded as the variant key; see docs/architecture.md). Until then a player
pointed at the proxy gets 501 "Real proxying not implemented yet" at once instead of a hang.
"""

from __future__ import annotations

from mediacache.errors import RemoteProtocolError
from mediacache.rtsp import RtspReader, build_response, make_response
from mediacache.sansio.commands import CloseConnection, Command, Log, SendData
from mediacache.sansio.events import DataReceived, Event
from mediacache.sansio.layer import SessionContext
from mediacache_realmedia.origin import SERVER

__all__ = ["NOT_YET", "NotYetLayer", "make_layer"]

NOT_YET = "Real proxying not implemented yet"


class NotYetLayer:
    """The proxy side is not written yet (it will be ``RtspProxyLayer`` with a Real dialect).

    Until then every request gets 501 "Real proxying not implemented yet" and the connection is
    closed, so a player fails fast with a reason instead of hanging; the reference origin
    (``mediacache origin realmedia``) is what works today.
    """

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self.reader = RtspReader()
        self.done = False

    def handle(self, event: Event) -> list[Command]:
        if self.done or not isinstance(event, DataReceived):
            return []
        cseq = None
        try:
            self.reader.receive_data(event.data)
            message = self.reader.next_event()
            if message is None:
                return []
            cseq = getattr(message, "cseq", None)  # an interleaved frame has none
        except RemoteProtocolError:  # garbage: the same answer, without a CSeq
            cseq = None
        self.done = True
        reply = make_response(501, cseq, [("Server", SERVER)], reason=NOT_YET)
        return [
            SendData(self.ctx.client, build_response(reply)),
            Log("INFO", f"realmedia: {self.ctx.client}: {NOT_YET}"),
            CloseConnection(self.ctx.client, drain=True),
        ]


def make_layer(ctx: SessionContext) -> NotYetLayer:
    """``FormatSpec.make_layer``: a placeholder until the Real proxy layer exists (it comes
    later, as ``RtspProxyLayer`` with a Real dialect); every request gets 501."""
    return NotYetLayer(ctx)
