"""Shared helpers of the deployment tests: paths, chart rendering, Dockerfile parsing and the CLI's commands."""

from __future__ import annotations

import functools
import json
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = REPO / "helm" / "moderation"
CRD_SCHEMAS = Path(__file__).resolve().parent / "crd-schemas"
KUBE_VERSION = "1.33.0"
RELEASE, NAMESPACE = "mod", "trust"
SCENARIOS = tuple(sorted(path.name.removesuffix("-values.yaml") for path in (CHART / "ci").glob("*-values.yaml")))

Manifest = dict[str, Any]


def scenario_values(name: str) -> dict[str, Any]:
    """The values of ``ci/<name>-values.yaml``; ``default`` is the chart's own values.yaml alone."""
    if name == "default":
        return {}
    loaded = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    assert isinstance(loaded, dict), name
    return loaded


def render_files(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text, rendered offline by Helm's own engine (helm-python-sdk)."""
    from helm_python.chart import Chart

    with Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def render(values: dict[str, Any]) -> list[Manifest]:
    """Every Kubernetes object the chart renders for ``values`` (NOTES.txt left out)."""
    documents: list[Manifest] = []
    for path, text in sorted(render_files(values).items()):
        if path.endswith(".txt"):
            continue
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return documents


@functools.cache
def _rendered_scenario(name: str) -> str:
    return json.dumps(render(scenario_values(name)))


def render_scenario(name: str) -> list[Manifest]:
    """The scenario's objects, rendered once per test session (a fresh copy each call)."""
    loaded: list[Manifest] = json.loads(_rendered_scenario(name))
    return loaded


def one(manifests: Sequence[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kinds(manifests: Sequence[Manifest]) -> set[str]:
    return {m["kind"] for m in manifests}


def worker_container(manifests: Sequence[Manifest]) -> Manifest:
    containers = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["worker"]
    container: Manifest = containers[0]
    return container


def env_of(container: Manifest) -> dict[str, Manifest]:
    """Environment entries by name (each the whole EnvVar: value or valueFrom)."""
    return {entry["name"]: entry for entry in container.get("env", [])}


# --- Dockerfiles -----------------------------------------------------------------------------------------------


@dataclass
class Stage:
    """One ``FROM`` stage of a Dockerfile: its base, name and instructions (keyword, argument text)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [text for key, text in self.instructions if key == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)

    def lineage(self, stage: Stage) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        chain = [stage]
        names = {s.name: s for s in self.stages}
        while chain[-1].base in names:
            chain.append(names[chain[-1].base])
        return chain

    def effective(self, stage: Stage, keyword: str) -> str | None:
        """The value of an inherited setting (USER, ENTRYPOINT, CMD, HEALTHCHECK, WORKDIR) in ``stage``."""
        for ancestor in self.lineage(stage):
            value = ancestor.last(keyword)
            if value is not None:
                return value
        return None

    def env(self, stage: Stage) -> dict[str, str]:
        merged: dict[str, str] = {}
        for ancestor in reversed(self.lineage(stage)):
            for text in ancestor.all("ENV"):
                merged.update(parse_key_values(text))
        return merged

    def labels(self, stage: Stage) -> dict[str, str]:
        merged: dict[str, str] = {}
        for ancestor in reversed(self.lineage(stage)):
            for text in ancestor.all("LABEL"):
                merged.update(parse_key_values(text))
        return merged


def logical_lines(text: str) -> Iterator[str]:
    """Instructions with their line continuations joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def parse_key_values(text: str) -> dict[str, str]:
    """``KEY=value KEY2="v 2"`` as in ENV and LABEL."""
    pairs = {}
    for token in shlex.split(text):
        key, sep, value = token.partition("=")
        assert sep, f"expected KEY=value, got {token!r}"
        pairs[key] = value
    return pairs


def parse_dockerfile(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = words[0]
            for name, value in args.items():
                base = base.replace("${" + name + "}", value)
            stage_name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=stage_name))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: only ARG may come before the first FROM, got {keyword}"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(path=path, args=args, stages=stages)


def exec_form(text: str) -> list[str]:
    """A JSON (exec form) instruction argument such as ENTRYPOINT ["tini", "--", "moderation"]."""
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


# --- the command line ------------------------------------------------------------------------------------------


@functools.cache
def moderation_cli() -> click.Group:
    """The ``moderation`` group with every stage's subcommands registered, as the console script builds it."""
    import moderation.cli as cli_module

    cli_module._register_stage_commands()  # idempotent: add_command replaces a command of the same name
    return cli_module.cli


def check_moderation_args(args: Sequence[str]) -> str:
    """Parse ``moderation <args>`` as click would, without running it; returns the command path.

    Fails when a subcommand does not exist, or its options or arguments do not parse. A path that must exist is
    accepted unchecked: it names a file inside a container, not here.
    """
    group = moderation_cli()
    words = list(args)
    assert words, "no subcommand"
    path = ["moderation"]
    command: click.Command = group
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        name = words.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`{' '.join(path)} {name}` is not a command (have: {sorted(command.commands)})"
        path.append(name)
        command = sub
    try:
        with command.make_context(" ".join(path), words):
            pass
    except click.exceptions.Exit as exc:  # --help or --version: parsed, and would exit 0
        assert exc.exit_code == 0, words
    except click.BadParameter as exc:
        path_type = exc.param is not None and isinstance(exc.param.type, click.Path)
        if isinstance(exc, click.MissingParameter) or not path_type:
            raise
    return " ".join(path)
