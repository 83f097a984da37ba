"""LdapCheck against a real OpenLDAP slapd, and against hostile bytes.

The check is sans-I/O; :func:`drive` is the few lines of blocking socket code a test needs to run
it (the proxy runs it on the core's transports instead). Every wait here is bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ldap3.protocol.rfc4511 import (
    LDAPDN,
    BindResponse,
    LDAPMessage,
    LDAPString,
    MessageID,
    PartialAttributeList,
    ProtocolOp,
    ResultCode,
    SearchResultDone,
    SearchResultEntry,
)
from ldap3.utils.asn1 import decoder, encode

from mediacache.testing.ldap import SlapdServer
from mediacache.testing.pytest_plugin import requires_peer
from mediacache_realmedia.ldap import (
    MAX_MESSAGE_SIZE,
    LdapCheck,
    LdapResult,
    LdapSettings,
    escape_filter_value,
    unbind_request,
)

ODD_UID = "a*b(c)\\d"  # every character RFC 4515 escapes
USERS = {"alice": "wonderland", "bob": "builder", ODD_UID: "odd one", "eve": "pass"}


@pytest.fixture(scope="module")
def slapd() -> Iterator[SlapdServer]:
    """alice, bob, the odd uid and eve under ou=people; a second bob under ou=staff."""
    requires_peer("slapd", "slapadd")
    with SlapdServer(USERS) as server:
        server.add_users({"bob": "other"}, ou="staff")
        yield server


@pytest.fixture(scope="module")
def closed_slapd() -> Iterator[SlapdServer]:
    """A directory that answers searches only to bound clients."""
    requires_peer("slapd", "slapadd")
    with SlapdServer({"alice": "wonderland"}, anonymous_search=False) as server:
        yield server


def settings_for(server: SlapdServer, **kw: object) -> LdapSettings:
    return LdapSettings(url=server.url, base_dn=server.base_dn, timeout=5.0, **kw)  # type: ignore[arg-type]


def drive(check: LdapCheck, settings: LdapSettings, *, chunk: int = 65536) -> LdapResult:
    """Run ``check`` over a blocking socket, feeding at most ``chunk`` bytes at a time."""
    if check.result is not None:
        return check.result
    deadline = time.monotonic() + settings.timeout
    try:
        sock = socket.create_connection(settings.address, timeout=settings.timeout)
    except OSError as exc:
        check.connection_closed(exc.strerror or type(exc).__name__)
        assert check.result is not None
        return check.result
    with sock:
        sock.sendall(check.start())
        while check.result is None:
            left = deadline - time.monotonic()
            if left <= 0:
                check.timed_out()
                break
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                check.timed_out()
                break
            if not data:
                check.connection_closed()
                break
            for i in range(0, len(data), chunk):
                out = check.receive(data[i : i + chunk])
                if out:
                    sock.sendall(out)
        sock.sendall(check.close())
    assert check.result is not None
    return check.result


def check(server: SlapdServer, user: str, password: str, **kw: object) -> LdapResult:
    s = settings_for(server, **kw)
    return drive(LdapCheck(s, user, password), s)


# ---------------------------------------------------------------------- against slapd


@pytest.mark.peers
def test_right_password(slapd: SlapdServer) -> None:
    result = check(slapd, "alice", "wonderland")
    assert result.ok, result.reason
    assert result.dn == slapd.user_dn("alice")


@pytest.mark.peers
def test_right_password_fed_byte_by_byte(slapd: SlapdServer) -> None:
    s = settings_for(slapd)
    result = drive(LdapCheck(s, "alice", "wonderland"), s, chunk=1)
    assert result.ok, result.reason


@pytest.mark.peers
def test_wrong_password(slapd: SlapdServer) -> None:
    result = check(slapd, "alice", "not-wonderland")
    assert not result.ok and not result.unavailable  # the user's fault: 401
    assert "wrong password" in result.reason
    assert "not-wonderland" not in result.reason


@pytest.mark.peers
def test_unknown_user(slapd: SlapdServer) -> None:
    result = check(slapd, "mallory", "wonderland")
    assert not result.ok
    assert "no such user" in result.reason


@pytest.mark.peers
def test_two_matches_refused(slapd: SlapdServer) -> None:
    # bob exists under ou=people and ou=staff: either password would be a guess
    for password in ("builder", "other"):
        result = check(slapd, "bob", password)
        assert not result.ok
        assert "ambiguous" in result.reason


@pytest.mark.peers
def test_three_matches_hit_the_size_limit(slapd: SlapdServer) -> None:
    result = check(slapd, "alice", "wonderland", user_filter="(|(uid={user})(uid=bob))")
    assert not result.ok
    assert "ambiguous" in result.reason


@pytest.mark.peers
def test_empty_password_refused_without_a_round_trip(slapd: SlapdServer) -> None:
    c = LdapCheck(settings_for(slapd), "alice", "")
    assert c.result is not None and not c.result.ok
    assert "empty password" in c.result.reason
    assert c.start() == b""
    assert c.receive(b"0\x03\x02\x01\x01") == b""
    assert drive(c, settings_for(slapd)) is c.result  # drive() opens no connection for it
    empty_user = LdapCheck(settings_for(slapd), "", "x")
    assert empty_user.result is not None and not empty_user.result.ok


@pytest.mark.peers
@pytest.mark.parametrize("user", ["*", "*)(uid=*", "alice)(uid=*", "al*", "*)(|(uid=*", "\\2a"])
def test_filter_injection_is_escaped(slapd: SlapdServer, user: str) -> None:
    # unescaped, "*" would match every user (ambiguous) and "al*" would find alice
    result = check(slapd, user, "wonderland")
    assert not result.ok
    assert "no such user" in result.reason


@pytest.mark.peers
def test_special_characters_match_literally(slapd: SlapdServer) -> None:
    result = check(slapd, ODD_UID, "odd one")
    assert result.ok, result.reason
    # slapd writes the backslash as the equivalent hex escape (RFC 4514 2.4)
    assert result.dn.replace("\\5C", "\\\\") == slapd.user_dn(ODD_UID)


@pytest.mark.peers
def test_service_bind_for_a_closed_directory(closed_slapd: SlapdServer) -> None:
    anonymous = check(closed_slapd, "alice", "wonderland")
    assert not anonymous.ok
    assert "search failed" in anonymous.reason
    service = {"bind_dn": closed_slapd.root_dn, "bind_password": closed_slapd.root_password}
    assert check(closed_slapd, "alice", "wonderland", **service).ok
    assert not check(closed_slapd, "alice", "bad", **service).ok
    refused = check(closed_slapd, "alice", "wonderland",
                    bind_dn=closed_slapd.root_dn, bind_password="not-it")  # fmt: skip
    assert not refused.ok
    assert "service bind" in refused.reason
    assert "not-it" not in refused.reason


@pytest.mark.peers
def test_parallel_checks(slapd: SlapdServer) -> None:
    results: dict[int, bool] = {}

    def one(i: int) -> None:
        password = "wonderland" if i % 2 == 0 else "wrong"
        results[i] = check(slapd, "alice", password).ok

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: i % 2 == 0 for i in range(8)}


# ---------------------------------------------------------------------- time and connection


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        s = LdapSettings(url=f"ldap://127.0.0.1:{port}", base_dn="dc=x", timeout=0.3)
        started = time.monotonic()
        result = drive(LdapCheck(s, "alice", "pw"), s)
    assert time.monotonic() - started < 2
    assert not result.ok
    assert "did not answer within 0.3 s" in result.reason


def test_no_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        s = LdapSettings(url=f"ldap://127.0.0.1:{port}", timeout=1.0)
        result = drive(LdapCheck(s, "alice", "pw"), s)
    assert not result.ok
    assert "connection closed during the search: Connection refused" in result.reason


# ---------------------------------------------------------------------- hostile bytes


def _message(mid: int, name: str, op: object) -> bytes:
    msg = LDAPMessage()
    msg["messageID"] = MessageID(mid)
    msg["protocolOp"] = ProtocolOp().setComponentByName(name, op)
    return bytes(encode(msg))


def _result(cls: type, code: int, message: str = "") -> object:
    op = cls()
    op["resultCode"] = ResultCode(code)
    op["matchedDN"] = LDAPDN("")
    op["diagnosticMessage"] = LDAPString(message)
    return op


def _entry(dn: str | bytes) -> object:
    op = SearchResultEntry()
    op["object"] = LDAPDN(dn)
    op["attributes"] = PartialAttributeList()
    return op


def _started(password: str = "pw") -> LdapCheck:
    c = LdapCheck(LdapSettings(base_dn="dc=x"), "alice", password)
    assert c.start()
    return c


def test_scripted_server_ok_and_message_ids() -> None:
    c = _started()
    found = _message(1, "searchResEntry", _entry("uid=alice,dc=x"))
    done = _message(1, "searchResDone", _result(SearchResultDone, 0))
    bind = c.receive(found + done)
    decoded, _ = decoder.decode(bind, asn1Spec=LDAPMessage())
    assert int(decoded["messageID"]) == 2
    assert decoded["protocolOp"].getName() == "bindRequest"
    assert c.receive(_message(2, "bindResponse", _result(BindResponse, 0))) == b""
    assert c.result == LdapResult(True, "authenticated as 'uid=alice,dc=x'", "uid=alice,dc=x")


def test_server_quoting_the_password_is_redacted() -> None:
    c = _started("s3cret!")
    c.receive(_message(1, "searchResEntry", _entry("uid=alice,dc=x")))
    c.receive(_message(1, "searchResDone", _result(SearchResultDone, 0)))
    c.receive(_message(2, "bindResponse", _result(BindResponse, 53, "no s3cret! here")))
    assert c.result is not None and not c.result.ok
    assert "s3cret!" not in c.result.reason
    assert "***" in c.result.reason


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x30\x80\x02\x01\x01", "indefinite"),
        (b"\x31\x03\x02\x01\x01", "tag 0x31"),
        (b"\x30\x85\x01\x00\x00\x00\x00", "BER length of 5"),
        (b"\x30\x83\x10\x00\x00", f"limit {MAX_MESSAGE_SIZE}"),
        (b"\x30\x03\x02\x01\x01", "undecodable"),
        (_message(7, "searchResDone", _result(SearchResultDone, 0)), "expected 1"),
        (_message(1, "bindResponse", _result(BindResponse, 0)), "unexpected bindResponse"),
        (_message(1, "searchResEntry", _entry(b"uid=\xff")), "unreadable"),
    ],
)
def test_malformed_answers(data: bytes, why: str) -> None:
    c = _started()
    assert c.receive(data) == b""
    assert c.result is not None and not c.result.ok
    assert why in c.result.reason


def test_notice_of_disconnection() -> None:
    from ldap3.protocol.rfc4511 import ExtendedResponse

    c = _started()
    c.receive(_message(0, "extendedResp", _result(ExtendedResponse, 52, "shutting down")))
    assert c.result is not None and "ended the session: 52 unavailable" in c.result.reason


def _framed(body: bytes) -> bytes:
    """A SEQUENCE header around ``body``, so random bytes reach the BER decoder."""
    return b"\x30\x82" + len(body).to_bytes(2, "big") + body


_HOSTILE = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(_framed),
    st.binary(max_size=300).map(lambda b: _framed(b"\x02\x01\x01" + b)),  # message 1
    st.binary(max_size=300).map(lambda b: _framed(b"\x02\x01\x01\x65" + b)),  # searchResDone
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_HOSTILE, max_size=6))
def test_random_bytes_never_raise(chunks: list[bytes]) -> None:
    c = _started()
    for chunk in chunks:
        assert isinstance(c.receive(chunk), bytes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 4))
def test_valid_prefix_then_garbage_never_raises(tail: bytes, cut: int) -> None:
    c = _started()
    c.receive(_message(1, "searchResEntry", _entry("uid=alice,dc=x")))
    head = _message(1, "searchResDone", _result(SearchResultDone, 0))
    c.receive(head[: len(head) - cut] + tail)
    c.receive(_message(2, "bindResponse", _result(BindResponse, 0))[cut:] + tail)
    assert c.result is None or isinstance(c.result.ok, bool)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_user_name_is_sent_literally(user: str) -> None:
    c = LdapCheck(LdapSettings(base_dn="dc=x"), user, "pw")
    request = c.start()
    if c.result is not None:  # a name the codec cannot carry is refused, not raised
        assert not c.result.ok and request == b""
        return
    decoded, _ = decoder.decode(request, asn1Spec=LDAPMessage())
    match = decoded["protocolOp"].getComponent()["filter"]["equalityMatch"]
    assert str(match["attributeDesc"]) == "uid"
    assert bytes(match["assertionValue"]) == user.encode()


# ---------------------------------------------------------------------- settings and helpers


def test_escape_filter_value() -> None:
    assert escape_filter_value("a*b(c)\\d\x00") == "a\\2ab\\28c\\29\\5cd\\00"
    assert escape_filter_value(" x y ") == "\\20x y\\20"
    assert escape_filter_value("é") == "é"


def test_settings_from_config() -> None:
    raw = {"url": "ldap://ldap.example:3890", "base_dn": "dc=e", "user_filter": "(cn={user})"}
    s = msgspec.convert(raw, LdapSettings)
    assert s.address == ("ldap.example", 3890)
    assert LdapSettings(url="ldap://h").address == ("h", 389)
    with pytest.raises(msgspec.ValidationError, match="Object contains unknown field"):
        msgspec.convert({"uri": "ldap://h"}, LdapSettings)
    for bad in (
        {"url": "ldaps://h"},
        {"url": "ldap://h:99999"},
        {"url": "ldap://h/dc=x?uid"},
        {"user_filter": "(uid=alice)"},
        {"user_filter": "uid={user}"},
        {"bind_dn": "cn=svc"},
        {"timeout": 0},
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, LdapSettings)


def test_settings_repr_hides_the_service_password() -> None:
    s = LdapSettings(bind_dn="cn=svc", bind_password="hunter2")
    assert "hunter2" not in repr(s)
    shown = repr(LdapCheck(s, "u", "hunter3"))
    assert "hunter2" not in shown
    assert "hunter3" not in shown


def test_unbind_request() -> None:
    decoded, rest = decoder.decode(unbind_request(5), asn1Spec=LDAPMessage())
    assert rest == b""
    assert int(decoded["messageID"]) == 5
    assert decoded["protocolOp"].getName() == "unbindRequest"


def test_overlong_user_refused() -> None:
    c = LdapCheck(LdapSettings(), "u" * 1000, "pw")
    assert c.result is not None and not c.result.ok
    assert c.start() == b""


def test_a_silent_or_closed_server_is_unavailable_not_a_refusal() -> None:
    """The proxy answers 503 for these (the directory's trouble), 401 only for a refusal."""
    settings = LdapSettings(url="ldap://127.0.0.1:1", base_dn="dc=example,dc=test")
    silent = LdapCheck(settings, "alice", "wonderland")
    assert silent.start()
    silent.timed_out()
    assert silent.result is not None and silent.result.unavailable and not silent.result.ok
    refused = LdapCheck(settings, "alice", "wonderland")
    refused.connection_closed("Connection refused")
    assert refused.result is not None and refused.result.unavailable
    assert "Connection refused" in refused.result.reason
