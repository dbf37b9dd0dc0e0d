"""Download safety: which URLs and addresses a download may reach, and an aiohttp resolver
that connects only to addresses the policy has checked (no DNS rebinding in between)."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import unquote

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata and credential endpoints (EC2 IMDS, ECS task credentials, EKS Pod Identity).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "169.254.170.23", "fd00:ec2::23")
)
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_NO_SUCH_HOST = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


class UnsafeUrl(Exception):
    """The download policy refuses the URL; `rule` names why and never holds the URL."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


def _unwrap(ip: IpAddress) -> IpAddress:
    """The IPv4 address an IPv6 one really reaches (mapped, NAT64 or 6to4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def refused_rule(ip: IpAddress) -> str | None:
    """The rule an address breaks, or None for a public unicast address."""
    checks = (
        (ip in METADATA_ADDRESSES, "metadata-address"),
        (ip.is_unspecified, "unspecified-address"),
        (ip.is_loopback, "loopback-address"),
        (ip.is_link_local, "link-local-address"),
        (ip.is_multicast, "multicast-address"),
        (ip.is_reserved, "reserved-address"),
        (ip.is_private or ip in _SHARED_ADDRESS_SPACE, "private-address"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "private-address"),
        (not ip.is_global, "reserved-address"),
    )
    return next((rule for broken, rule in checks if broken), None)


def _numeric_host(host: str) -> IpAddress | None:
    """The address of a host that aiohttp or socket takes as numeric (never looked up),
    legacy IPv4 forms included: 2130706433, 0x7f.1, 017700000001, 127.1."""
    try:
        return ipaddress.ip_address(unquote(host))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        pass
    if ":" in host or host.replace(".", "").isdigit():
        raise UnsafeUrl("non-canonical-address")
    return None


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """http(s) only, no credentials in the URL, and only public addresses, except the
    networks and host names allowed explicitly. A host name on the allow-list may
    resolve to private or loopback addresses, never to a metadata address (that needs
    its network on the list)."""

    allowed_networks: tuple[IpNetwork, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_setting(cls, text: str) -> UrlPolicy:
        """Parse DOWNLOAD_ALLOWED_NETWORKS: comma-separated CIDR networks, IPs and host names."""
        networks: list[IpNetwork] = []
        hosts: set[str] = set()
        for entry in filter(None, (_normal_host(part) for part in text.split(","))):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not _HOSTNAME.fullmatch(entry):
                    raise ValueError(f"not a host or network: {entry!r}") from None
                hosts.add(entry)
        return cls(tuple(networks), frozenset(hosts))

    def check_url(self, url: str | URL) -> URL:
        """Scheme, credentials and (for a numeric host) the address; names are checked
        when they are resolved (GuardedResolver)."""
        try:
            parsed = url if isinstance(url, URL) else URL(url)
        except ValueError:
            raise UnsafeUrl("invalid-url") from None
        if parsed.scheme not in ("http", "https"):
            raise UnsafeUrl("scheme-not-allowed")
        if parsed.user is not None or parsed.password is not None:
            raise UnsafeUrl("userinfo-not-allowed")
        if not parsed.raw_host:
            raise UnsafeUrl("missing-host")
        literal = _numeric_host(parsed.raw_host)
        if literal is not None:
            self.check_address(literal)
            if str(literal) != _normal_host(unquote(parsed.raw_host)):
                raise UnsafeUrl("non-canonical-address")  # aiohttp refuses to connect to it
        return parsed

    def check_redirect(self, current: URL, location: str) -> URL:
        try:
            target = current.join(URL(location))
        except ValueError:
            raise UnsafeUrl("invalid-redirect") from None
        return self.check_url(target)

    def check_address(self, address: str | IpAddress, host: str | None = None) -> None:
        """Raise UnsafeUrl unless a connection to `address` (resolved from `host`) is allowed."""
        try:
            ip = _unwrap(ipaddress.ip_address(address))
        except ValueError:
            raise UnsafeUrl("invalid-address") from None
        if any(ip.version == net.version and ip in net for net in self.allowed_networks):
            return
        rule = refused_rule(ip)
        if rule is None or (rule != "metadata-address" and self._host_allowed(host)):
            return
        raise UnsafeUrl(rule)

    def _host_allowed(self, host: str | None) -> bool:
        return host is not None and _normal_host(host) in self.allowed_hosts


class GuardedResolver(AbstractResolver):
    """Resolves with `inner`, checks every address and hands the connector only those,
    so it connects to exactly what was checked. One refused address refuses the host."""

    def __init__(self, policy: UrlPolicy, inner: AbstractResolver) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            results = await self._inner.resolve(host, port, family)
        except socket.gaierror as err:
            if err.errno in _NO_SUCH_HOST:
                raise UnsafeUrl("unresolvable-host") from None
            raise
        if not results:
            raise UnsafeUrl("unresolvable-host")
        for result in results:
            self._policy.check_address(result["host"], host=host)
        return results

    async def close(self) -> None:
        await self._inner.close()


@asynccontextmanager
async def open_guarded_session(
    policy: UrlPolicy, resolver: AbstractResolver | None = None
) -> AsyncIterator[aiohttp.ClientSession]:
    """A session whose every connection goes through GuardedResolver: no DNS cache (each
    connection is checked anew), no proxy from the environment."""
    guarded = GuardedResolver(policy, resolver or DefaultResolver())
    connector = aiohttp.TCPConnector(limit=128, resolver=guarded, use_dns_cache=False)
    try:
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            yield session
    finally:
        await guarded.close()
