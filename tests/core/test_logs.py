"""Access-log records: squid-like lines and JSON lines carry every field."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from mediacache.config import parse_config
from mediacache.logs import AccessLogPlugin, AccessRecord, format_json, format_squid, parse_squid

RECORD = AccessRecord(
    start=1000.0,
    end=1005.25,
    client="127.0.0.1:4000",
    format="quicktime",
    url="rtsp://o/clip.mp4",
    status=200,
    result="MISS",
    variant="v1",
    transport="udp",
    bytes_to_client=1234,
    origin_bytes=2345,
    session="abc",
    reason="teardown",
)


def test_squid_line_fields() -> None:
    line = format_squid(RECORD)
    assert line.split(" ") == [
        "1005.250", "5250", "127.0.0.1:4000", "MISS/200", "1234", "quicktime",
        "rtsp://o/clip.mp4", "v1", "udp", "2345", "abc", "teardown",
    ]  # fmt: skip


def test_json_line_fields() -> None:
    data = json.loads(format_json(RECORD))
    assert data["result"] == "MISS" and data["duration_ms"] == 5250 and data["origin_bytes"] == 2345


text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30)


@given(
    url=text, reason=text, variant=text, status=st.integers(100, 599), sent=st.integers(0, 2**40)
)
@example(url="a%20b", reason="100%", variant="-", status=200, sent=0)
def test_squid_round_trip(url: str, reason: str, variant: str, status: int, sent: int) -> None:
    rec = AccessRecord(
        start=10.0, end=12.5, client="::1", format="quicktime", url=url.strip(),
        status=status, variant=variant.strip(), bytes_to_client=sent, reason=reason.strip(),
    )  # fmt: skip
    back = parse_squid(format_squid(rec))
    assert (back.url, back.reason, back.variant, back.status, back.bytes_to_client) == (
        rec.url,
        rec.reason,
        rec.variant,
        rec.status,
        rec.bytes_to_client,
    )  # exactly: "-", "%20" and "%" included


def test_plugin_writes_to_the_configured_file(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    plugin = AccessLogPlugin()
    plugin.mediacache_configure(
        parse_config(f"[log]\naccess_log = '{log}'\naccess_format = 'json'")
    )
    plugin.mediacache_session_closed(RECORD)
    plugin.close()
    assert json.loads(log.read_text())["url"] == "rtsp://o/clip.mp4"
