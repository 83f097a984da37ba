"""Client access control from ``[access]``: CIDR allow and deny lists, deny first."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

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
