"""The format registry: what a format plugin contributes, looked up by format name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediacache.config import FormatConfig
from mediacache.hookspecs import hookimpl

if TYPE_CHECKING:
    from mediacache.sansio.layer import Layer, SessionContext

LayerFactory = Callable[["SessionContext"], "Layer"]


@dataclass(frozen=True, slots=True)
class OriginOptions:
    """``mediacache origin NAME --root DIR --listen HOST:PORT ...``"""

    root: Path
    listen: str
    udp_ports: str = ""
    max_sessions: int | None = None
    """Refuse sessions beyond this many (RTSP 453, MMS error): licence limits made testable."""
    auth: str | None = None
    """``user:pass``: require these credentials (RTSP Basic/Digest, MMS's own)."""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """One streaming format as the core sees it: its name, what it speaks, its defaults.

    Pure description: the code of a format (its protocol layer, its reference origin, its
    prefetcher) is reached only through the hookspecs (``mediacache_make_layer``,
    ``mediacache_reference_origin``, ``mediacache_prefetch``), called with the format's name.
    """

    name: str
    version: str
    description: str
    protocols: tuple[str, ...]
    config_type: type[FormatConfig]
    has_reference_origin: bool = False
    """Does the plugin ship an origin of its own (``mediacache origin NAME``, through
    ``mediacache_reference_origin``)? For formats with no open-source origin server."""
    origin_schemes: tuple[str, ...] = ("rtsp",)
    http_tunnel: bool = False
    """Does the listener also take RTSP-over-HTTP tunnels (Apple's GET/POST pair with an
    ``x-sessioncookie``)? For RTSP formats; see :mod:`mediacache.server.httptunnel`."""

    @property
    def defaults(self) -> FormatConfig:
        return self.config_type()


class FormatPlugin:
    """The hookimpls of a plugin that serves one format, which is what a format plugin is.

    A plugin module makes one (``PLUGIN = FormatPlugin(SPEC, make_layer, ...)``) and its entry
    point names it (``quicktime = "mediacache_quicktime.plugin:PLUGIN"``). It registers the spec
    and answers the format hooks for that format's name only, so several plugins never have to
    agree on anything. A plugin with more to say adds hookimpls of its own.
    """

    def __init__(
        self,
        spec: FormatSpec,
        make_layer: LayerFactory,
        *,
        reference_origin: Callable[[OriginOptions], LayerFactory] | None = None,
        prefetch: Callable[[str, str, int], Awaitable[Any]] | None = None,
    ) -> None:
        if spec.has_reference_origin != (reference_origin is not None):
            raise ValueError(f"{spec.name}: has_reference_origin disagrees with the factory")
        self.spec = spec
        self._make_layer = make_layer
        self._reference_origin = reference_origin
        self._prefetch = prefetch

    @hookimpl
    def mediacache_register_formats(self, registry: FormatRegistry) -> None:
        registry.add(self.spec)

    @hookimpl
    def mediacache_make_layer(self, format_name: str, ctx: SessionContext) -> Layer | None:
        return self._make_layer(ctx) if format_name == self.spec.name else None

    @hookimpl
    def mediacache_reference_origin(
        self, format_name: str, options: OriginOptions
    ) -> LayerFactory | None:
        if format_name != self.spec.name or self._reference_origin is None:
            return None
        return self._reference_origin(options)

    @hookimpl
    def mediacache_prefetch(
        self, format_name: str, url: str, proxy_host: str, proxy_port: int
    ) -> Awaitable[Any] | None:
        if format_name != self.spec.name or self._prefetch is None:
            return None
        return self._prefetch(url, proxy_host, proxy_port)


@dataclass
class FormatRegistry:
    """Filled by the plugins' ``mediacache_register_formats`` at start."""

    _formats: dict[str, FormatSpec] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    current_plugin: str = "<unknown>"

    def add(self, spec: FormatSpec) -> None:
        if spec.name in self._formats:
            raise ValueError(
                f"format {spec.name!r} is registered twice "
                f"(by {self.owners[spec.name]} and {self.current_plugin})"
            )
        self._formats[spec.name] = spec
        self.owners[spec.name] = self.current_plugin

    def remove_owned_by(self, plugin: str) -> None:
        for name in [n for n, owner in self.owners.items() if owner == plugin]:
            del self._formats[name]
            del self.owners[name]

    def get(self, name: str) -> FormatSpec | None:
        return self._formats.get(name)

    def __getitem__(self, name: str) -> FormatSpec:
        return self._formats[name]

    def __contains__(self, name: object) -> bool:
        return name in self._formats

    def __iter__(self) -> Iterator[FormatSpec]:
        return iter(sorted(self._formats.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._formats)

    def names(self) -> set[str]:
        return set(self._formats)
