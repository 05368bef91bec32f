"""No network fetches from message content, and the pure rule that keeps a store on allowed endpoints.

The rule is tested with a fake resolver (no DNS); the socket guard of this folder fails any test that opens a
connection or looks up a name it did not start, and the guard itself is tested first.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import pytest

from moderation.decode.endpoints import (
    AddressClass,
    EndpointRefused,
    check_endpoint,
    classify_address,
    literal_address,
    parse_host,
)
from moderation.decode.post import PostDecoder
from moderation.decode.stores import StoreRegistry
from moderation.settings import load_settings
from moderation.types import RawRecord, ReasonCode, Rejection
from tests.security.conftest import SocketGuard
from tests.security.hostile import encode, post, ref

REFUSED = {
    # cloud metadata
    "169.254.169.254": AddressClass.METADATA,
    "http://169.254.169.254/latest/meta-data/": AddressClass.METADATA,
    "169.254.170.2": AddressClass.METADATA,
    "[fd00:ec2::254]:80": AddressClass.METADATA,
    "100.100.100.200": AddressClass.METADATA,
    "::ffff:169.254.169.254": AddressClass.METADATA,
    "http://[::ffff:a9fe:a9fe]/": AddressClass.METADATA,
    "0xa9.0xfe.0xa9.0xfe": AddressClass.METADATA,
    "2852039166": AddressClass.METADATA,  # 169.254.169.254 as one number
    # loopback
    "127.0.0.1": AddressClass.LOOPBACK,
    "127.1": AddressClass.LOOPBACK,
    "2130706433": AddressClass.LOOPBACK,
    "0x7f000001": AddressClass.LOOPBACK,
    "017700000001": AddressClass.LOOPBACK,  # octal
    "https://127.0.0.1:9000/bucket": AddressClass.LOOPBACK,
    "::1": AddressClass.LOOPBACK,
    "[::1]:9000": AddressClass.LOOPBACK,
    "::ffff:127.0.0.1": AddressClass.LOOPBACK,
    "64:ff9b::7f00:1": AddressClass.LOOPBACK,  # NAT64
    # private
    "10.0.0.1": AddressClass.PRIVATE,
    "172.16.5.4:443": AddressClass.PRIVATE,
    "172.31.255.255": AddressClass.PRIVATE,
    "192.168.1.1": AddressClass.PRIVATE,
    "s3://192.168.0.10:9000": AddressClass.PRIVATE,
    "fd12:3456::1": AddressClass.PRIVATE,
    "2002:c0a8:0101::1": AddressClass.PRIVATE,  # 6to4 of 192.168.1.1
    "100.64.0.1": AddressClass.SHARED,
    # link-local
    "169.254.1.1": AddressClass.LINK_LOCAL,
    "fe80::1": AddressClass.LINK_LOCAL,
    "fe80::1%eth0": AddressClass.LINK_LOCAL,
    "[fe80::abcd%25eth0]:443": AddressClass.LINK_LOCAL,
    # unspecified, multicast, reserved
    "0.0.0.0": AddressClass.UNSPECIFIED,
    "::": AddressClass.UNSPECIFIED,
    "0": AddressClass.UNSPECIFIED,
    "224.0.0.1": AddressClass.MULTICAST,
    "ff02::1": AddressClass.MULTICAST,
    "0.1.2.3": AddressClass.RESERVED,
    "240.0.0.1": AddressClass.RESERVED,
    "255.255.255.255": AddressClass.RESERVED,
    "192.0.2.10": AddressClass.RESERVED,  # documentation
    "2001:db8::1": AddressClass.RESERVED,
}

PUBLIC = ["8.8.8.8", "https://1.1.1.1/", "s3://52.95.110.1:443", "[2606:4700:4700::1111]:443", "2a00:1450:4001::1"]

NAMES: dict[str, list[str]] = {
    "storage.example": ["93.184.216.34", "2606:2800:220:1::1"],
    "internal.example": ["10.1.2.3"],
    "rebind.example": ["93.184.216.34", "127.0.0.1"],  # one public and one loopback answer
    "minio.svc.cluster.local": ["10.96.0.15"],
    "imds.example": ["169.254.169.254"],
    "nothing.example": [],
}


def fake_resolver(host: str) -> Sequence[str]:
    return NAMES[host]


@pytest.mark.parametrize("endpoint", sorted(REFUSED))
def test_private_loopback_link_local_metadata_and_special_addresses_are_refused(endpoint: str) -> None:
    with pytest.raises(EndpointRefused) as refused:
        check_endpoint(endpoint, resolver=fake_resolver)
    assert refused.value.category is REFUSED[endpoint]


@pytest.mark.parametrize("endpoint", PUBLIC)
def test_public_addresses_pass_and_come_back_as_the_addresses_to_connect_to(endpoint: str) -> None:
    vetted = check_endpoint(endpoint, resolver=fake_resolver)
    assert len(vetted.addresses) == 1 and classify_address(vetted.addresses[0]) is None


def test_names_are_resolved_with_the_injected_resolver_and_every_answer_must_pass() -> None:
    vetted = check_endpoint("https://STORAGE.example.:8443/bucket", resolver=fake_resolver)
    assert (vetted.host, vetted.port) == ("storage.example", 8443)
    assert [str(a) for a in vetted.addresses] == NAMES["storage.example"]
    for host, category in [
        ("internal.example", AddressClass.PRIVATE),
        ("rebind.example", AddressClass.LOOPBACK),
        ("imds.example", AddressClass.METADATA),
    ]:
        with pytest.raises(EndpointRefused) as refused:
            check_endpoint(f"https://{host}/", resolver=fake_resolver)
        assert refused.value.category is category
    with pytest.raises(EndpointRefused, match="resolves to no address"):
        check_endpoint("nothing.example", resolver=fake_resolver)


@pytest.mark.parametrize("name", ["metadata.google.internal", "METADATA.GOOGLE.INTERNAL.", "metadata", "instance-data"])
def test_metadata_names_are_refused_before_any_lookup(name: str) -> None:
    def no_lookup(host: str) -> Sequence[str]:
        raise AssertionError(f"{host} must not be resolved")

    with pytest.raises(EndpointRefused) as refused:
        check_endpoint(f"http://{name}/computeMetadata/v1/", resolver=no_lookup)
    assert refused.value.category is AddressClass.METADATA


def test_an_explicit_allow_list_opens_exactly_what_it_names() -> None:
    assert check_endpoint("http://10.96.0.15:9000", allow=["10.96.0.0/12"]).port == 9000
    assert check_endpoint("minio.svc.cluster.local", allow=["10.96.0.0/12"], resolver=fake_resolver).addresses
    assert check_endpoint("internal.example", allow=["internal.example"], resolver=fake_resolver).addresses
    assert check_endpoint("[::1]:9000", allow=["::1"]).addresses == (ipaddress.ip_address("::1"),)
    with pytest.raises(EndpointRefused):
        check_endpoint("10.0.0.1", allow=["10.96.0.0/12"])  # outside the allowed network
    with pytest.raises(EndpointRefused) as refused:
        check_endpoint("169.254.169.254", allow=["169.254.0.0/16"])  # a broad network never unlocks metadata
    assert refused.value.category is AddressClass.METADATA
    assert check_endpoint("169.254.169.254", allow=["169.254.169.254/32"]).addresses  # naming it exactly does


@pytest.mark.parametrize(
    "endpoint",
    ["file:///etc/passwd", "gopher://8.8.8.8:70/", "ftp://1.1.1.1/", "", "http://", "8.8.8.8:99999", "8.8.8.8:x"],
)
def test_other_schemes_and_malformed_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(EndpointRefused):
        check_endpoint(endpoint, resolver=fake_resolver)


def test_parsing_and_numeric_spellings() -> None:
    assert parse_host("https://user:pw@Example.COM.:443/x") == ("example.com", 443, "https")
    assert parse_host("[fe80::1%eth0]:80") == ("fe80::1", 80, None)
    assert parse_host("host:9000") == ("host", 9000, None)
    assert str(literal_address("0x7f.1")) == "127.0.0.1"
    assert str(literal_address("10.1")) == "10.0.0.1"
    assert literal_address("1.2.3.4.5") is None
    assert literal_address("example.com") is None
    assert literal_address("999.1.1.1") is None


def test_the_default_resolver_is_the_only_impure_step_and_the_guard_sees_it(socket_guard: SocketGuard) -> None:
    with pytest.raises(EndpointRefused, match="resolves to no address"):
        check_endpoint("storage.invalid")  # the guard refuses the lookup: no DNS from tests
    assert socket_guard.violations == ["name lookup of 'storage.invalid'"]
    socket_guard.violations.clear()


# --- no network from message content ------------------------------------------------------------------------
def test_messages_can_only_reference_configured_stores_never_urls(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("store")
    settings = load_settings(stores={"media": str(root)})
    decoder = PostDecoder(settings, StoreRegistry.from_folders(settings.stores))
    urls = [
        "http://169.254.169.254/latest/meta-data/iam/",
        "https://example.com/a.png",
        "file:///etc/passwd",
        "s3://bucket/key.png",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "data:image/png;base64,AAAA",
        "//example.com/a.png",
        "\\\\server\\share\\a.png",
    ]
    reasons: dict[ReasonCode, int] = {}
    for url in urls:
        documents = [
            post("u", images=[ref(url)]),
            post("u", images=[{"url": url}]),
            post("u", images=[{"inline": {"data": url, "content_type": "image/png"}}]),
            post("u", images=[ref("a.png", store=url)]),
        ]
        for document in documents:
            outcome = decoder.decode(RawRecord("posts", 0, 0, None, encode(document), 0))
            assert isinstance(outcome, Rejection), (url, document)
            reasons[outcome.reason] = reasons.get(outcome.reason, 0) + 1
    assert set(reasons) <= {ReasonCode.SCHEMA_INVALID, ReasonCode.STORE_KEY_ESCAPES, ReasonCode.INVALID_BASE64}


def test_the_socket_guard_refuses_and_records_what_a_test_did_not_start(socket_guard: SocketGuard) -> None:
    for address in [("169.254.169.254", 80), ("10.0.0.1", 443), ("127.0.0.1", 1)]:
        with pytest.raises(PermissionError):
            socket.create_connection(address, timeout=0.2)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("metadata.google.internal", 80)
    assert len(socket_guard.violations) == 4
    socket_guard.violations.clear()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket_guard.allow(server.getsockname()[1])
        with socket.create_connection(server.getsockname(), timeout=2):
            pass
    assert socket_guard.violations == []
