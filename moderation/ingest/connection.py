"""Where the broker and cache are, and the client options that reach them securely.

Every Kafka client in the project (admin, producer, consumer; kafka-python or aiokafka) takes its connection
options from :func:`kafka_client_options`, so SASL and TLS are configured once, from settings.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from moderation.errors import ConfigError
from moderation.settings import Settings


@dataclass(frozen=True)
class Endpoints:
    """Resolved addresses: from settings when given, else from the running embedded stack."""

    kafka_bootstrap: str
    redis_url: str | None


def resolve_endpoints(settings: Settings, *, need_redis: bool = False) -> Endpoints:
    """Settings win; otherwise the embedded stack's state file names the broker and cache it started."""
    from moderation.embedded.stack import read_state

    bootstrap = settings.kafka_bootstrap
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    if not bootstrap or (need_redis and not redis_url):
        state = read_state(settings)
        if state is not None:
            bootstrap = bootstrap or state.kafka_bootstrap
            redis_url = redis_url or state.redis_url
    if not bootstrap:
        raise ConfigError(
            "no Kafka broker configured: run `moderation up` to start the embedded one, "
            "or set MODERATION_KAFKA_BOOTSTRAP=host:port"
        )
    if need_redis and not redis_url:
        raise ConfigError("no Redis configured: run `moderation up`, or set MODERATION_REDIS_URL=redis://host:port/0")
    return Endpoints(kafka_bootstrap=bootstrap, redis_url=redis_url)


def kafka_client_options(settings: Settings, *, flavour: str = "kafka-python") -> dict[str, Any]:
    """Security options for kafka-python (``flavour="kafka-python"``) or aiokafka (``"aiokafka"``) clients."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol.startswith("SASL"):
        if not (settings.kafka_sasl_mechanism and settings.kafka_sasl_username and settings.kafka_sasl_password):
            raise ConfigError(
                f"MODERATION_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
                "MODERATION_KAFKA_SASL_MECHANISM, MODERATION_KAFKA_SASL_USERNAME and MODERATION_KAFKA_SASL_PASSWORD"
            )
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_security_protocol.endswith("SSL"):
        if flavour == "aiokafka":
            options["ssl_context"] = tls_context(settings)
        else:
            options["ssl_cafile"] = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
            options["ssl_certfile"] = str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None
            options["ssl_keyfile"] = str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None
            options["ssl_check_hostname"] = True
    return options


def reader_options(settings: Settings, *, from_beginning: bool = True) -> dict[str, Any]:
    """kafka-python options of a consumer that only reads (``moderation tail``, the demo, the bench, tests): in no
    group, so it commits nothing and never takes partitions from the workers, from the first offset (or only new
    records), with the connection's security options."""
    return {
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest" if from_beginning else "latest",
        **kafka_client_options(settings),
    }


def group_consumer_options(settings: Settings) -> dict[str, Any]:
    """The consumer-group options every posts consumer uses, in the names kafka-python and aiokafka share: explicit
    commits, the group's timing, and fetch sizes that always admit a message of ``max_message_bytes``."""
    return {
        "group_id": settings.consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "max_partition_fetch_bytes": max(1_048_576, settings.max_message_bytes * 2),
        "fetch_max_bytes": max(52_428_800, settings.max_message_bytes * 4),
    }


def tls_context(settings: Settings) -> ssl.SSLContext:
    """A verifying TLS context from the configured CA and optional client certificate."""
    context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None
        )
    return context
