"""Client access control: ``[access]`` CIDR allow and deny lists (deny first), and the
interface of a format's player authentication at the proxy (LDAP for Real)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import Protocol

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AccessList:
    """``allows(host)`` is True when ``host`` is in an allowed network and in no denied one."""

    def __init__(self, allow: Iterable[str], deny: Iterable[str] = ()) -> None:
        self.allow: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allow
        )
        self.deny: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in deny
        )
        self.allows = lru_cache(maxsize=4096)(self._allows)

    def _allows(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self.deny if net.version == addr.version):
            return False
        return any(addr in net for net in self.allow if net.version == addr.version)


class CredentialCheck(Protocol):
    """One check of a user's password against a directory server, sans-I/O (LDAP is one).

    The layer opens a connection to the authenticator's ``address``, sends :meth:`start`,
    feeds the server's bytes to :meth:`receive` (sending back what it returns) until
    :attr:`result` is set, then sends :meth:`close` and closes. ``result`` may be set from
    the start (an empty password is refused without asking anyone).
    """

    @property
    def result(self) -> CheckResult | None: ...

    def start(self) -> bytes: ...

    def receive(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...

    def timed_out(self) -> None: ...

    def connection_closed(self, detail: str = "") -> None: ...


class CheckResult(Protocol):
    ok: bool
    reason: str
    """Why not (never the password); logged."""
    unavailable: bool
    """No answer could be had (server down, broken, misconfigured): 503, not 401."""


class ClientAuthenticator(Protocol):
    """Authentication of players at the proxy (``[formats.realmedia.ldap]``): Basic
    credentials checked against a server. Sessions it admits may be limited to TCP."""

    realm: str
    udp_allowed: bool
    address: tuple[str, int]
    timeout: float

    def check(self, user: str, password: str) -> CredentialCheck: ...
