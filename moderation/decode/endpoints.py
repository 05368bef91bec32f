"""The rule that keeps a store on an allowed network endpoint: a pure function, so it can be tested exhaustively.

Messages never name a host: an image is inline bytes or ``{"store": name, "key": key}``, and the store's location is
deployment configuration. The stores shipped today are local folders (a volume or a mounted bucket), which need no
endpoint at all. A store that talks to the network (S3, HTTP) must vet its configured endpoint with
:func:`check_endpoint` when it is built, and then connect only to the addresses it returned (re-resolving the name
later would reopen the door to DNS rebinding).

Refused unless explicitly allowed: cloud metadata services (169.254.169.254, fd00:ec2::254, 100.100.100.200,
``metadata.google.internal``), loopback, private networks (RFC 1918, RFC 4193 unique-local, carrier-grade NAT
100.64/10), link-local (169.254/16, fe80::/10), unspecified (0.0.0.0, ::), multicast, and reserved, documentation
and benchmarking ranges. An IPv4 address wrapped in IPv6 (``::ffff:10.0.0.1``, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``) is judged by the IPv4 inside it, and the numeric spellings that C resolvers accept (``2130706433``,
``0x7f.1``, ``127.1``) are read as the IPv4 address they denote. A name is resolved with an injectable resolver
(tests need no DNS), and every address it resolves to must pass.

``allow`` lists networks (``"10.20.0.0/16"``), single addresses or host names that a deployment deliberately
reaches, such as an in-cluster MinIO. A metadata address is only allowed by naming it exactly: a broad network such
as ``169.254.0.0/16`` does not unlock it.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from moderation.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Resolves a host name to the IP addresses (as text) a connection could reach.
Resolver = Callable[[str], Sequence[str]]

#: Schemes a network store may use; anything else (file:, gopher:, ftp:, ...) is refused outright.
ALLOWED_SCHEMES = frozenset({"https", "http", "s3"})


class AddressClass(enum.StrEnum):
    """Why an address is not a public endpoint."""

    METADATA = "metadata"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link_local"
    SHARED = "shared"  # carrier-grade NAT, 100.64.0.0/10
    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    RESERVED = "reserved"


METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"})

_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")


class EndpointRefused(ConfigError):
    """A configured endpoint points somewhere a store must not reach; ``category`` says why."""

    def __init__(self, endpoint: str, category: AddressClass | str, detail: str) -> None:
        super().__init__(
            f"endpoint {endpoint!r} refused ({category}): {detail}; "
            "name the network in the store's allow-list if the deployment really means to reach it"
        )
        self.endpoint = endpoint
        self.category = category


@dataclass(frozen=True)
class Endpoint:
    """A vetted endpoint: the host as configured, the port if one was given, and the addresses to connect to."""

    host: str
    port: int | None
    addresses: tuple[IPAddress, ...]


def classify_address(address: IPAddress) -> AddressClass | None:
    """Why ``address`` is not a public endpoint, or ``None`` when it is a global unicast address."""
    inner = _embedded_ipv4(address)
    if inner is not None:
        return classify_address(inner)
    if address in METADATA_ADDRESSES:
        return AddressClass.METADATA
    if address.is_unspecified:
        return AddressClass.UNSPECIFIED
    if address.is_loopback:
        return AddressClass.LOOPBACK
    if address.is_link_local:
        return AddressClass.LINK_LOCAL
    if address.is_multicast:
        return AddressClass.MULTICAST
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return AddressClass.SHARED
    if address.is_private:
        # RFC 1918, RFC 4193 and also documentation / benchmarking ranges, which Python lists as private.
        rfc1918 = isinstance(address, ipaddress.IPv4Address) and any(
            address in ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
        )
        unique_local = isinstance(address, ipaddress.IPv6Address) and address in ipaddress.ip_network("fc00::/7")
        return AddressClass.PRIVATE if rfc1918 or unique_local else AddressClass.RESERVED
    if address.is_reserved or not address.is_global:
        return AddressClass.RESERVED
    return None


def parse_host(endpoint: str) -> tuple[str, int | None, str | None]:
    """``(host, port, scheme)`` of a URL, ``host:port``, ``[v6]:port``, bare IPv6 or bare host name.

    The host comes back lower-cased, without a trailing dot, IPv6 brackets or an IPv6 zone (``%eth0``).
    """
    text = endpoint.strip()
    if not text:
        raise EndpointRefused(endpoint, "malformed", "the endpoint is empty")
    scheme: str | None = None
    port: int | None = None
    if "://" in text:
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise EndpointRefused(endpoint, "malformed", str(exc)) from None
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
    elif text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = _port(endpoint, rest[1:]) if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(endpoint, port_text)
    else:
        host = text  # a name, an IPv4 address, or a bare IPv6 address
    host = host.split("%", 1)[0].rstrip(".").lower()
    if not host:
        raise EndpointRefused(endpoint, "malformed", "no host in the endpoint")
    return host, port, scheme


def literal_address(host: str) -> IPAddress | None:
    """The IP address ``host`` spells, including the numeric forms C resolvers accept (``2130706433``, ``0x7f.1``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))  # pure parsing: no lookup, no socket
        except OSError:
            return None
    return None


