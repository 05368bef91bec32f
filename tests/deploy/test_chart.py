"""The Helm chart: every scenario lints clean, renders, and validates; its key properties hold.

Rendering and linting use Helm's own engine through helm-python-sdk (offline); built-in kinds are validated with
kubernetes-validate in strict mode, custom resources against the schemas vendored in ``crd-schemas/``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_python.chart import Chart, lint
from helm_python.errors import HelmRenderError, HelmValuesError

from moderation.decide.policy import load_policy
from moderation.settings import Settings
from tests.deploy.support import (
    CHART,
    CRD_SCHEMAS,
    DEPLOY,
    KUBE_VERSION,
    SCENARIOS,
    Manifest,
    env_of,
    kinds,
    one,
    render,
    render_files,
    render_scenario,
    scenario_values,
    worker_container,
)

pytestmark = pytest.mark.deploy

ALL = ("default", *SCENARIOS)
# Custom resources the chart can render, and the vendored schema each is checked against.
CUSTOM_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject_v1alpha1.json",
}
SECRET_ENV = {"MODERATION_KAFKA_SASL_USERNAME", "MODERATION_KAFKA_SASL_PASSWORD", "MODERATION_REDIS_URL"}


def custom_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((CRD_SCHEMAS / CUSTOM_SCHEMAS[(api_version, kind)]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_manifest(manifest: Manifest) -> None:
    """Strict schema validation; a kind without a schema is a failure, never a warning."""
    key = (manifest["apiVersion"], manifest["kind"])
    if key in CUSTOM_SCHEMAS:
        errors = sorted(custom_validator(*key).iter_errors(manifest), key=lambda e: list(e.path))
        assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]
        return
    try:
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"no schema for {key}: {exc.message}")
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {path}: {exc.message}")


def lookup(values: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        values = values[part]
    return values


def merged(name: str) -> dict[str, Any]:
    """The scenario's values over the chart defaults, as Helm coalesces them."""
    with Chart.load(CHART) as chart:
        return chart.merge_values(scenario_values(name))


# --- lint, render, validate -------------------------------------------------------------------------------------


