"""LDAP authentication of Real players at the proxy, against a real OpenLDAP slapd.

``[formats.realmedia.ldap]``: the player's Basic credentials are checked by the proxy (search
for the user's entry, bind as it) before anything reaches the origin; a wrong password is 401
with a log line; admitted sessions get TCP only (461 for UDP); the password is never logged.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from mediacache.testing.ldap import SlapdServer
from mediacache.testing.origin import OriginThread
from mediacache.testing.peers import ByteCountingRelay, ffprobe_packets, make_clip, missing_peers
from mediacache.testing.proxy import ProxyThread
from mediacache_realmedia.testing import RealClient, reverse_route

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(bool(missing_peers("ffmpeg", "slapd")), reason="needs ffmpeg and slapd"),
]

PASSWORD = "Tr0ub4dor&3"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real-ldap-root")
    shutil.copy(make_clip(seconds=3, kind="rv20_ac3"), root / "clip.rm")
    return root


@pytest.fixture(scope="module")
def slapd() -> Iterator[SlapdServer]:
    with SlapdServer({"alice": PASSWORD, "bob": "other"}) as server:
        yield server


@pytest.fixture
def relay(root: Path) -> Iterator[ByteCountingRelay]:
    """The origin behind a relay that counts every connection the proxy opens to it."""
    with OriginThread.loopback("realmedia", root) as origin:
        relay = ByteCountingRelay(origin.port).start()
        try:
            yield relay
        finally:
            relay.stop()


@pytest.fixture
def proxy(relay: ByteCountingRelay, slapd: SlapdServer) -> Iterator[ProxyThread]:
    config = (
        reverse_route(relay.port)
        + f"[formats.realmedia.ldap]\nurl='{slapd.url}'\nbase_dn='{slapd.base_dn}'\n"
        "user_filter='(uid={user})'\n"
    )
    with ProxyThread(config) as p:
        yield p


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="DEBUG")
    try:
        yield lines
    finally:
        logger.remove(sink)


def url(proxy: ProxyThread, credentials: str = "") -> str:
    at = f"{credentials}@" if credentials else ""
    return f"rtsp://{at}127.0.0.1:{proxy.port('realmedia')}/r/clip.rm"


def probe_error(target: str, transport: str) -> str:
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", transport, "-rw_timeout", "8000000", target],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode != 0
    return proc.stderr


def test_an_ldap_user_plays_over_tcp(
    proxy: ProxyThread, root: Path, relay: ByteCountingRelay, log_lines: list[str]
) -> None:
    got = ffprobe_packets(url(proxy, f"alice:{PASSWORD}"), 8, extra_args=["-rtsp_transport", "tcp"])
    want = ffprobe_packets(str(root / "clip.rm"), 20)
    assert [p for p in got if p[0] == "video"] == [p for p in want if p[0] == "video"]
    assert any("user 'alice' authenticated" in line for line in log_lines)
    # the player's credentials are the proxy's: the origin never saw an Authorization header
    assert relay.connections and all(PASSWORD not in line for line in log_lines)
    records = proxy.wait_records(1)
    assert records[0].status == 200 and PASSWORD not in repr(records)


def test_an_ldap_session_is_refused_udp(proxy: ProxyThread) -> None:
    error = probe_error(url(proxy, f"alice:{PASSWORD}"), "udp")
    assert "461" in error


def test_the_461_says_why(proxy: ProxyThread) -> None:
    token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    auth = [("Authorization", f"Basic {token}")]
    with RealClient(proxy.port("realmedia")) as c:
        reply = c.request("OPTIONS", c.url("r/clip.rm"), auth, session=False)
        assert reply.status == 200
        c.challenge = reply.headers.get("RealChallenge1")
        assert c.request("DESCRIBE", c.url("r/clip.rm"), auth).status == 200
        reply = c.setup("r/clip.rm", 0, f"x-pn-tng/udp;client_port={c.udp_port()}", auth)
        assert reply.status == 461 and "TCP only" in reply.reason
        assert c.setup("r/clip.rm", 0, "x-pn-tng/tcp", auth).status == 200


def test_a_wrong_password_is_401_logged_and_never_reaches_the_origin(
    proxy: ProxyThread, relay: ByteCountingRelay, log_lines: list[str]
) -> None:
    wrong = "not-" + PASSWORD
    error = probe_error(url(proxy, f"alice:{wrong}"), "tcp")
    assert "401" in error
    error = probe_error(url(proxy, f"mallory:{PASSWORD}"), "tcp")
    assert "401" in error
    assert not relay.connections  # nothing went to the origin
    refusals = [line for line in log_lines if "refused" in line]
    assert any("'alice'" in line and "wrong password" in line for line in refusals)
    assert any("'mallory'" in line for line in refusals)
    assert not any(wrong in line or PASSWORD in line for line in log_lines)


def test_no_credentials_get_a_basic_challenge(proxy: ProxyThread) -> None:
    with RealClient(proxy.port("realmedia")) as c:
        reply = c.request("DESCRIBE", c.url("r/clip.rm"), session=False)
        assert reply.status == 401
        assert reply.headers.get("WWW-Authenticate") == 'Basic realm="mediacache"'
        # the connection stays usable: the player asks again with credentials
        reply = c.request("OPTIONS", c.url("r/clip.rm"), session=False)
        assert reply.status == 401


def test_an_unreachable_directory_is_503_not_401(
    relay: ByteCountingRelay, log_lines: list[str]
) -> None:
    from mediacache.testing.peers import free_port

    config = (
        reverse_route(relay.port)
        + f"[formats.realmedia.ldap]\nurl='ldap://127.0.0.1:{free_port()}'\nbase_dn='dc=x'\n"
    )
    token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    with ProxyThread(config) as p, RealClient(p.port("realmedia")) as c:
        reply = c.request("DESCRIBE", c.url("r/clip.rm"), [("Authorization", f"Basic {token}")])
        assert reply.status == 503 and "authentication server" in reply.reason
    assert not relay.connections
    assert any("not checked" in line for line in log_lines)
    assert not any(PASSWORD in line for line in log_lines)
