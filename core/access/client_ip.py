"""The client's address, believing X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    """Resolves the real client IP of a request behind zero or more trusted proxies, and
    the address per-IP limits count it by."""

    def __init__(self, trusted_proxies: Iterable[str], ipv6_prefix: int = 64) -> None:
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in trusted_proxies
        )
        self.ipv6_prefix = ipv6_prefix

    def limit_key(self, ip: str) -> str:
        """What per-IP limits count `ip` as: itself, or for IPv6 its network of
        `ipv6_prefix` bits (a /64 is one subscriber's, with 2^64 addresses to rotate)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return ip
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            network = ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False)
            return str(network)
        return ip

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def resolve(self, peer: str, forwarded_for: str | None) -> str:
        """Walk X-Forwarded-For from the right while each hop is a trusted proxy.

        The first address that is not a trusted proxy is the client. A header from an
        untrusted peer is ignored entirely, so it cannot be forged to dodge a limit.
        """
        if not self.trusted or not self._is_trusted(peer):
            return peer
        client = peer
        hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # garbage in the header: stop at the last address we could check
            client = hop
            if not self._is_trusted(hop):
                break
        return client
