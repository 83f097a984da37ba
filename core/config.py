"""Configuration: one TOML file decoded with msgspec into typed structs.

Every key has a default, so ``mediacache serve`` starts with no file at all. Unknown keys are
errors (``forbid_unknown_fields``) and every error names the file and the key path, e.g.
``config.toml: Expected `int`, got `str` - at `$.formats.quicktime.origin_port```.

Per-format sections are decoded in two steps: the core reads ``[formats.NAME]`` as a plain table
and the plugin that owns NAME supplies the struct it is converted into (a subclass of
:class:`FormatConfig` with the format's port defaults). A section for a format that is not
installed here is kept aside and reported, not refused: several nodes share one file, and not
every node installs every plugin.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from mediacache.errors import ConfigError

Port = Annotated[int, Meta(ge=1, le=65535)]
Seconds = Annotated[float, Meta(gt=0)]


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mediacache")


class FormatConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings every format has. Plugins subclass it to set their port defaults and add keys."""

    enabled: bool = True
    listen: str = ""
    """``HOST:PORT`` (``[::]:PORT`` for IPv6) of the client-facing control port."""
    also_listen: list[str] = msgspec.field(default_factory=list)
    """More ``HOST:PORT`` control ports for the same format, e.g. ``["0.0.0.0:80"]`` for
    players behind firewalls that pass only HTTP (RTSP-over-HTTP tunnels, and plain RTSP too)."""
    origin_port: Port = 554
    """Port used toward an origin whose URL names none."""
    udp_ports: str = ""
    """``LOW-HIGH``: the server-side UDP ports data to clients is sent from."""
    udp_socket_pairs: Annotated[int, Meta(ge=1, le=64)] = 2
    """How many RTP/RTCP socket pairs of the range are bound and shared by every client."""
    session_timeout: Seconds = 60.0
    """A client silent for this long (no request, no RTCP) is torn down."""
    origin_connect_timeout: Seconds = 10.0
    origin_response_timeout: Seconds = 20.0
    forward: bool = True
    """Accept absolute request URLs naming any origin (the guide's forward-proxy mode)."""
    tcp_send_limit: Annotated[int, Meta(ge=16384)] = 2 * 1024 * 1024
    """Bytes queued to a TCP (interleaved) viewer beyond which its packets are dropped."""
    tcp_hopeless_after: Seconds = 10.0
    """A TCP viewer over ``tcp_send_limit`` this long is disconnected (and logged)."""
    parent_fallback: bool = True
    """With a parent proxy configured (``[parents]``): go to the origin directly when the
    parent cannot be reached."""

    def __post_init__(self) -> None:
        for address in (self.listen, *self.also_listen):
            if address:
                split_host_port(address)
        if self.udp_ports:
            low, high = parse_port_range(self.udp_ports)
            if (high - low + 1) < 2:
                raise ValueError("udp_ports must hold at least one RTP/RTCP pair")


class Route(Struct, kw_only=True, forbid_unknown_fields=True):
    """Reverse-proxy route: requests for ``prefix`` on this proxy go to ``origin``."""

    format: str
    prefix: str
    origin: str
    live: bool | None = None
    """Force live (split) or on-demand handling; None: ask the format."""

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/"):
            raise ValueError("prefix must start with '/'")
        if not self.prefix.endswith("/"):
            self.prefix += "/"
        if not self.origin.endswith("/"):
            self.origin += "/"


DEFAULT_ALLOW = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
]


class AccessConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Which clients may use the proxy. The default refuses the internet: no open proxy."""

    allow: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_ALLOW))
    deny: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        for net in (*self.allow, *self.deny):
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad entry


class LogConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    access_log: str | None = None
    """File the access log is appended to; None writes it to the operational log only."""
    access_format: Literal["squid", "json"] = "squid"
    file: str | None = None
    """Operational log file; None logs to stderr."""


class CacheConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    memory_limit: Annotated[int, Meta(ge=0)] = 256 * 1024 * 1024
    disk_limit: Annotated[int, Meta(ge=0)] = 10 * 1024 * 1024 * 1024
    enabled: bool = True
    background_fill: Annotated[float, Meta(ge=0, le=1)] = 0.5
    """A fill whose first client leaves goes on when other clients read it, or when at least
    this fraction of the clip was received (Traffic Server's background fill); else it is
    aborted. 1.0: only for readers; 0: always."""


class SplitConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    linger: Annotated[float, Meta(ge=0)] = 5.0
    """Seconds a live feed is kept after its last viewer left, for a quick rejoin."""
    reconnect_timeout: Annotated[float, Meta(ge=0)] = 15.0
    """How long a live feed whose origin dropped is retried (backoff 0.5 s doubling to 4 s)
    before its viewers are ended."""


class AdminConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:8089"
    enabled: bool = True


class Config(Struct, kw_only=True, forbid_unknown_fields=True):
    formats: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    routes: list[Route] = msgspec.field(default_factory=list)
    access: AccessConfig = msgspec.field(default_factory=AccessConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    parents: dict[str, str] = msgspec.field(default_factory=dict)
    cache_dir: str = msgspec.field(default_factory=_default_cache_dir)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    split: SplitConfig = msgspec.field(default_factory=SplitConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    source: str = "<defaults>"
    """Where this config came from (set by :func:`load_config`, not a file key)."""


def _fail(source: str, exc: Exception, prefix: str = "$") -> ConfigError:
    message = str(exc)
    if " - at `$" in message:
        message = message.replace("`$", f"`{prefix}", 1)
    else:
        message = f"{message} - at `{prefix}`"
    return ConfigError(f"{source}: {message}")


def parse_config(text: str | bytes, source: str = "<string>") -> Config:
    """Decode TOML text into a :class:`Config`; errors name ``source`` and the key path."""
    if isinstance(text, str):
        text = text.encode()
    try:
        raw = msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a table")
    raw.pop("source", None)
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise _fail(source, exc) from None
    config.source = source
    return config


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read the config file at ``path``; None gives the built-in defaults."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    return parse_config(data, str(p))


def format_settings(config: Config, name: str, config_type: type[FormatConfig]) -> FormatConfig:
    """Convert ``[formats.NAME]`` into the plugin's struct; errors name the full key path."""
    table: Mapping[str, Any] = config.formats.get(name, {})
    try:
        return msgspec.convert(dict(table), config_type)
    except msgspec.ValidationError as exc:
        raise _fail(config.source, exc, f"$.formats.{name}") from None


def validate_routes(config: Config, known_formats: set[str]) -> list[str]:
    """Routes and parents naming a format this node lacks: returned as warnings, not errors."""
    warnings = []
    for i, route in enumerate(config.routes):
        if route.format not in known_formats:
            warnings.append(f"$.routes[{i}].format: format {route.format!r} is not installed")
    for name in config.formats:
        if name not in known_formats:
            warnings.append(f"$.formats.{name}: format {name!r} is not installed; section ignored")
    return warnings


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` into (host, port); ValueError when malformed."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        host, port_text = value, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"{value!r}: no port")
        port = default_port
    else:
        port = int(port_text)
    if not 0 <= port < 65536:  # 0: the kernel picks (tests)
        raise ValueError(f"{value!r}: port out of range")
    return host or "0.0.0.0", port


def parse_port_range(value: str) -> tuple[int, int]:
    """``LOW-HIGH`` into (low, high) inclusive; ValueError when malformed."""
    low_text, _, high_text = value.partition("-")
    low = int(low_text)
    high = int(high_text) if high_text else low
    if not (0 < low <= high < 65536):
        raise ValueError(f"{value!r}: not a port range LOW-HIGH")
    return low, high
