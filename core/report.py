"""Reports from the access log: what is popular, what the cache saved.

Reads squid-like or JSON-lines access logs (as ``[log] access_log`` writes them) and sums, per
URL: sessions, results (HIT/MISS/SPLIT/PASS/DENIED), bytes to clients and media bytes from the
origin. The byte saving is ``1 - origin_bytes / bytes_to_client`` over the whole log: what the
origin did not have to send thanks to the cache and the splitter. Popular URLs that are not
pinned yet are the candidates for ``mediacache cache pin`` and ``prefetch``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from mediacache.logs import AccessRecord, parse_squid


@dataclass
class UrlStats:
    url: str
    sessions: int = 0
    results: Counter[str] = field(default_factory=Counter)
    bytes_to_client: int = 0
    origin_bytes: int = 0


@dataclass
class Report:
    sessions: int = 0
    bad_lines: int = 0
    results: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    bytes_to_client: int = 0
    origin_bytes: int = 0
    urls: dict[str, UrlStats] = field(default_factory=dict)

    @property
    def byte_saving(self) -> float:
        if not self.bytes_to_client:
            return 0.0
        return max(0.0, 1.0 - self.origin_bytes / self.bytes_to_client)

    def top(self, n: int = 10) -> list[UrlStats]:
        return sorted(self.urls.values(), key=lambda u: (-u.sessions, -u.bytes_to_client))[:n]

    def as_dict(self, n: int = 10) -> dict[str, object]:
        return {
            "sessions": self.sessions,
            "bad_lines": self.bad_lines,
            "results": dict(self.results),
            "formats": dict(self.formats),
            "bytes_to_client": self.bytes_to_client,
            "origin_bytes": self.origin_bytes,
            "byte_saving": round(self.byte_saving, 4),
            "top": [
                {
                    "url": u.url,
                    "sessions": u.sessions,
                    "results": dict(u.results),
                    "bytes_to_client": u.bytes_to_client,
                    "origin_bytes": u.origin_bytes,
                }
                for u in self.top(n)
            ],
        }


def parse_line(line: str) -> AccessRecord:
    """One access-log line, squid-like or JSON; ValueError when it is neither."""
    line = line.strip()
    if line.startswith("{"):
        try:
            data = json.loads(line)
            data.pop("duration_ms", None)
            return msgspec.convert(data, AccessRecord)
        except (json.JSONDecodeError, msgspec.ValidationError) as exc:
            raise ValueError(str(exc)) from None
    return parse_squid(line)


def build_report(lines: Iterable[str]) -> Report:
    report = Report()
    per_url: dict[str, UrlStats] = defaultdict(lambda: UrlStats(""))
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = parse_line(line)
        except (ValueError, IndexError):
            report.bad_lines += 1
            continue
        report.sessions += 1
        report.results[rec.result] += 1
        report.formats[rec.format] += 1
        report.bytes_to_client += rec.bytes_to_client
        report.origin_bytes += rec.origin_bytes
        stats = per_url[rec.url]
        stats.url = rec.url
        stats.sessions += 1
        stats.results[rec.result] += 1
        stats.bytes_to_client += rec.bytes_to_client
        stats.origin_bytes += rec.origin_bytes
    report.urls = dict(per_url)
    return report


def format_report(report: Report, n: int = 10) -> str:
    lines = [
        f"sessions: {report.sessions}  (unreadable lines: {report.bad_lines})",
        "results:  " + ", ".join(f"{k} {v}" for k, v in report.results.most_common()),
        f"bytes to clients: {report.bytes_to_client}  media bytes from origins: "
        f"{report.origin_bytes}  saving: {report.byte_saving:.1%}",
        "",
        f"top {n} URLs by sessions:",
    ]
    for u in report.top(n):
        results = " ".join(f"{k}={v}" for k, v in u.results.most_common())
        lines.append(f"  {u.sessions:6d}  {u.bytes_to_client:12d} B  {results:30s} {u.url}")
    return "\n".join(lines)
