"""RTSP authentication for the reference origin: Basic and Digest (RFC 2617), pure functions.

The origin offers both schemes in one 401 (Digest first: ffmpeg and GStreamer pick Digest when
it is offered, a minimal client can still use Basic). The Digest challenge has no ``qop``, as
live555 and Helix send it, because GStreamer computes RFC 2069 responses only; a response with
``qop=auth`` (ffmpeg's, when a server offers it) is verified too.

Nonces are stateless: a counter and an HMAC of it under a secret of the origin process, so any
connection of the same origin accepts a nonce another one issued, and nothing is stored per
client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import re
import secrets
from dataclasses import dataclass, field

from mediacache.origin import split_auth

__all__ = ["REALM", "Credentials", "digest_response", "parse_authorization"]

REALM = "mediacache"

# auth-param: token = ( token | quoted-string ), separated by commas
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogateescape")).hexdigest()


def parse_authorization(value: str) -> tuple[str, str | dict[str, str]] | None:
    """``Authorization`` -> ("basic", token) or ("digest", params); None when unreadable."""
    scheme, _, rest = value.strip().partition(" ")
    scheme = scheme.lower()
    rest = rest.strip()
    if scheme == "basic":
        return ("basic", rest) if rest else None
    if scheme != "digest":
        return None
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if m is None or m.end() == pos:
            return None
        name, raw = m.group(1).lower(), m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
        pos = m.end()
    return "digest", params


@dataclass
class Credentials:
    """The one user an origin started with ``--auth USER:PASS`` accepts."""

    user: str
    password: str
    realm: str = REALM
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(16), repr=False)
    _counter: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    @classmethod
    def from_option(cls, option: str) -> Credentials:
        """``USER:PASS`` (the password may contain ``:``); ValueError without a user."""
        return cls(*split_auth(option))

    def _sign(self, count: str) -> str:
        return hmac.new(self._secret, count.encode(), hashlib.sha256).hexdigest()[:24]

    def new_nonce(self) -> str:
        count = f"{next(self._counter):08x}"
        return count + self._sign(count)

    def nonce_ok(self, nonce: str) -> bool:
        count, sig = nonce[:8], nonce[8:]
        return len(nonce) == 32 and hmac.compare_digest(sig, self._sign(count))

    def challenges(self) -> list[str]:
        """The ``WWW-Authenticate`` values of a 401: Digest, then Basic."""
        return [
            f'Digest realm="{self.realm}", nonce="{self.new_nonce()}", algorithm=MD5',
            f'Basic realm="{self.realm}"',
        ]

    def check(self, method: str, authorization: str | None) -> bool:
        """Do the ``Authorization`` header's credentials, for a ``method`` request, match?"""
        if not authorization:
            return False
        parsed = parse_authorization(authorization)
        if parsed is None:
            return False
        scheme, data = parsed
        if scheme == "basic":
            assert isinstance(data, str)
            return self._check_basic(data)
        assert isinstance(data, dict)
        return self._check_digest(method, data)

    def _check_basic(self, token: str) -> bool:
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        user, sep, password = decoded.partition(":")
        return (
            bool(sep)
            & hmac.compare_digest(user.encode(), self.user.encode())
            & (hmac.compare_digest(password.encode(), self.password.encode()))
        )

    def _check_digest(self, method: str, p: dict[str, str]) -> bool:
        needed = ("username", "realm", "nonce", "uri", "response")
        if any(k not in p for k in needed):
            return False
        if p.get("algorithm", "MD5").upper() != "MD5":
            return False
        if p["realm"] != self.realm or not self.nonce_ok(p["nonce"]):
            return False
        if not hmac.compare_digest(p["username"].encode(), self.user.encode()):
            return False
        ha1 = _md5(f"{self.user}:{self.realm}:{self.password}")
        ha2 = _md5(f"{method}:{p['uri']}")
        qop = p.get("qop")
        if qop is None:
            expected = _md5(f"{ha1}:{p['nonce']}:{ha2}")
        elif qop == "auth" and "nc" in p and "cnonce" in p:
            expected = _md5(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{ha2}")
        else:
            return False
        return hmac.compare_digest(expected.encode(), p["response"].lower().encode())


def digest_response(user: str, password: str, realm: str, nonce: str, method: str, uri: str) -> str:
    """An RFC 2069 ``Authorization: Digest`` value (what a client sends; for tests)."""
    ha1 = _md5(f"{user}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    response = _md5(f"{ha1}:{nonce}:{ha2}")
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}"'
    )
