"""Which peers may assert identity with bare headers (KAIREON_TRUSTED_PROXIES).

Like nginx's `set_real_ip_from`: trusted identity headers count only when the
connection itself comes from a configured proxy address. Stdlib only, so the
standalone REST adapter can use it too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_TRUSTED_PROXIES = "127.0.0.0/8,::1"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxiesError(ValueError):
    """KAIREON_TRUSTED_PROXIES is not a comma-separated list of CIDRs."""


@dataclass(frozen=True)
class TrustedProxies:
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, text: str | None) -> TrustedProxies:
        """'10.0.0.0/8, ::1' -> networks; None or blank -> the loopback default."""
        raw = DEFAULT_TRUSTED_PROXIES if text is None or not text.strip() else text
        networks: list[Network] = []
        for part in raw.split(","):
            item = part.strip()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=True))
            except ValueError:
                raise TrustedProxiesError(
                    f"KAIREON_TRUSTED_PROXIES: {item!r} is not a CIDR (e.g. 10.0.0.0/8 or ::1)"
                ) from None
        return cls(tuple(networks))

    @classmethod
    def of(cls, cidrs: Iterable[str]) -> TrustedProxies:
        return cls.parse(",".join(cidrs))

    def allows_host(self, host: str | None) -> bool:
        """True if `host` (an IP address text, maybe with a %zone) is in a trusted network."""
        if not host:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def allows_grpc_peer(self, peer: str | None) -> bool:
        """True for a gRPC peer ("ipv4:1.2.3.4:5", "ipv6:[::1]:5") in a trusted network.

        "unix:" peers are trusted: the server listens on a Unix socket only for its
        in-process REST adapter, in a private directory, and that adapter applies
        this same check to its HTTP peers before forwarding identity headers.
        """
        if not peer:
            return False
        scheme, _, rest = peer.partition(":")
        if scheme == "unix":
            return True
        if scheme == "ipv4":
            return self.allows_host(rest.rpartition(":")[0])
        if scheme == "ipv6":
            host = rest.rpartition(":")[0]
            # grpc-core percent-encodes the brackets ("ipv6:%5B::1%5D:5000"), or a client
            # of "localhost" that resolves to ::1 would be refused. Decode those two
            # escapes only, once, and only here: a general unquote of the whole peer
            # would also turn "%75nix:" into "unix:" and "%255B" into a bracket.
            if host[:3].upper() == "%5B" and host[-3:].upper() == "%5D":
                host = f"[{host[3:-3]}]"
            if host.startswith("[") and host.endswith("]"):
                return self.allows_host(host[1:-1])
        return False
