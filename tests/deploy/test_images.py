"""The Dockerfiles and .dockerignore, checked statically (no Docker engine runs here).

Both images: multi-stage, non-root, read-only-root friendly (writes only under /tmp), the model built in at build
time (or mounted), nothing fetched from a hub at start, a healthcheck on /healthz, OCI labels, and commands that
exist in the CLI.
"""

from __future__ import annotations

import fnmatch
import re
import shlex

import pytest
import yaml

from moderation.settings import Settings
from tests.deploy.support import (
    CHART,
    DEPLOY,
    REPO,
    Dockerfile,
    check_moderation_args,
    exec_form,
    parse_dockerfile,
)

pytestmark = pytest.mark.deploy

DOCKERFILES = {"cpu": DEPLOY / "Dockerfile", "gpu": DEPLOY / "Dockerfile.gpu"}
OCI_LABELS = {"title", "description", "version", "revision", "created", "source", "licenses", "base.name"}


@pytest.fixture(params=sorted(DOCKERFILES), ids=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return parse_dockerfile(DOCKERFILES[request.param])


def dockerignore_allows(relative: str) -> bool:
    """Whether the build context keeps ``relative`` (last matching .dockerignore pattern wins, ``!`` re-includes)."""
    keep = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = [pattern, pattern.removeprefix("**/")]
        if any(fnmatch.fnmatchcase(prefix, c) for prefix in prefixes for c in candidates) or (
            pattern.startswith("**/") and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        ):
            keep = negate
    return keep


def moderation_invocations(run: str) -> list[list[str]]:
    """The ``moderation ...`` commands inside a RUN line (split on && and ;, redirections dropped)."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|"}:
            commands.append([])
        else:
            commands[-1].append(token)
    found = []
    for words in commands:
        if words and words[0] == "moderation":
            args = []
            for word in words[1:]:
                if word in {">", "<", ">>"} or word.isdigit():
                    break
                args.append(word)
            found.append(args)
    return found


def test_final_stage_is_the_runtime_with_the_model(dockerfile: Dockerfile) -> None:
    names = [stage.name for stage in dockerfile.stages]
    assert names == ["build", "model", "runtime-base", "runtime"]
    final = dockerfile.stages[-1]
    assert final.all("COPY") == ["--from=model /opt/moderation/models /opt/moderation/models"]
    # Runtime stages start from a fresh base: no compiler, source tree or data packages carried over.
    assert dockerfile.stage("runtime-base").base == dockerfile.stage("build").base


def test_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    user = dockerfile.effective(dockerfile.stages[-1], "USER")
    assert user is not None
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)


def test_writes_only_under_tmp_and_never_reaches_a_hub(dockerfile: Dockerfile) -> None:
    env = dockerfile.env(dockerfile.stages[-1])
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    for name in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME", "MPLCONFIGDIR", "MODERATION_STATE_DIR"):
        assert env[name].startswith("/tmp"), name
    for name in env:
        if name.startswith("MODERATION_"):
            assert name.removeprefix("MODERATION_").lower() in Settings.model_fields, name


def test_the_model_is_built_at_build_time_where_the_worker_looks(dockerfile: Dockerfile) -> None:
    runs = " ".join(dockerfile.stage("model").all("RUN"))
    (build,) = [args for args in moderation_invocations(runs) if args[:1] == ["build-default-model"]]
    out = build[build.index("--out") + 1]
    assert dockerfile.env(dockerfile.stages[-1])["MODERATION_MODEL_DIR"] == out
    assert out.startswith("/opt/moderation/models/")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["model"]["dir"] == out


def test_every_moderation_command_exists(dockerfile: Dockerfile) -> None:
    seen = []
    for stage in dockerfile.stages:
        for run in stage.all("RUN"):
            for args in moderation_invocations(run):
                seen.append(check_moderation_args(args))
    entrypoint = exec_form(dockerfile.effective(dockerfile.stages[-1], "ENTRYPOINT") or "[]")
    command = exec_form(dockerfile.effective(dockerfile.stages[-1], "CMD") or "[]")
    assert entrypoint == ["tini", "--", "moderation"]
    seen.append(check_moderation_args(command))
    assert {"moderation build-default-model", "moderation worker"} <= set(seen)


def test_healthcheck_probes_healthz_on_the_metrics_port(dockerfile: Dockerfile) -> None:
    final = dockerfile.stages[-1]
    healthcheck = dockerfile.effective(final, "HEALTHCHECK")
    assert healthcheck is not None
    assert "/healthz" in healthcheck and "MODERATION_METRICS_PORT" in healthcheck
    assert re.search(r"--start-period=\d+s", healthcheck)
    env = dockerfile.env(final)
    assert dockerfile.effective(final, "EXPOSE") == env["MODERATION_METRICS_PORT"] == "9400"
    assert str(Settings.model_fields["metrics_port"].default) == env["MODERATION_METRICS_PORT"]


def test_oci_labels(dockerfile: Dockerfile) -> None:
    labels = dockerfile.labels(dockerfile.stages[-1])
    present = {key.removeprefix("org.opencontainers.image.") for key in labels}
    assert present >= OCI_LABELS
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_base_images_are_pinned(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        if stage.base in {s.name for s in dockerfile.stages}:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image and re.match(r"\d+\.\d+\.\d+-", tag), stage.base


def test_cpu_image_takes_cpu_torch_and_gpu_image_a_cuda_runtime_base() -> None:
    cpu, gpu = parse_dockerfile(DOCKERFILES["cpu"]), parse_dockerfile(DOCKERFILES["gpu"])
    assert "download.pytorch.org/whl/cpu" in " ".join(cpu.stage("build").all("ARG"))
    assert cpu.stages[0].base.startswith("python:3.11")
    assert gpu.stages[0].base.startswith("nvidia/cuda:") and "-runtime-" in gpu.stages[0].base
    assert "whl/cpu" not in DOCKERFILES["gpu"].read_text()


def test_copy_sources_exist_and_survive_dockerignore(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            words = [w for w in copy.split() if not w.startswith("--")]
            if any(w.startswith("--from=") for w in copy.split()):
                continue
            for source in words[:-1]:
                assert (REPO / source).exists(), source
                assert dockerignore_allows(source), f"{source} is excluded by .dockerignore"


def test_dockerignore_keeps_secrets_state_and_bulk_out() -> None:
    for path in (".venv/bin/python", ".git/config", ".state/ports.json", "models/default/config.json",
                 "data/datasets/x.jsonl", "tests/unit/test_contracts.py", "moderation/__pycache__/cli.cpython-311.pyc",
                 ".env"):  # fmt: skip
        assert not dockerignore_allows(path), path
    for path in ("pyproject.toml", "README.md", "constraints.txt", "moderation/cli.py", "schemas/post.v1.json"):
        assert dockerignore_allows(path), path
