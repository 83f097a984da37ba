"""RTSP URL parsing, control URL resolution and prefix rebasing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache.errors import RemoteProtocolError
from mediacache.rtsp import RtspUrl, parse_url, rebase_url, resolve_url


def test_parse_full_url() -> None:
    url = parse_url("RTSP://us%40er:p%3Ass@Camera.local:8554/live/ch1?token=a%20b&x=1")
    assert url == RtspUrl(
        "rtsp", "Camera.local", 8554, "/live/ch1?token=a%20b&x=1", "us%40er", "p%3Ass"
    )
    assert str(url) == "rtsp://us%40er:p%3Ass@Camera.local:8554/live/ch1?token=a%20b&x=1"
    assert url.netloc == "Camera.local:8554"
    assert url.origin == "rtsp://Camera.local:8554"
    assert str(url.without_credentials()) == "rtsp://Camera.local:8554/live/ch1?token=a%20b&x=1"


def test_parse_ipv6_and_defaults() -> None:
    url = parse_url("rtsp://[::1]/test")
    assert (url.host, url.port, url.path) == ("::1", None, "/test")
    assert url.netloc == "[::1]"
    assert url.effective_port() == 554
    assert url.effective_port(8554) == 8554
    assert url.with_default_port(554).netloc == "[::1]:554"
    assert parse_url("rtsp://[fe80::1%25eth0]:10554/x").netloc == "[fe80::1%25eth0]:10554"
    assert parse_url("rtsps://h/").effective_port() == 322
    assert parse_url("rtspu://h:9/").with_default_port(554).port == 9


def test_empty_path_and_user_without_password() -> None:
    url = parse_url("rtsp://admin@10.0.0.1:554")
    assert (url.user, url.password, url.path) == ("admin", None, "/")
    assert str(url) == "rtsp://admin@10.0.0.1:554/"
    assert parse_url("rtsp://h:/x").port is None
    assert parse_url("rtsp://h?q=1").path == "/?q=1"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "http://h/x",
        "rtsp:/h/x",
        "h:554/x",
        "rtsp:///x",
        "rtsp://h:port/x",
        "rtsp://h:70000/x",
        "rtsp://::1/x",
        "rtsp://[::1/x",
        "rtsp://[::1]x/x",
        "rtsp://[zz]/x",
        "rtsp://h/a b",
        "rtsp://h/a\r\nX: y",
        " rtsp://h/",
        "rtsp://u@v@/x",
    ],
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_url(bad)
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    ("base", "ref", "expected"),
    [
        ("rtsp://h/test/", "*", "rtsp://h/test/"),
        ("rtsp://h/test/", "", "rtsp://h/test/"),
        ("rtsp://h/test/", "stream=0", "rtsp://h/test/stream=0"),
        # Appended even without a trailing slash: what GStreamer, ffmpeg and live555 do.
        ("rtsp://h/test", "trackID=1", "rtsp://h/test/trackID=1"),
        ("rtsp://h/test.sdp", "trackID=1", "rtsp://h/test.sdp/trackID=1"),
        ("rtsp://h/test", "/trackID=1", "rtsp://h/test/trackID=1"),
        ("rtsp://h/test/", "/trackID=1", "rtsp://h/test/trackID=1"),
        ("rtsp://h/live?tok=1", "track1", "rtsp://h/live?tok=1/track1"),
        ("rtsp://h/test/", "rtsp://other:8554/x/y", "rtsp://other:8554/x/y"),
        ("rtsp://h/test/", "RTSP://other/x", "RTSP://other/x"),
    ],
)
def test_resolve_url(base: str, ref: str, expected: str) -> None:
    assert resolve_url(base, ref) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://origin.example:554/vod/a.mp4/trackID=1", "rtsp://proxy/cache/vod/a.mp4/trackID=1"),
        ("rtsp://ORIGIN.example/vod/a.mp4", "rtsp://proxy/cache/vod/a.mp4"),
        ("RTSP://user:pw@origin.example/vod/", "rtsp://proxy/cache/vod/"),
        ("rtsp://origin.example/vod", "rtsp://proxy/cache/vod"),
        ("rtsp://origin.example:8554/vod/a", None),
        ("rtsp://other.example/vod/a", None),
        ("rtsps://origin.example/vod/a", None),
        ("rtsp://origin.example/VOD/a", None),
        ("rtsp://origin.example/", None),
        ("trackID=1", None),
        ("*", None),
    ],
)
def test_rebase_url(url: str, expected: str | None) -> None:
    assert rebase_url(url, "rtsp://origin.example/vod", "rtsp://proxy/cache/vod") == expected


def test_rebase_url_with_bare_prefixes() -> None:
    assert rebase_url("rtsp://o:554/a/b", "rtsp://o", "rtsp://p:8554") == "rtsp://p:8554/a/b"
    assert rebase_url("rtsp://o", "rtsp://o", "rtsp://p") == "rtsp://p"
    assert rebase_url("rtsp://o/a", "rtsp://o:554/", "rtsp://p/x/") == "rtsp://p/x/a"
    assert rebase_url("rtsp://[::1]/a", "rtsp://[::1]:554/", "rtsp://p/") == "rtsp://p/a"
    with pytest.raises(RemoteProtocolError):
        rebase_url("rtsp://o/a", "not a url", "rtsp://p/")


hosts = st.one_of(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=20),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
paths = st.text("abcdefghijklmnopqrstuvwxyz0123456789/._-=;?&%~", max_size=30).map(
    lambda s: "/" + s
)
userinfo = st.text("abcdefghijklmnopqrstuvwxyz0123456789%._-!", max_size=8)


@given(
    st.sampled_from(["rtsp", "rtspu", "rtsps"]),
    hosts,
    st.none() | st.integers(0, 65535),
    paths,
    st.none() | userinfo,
    st.none() | userinfo,
)
def test_url_round_trip(
    scheme: str, host: str, port: int | None, path: str, user: str | None, password: str | None
) -> None:
    if user is None:
        password = None
    url = RtspUrl(scheme, host, port, path, user, password)
    assert parse_url(str(url)) == url


@given(hosts, st.none() | st.integers(1, 65535), paths, paths)
def test_rebase_is_reversible(host: str, port: int | None, prefix: str, rest: str) -> None:
    origin = str(RtspUrl("rtsp", host, port, prefix))
    proxy = "rtsp://proxy.example:8554/mount" + prefix
    url = origin + rest
    there = rebase_url(url, origin, proxy)
    assert there == proxy + rest
    assert rebase_url(there, proxy, origin) == url
