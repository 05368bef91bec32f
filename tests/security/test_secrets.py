"""Secrets are typed so that they never print: settings, the settings command, errors and JSON logs."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import typing

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from moderation.errors import ConfigError
from moderation.observability.logs import JsonFormatter
from moderation.settings import Settings, load_settings

KAFKA_PASSWORD = "kafka-Secret-7f3a"
REDIS_PASSWORD = "redis-Secret-91bc"
REDIS_URL = f"rediss://moderation:{REDIS_PASSWORD}@cache.internal:6380/0"
SECRET_WORDS = ("password", "secret", "token", "credential", "redis_url")


def settings_with_secrets() -> Settings:
    return load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="moderation",
        kafka_sasl_password=KAFKA_PASSWORD,
        redis_url=REDIS_URL,
    )


def assert_no_secret(text: str) -> None:
    assert KAFKA_PASSWORD not in text
    assert REDIS_PASSWORD not in text


def test_every_secret_setting_is_a_secret_type() -> None:
    for name, field in Settings.model_fields.items():
        if any(word in name for word in SECRET_WORDS):
            assert SecretStr in typing.get_args(field.annotation) or field.annotation is SecretStr, name


def test_settings_never_show_their_secrets() -> None:
    settings = settings_with_secrets()
    for text in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump(mode="json"))):
        assert_no_secret(text)
        assert "**********" in text
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == KAFKA_PASSWORD  # still usable where it is needed


def test_a_bad_setting_next_to_a_secret_does_not_echo_it() -> None:
    with pytest.raises(ConfigError) as bad:
        load_settings(kafka_sasl_password=KAFKA_PASSWORD, redis_url=REDIS_URL, kafka_security_protocol="SASL_TLS")
    assert "MODERATION_KAFKA_SECURITY_PROTOCOL" in str(bad.value)
    assert_no_secret(str(bad.value))


def test_the_settings_command_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from moderation.cli import cli

    monkeypatch.setenv("MODERATION_KAFKA_SASL_PASSWORD", KAFKA_PASSWORD)
    monkeypatch.setenv("MODERATION_REDIS_URL", REDIS_URL)
    result = CliRunner().invoke(cli, ["settings"])
    assert result.exit_code == 0, result.output
    assert "**********" in result.output
    assert_no_secret(result.output)


def test_json_logs_drop_credential_fields_and_mask_settings() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("security-test")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        settings = settings_with_secrets()
        log.info("starting with %s", settings)
        log.info("connecting", extra={"password": KAFKA_PASSWORD, "redis_password": REDIS_PASSWORD, "user": "x"})
        log.info("cache", extra={"sasl_secret": KAFKA_PASSWORD, "api_token": REDIS_PASSWORD})
        log.info("settings", extra={"settings": settings.model_dump(mode="json")})
        try:
            raise ConfigError(f"cannot reach {settings.redis_url}")
        except ConfigError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert '"user": "x"' in text
    assert_no_secret(text)


def test_a_child_process_prints_no_secret(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``moderation settings`` in a real process, secrets in its environment as a deployment sets them."""
    env = {
        "MODERATION_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
        "MODERATION_REDIS_URL": REDIS_URL,
        "MODERATION_STATE_DIR": str(tmp_path_factory.mktemp("state")),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "moderation", "settings"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert_no_secret(done.stdout + done.stderr)
