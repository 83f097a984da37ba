"""Operational logging (loguru) and the access log: one record per client session (and one
more for what a session still gets from the origin after its client left: the rest of a cache
fill, or a live feed until a joiner took it over; see docs/architecture.md).

Protocol code never calls loguru: layers emit :class:`~mediacache.sansio.commands.Log`
commands and :class:`AccessRecord` values, and the server hands them to this module.

Access-log line, squid-like (fields separated by one space, ``-`` when empty)::

    end_time duration_ms client result/status bytes_to_client format url variant transport \
origin_bytes session reason

e.g. ``1764045000.123 5012 127.0.0.1:40112 PASS/200 1203456 quicktime rtsp://o/clip.mp4 - udp
1210000 3f2a9c teardown``. The JSON form has the same fields by name, one object a line.
``bytes_to_client`` and ``origin_bytes`` are media bytes, so cache savings follow from the log.
"""

from __future__ import annotations

import sys
import threading
import urllib.parse
from typing import IO, Literal

import msgspec
from loguru import logger

from mediacache.config import Config, LogConfig
from mediacache.hookspecs import hookimpl

CacheResult = Literal["HIT", "MISS", "SPLIT", "PASS", "DENIED"]


class AccessRecord(msgspec.Struct, kw_only=True):
    start: float
    end: float
    client: str
    format: str
    url: str
    status: int
    result: CacheResult = "PASS"
    variant: str = ""
    transport: str = ""
    bytes_to_client: int = 0
    origin_bytes: int = 0
    session: str = ""
    reason: str = ""
    user_agent: str = ""

    @property
    def duration_ms(self) -> int:
        return max(0, round((self.end - self.start) * 1000))


def _field(value: str) -> str:
    """One space-free squid field: ``-`` for empty; ``%``, space and a lone ``-`` escaped, so
    :func:`parse_squid` gets every value back exactly."""
    if not value:
        return "-"
    value = value.replace("%", "%25").replace(" ", "%20")
    return "%2D" if value == "-" else value


def format_squid(rec: AccessRecord) -> str:
    return " ".join(
        (
            f"{rec.end:.3f}",
            str(rec.duration_ms),
            _field(rec.client),
            f"{rec.result}/{rec.status:03d}",
            str(rec.bytes_to_client),
            _field(rec.format),
            _field(rec.url),
            _field(rec.variant),
            _field(rec.transport),
            str(rec.origin_bytes),
            _field(rec.session),
            _field(rec.reason),
        )
    )


_json_encoder = msgspec.json.Encoder()


def format_json(rec: AccessRecord) -> str:
    data = msgspec.structs.asdict(rec)
    data["duration_ms"] = rec.duration_ms
    return _json_encoder.encode(data).decode()


def parse_squid(line: str) -> AccessRecord:
    """Read one squid-like line back (for reports)."""
    (
        end,
        duration,
        client,
        result_status,
        out_bytes,
        fmt,
        url,
        variant,
        transport,
        origin_bytes,
        session,
        reason,
    ) = line.rstrip("\n").split(" ", 11)

    def unfield(v: str) -> str:
        return "" if v == "-" else urllib.parse.unquote(v)

    result, _, status = result_status.partition("/")
    end_f = float(end)
    return AccessRecord(
        start=end_f - int(duration) / 1000,
        end=end_f,
        client=unfield(client),
        format=unfield(fmt),
        url=unfield(url),
        status=int(status),
        result=result,  # type: ignore[arg-type]
        variant=unfield(variant),
        transport=unfield(transport),
        bytes_to_client=int(out_bytes),
        origin_bytes=int(origin_bytes),
        session=unfield(session),
        reason=unfield(reason),
    )


class AccessLogPlugin:
    """Built-in plugin: writes every session record to the access log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: IO[str] | None = None
        self._format: Literal["squid", "json"] = "squid"

    @hookimpl
    def mediacache_configure(self, config: Config) -> None:
        self._format = config.log.access_format
        if config.log.access_log:
            self._stream = open(config.log.access_log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    @hookimpl
    def mediacache_session_closed(self, record: AccessRecord) -> None:
        line = format_json(record) if self._format == "json" else format_squid(record)
        if self._stream is None:
            logger.bind(access=True).info("access {}", line)
            return
        with self._lock:
            self._stream.write(line + "\n")

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def setup_logging(config: LogConfig) -> None:
    """Configure loguru's sinks from ``[log]``."""
    logger.remove()
    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}"
    if config.file:
        logger.add(config.file, level=config.level, format=fmt, enqueue=False)
    else:
        logger.add(sys.stderr, level=config.level, format=fmt)
