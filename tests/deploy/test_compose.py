"""deploy/docker-compose.yml, prometheus.yml and the Grafana provisioning, checked statically.

Public images pinned by version, the project's images built from its Dockerfiles, Kafka in KRaft mode, the topics
the worker needs created by a one-shot job, every ``moderation`` command one the CLI has, and Prometheus and Grafana
wired to the files they need.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from moderation.settings import Settings
from tests.deploy.support import DEPLOY, REPO, check_moderation_args, exec_form, parse_dockerfile

pytestmark = pytest.mark.deploy

COMPOSE_FILE = DEPLOY / "docker-compose.yml"
KAFKA_TOOLS = {"kafka-topics.sh", "kafka-broker-api-versions.sh", "kafka-configs.sh", "kafka-consumer-groups.sh"}


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def built_from(service: dict[str, Any]) -> Path | None:
    """The Dockerfile a service builds, or that built the image it names."""
    if "build" in service:
        build: dict[str, str] = service["build"]
        return (COMPOSE_FILE.parent / build["context"]).resolve() / build["dockerfile"]
    for other in services().values():
        if "build" in other and other.get("image") == service.get("image"):
            return built_from(other)
    return None


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> file or folder of this repository, for the service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            mounts[target] = (COMPOSE_FILE.parent / source).resolve()
    return mounts


def test_the_stack_has_every_part() -> None:
    assert {"kafka", "kafka-init", "redis", "worker", "prometheus", "grafana"} <= set(services())
    for name, service in services().items():
        text = json.dumps(service).lower()
        assert "zookeeper" not in text, name


def test_public_images_are_pinned_by_version() -> None:
    for name, service in services().items():
        if built_from(service) is not None:
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and re.match(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"


def test_project_images_build_from_the_dockerfiles() -> None:
    expected = {"worker": DEPLOY / "Dockerfile", "worker-gpu": DEPLOY / "Dockerfile.gpu"}
    for name, dockerfile in expected.items():
        service = services()[name]
        assert (COMPOSE_FILE.parent / service["build"]["context"]).resolve() == REPO, name
        assert built_from(service) == dockerfile and dockerfile.is_file()
        assert service["image"].startswith("moderation:")
    assert built_from(services()["tail"]) == DEPLOY / "Dockerfile"


def test_every_moderation_command_exists_in_the_cli() -> None:
    checked = []
    for name, service in services().items():
        dockerfile = built_from(service)
        if dockerfile is None:
            continue
        final = parse_dockerfile(dockerfile)
        entrypoint = service.get("entrypoint") or exec_form(final.effective(final.stages[-1], "ENTRYPOINT") or "[]")
        assert entrypoint[-1] == "moderation", name
        command = service.get("command") or exec_form(final.effective(final.stages[-1], "CMD") or "[]")
        checked.append(check_moderation_args(command))
    assert {"moderation worker", "moderation tail"} <= set(checked)


def test_kafka_runs_in_kraft_mode_with_an_internal_and_a_host_listener() -> None:
    kafka = services()["kafka"]
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # the init job creates them, with their settings
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


def test_the_init_job_creates_every_topic_the_worker_uses() -> None:
    job = services()["kafka-init"]
    assert job["image"] == services()["kafka"]["image"]
    assert job["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = " ".join(job["command"])
    for tool in re.findall(r"/opt/kafka/bin/([\w.-]+)", script):
        assert tool in KAFKA_TOOLS, tool
    defaults = Settings()
    loop = re.search(r"for topic in ([\w\s-]+?); do", script)
    assert loop is not None
    created = set(loop.group(1).split()) | set(re.findall(r"--topic ([\w-]+)", script))
    wanted = {defaults.topic_posts, defaults.topic_verdicts, defaults.topic_review, defaults.topic_dead_letter}
    assert wanted | {defaults.topic_decisions} == created
    assert f"retention.ms={defaults.dead_letter_retention_ms}" in script
    worker_env = services()["worker"]["environment"]
    assert job["environment"]["PARTITIONS"] == worker_env["MODERATION_TOPIC_PARTITIONS"]
    assert "$${PARTITIONS}" in COMPOSE_FILE.read_text()  # escaped: expanded by bash in the job, not by compose


def test_workers_reach_kafka_and_redis_by_service_name_and_wait_for_the_topics() -> None:
    for name in ("worker", "worker-gpu"):
        service = services()[name]
        env = service["environment"]
        assert env["MODERATION_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["MODERATION_REDIS_URL"] == "redis://redis:6379/0"
        for variable in env:
            assert variable.removeprefix("MODERATION_").lower() in Settings.model_fields, variable
        assert service["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
        assert service["cap_drop"] == ["ALL"]
        grace = re.fullmatch(r"(\d+)m", service["stop_grace_period"])
        assert grace is not None and int(grace.group(1)) * 60 >= 60
    assert services()["worker"]["environment"]["MODERATION_DEVICE"] == "cpu"
    gpu = services()["worker-gpu"]
    assert gpu["environment"]["MODERATION_DEVICE"] == "cuda"
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_prometheus_loads_the_alert_rules_and_scrapes_every_worker() -> None:
    prometheus = services()["prometheus"]
    mounts = bind_mounts(prometheus)
    config_arg = next(arg for arg in prometheus["command"] if arg.startswith("--config.file="))
    config_path = config_arg.split("=", 1)[1]
    assert mounts[config_path] == DEPLOY / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(mounts[config_path].read_text())
    for rule_file in config["rule_files"]:
        in_container = str(PurePosixPath(config_path).parent / rule_file)
        assert mounts[in_container] == DEPLOY / "prometheus" / "alerts.yml"
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert set(sd["names"]) == {"worker", "worker-gpu"} and set(sd["names"]) <= set(services())
    assert str(sd["port"]) == services()["worker"]["environment"]["MODERATION_METRICS_PORT"]


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard() -> None:
    grafana = services()["grafana"]
    mounts = bind_mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == DEPLOY / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090" and "9090:9090" in services()["prometheus"]["ports"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "moderation.yml").read_text())["providers"]
    dashboards = provider["options"]["path"]
    in_folder = {target: source for target, source in mounts.items() if str(PurePosixPath(target).parent) == dashboards}
    assert list(in_folder.values()) == [DEPLOY / "grafana" / "moderation.json"]
    dashboard = json.loads((DEPLOY / "grafana" / "moderation.json").read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == datasource["type"]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in in_folder


def test_every_bind_mount_exists() -> None:
    for name, service in services().items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (for {target}) is missing"
    named = set(compose()["volumes"])
    for service in services().values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in named, source
