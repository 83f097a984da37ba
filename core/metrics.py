"""Session counters for Prometheus: a built-in plugin observing every closed session.

Counters only grow (Prometheus computes rates): sessions and media bytes per format and cache
result (HIT, MISS, SPLIT, PASS, DENIED). ``/metrics`` on the admin API prints them with the
gauges of what is open now.
"""

from __future__ import annotations

from collections import Counter

from mediacache.hookspecs import hookimpl
from mediacache.logs import AccessRecord


class SessionMetrics:
    def __init__(self) -> None:
        self.sessions: Counter[tuple[str, str]] = Counter()
        self.bytes_to_clients: Counter[tuple[str, str]] = Counter()
        self.origin_bytes: Counter[tuple[str, str]] = Counter()

    @hookimpl
    def mediacache_session_closed(self, record: AccessRecord) -> None:
        key = (record.format, record.result)
        self.sessions[key] += 1
        self.bytes_to_clients[key] += record.bytes_to_client
        self.origin_bytes[key] += record.origin_bytes

    def exposition(self) -> list[str]:
        """The counters in the Prometheus text format."""
        lines = []
        for name, counter, what in (
            ("mediacache_sessions_total", self.sessions, "Client sessions ended"),
            ("mediacache_client_bytes_total", self.bytes_to_clients, "Media bytes sent to clients"),
            (
                "mediacache_origin_bytes_total",
                self.origin_bytes,
                "Media bytes received from origins",
            ),
        ):
            lines += [
                f"# HELP {name} {what}, by format and cache result.",
                f"# TYPE {name} counter",
            ]
            for (fmt, result), value in sorted(counter.items()):
                lines.append(f'{name}{{format="{fmt}",result="{result}"}} {value}')
        return lines
