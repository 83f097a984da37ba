"""The default client access policy: loopback and private ranges only, no open proxy."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache.access import AccessList
from mediacache.config import DEFAULT_ALLOW, Config


def default_policy() -> AccessList:
    """What the server builds from a config with no ``[access]`` section."""
    access = Config().access
    assert access.allow == DEFAULT_ALLOW and access.deny == []
    return AccessList(access.allow, access.deny)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.5.5", "172.31.255.254", "192.168.1.1",
     "fd00::1", "::ffff:127.0.0.1", "::ffff:10.1.2.3"],
)  # fmt: skip
def test_default_allows_loopback_and_private_ranges(host: str) -> None:
    assert default_policy().allows(host)


@pytest.mark.parametrize(
    "host",
    ["8.8.8.8", "2001:db8::1", "2a00:1450::1", "172.32.0.1", "172.15.255.255", "192.169.0.1",
     "100.64.0.1", "169.254.1.1", "fe80::1%eth0", "::ffff:8.8.8.8", "0.0.0.0", "proxy.example",
     ""],
)  # fmt: skip
def test_default_refuses_everything_else(host: str) -> None:
    assert not default_policy().allows(host)


def test_deny_beats_allow() -> None:
    policy = AccessList(DEFAULT_ALLOW, deny=["10.1.0.0/16", "::1/128"])
    assert not policy.allows("10.1.2.3") and not policy.allows("::ffff:10.1.2.3")
    assert not policy.allows("::1")
    assert policy.allows("10.2.0.1") and policy.allows("127.0.0.1")
    everyone = AccessList(["0.0.0.0/0", "::/0"], deny=["8.8.8.8/32"])
    assert not everyone.allows("8.8.8.8") and not everyone.allows("::ffff:8.8.8.8")
    assert everyone.allows("8.8.4.4")


@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address).filter(lambda a: a.is_global))
def test_no_public_ipv4_address_is_allowed_by_default(addr: ipaddress.IPv4Address) -> None:
    policy = default_policy()
    assert not policy.allows(str(addr))
    assert not policy.allows(f"::ffff:{addr}")  # the same client on a dual-stack socket


@given(
    st.integers(0x2000 << 112, (0x4000 << 112) - 1)
    .map(ipaddress.IPv6Address)
    .filter(lambda a: a.is_global)
)
def test_no_public_ipv6_address_is_allowed_by_default(addr: ipaddress.IPv6Address) -> None:
    assert not default_policy().allows(str(addr))