def check_endpoint(endpoint: str, *, allow: Collection[str] = (), resolver: Resolver | None = None) -> Endpoint:
    """Vet ``endpoint`` (URL or host); return it with the addresses to connect to, or raise ``EndpointRefused``.

    ``resolver`` maps a host name to IP addresses; the default asks the system resolver (the only step that is not
    pure, and it opens no connection to the endpoint).
    """
    host, port, scheme = parse_host(endpoint)
    if scheme is not None and scheme not in ALLOWED_SCHEMES:
        raise EndpointRefused(endpoint, "scheme", f"scheme {scheme!r} is not one of {sorted(ALLOWED_SCHEMES)}")
    allowed_networks, allowed_names = _parse_allow(allow)
    literal = literal_address(host)
    if literal is None and host in METADATA_NAMES and host not in allowed_names:
        raise EndpointRefused(endpoint, AddressClass.METADATA, f"{host!r} names a cloud metadata service")
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        resolved = (resolver or system_resolver)(host)
        if not resolved:
            raise EndpointRefused(endpoint, "unresolved", f"{host!r} resolves to no address")
        addresses = tuple(_address(endpoint, a) for a in resolved)
    if host in allowed_names:
        return Endpoint(host, port, addresses)
    for address in addresses:
        category = classify_address(address)
        if category is None or _allowed(address, category, allowed_networks):
            continue
        kind = category.value.replace("_", "-")
        raise EndpointRefused(endpoint, category, f"{host} -> {address} is a {kind} address")
    return Endpoint(host, port, addresses)


def system_resolver(host: str) -> list[str]:
    """Every address the system resolver gives for ``host`` (no connection is made)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return []
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


def _allowed(address: IPAddress, category: AddressClass, networks: Sequence[IPNetwork]) -> bool:
    if category is AddressClass.METADATA:
        return any(network.num_addresses == 1 and address in network for network in networks)
    inner = _embedded_ipv4(address)
    return any(address in network or (inner is not None and inner in network) for network in networks)


def _parse_allow(allow: Collection[str]) -> tuple[list[IPNetwork], set[str]]:
    networks: list[IPNetwork] = []
    names: set[str] = set()
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            names.add(entry.strip().rstrip(".").lower())
    return networks, names


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, NAT64 or 6to4 IPv6 address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _address(endpoint: str, text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        raise EndpointRefused(endpoint, "malformed", f"the resolver returned {text!r}, not an address") from None


def _port(endpoint: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise EndpointRefused(endpoint, "malformed", f"port {text!r} is not 1..65535")
    return int(text)
