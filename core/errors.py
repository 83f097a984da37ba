"""The small error tree of mediacache.

Protocol errors carry a status hint (the RTSP status code a server would answer with), so the
layer that catches them can reply without knowing which parser raised.
"""

from __future__ import annotations


class MediacacheError(Exception):
    """Base of every error mediacache raises on purpose."""


class ConfigError(MediacacheError):
    """The configuration file cannot be read or does not validate. The message names the key."""


class PluginLoadError(MediacacheError):
    """A format plugin could not be imported or registered."""


class ProtocolError(MediacacheError):
    """Bytes on the wire that break a protocol's rules.

    ``status_hint`` is the RTSP-style status a server answers with (400 unless a parser knows
    better, e.g. 413 for an oversized body, 414 for a long request line).
    """

    def __init__(self, message: str, *, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol forbids (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""
