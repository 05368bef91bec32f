"""deploy/README.md: its "Run on Kubernetes" and "Run with Docker Compose" commands match the chart and the stack.

Every ``helm upgrade --install`` line is rendered with the values it sets (scenario files and ``--set``), every
Secret those renders reference is created by a ``kubectl create secret`` line with the same keys, the resource
names the ``kubectl`` lines use exist in the render, and every ``docker compose`` line names existing services,
profiles and ``moderation`` commands.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import CHART, DEPLOY, REPO, Manifest, check_moderation_args, one, render

pytestmark = pytest.mark.deploy

README = DEPLOY / "README.md"
COMPOSE_FILE = "deploy/docker-compose.yml"


def section(title: str) -> str:
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"deploy/README.md has no '## {title}' section"
    return match.group(1)


def commands(text: str) -> list[list[str]]:
    """Shell commands of the fenced bash blocks, as argument lists."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                found.append(shlex.split(line, comments=True))
    return found


def nested(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cursor = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def helm_value(text: str) -> Any:
    """``--set`` type inference as Helm does it for plain scalars."""
    if text in {"true", "false"}:
        return text == "true"
    return int(text) if text.isdigit() else text


def helm_installs() -> list[tuple[str, str, dict[str, Any]]]:
    """(release, namespace, values) of each ``helm upgrade --install`` of the Kubernetes section."""
    installs = []
    for argv in commands(section("Run on Kubernetes")):
        if argv[:3] != ["helm", "upgrade", "--install"]:
            continue
        release, chart = argv[3], argv[4]
        assert (REPO / chart).resolve() == CHART, chart
        values: dict[str, Any] = {}
        namespace = "default"
        rest = argv[5:]
        while rest:
            flag = rest.pop(0)
            if flag == "--namespace":
                namespace = rest.pop(0)
            elif flag == "-f":
                path = REPO / rest.pop(0)
                assert path.is_file(), path
                values = deep_merge(values, yaml.safe_load(path.read_text()))
            elif flag == "--set":
                key, _, text = rest.pop(0).partition("=")
                values = deep_merge(values, nested(key, helm_value(text)))
            else:
                pytest.fail(f"unexpected helm flag {flag}")
        installs.append((release, namespace, values))
    return installs


def secret_commands() -> dict[str, set[str]]:
    """Secret name -> keys, from the ``kubectl create secret generic`` lines."""
    secrets: dict[str, set[str]] = {}
    for argv in commands(section("Run on Kubernetes")):
        if argv[:1] == ["kubectl"] and "secret" in argv and "generic" in argv:
            name = argv[argv.index("generic") + 1]
            keys = {arg.split("=", 2)[1] for arg in argv if arg.startswith(("--from-literal=", "--from-file="))}
            secrets[name] = keys
    return secrets


def referenced_secrets(manifests: list[Manifest]) -> dict[str, set[str]]:
    deployment = one(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    refs: dict[str, set[str]] = {}
    for entry in pod["containers"][0]["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            refs.setdefault(ref["name"], set()).add(ref["key"])
    for volume in pod["volumes"]:
        if "secret" in volume:
            mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
            files = {
                Path(e["value"]).name
                for e in pod["containers"][0]["env"]
                if str(e.get("value", "")).startswith(mount["mountPath"] + "/")
            }
            refs.setdefault(volume["secret"]["secretName"], set()).update(files)
    return refs


def test_the_readme_has_both_sections() -> None:
    assert commands(section("Run on Kubernetes"))
    assert commands(section("Run with Docker Compose"))


def test_helm_commands_render_with_the_chart() -> None:
    installs = helm_installs()
    assert len(installs) >= 3
    used_files = " ".join(" ".join(argv) for argv in commands(section("Run on Kubernetes")))
    assert "ci/gpu-values.yaml" in used_files and "ci/keda-values.yaml" in used_files
    for _release, _namespace, values in installs:
        manifests = render(values)
        assert {"Deployment", "Service"} <= {m["kind"] for m in manifests}


def test_every_secret_the_installs_reference_is_created_with_its_keys() -> None:
    created = secret_commands()
    for _release, _namespace, values in helm_installs():
        for name, keys in referenced_secrets(render(values)).items():
            assert name in created, f"the README never creates Secret {name}"
            assert keys <= created[name], (name, keys - created[name])


def test_kubectl_commands_name_what_the_chart_renders() -> None:
    from helm_python.chart import Chart

    installs = helm_installs()
    namespaces = {namespace for _, namespace, _ in installs}
    releases = {release for release, _, _ in installs}
    assert len(namespaces) == 1 and len(releases) == 1
    (release,), (namespace,) = releases, namespaces
    with Chart.load(CHART) as chart:
        rendered = chart.render(installs[0][2], name=release, namespace=namespace)
    manifests = [
        doc for path, text in rendered.items() if not path.endswith(".txt") for doc in yaml.safe_load_all(text) if doc
    ]
    names = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for argv in commands(section("Run on Kubernetes")):
        if argv[:1] != ["kubectl"] or "--namespace" not in argv:
            continue
        assert argv[argv.index("--namespace") + 1] == namespace
        for arg in argv:
            kind = {"deploy": "Deployment", "svc": "Service"}.get(arg.split("/")[0]) if "/" in arg else None
            if kind:
                assert (kind, arg.split("/")[1]) in names, arg
        if "-l" in argv:
            for pair in argv[argv.index("-l") + 1].split(","):
                key, _, value = pair.partition("=")
                assert pod_labels.get(key) == value, pair
        if "port-forward" in argv:
            assert argv[-1].split(":")[1] == str(one(manifests, "Service")["spec"]["ports"][0]["port"])


def test_compose_commands_name_existing_services_profiles_and_commands() -> None:
    stack = yaml.safe_load((REPO / COMPOSE_FILE).read_text())
    services = stack["services"]
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    checked = 0
    for argv in commands(section("Run with Docker Compose")):
        if argv[:2] != ["docker", "compose"]:
            continue
        assert argv[2:4] == ["-f", COMPOSE_FILE]
        rest = argv[4:]
        while rest and rest[0] == "--profile":
            assert rest[1] in profiles, rest[1]
            rest = rest[2:]
        verb, args = rest[0], rest[1:]
        if verb == "run":
            options = {"--rm": 0, "-v": 1}
            while args[0] in options:
                args = args[1 + options[args[0]] :]
            assert args[0] in services, args[0]
            check_moderation_args(args[1:])
            checked += 1
        elif verb in {"up", "logs"}:
            named = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] != "--scale"]
            assert set(named) <= set(services), named
            for i, arg in enumerate(args):
                if arg == "--scale":
                    service, _, count = args[i + 1].partition("=")
                    partitions = services["kafka-init"]["environment"]["PARTITIONS"]
                    assert service in services and int(count) <= int(partitions)
    assert checked >= 1
