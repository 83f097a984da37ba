"""Run a format's reference origin inside a test: in a thread of its own, on loopback ports.

What :class:`mediacache.testing.proxy.ProxyThread` is for the proxy, :class:`OriginThread` is
for ``mediacache origin NAME``: the plugin's reference origin on the core's server
(``ProxyServer.reference_origin``), with its own asyncio loop in a daemon thread, so tests can
drive it with real players and a format's raw clients and still look inside (sessions, access
records, the UDP pool).
"""

from __future__ import annotations

from pathlib import Path

from mediacache.formats import OriginOptions
from mediacache.plugins import PluginHost
from mediacache.server.app import ProxyServer
from mediacache.testing.proxy import ServerThread, free_udp_range

__all__ = ["OriginThread", "loopback_options"]


def loopback_options(
    root: Path | str,
    *,
    udp: bool = True,
    max_sessions: int | None = None,
    auth: str | None = None,
) -> OriginOptions:
    """Options of an origin serving ``root`` on a free loopback port (and free UDP ports).

    ``udp=False`` gives it no UDP ports (UDP transports are then refused).
    """
    return OriginOptions(
        root=Path(root),
        listen="127.0.0.1:0",
        udp_ports=free_udp_range() if udp else "",
        max_sessions=max_sessions,
        auth=auth,
    )


class OriginThread(ServerThread):
    """``mediacache origin FORMAT`` in a daemon thread: a context manager.

    ``scheme`` is the default scheme of :meth:`url` (``rtsp``, ``mmst``, ...). Access records of
    finished sessions: :meth:`records`, :meth:`wait_records`, :meth:`wait_record`.
    """

    def __init__(
        self,
        format_name: str,
        options: OriginOptions,
        *,
        host: PluginHost | None = None,
        scheme: str = "rtsp",
    ) -> None:
        self.format_name = format_name
        self.thread_name = f"{format_name}-origin"
        self.label = f"the {format_name} origin"
        super().__init__(
            host=host,
            listen_host=options.listen.rpartition(":")[0] or "127.0.0.1",
            observer_name=f"{format_name}-origin-recorder-{id(self)}",
        )
        self.options = options
        self.scheme = scheme

    @classmethod
    def loopback(
        cls,
        format_name: str,
        root: Path | str,
        *,
        udp: bool = True,
        max_sessions: int | None = None,
        auth: str | None = None,
        host: PluginHost | None = None,
        scheme: str = "rtsp",
    ) -> OriginThread:
        """An origin of ``format_name`` serving ``root`` on loopback (:func:`loopback_options`)."""
        options = loopback_options(root, udp=udp, max_sessions=max_sessions, auth=auth)
        return cls(format_name, options, host=host, scheme=scheme)

    def _make_server(self) -> ProxyServer:
        spec = self.plugin_host.registry[self.format_name]
        return ProxyServer.reference_origin(spec, self.options, self.plugin_host)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.services[self.format_name].port

    def url(self, path: str, scheme: str | None = None, credentials: str = "") -> str:
        """``SCHEME://[CREDENTIALS@]HOST:PORT/PATH`` of a clip on this origin."""
        at = f"{credentials}@" if credentials else ""
        host = self.listen_host
        return f"{scheme or self.scheme}://{at}{host}:{self.port}/{path.lstrip('/')}"
