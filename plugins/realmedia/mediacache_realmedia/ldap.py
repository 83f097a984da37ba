"""LDAP v3 authentication at the proxy, sans-I/O: bytes in, bytes out, one result.

An :class:`LdapCheck` verifies one (user, password) pair the way every LDAP-backed service
does it: find the user's entry with a search (after an optional bind as a service account),
then bind as that entry with the password. The check never touches a socket: the caller opens
a TCP connection to :attr:`LdapSettings.address`, sends :meth:`LdapCheck.start`'s bytes, feeds
what the server sends to :meth:`LdapCheck.receive` and sends what it returns, until
:attr:`LdapCheck.result` is set; :attr:`LdapSettings.timeout` is the caller's timer.

ldap3 is used only as a codec (its RFC 4511 pyasn1 declarations, request builders and BER
encoder); framing is ours, over a bounded buffer, and every codec exception on server bytes
becomes a failed result: a broken or hostile LDAP server must not take the proxy down.

Passwords: an empty one is refused before any request (RFC 4513 5.1.2: a simple bind with a
name and no password is an *unauthenticated* bind, which servers answer with success), and no
reason string ever contains the password.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from ldap3 import SIMPLE
from ldap3.core.results import RESULT_CODES
from ldap3.operation.bind import bind_operation
from ldap3.operation.search import search_operation
from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp, UnbindRequest
from ldap3.utils.asn1 import decoder, encode
from msgspec import Meta, Struct

__all__ = [
    "MAX_MESSAGE_SIZE",
    "LdapAuthenticator",
    "LdapCheck",
    "LdapResult",
    "LdapSettings",
    "escape_filter_value",
    "unbind_request",
]

#: Largest LDAP message accepted from the server. The search asks for no attributes ("1.1"),
#: so a real answer is a few hundred bytes; anything bigger is abuse or a broken server.
MAX_MESSAGE_SIZE = 64 * 1024
#: Longest user name sent to the server; longer ones are refused without a request.
MAX_USER_LENGTH = 256
#: Longest piece of a server's diagnostic message quoted in a reason.
_MAX_DIAGNOSTIC = 160

_RESULT_SUCCESS = 0
_RESULT_SIZE_LIMIT = 4
_RESULT_INVALID_CREDENTIALS = 49


class LdapSettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and how to look users up; ``[formats.realmedia.ldap]`` in the config file."""

    url: str = "ldap://127.0.0.1:389"
    """``ldap://HOST[:PORT]`` of the directory server (port 389 when omitted). Plain LDAP only:
    run the proxy next to the directory or behind a TLS tunnel."""
    base_dn: str = ""
    """Where the user search starts (whole subtree), e.g. ``ou=people,dc=example,dc=com``."""
    user_filter: str = "(uid={user})"
    """Search filter naming one user; ``{user}`` is replaced by the user name, escaped per
    RFC 4515 so a name cannot change the filter."""
    bind_dn: str = ""
    """Service account the search runs as; empty: the search is anonymous."""
    bind_password: str = ""
    """Password of ``bind_dn`` (required with it). Never shown by ``repr``."""
    timeout: Annotated[float, Meta(gt=0)] = 5.0
    """Seconds the whole check may take, connection included (the caller's timer)."""

    def __post_init__(self) -> None:
        _parse_url(self.url)
        if "{user}" not in self.user_filter:
            raise ValueError("user_filter must contain {user}")
        try:  # the codec's own parser: a filter it cannot compile would fail every check
            _search_request(1, self, "x")
        except Exception as exc:
            raise ValueError(f"user_filter {self.user_filter!r} is not an LDAP filter") from exc
        if self.bind_dn and not self.bind_password:
            raise ValueError("bind_dn needs bind_password (an empty one binds unauthenticated)")

    def __repr__(self) -> str:
        hidden = "'***'" if self.bind_password else "''"
        return (
            f"LdapSettings(url={self.url!r}, base_dn={self.base_dn!r}, "
            f"user_filter={self.user_filter!r}, bind_dn={self.bind_dn!r}, "
            f"bind_password={hidden}, timeout={self.timeout!r})"
        )

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to connect to, from :attr:`url`."""
        return _parse_url(self.url)


def _parse_url(url: str) -> tuple[str, int]:
    """``ldap://HOST[:PORT]`` -> (host, port); ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "ldap" or not parts.hostname:
        raise ValueError(f"url must be ldap://HOST[:PORT], not {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"url must be ldap://HOST[:PORT] with nothing after it: {url!r}")
    return parts.hostname, parts.port or 389  # .port raises ValueError when out of range


@dataclass(frozen=True, slots=True)
class LdapResult:
    """How a check ended. ``reason`` is for logs and never holds the password."""

    ok: bool
    reason: str
    dn: str = ""
    """The user's entry, when it was found."""
    unavailable: bool = False
    """The directory could not give an answer (unreachable, silent, broken, misconfigured):
    not the user's fault, so the proxy answers 503, not 401."""


class _Step(enum.Enum):
    SERVICE_BIND = "service bind"
    SEARCH = "search"
    USER_BIND = "user bind"
    DONE = "done"


def escape_filter_value(value: str) -> str:
    """RFC 4515 escaping of an assertion value: ``* ( ) \\ NUL`` and edge white space as ``\\XX``.

    Leading and trailing white space is escaped too (as its UTF-8 bytes) because filter parsers,
    ldap3's among them, strip it.
    """
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        if ch in "*()\\\x00" or (ch.isspace() and i in (0, last)):
            out.append("".join(f"\\{b:02x}" for b in ch.encode()))
        else:
            out.append(ch)
    return "".join(out)


def _message(message_id: int, op_name: str, op: Any) -> bytes:
    msg = LDAPMessage()
    msg["messageID"] = MessageID(message_id)
    msg["protocolOp"] = ProtocolOp().setComponentByName(op_name, op)
    return bytes(encode(msg))


def _search_request(message_id: int, settings: LdapSettings, user: str) -> bytes:
    search_filter = settings.user_filter.replace("{user}", escape_filter_value(user))
    time_limit = max(1, math.ceil(settings.timeout))
    request = search_operation(
        settings.base_dn, search_filter, 2, 0, ["1.1"], 2, time_limit, True, False, True
    )  # subtree, never deref aliases, no attributes, size limit 2 (one match is required)
    return _message(message_id, "searchRequest", request)


def _bind_request(message_id: int, dn: str, password: str) -> bytes:
    return _message(message_id, "bindRequest", bind_operation(3, SIMPLE, dn, password))


def unbind_request(message_id: int) -> bytes:
    """An UnbindRequest: the polite way to close an LDAP connection (RFC 4511 4.3)."""
    return _message(message_id, "unbindRequest", UnbindRequest(""))


def _frame_size(buf: bytes | bytearray) -> int | None:
    """Length of the BER message at the start of ``buf``; None until enough bytes are in.

    ValueError for what LDAP forbids (RFC 4511 5.1: definite lengths only) or we do not take.
    """
    if not buf:
        return None
    if buf[0] != 0x30:
        raise ValueError(f"expected an LDAPMessage SEQUENCE, got tag 0x{buf[0]:02x}")
    if len(buf) < 2:
        return None
    first = buf[1]
    if first < 0x80:
        size, header = first, 2
    elif first == 0x80:
        raise ValueError("indefinite BER length")
    else:
        count = first & 0x7F
        if count > 4:
            raise ValueError(f"BER length of {count} bytes")
        if len(buf) < 2 + count:
            return None
        size, header = int.from_bytes(buf[2 : 2 + count], "big"), 2 + count
    if header + size > MAX_MESSAGE_SIZE:
        raise ValueError(f"message of {header + size} bytes (limit {MAX_MESSAGE_SIZE})")
    return header + size


def _text(value: Any, limit: int = _MAX_DIAGNOSTIC) -> str:
    """Server-supplied text made safe for one log line."""
    text = bytes(value).decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[:limit] + "..."


class LdapCheck:
    """One verification of (user, password) against one LDAP server connection.

    ``start()`` gives the first request; ``receive(data)`` takes server bytes and gives the next
    request (or ``b""``); ``result`` is set once the check is decided, and from construction on
    when no server is needed (empty password or user): then open no connection at all.
    """

    def __init__(self, settings: LdapSettings, user: str, password: str) -> None:
        self.settings = settings
        self._user = user
        self._password = password
        self._buf = bytearray()
        self._next_id = 1
        self._pending_id = 0
        self._entries: list[str] = []
        self._result: LdapResult | None = None
        self._started = False
        self._step = _Step.SERVICE_BIND if settings.bind_dn else _Step.SEARCH
        if not password:
            self._finish(False, "empty password refused (it would bind unauthenticated)")
        elif not user:
            self._finish(False, "empty user name refused")
        elif len(user) > MAX_USER_LENGTH:
            self._finish(False, f"user name longer than {MAX_USER_LENGTH} characters refused")

    def __repr__(self) -> str:
        return f"<LdapCheck user={self._user!r} step={self._step.value} result={self._result}>"

    @property
    def result(self) -> LdapResult | None:
        """None while the check runs; then how it ended."""
        return self._result

    @property
    def user(self) -> str:
        """The user name being checked (for the caller's log line)."""
        return self._user

    def start(self) -> bytes:
        """The first request, once the connection to the server is open (``b""`` if decided)."""
        if self._result is not None or self._started:
            return b""
        self._started = True
        if self._step is _Step.SERVICE_BIND:
            return self._request(
                lambda mid: _bind_request(mid, self.settings.bind_dn, self.settings.bind_password),
                "service bind request",
            )
        return self._request(lambda mid: _search_request(mid, self.settings, self._user), "search")

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the server; returns bytes to send to it (often ``b""``). Never raises."""
        if self._result is not None or not data:
            return b""
        self._buf += data
        out = bytearray()
        while self._result is None:
            try:
                size = _frame_size(self._buf)
            except ValueError as exc:
                return self._fail_protocol(str(exc))
            if size is None or len(self._buf) < size:  # size <= MAX_MESSAGE_SIZE: bounded
                break
            frame = bytes(self._buf[:size])
            del self._buf[:size]
            out += self._on_frame(frame)
        return bytes(out) if self._result is None else b""

    def close(self) -> bytes:
        """An UnbindRequest to send before closing the connection."""
        return unbind_request(self._take_id())

    def timed_out(self) -> None:
        """The caller's timer (``settings.timeout``) fired before a result."""
        self._finish(
            False, f"LDAP server did not answer within {self.settings.timeout:g} s", down=True
        )

    def connection_closed(self, detail: str = "") -> None:
        """The connection to the server closed, or could not be opened, before a result.

        ``detail`` (e.g. the connect error) is appended to the reason.
        """
        reason = f"LDAP connection closed during the {self._step.value}"
        self._finish(False, f"{reason}: {detail}" if detail else reason, down=True)

    # ------------------------------------------------------------------ internals

    def _take_id(self) -> int:
        mid = self._next_id
        self._next_id += 1
        return mid

    def _request(self, build: Callable[[int], bytes], what: str) -> bytes:
        """Encode a request; codec errors (a DN or password it rejects) end the check."""
        mid = self._take_id()
        try:
            data = build(mid)
        except Exception as exc:  # ldap3 raises many types (LDAPSASLPrepError, ...)
            self._finish(False, f"could not encode the {what}: {type(exc).__name__}")
            return b""
        self._pending_id = mid
        return data

    def _finish(self, ok: bool, reason: str, dn: str = "", *, down: bool = False) -> None:
        if self._result is not None:
            return
        if self._password and self._password in reason:  # a server quoting it back
            reason = reason.replace(self._password, "***")
        self._result = LdapResult(ok, reason, dn, unavailable=down)
        self._step = _Step.DONE
        self._buf.clear()

    def _fail_protocol(self, why: str) -> bytes:
        self._finish(
            False, f"malformed LDAP answer during the {self._step.value}: {why}", down=True
        )
        return b""

    def _on_frame(self, frame: bytes) -> bytes:
        try:
            msg, rest = decoder.decode(frame, asn1Spec=LDAPMessage())
            if rest:
                raise ValueError("trailing bytes inside the message")
            mid = int(msg["messageID"])
            op = msg["protocolOp"]
            name = op.getName()
            body = op.getComponent()
        except Exception as exc:  # pyasn1 and ldap3 raise assorted types on hostile input
            return self._fail_protocol(f"undecodable message ({type(exc).__name__})")
        try:
            return self._dispatch(mid, name, body)
        except Exception as exc:  # a well-formed message with values we cannot read
            return self._fail_protocol(f"unreadable {name} ({type(exc).__name__})")

    def _dispatch(self, mid: int, name: str, body: Any) -> bytes:
        if mid == 0 and name == "extendedResp":  # Notice of Disconnection (RFC 4511 4.4.1)
            self._finish(
                False, f"LDAP server ended the session: {self._describe(body)}", down=True
            )
            return b""
        if mid != self._pending_id:
            return self._fail_protocol(f"answer to message {mid}, expected {self._pending_id}")
        step = self._step
        if step in (_Step.SERVICE_BIND, _Step.USER_BIND) and name == "bindResponse":
            return self._on_bind(step, body)
        if step is _Step.SEARCH:
            if name == "searchResEntry":
                self._entries.append(bytes(body["object"]).decode("utf-8"))
                return b""
            if name == "searchResRef":  # a referral to another server: not followed
                return b""
            if name == "searchResDone":
                return self._on_search_done(body)
        return self._fail_protocol(f"unexpected {name}")

    def _on_bind(self, step: _Step, body: Any) -> bytes:
        code = int(body["resultCode"])
        if step is _Step.SERVICE_BIND:
            if code != _RESULT_SUCCESS:
                self._finish(False, f"service bind as {self.settings.bind_dn!r} failed: "
                             f"{self._describe(body)}", down=True)  # fmt: skip
                return b""
            self._step = _Step.SEARCH
            return self._request(lambda m: _search_request(m, self.settings, self._user), "search")
        dn = self._entries[0]
        if code == _RESULT_SUCCESS:
            self._finish(True, f"authenticated as {dn!r}", dn)
        elif code == _RESULT_INVALID_CREDENTIALS:
            self._finish(False, f"wrong password for {dn!r}", dn)
        else:
            self._finish(False, f"bind as {dn!r} failed: {self._describe(body)}", dn)
        return b""

    def _on_search_done(self, body: Any) -> bytes:
        code = int(body["resultCode"])
        found = len(self._entries)
        if found > 1 or code == _RESULT_SIZE_LIMIT:
            self._finish(False, f"user {self._user!r} is ambiguous: {found}+ entries match")
        elif code != _RESULT_SUCCESS:
            self._finish(False, f"user search failed: {self._describe(body)}", down=True)
        elif found == 0:
            self._finish(False, f"no such user {self._user!r}")
        else:
            self._step = _Step.USER_BIND
            dn = self._entries[0]
            if not dn:
                self._finish(False, f"user {self._user!r} matched the root DSE")
                return b""
            return self._request(lambda m: _bind_request(m, dn, self._password), "bind request")
        return b""

    @staticmethod
    def _describe(body: Any) -> str:
        """``code name: diagnostic`` of an LDAPResult."""
        code = int(body["resultCode"])
        text = f"{code} {RESULT_CODES.get(code, 'unknown')}"
        message = _text(body["diagnosticMessage"])
        return f"{text}: {message}" if message else text


class LdapAuthenticator:
    """The core's ``ClientAuthenticator`` for ``[formats.realmedia.ldap]``.

    LDAP-authenticated sessions are served over TCP only (``udp_allowed``): the credentials
    vouch for the control connection, and UDP data could be aimed at any address by whoever
    holds that connection's session (a RealProxy rule the deployment guide keeps)."""

    realm = "mediacache"
    udp_allowed = False

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        self.address = settings.address
        self.timeout = settings.timeout

    def check(self, user: str, password: str) -> LdapCheck:
        return LdapCheck(self.settings, user, password)
