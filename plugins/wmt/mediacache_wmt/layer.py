"""The MMS proxy layer: for now a placeholder that refuses every player.

The ``wmt`` format must register a ``make_layer`` to be loadable and to run its reference origin
(``mediacache origin wmt``). The real proxy layer (MMS toward the origin, MMST/MMSU sinks toward
players, variant key = the streams selected with 0x33) comes later and replaces
:class:`PlaceholderProxyLayer`; until then a player learns why it is turned away instead of
hanging on a silent port.
"""

from __future__ import annotations

from mediacache.sansio.commands import CloseConnection, Command, Log, SendData
from mediacache.sansio.events import DataReceived, Event
from mediacache.sansio.layer import SessionContext
from mediacache_wmt.errors import MmsProtocolError
from mediacache_wmt.wire import mms

__all__ = ["NOT_IMPLEMENTED_TEXT", "PlaceholderProxyLayer", "make_layer"]

NOT_IMPLEMENTED_TEXT = "proxying not implemented yet"


class PlaceholderProxyLayer:
    """Answers the player's first command with an MMS error (E_NOTIMPL) and closes.

    The reply is a ReportConnectedEX (the answer to Connect, the first thing a player says)
    with ``hr`` E_NOTIMPL, which ffmpeg reports, and the reason in ``versionInfo``, which VLC
    logs as the server's tool version. Bytes that are not MMS get a plain close.
    """

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self.reader = mms.MmsStreamReader(max_command_size=64 * 1024, commands_only=True)
        self.done = False

    def handle(self, event: Event) -> list[Command]:
        if self.done or not isinstance(event, DataReceived) or event.conn is not self.ctx.client:
            return []
        try:
            self.reader.receive_data(event.data)
            message = self.reader.next_event()
        except MmsProtocolError:
            message = None
            self.done = True
        if message is None and not self.done:
            return []
        self.done = True
        out: list[Command] = [
            Log("WARNING", f"wmt: refused {self.ctx.client}: {NOT_IMPLEMENTED_TEXT}")
        ]
        if isinstance(message, mms.MmsCommand):
            reply = mms.ReportConnectedEx(
                hr=mms.HResult.NOT_IMPLEMENTED,
                play_incarnation=getattr(message, "play_incarnation", 0),
                version_info=NOT_IMPLEMENTED_TEXT,
            )
            out.append(SendData(self.ctx.client, mms.build_command(reply, sequence=0)))
        out.append(CloseConnection(self.ctx.client, drain=True))
        return out


def make_layer(ctx: SessionContext) -> PlaceholderProxyLayer:
    """``FormatSpec.make_layer`` of the ``wmt`` format until the proxy layer exists."""
    return PlaceholderProxyLayer(ctx)
