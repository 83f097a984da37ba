"""The hookspecs: every call the core makes into a plugin.

Grouped by lifecycle phase, all prefixed ``mediacache_``. A plugin describes its formats once
(:func:`mediacache_register_formats`: name, protocols, ports, config struct, as a
:class:`~mediacache.formats.FormatSpec`, which holds no code), and the core reaches a format's
code only through the hooks below, each called with the format's name: a plugin answers for
its own formats and returns None for the others. What a hook returns (a protocol layer, a
layer factory, a coroutine) is then driven through the core's own interfaces
(:class:`~mediacache.sansio.layer.Layer`: events in, commands out), never by a plugin-specific
call.

The access log is itself a built-in plugin implementing :func:`mediacache_session_closed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from mediacache.config import Config
    from mediacache.formats import FormatRegistry, OriginOptions
    from mediacache.logs import AccessRecord
    from mediacache.sansio.layer import Layer, SessionContext
    from mediacache.server.prefetch import PrefetchResult

PROJECT = "mediacache"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- start-up -------------------------------------------------------------------------------


@hookspec
def mediacache_register_formats(registry: FormatRegistry) -> None:
    """Add this plugin's formats to ``registry`` with ``registry.add(FormatSpec(...))``.

    Called once per process, right after the plugin is loaded and before the configuration is
    read (the config of ``[formats.NAME]`` is decoded into the struct the spec names). A plugin
    whose implementation raises is reported as failed and unregistered; the others load.
    All results are ignored.
    """


@hookspec
def mediacache_configure(config: Config) -> None:
    """The whole configuration, once it has been read and validated.

    Called once after :func:`mediacache_register_formats`, before any listener opens. Plugins
    keep what they need; they must not change ``config``. A plugin raising here stops the
    start with its error (a plugin that cannot work with the config must say so early).
    """


# -- a format's code --------------------------------------------------------------------------


@hookspec(firstresult=True)
def mediacache_make_layer(format_name: str, ctx: SessionContext) -> Layer | None:
    """The sans-I/O protocol layer that serves one new client control connection.

    Called for every connection accepted on ``format_name``'s listeners (an RTSP-over-HTTP
    tunnel counts once, for its GET). ``ctx`` carries the format's settings, the client
    connection, the data plane, the cache and splitter services and the hook relay. Return the
    layer for your own format, None for any other. The first non-None result wins; a format
    no plugin makes a layer for refuses the connection with a log line.
    """


@hookspec(firstresult=True)
def mediacache_reference_origin(
    format_name: str, options: OriginOptions
) -> Callable[[SessionContext], Layer] | None:
    """The layer factory of the format's own origin server (``mediacache origin NAME``).

    Called once when the origin starts, for formats whose spec says ``has_reference_origin``.
    Return a factory of one origin layer per client connection (state the connections share,
    such as the session count, lives in the factory), or None for another format. The core
    runs it like the proxy: same listener, UDP sockets, timers and playout scheduler. Raise
    ValueError for options the origin refuses (the message is shown). First non-None wins.
    """


@hookspec(firstresult=True)
def mediacache_prefetch(
    format_name: str, url: str, proxy_host: str, proxy_port: int
) -> Awaitable[PrefetchResult] | None:
    """Play ``url`` through the proxy's own listener to fill the cache.

    Called by ``mediacache cache prefetch`` (the admin API), with the address of the
    format's listener: the fill takes the same path as a client's miss. Return an awaitable
    of the result (``ok``, ``detail``, ``seconds``), or None for another format or one that
    cannot prefetch (the admin API then answers 400). The first non-None result wins.
    """


# -- per client session: policy -------------------------------------------------------------


@hookspec(firstresult=True)
def mediacache_access_check(client_host: str, format_name: str, url: str) -> bool | None:
    """May ``client_host`` (an IP address) use ``format_name`` for ``url``?

    Called for the first request of every client session, after the ``[access]`` lists were
    applied and said yes (the lists cannot be loosened by a hook, only tightened). ``url`` is the
    URL as the client sent it. Return False to refuse (the client gets 403 and a log line), True
    to allow, None to have no opinion. The first non-None result wins.
    """


@hookspec(firstresult=True)
def mediacache_resolve_origin(format_name: str, url: str) -> str | None:
    """Override which origin URL serves the client's request ``url``.

    Called once per client session on its first request naming a URL, before ``[[routes]]``
    are consulted. Return an absolute origin URL to use it, or None to let the routes (reverse
    mode) or the URL itself (forward mode) decide. The first non-None result wins.
    """


# -- per client session: observers ----------------------------------------------------------


@hookspec
def mediacache_session_closed(record: AccessRecord) -> None:
    """A client session ended; ``record`` is its access-log record.

    Called exactly once per client session, whatever ended it (TEARDOWN, disconnect, timeout,
    refusal, origin failure). Observers must not block: the built-in access log writes a line.
    Exceptions are logged and ignored. All results are ignored.
    """


# -- per client session: cache policy ------------------------------------------------------


@hookspec(firstresult=True)
def mediacache_cache_variant(format_name: str, url: str, variant: str) -> str | None:
    """The variant key of a clip or live feed: the part of its key beyond the URL.

    Called when a session's variant becomes known (its first PLAY; Real: its first ASM
    Subscribe) and again whenever the client changes it (a SureStream rate switch), for
    cached clips and split feeds alike. ``url`` is the origin URL of the presentation
    (without credentials); ``variant`` is the format's own key: QuickTime, the controls of
    the tracks set up, relative to ``url``, sorted and joined by commas; Real, those plus
    ``|`` and the subscribed ASM rules; Windows Media, the selected stream numbers. Return
    a string to use instead (say, to let every rate share one object), or None to keep it.
    The first non-None result wins.
    """


@hookspec(firstresult=True)
def mediacache_cache_allowed(format_name: str, url: str, authenticated: bool) -> bool | None:
    """May this clip be cached? Asked for content the origin served after authentication.

    Return True or False to decide, or None to keep the format's rule (QuickTime and Real
    cache it, and every later client must still pass the origin's authentication on its
    accounting connection; Windows Media never caches it). The first non-None result wins.
    """


@hookspec(firstresult=True)
def mediacache_is_live(format_name: str, url: str, description: bytes) -> bool | None:
    """Is this stream live (split to viewers, never cached) or on demand?

    Called once per client session when the origin described the stream (RTSP: the DESCRIBE
    reply's SDP in ``description``). Return True or False to decide, or None to let the
    format decide from its own protocol (RTSP: an SDP range with no end, such as
    ``npt=now-`` or none at all, or Real's ``a=LiveStream:integer;1``, is live). A route's
    ``live = true|false`` overrides both.
    The first non-None result wins.
    """
