"""Reports from the access log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mediacache.logs import AccessRecord, format_json, format_squid
from mediacache.report import build_report


def rec(url: str, result: str, sent: int, origin: int) -> AccessRecord:
    return AccessRecord(
        start=1.0, end=2.0, client="10.0.0.1:5", format="quicktime", url=url, status=200,
        result=result, bytes_to_client=sent, origin_bytes=origin,  # type: ignore[arg-type]
    )  # fmt: skip


LOG = [
    rec("rtsp://p/a", "MISS", 1000, 1000),
    rec("rtsp://p/a", "HIT", 1000, 0),
    rec("rtsp://p/a", "HIT", 1000, 0),
    rec("rtsp://p/live", "PASS", 500, 500),
    rec("rtsp://p/live", "SPLIT", 500, 0),
    rec("rtsp://p/b", "DENIED", 0, 0),
]


def test_popularity_and_savings_from_both_formats() -> None:
    lines = [format_squid(r) for r in LOG[:3]] + [format_json(r) for r in LOG[3:]] + ["junk"]
    report = build_report(lines)
    assert report.sessions == 6 and report.bad_lines == 1
    assert report.results == {"HIT": 2, "MISS": 1, "PASS": 1, "SPLIT": 1, "DENIED": 1}
    assert [u.url for u in report.top(2)] == ["rtsp://p/a", "rtsp://p/live"]
    assert report.bytes_to_client == 4000 and report.origin_bytes == 1500
    assert abs(report.byte_saving - (1 - 1500 / 4000)) < 1e-9


def test_report_cli(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("\n".join(format_squid(r) for r in LOG) + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "mediacache.cli", "report", str(log), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["top"][0]["url"] == "rtsp://p/a" and data["top"][0]["sessions"] == 3