def test_the_ci_scenarios_cover_cpu_gpu_keda_and_minimal() -> None:
    assert {"cpu", "gpu", "keda", "minimal"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", ALL)
def test_scenario_lints_with_no_findings(scenario: str) -> None:
    report = lint(CHART, scenario_values(scenario), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["total_charts_linted"] == 1
    assert report["messages"] == []
    assert report["errors"] == []


@pytest.mark.parametrize("scenario", ALL)
def test_scenario_renders_and_every_manifest_validates_strictly(scenario: str) -> None:
    manifests = render_scenario(scenario)
    assert {"Deployment", "Service"} <= kinds(manifests)
    for manifest in manifests:
        assert manifest["metadata"]["namespace"] == "trust", manifest["kind"]
        validate_manifest(manifest)


def test_notes_render_for_every_scenario() -> None:
    for scenario in ALL:
        notes = next(text for path, text in render_files(scenario_values(scenario)).items() if path.endswith(".txt"))
        assert "kubectl --namespace trust" in notes and "/readyz" in notes


def test_validation_catches_what_it_should() -> None:
    """The validators are not vacuous: an unknown field fails, a custom resource with a typo fails."""
    deployment = one(render_scenario("default"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject"}, KUBE_VERSION)
    for manifest in render_scenario("keda"):
        key = (manifest["apiVersion"], manifest["kind"])
        if key in CUSTOM_SCHEMAS:
            spec = manifest["spec"]
            spec["unknownField"] = True
            assert not custom_validator(*key).is_valid(manifest), key


def test_every_custom_resource_kind_is_rendered_by_some_scenario_and_checked() -> None:
    rendered = {(m["apiVersion"], m["kind"]) for s in ALL for m in render_scenario(s)}
    assert set(CUSTOM_SCHEMAS) <= rendered
    builtin = {"Deployment", "Service", "ServiceAccount", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"}
    assert builtin | {"HorizontalPodAutoscaler"} <= {kind for _, kind in rendered}


# --- values and their schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"bogus": 1},
        {"gpu": {"enable": True}},
        {"kafka": {"sasl": {"password": "hunter2"}}},
        {"autoscaling": {"keda": {"triger": "kafka"}}},
        {"networkPolicy": {"egress": {"internet": {"ports": [443]}}}},
    ],
)
def test_schema_rejects_unknown_keys(values: dict[str, Any]) -> None:
    with pytest.raises(HelmValuesError, match="additional properties"):
        render(values)
    report = lint(CHART, values, strict=True)
    assert report["errors"], values


def test_every_object_of_the_values_schema_is_closed() -> None:
    """Each object the schema describes field by field refuses fields it does not name."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(where or "/")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(schema, "")
    assert open_objects == []
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) | {"global"} == set(schema["properties"])


@pytest.mark.parametrize(
    "values",
    [
        {"redis": {"url": "redis://:s3cret@redis:6379/0"}},
        {"redis": {"url": "rediss://user:s3cret@redis:6380"}},
        {"worker": {"settings": {"kafka_sasl_password": "s3cret"}}},
        {"worker": {"settings": {"redis_url": "redis://:s3cret@redis"}}},
        {"worker": {"settings": {"kafka_bootstrap": "elsewhere:9092"}}},
        {"worker": {"settings": {"worker_processes": 2}}},  # worker.processes, which the replica checks see
    ],
)
def test_schema_refuses_credentials_and_managed_settings_in_values(values: dict[str, Any]) -> None:
    with pytest.raises(HelmValuesError):
        render(values)


def uncommented_keys(text: str) -> list[str]:
    """Keys without a ``# --`` comment on the lines just above them (fields of list items excepted)."""
    lines = text.splitlines()
    key = re.compile(r"^(\s*)([A-Za-z0-9_./-]+):(\s|$)")
    item = re.compile(r"^(\s*)- ")
    missing = []
    list_indent: int | None = None  # inside a list item's fields: the indentation of its dash
    for index, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if item.match(line):
            list_indent = indent
            continue
        if list_indent is not None and line.strip() and not line.strip().startswith("#"):
            if indent > list_indent:
                continue
            list_indent = None
        if not key.match(line):
            continue
        above = index - 1
        while above >= 0 and lines[above].strip().startswith("#") and not lines[above].strip().startswith("# --"):
            above -= 1
        if above < 0 or not lines[above].strip().startswith("# --"):
            missing.append(f"{index + 1}: {line.strip()}")
    return missing


def test_every_values_key_is_commented() -> None:
    assert uncommented_keys((CHART / "values.yaml").read_text()) == []
    sample = "# -- a\na:\n  # -- b\n  b: 1\n  c: 2\nlist:\n  - name: x\n    value: y\n"
    assert uncommented_keys(sample) == ["5: c: 2", "6: list:"]


def test_settings_in_values_and_env_are_real_settings() -> None:
    fields = set(Settings.model_fields)
    for scenario in ALL:
        for name in merged(scenario)["worker"]["settings"]:
            assert name in fields, (scenario, name)
        for name in env_of(worker_container(render_scenario(scenario))):
            if name.startswith("MODERATION_"):
                assert name.removeprefix("MODERATION_").lower() in fields, (scenario, name)


def test_every_setting_env_var_appears_once() -> None:
    for scenario in ALL:
        names = [e["name"] for e in worker_container(render_scenario(scenario))["env"]]
        assert len(names) == len(set(names)), (scenario, names)


# --- GPU -------------------------------------------------------------------------------------------------------


def test_gpu_scenario_requests_gpus_on_gpu_nodes() -> None:
    manifests = render_scenario("gpu")
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    container = worker_container(manifests)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert pod["nodeSelector"]["node.kubernetes.io/instance-type"] == "g5.xlarge"  # the scenario's own, kept
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["runtimeClassName"] == "nvidia"
    assert env_of(container)["MODERATION_DEVICE"]["value"] == "cuda"
    assert container["image"].endswith(":0.1.0-gpu")


@pytest.mark.parametrize("scenario", ["default", "cpu", "minimal"])
def test_cpu_scenarios_request_no_gpu(scenario: str) -> None:
    manifests = render_scenario(scenario)
    container = worker_container(manifests)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert not any("gpu" in name for name in container["resources"].get("limits", {}))
    assert "tolerations" not in pod and "runtimeClassName" not in pod
    assert env_of(container)["MODERATION_DEVICE"]["value"] == "cpu"


# --- secrets ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ALL)
def test_secrets_are_only_referenced(scenario: str) -> None:
    manifests = render_scenario(scenario)
    assert "Secret" not in kinds(manifests)
    env = env_of(worker_container(manifests))
    for name in SECRET_ENV & set(env):
        entry = env[name]
        if "valueFrom" in entry:
            assert set(entry["valueFrom"]) == {"secretKeyRef"}, entry
        else:
            assert name == "MODERATION_REDIS_URL" and "@" not in entry["value"], entry
    text = json.dumps(manifests)
    assert "hunter2" not in text and "password=" not in text.lower()


def test_gpu_scenario_takes_sasl_tls_and_redis_from_secrets() -> None:
    manifests = render_scenario("gpu")
    container = worker_container(manifests)
    env = env_of(container)
    assert env["MODERATION_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "moderation-kafka-sasl",
        "key": "password",
    }
    assert env["MODERATION_KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == "moderation-kafka-sasl"
    assert env["MODERATION_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "moderation-redis", "key": "redis-url"}
    volumes = {v["name"]: v for v in one(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-tls"]["secret"]["secretName"] == "moderation-kafka-tls"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["kafka-tls"]["readOnly"] is True
    tls_dir = mounts["kafka-tls"]["mountPath"]
    for variable, key in (("CAFILE", "ca.crt"), ("CERTFILE", "tls.crt"), ("KEYFILE", "tls.key")):
        assert env[f"MODERATION_KAFKA_SSL_{variable}"]["value"] == f"{tls_dir}/{key}"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "kafka.sasl.existingSecret"),
        ({"kafka": {"tls": {"certKey": "tls.crt"}}}, "kafka.tls.keyKey"),
        (
            {
                "kafka": {"securityProtocol": "SASL_PLAINTEXT", "sasl": {"existingSecret": "s"}},
                "autoscaling": {"enabled": True, "keda": {"enabled": True}},
            },
            "authenticationRef",
        ),
    ],
)
def test_incomplete_security_settings_fail_the_render(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(HelmRenderError, match=re.escape(reason)):
        render(values)


# --- probes, shutdown, security context -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ALL)
def test_probes_are_wired_to_the_metrics_server(scenario: str) -> None:
    manifests = render_scenario(scenario)
    container = worker_container(manifests)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert str(ports["http-metrics"]) == env_of(container)["MODERATION_METRICS_PORT"]["value"]
    service = one(manifests, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    assert container["args"] == ["worker"]


@pytest.mark.parametrize("scenario", ALL)
def test_termination_grace_is_longer_than_the_batches_in_hand(scenario: str) -> None:
    pod = one(render_scenario(scenario), "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 2 * merged(scenario)["worker"]["maxBatchSeconds"]


def test_a_grace_period_shorter_than_the_batches_in_hand_fails_the_render() -> None:
    with pytest.raises(HelmRenderError, match="terminationGracePeriodSeconds"):
        render({"terminationGracePeriodSeconds": 119, "worker": {"maxBatchSeconds": 60}})


@pytest.mark.parametrize("scenario", ALL)
def test_pods_run_non_root_on_a_read_only_root_filesystem(scenario: str) -> None:
    manifests = render_scenario(scenario)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    container = worker_container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert pod["automountServiceAccountToken"] is False
    # A Service named like the release would otherwise inject MODERATION_SERVICE_HOST and the like.
    assert pod["enableServiceLinks"] is False


# --- policy ----------------------------------------------------------------------------------------------------


def _checksum(values: dict[str, Any]) -> str:
    annotations = one(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    checksum: str = annotations["checksum/policy"]
    return checksum


def test_a_policy_change_changes_the_checksum_annotation() -> None:
    stricter = {"policy": {"document": {"version": "v2", "categories": {"spam": {"block": 0.9}}}}}
    assert _checksum({}) != _checksum(stricter)
    assert _checksum({}) == _checksum({"replicaCount": 2})  # unrelated values do not roll the pods
    assert re.fullmatch(r"[0-9a-f]{64}", _checksum({}))


def test_the_policy_configmap_is_a_valid_policy_mounted_where_the_worker_reads_it(tmp_path: Path) -> None:
    manifests = render_scenario("default")
    configmap = one(manifests, "ConfigMap")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(configmap["data"]["policy.yaml"])
    policy = load_policy(policy_file)
    assert policy.version == "chart-default-1"
    container = worker_container(manifests)
    target = Path(env_of(container)["MODERATION_POLICY_FILE"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "policy")
    # A directory mount (not subPath), so running workers see edits and hot-reload them.
    assert target.parent == Path(mount["mountPath"]) and "subPath" not in mount
    volume = next(
        v for v in one(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "policy"
    )
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]


def test_without_a_policy_configmap_the_model_policy_is_used() -> None:
    manifests = render_scenario("minimal")
    assert "ConfigMap" not in kinds(manifests)
    assert "MODERATION_POLICY_FILE" not in env_of(worker_container(manifests))


# --- scaling ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ALL)
def test_replicas_never_exceed_the_partition_count(scenario: str) -> None:
    manifests = render_scenario(scenario)
    values = merged(scenario)
    partitions = values["kafka"]["partitions"] // values["worker"]["processes"]  # pods the partitions keep busy
    deployment = one(manifests, "Deployment")
    by_kind = {m["kind"]: m for m in manifests}
    if values["autoscaling"]["enabled"]:
        assert "replicas" not in deployment["spec"]
        if "ScaledObject" in by_kind:
            spec = by_kind["ScaledObject"]["spec"]
            assert "HorizontalPodAutoscaler" not in by_kind
            assert spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions  # the CRD's CEL rule too
        else:
            spec = by_kind["HorizontalPodAutoscaler"]["spec"]
            assert spec["minReplicas"] <= spec["maxReplicas"] <= partitions
    else:
        assert deployment["spec"]["replicas"] <= partitions
        assert not {"HorizontalPodAutoscaler", "ScaledObject"} & set(by_kind)


def test_max_replicas_default_to_the_partition_count() -> None:
    hpa = one(render({"kafka": {"partitions": 6}, "autoscaling": {"enabled": True}}), "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 6


def test_worker_processes_reach_the_pod_and_divide_the_partitions() -> None:
    values = {"kafka": {"partitions": 8}, "worker": {"processes": 3}, "autoscaling": {"enabled": True}}
    manifests = render(values)
    assert env_of(worker_container(manifests))["MODERATION_WORKER_PROCESSES"]["value"] == "3"
    assert one(manifests, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 2  # 2 pods x 3 processes <= 8
    with pytest.raises(
        HelmRenderError, match=re.escape("replicaCount 3 x worker.processes 3 exceeds kafka.partitions 8")
    ):
        render({"kafka": {"partitions": 8}, "worker": {"processes": 3}, "replicaCount": 3})


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 5},
        {"autoscaling": {"enabled": True, "maxReplicas": 5}},
        {"autoscaling": {"enabled": True, "maxReplicas": 5, "keda": {"enabled": True}}},
    ],
)
def test_more_replicas_than_partitions_fail_unless_allowed(values: dict[str, Any]) -> None:
    with pytest.raises(HelmRenderError, match=re.escape("exceeds kafka.partitions 4")):
        render(values)
    assert render({**values, "allowReplicasAbovePartitions": True})


def test_keda_scales_on_the_workers_consumer_group_lag() -> None:
    manifests = render_scenario("keda")
    scaled = one(manifests, "ScaledObject")
    env = env_of(worker_container(manifests))
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert metadata["consumerGroup"] == env["MODERATION_CONSUMER_GROUP"]["value"]
    assert metadata["topic"] == env["MODERATION_TOPIC_POSTS"]["value"]
    assert metadata["bootstrapServers"] == env["MODERATION_KAFKA_BOOTSTRAP"]["value"]
    assert metadata["allowIdleConsumers"] == "false"
    assert trigger["authenticationRef"] == {"name": "moderation-kafka-keda"}
    assert scaled["spec"]["scaleTargetRef"]["name"] == one(manifests, "Deployment")["metadata"]["name"]
    assert scaled["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 2}


def test_keda_prometheus_trigger_reads_the_lag_metric() -> None:
    trigger = one(render_scenario("keda-prometheus"), "ScaledObject")["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert "moderation_consumer_lag_messages" in trigger["metadata"]["query"]


def test_hpa_is_the_fallback_without_keda() -> None:
    manifests = render_scenario("cpu")
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert "ScaledObject" not in kinds(manifests)
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["target"]["averageUtilization"] == 75
    assert metrics["Pods"]["pods"]["metric"]["name"] == "moderation_consumer_lag_messages"


# --- network policy --------------------------------------------------------------------------------------------


def _egress_ports(rule: Manifest) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["port"]) for p in rule["ports"]}


@pytest.mark.parametrize("scenario", [s for s in ALL if s in {"cpu", "gpu", "keda"}])
def test_network_policy_allows_dns_and_only_the_expected_egress(scenario: str) -> None:
    values = merged(scenario)
    policy = one(render_scenario(scenario), "NetworkPolicy")
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    egress = spec["egress"]
    for rule in egress:
        assert rule.get("ports"), f"an egress rule without ports allows everything: {rule}"
    dns = [rule for rule in egress if ("UDP", 53) in _egress_ports(rule)]
    assert len(dns) == 1 and ("TCP", 53) in _egress_ports(dns[0])
    assert dns[0]["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    allowed = {("TCP", port) for port in values["networkPolicy"]["egress"]["kafka"]["ports"]}
    redis = values["redis"]
    if redis["existingSecret"] or redis["url"]:
        allowed |= {("TCP", port) for port in values["networkPolicy"]["egress"]["redis"]["ports"]}
    if values["networkPolicy"]["egress"]["objectStore"]["enabled"]:
        allowed |= {("TCP", port) for port in values["networkPolicy"]["egress"]["objectStore"]["ports"]}
    allowed |= {("UDP", 53), ("TCP", 53)}
    opened = set().union(*(_egress_ports(rule) for rule in egress))
    assert opened == allowed
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]


def test_network_policy_without_redis_opens_no_redis_port() -> None:
    policy = one(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert all(("TCP", 6379) not in _egress_ports(rule) for rule in policy["spec"]["egress"])


# --- monitoring ------------------------------------------------------------------------------------------------


def test_chart_alert_rules_are_a_copy_of_the_deploy_rules() -> None:
    assert (CHART / "files" / "alerts.yml").read_bytes() == (DEPLOY / "prometheus" / "alerts.yml").read_bytes()


@pytest.mark.parametrize("scenario", ["gpu", "keda"])
def test_prometheus_rule_carries_the_deploy_alert_rules(scenario: str) -> None:
    rule = one(render_scenario(scenario), "PrometheusRule")
    expected = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    assert rule["spec"]["groups"] == expected


def test_service_monitor_scrapes_the_service_metrics_port() -> None:
    manifests = render_scenario("gpu")
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["trust"]}


def test_service_and_pdb_select_the_worker_pods() -> None:
    manifests = render_scenario("cpu")
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert one(manifests, "Service")["spec"]["selector"].items() <= pod_labels.items()
    assert one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
