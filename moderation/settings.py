"""The one frozen settings object; the only reader of ``MODERATION_*`` environment variables.

Every field has a description: the README's settings table is generated from them
(``moderation settings --markdown``) and a test keeps the two in step.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from moderation.errors import ConfigError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
DeviceName = Literal["auto", "cpu", "cuda"]
ThreadPriority = Literal["auto", "normal", "low", "idle"]
HostAllocator = Literal["reuse", "system"]
#: Encoder forward-pass sizes when the settings leave them at 0.
CPU_BATCH_SIZE = 16
CUDA_BATCH_SIZE = 256
#: Torch CPU threads of a CUDA worker when the settings leave them at 0: its CPU runs only the fusion head and small
#: tensor work, which gains nothing from torch's default of one thread per core, and idle threads spinning on every
#: core slow the worker's Python threads (on an H200 host with 16 threads, the fusion stage took 0.6 ms a post,
#: against 0.02-0.03 ms on a 2-core CPU).
CUDA_TORCH_THREADS = 2


class Settings(BaseSettings):
    """Runtime configuration of every command, read once from the environment (prefix ``MODERATION_``)."""

    model_config = SettingsConfigDict(env_prefix="MODERATION_", frozen=True, extra="forbid")

    # --- broker -------------------------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "", description="Kafka bootstrap servers (host:port,...). Empty: use the embedded broker from `moderation up`."
    )
    kafka_security_protocol: SecurityProtocol = Field("PLAINTEXT", description="Kafka security protocol.")
    kafka_sasl_mechanism: SaslMechanism | None = Field(None, description="SASL mechanism when SASL is on.")
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certificates.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key for mutual TLS.")
    consumer_group: str = Field("moderation-worker", description="Consumer group of the workers.")
    session_timeout_ms: int = Field(
        10_000, ge=1_000, description="Consumer session timeout; short values make joins and failover fast."
    )
    heartbeat_interval_ms: int = Field(1_000, ge=100, description="Consumer heartbeat interval.")
    max_poll_interval_ms: int = Field(
        300_000, ge=1_000, description="Longest gap between polls before the broker evicts the consumer."
    )
    fetch_max_wait_ms: int = Field(
        50,
        ge=1,
        description="Longest a consumer's fetch waits on the broker for new records (Kafka's default is 500). Apache "
        "Kafka answers as soon as records arrive; the embedded Tansu broker holds every fetch for up to this long, "
        "which at 500 added about 130 ms to each post's latency at low load.",
    )
    # --- topics -------------------------------------------------------------------------------------------
    topic_posts: str = Field("posts", description="Topic the worker consumes (`post.v1`).")
    topic_verdicts: str = Field("verdicts", description="Topic of `verdict.v1` messages, keyed by post id.")
    topic_review: str = Field("review", description="Topic of verdicts whose action is `review`, for moderators.")
    topic_dead_letter: str = Field("dead-letter", description="Topic of `dead_letter.v1` records.")
    topic_decisions: str = Field("decisions", description="Topic of moderators' `review_decision.v1` messages.")
    topic_partitions: int = Field(4, ge=1, description="Partitions per topic created by `moderation up`.")
    dead_letter_retention_ms: int = Field(
        7 * 24 * 3600 * 1000, ge=60_000, description="Retention of the dead-letter topic (it keeps original bytes)."
    )
    # --- cache --------------------------------------------------------------------------------------------
    redis_url: SecretStr | None = Field(
        None,
        description="Redis URL (redis:// or rediss://, may carry a password). Empty: the embedded cache. One primary "
        "(Redis 6 or later, or Valkey) with Lua scripting allowed: each cache call is one command over a whole "
        "batch's keys (`MGET`, `EVALSHA`), so Redis Cluster is not supported.",
    )
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="TTL of cached encodings and verdicts.")
    # --- embedded stack -----------------------------------------------------------------------------------
    state_dir: Path = Field(
        Path(".state"), description="Folder of the embedded stack's pids, ports and logs, and other local state."
    )
    embedded_kafka_port: int = Field(19092, ge=0, le=65535, description="Port of the embedded broker (0: any free).")
    embedded_redis_port: int = Field(16379, ge=0, le=65535, description="Port of the embedded cache (0: any free).")
    # --- models -------------------------------------------------------------------------------------------
    device: DeviceName = Field("auto", description="Where models run: `auto` picks CUDA when present.")
    torch_threads: int = Field(
        0,
        ge=0,
        description="CPU threads for torch. 0: torch's default (one per core) on a CPU, 2 with CUDA, where the CPU "
        "only runs the fusion head and small tensor work.",
    )
    prepare_priority: ThreadPriority = Field(
        "auto",
        description="OS scheduling priority of the worker's prepare thread (post decode, checks, lookups, image "
        "decode), which runs beside the models: `normal`; `low` (nice 19); `idle` (SCHED_IDLE: it yields to every "
        "normal thread and runs on the core time they leave). `auto`: `idle` on a CPU, where it would otherwise "
        "slow the models' threads, `normal` with CUDA. Linux only; elsewhere every level is `normal`.",
    )
    host_allocator: HostAllocator = Field(
        "reuse",
        description="What a model process's C allocator does with the memory PyTorch frees: `reuse` keeps it for "
        "the next batch (glibc: no mmap for large blocks, no trimming, one arena), instead of faulting every "
        "batch's tensors in again page by page; the process keeps its peak heap. `system`: the C library's "
        "defaults. Only glibc (Linux) has these knobs.",
    )
    warm_up: bool = Field(
        True,
        description="Before reporting ready, run each encoder at every batch shape it pads to (CUDA only), so no "
        "post pays the GPU's one-time set-up for a shape.",
    )
    text_encoder: str = Field(
        "minilm-l6", description="Registered text encoder name, or a sentence-transformers folder."
    )
    image_encoder: str = Field("efficientnet-lite0", description="Registered image encoder name.")
    model_dir: Path = Field(Path("models/default"), description="Fusion model artifact folder.")
    policy_file: Path | None = Field(None, description="Policy YAML; empty: the policy shipped with the model.")
    worker_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes that `moderation worker` starts and supervises, restarting any that dies; "
        "each is a consumer-group member with its own copy of the models. Several share one GPU, which one "
        "process's Python cannot keep busy; needs as many partitions. On a CPU each gets cores / N torch threads "
        "unless `MODERATION_TORCH_THREADS` is set.",
    )
    # --- batching -----------------------------------------------------------------------------------------
    batch_max_size: int = Field(64, ge=1, description="Most posts the worker processes in one batch.")
    batch_max_wait_ms: int = Field(
        50,
        ge=0,
        description="Longest a batch waits to fill before it runs; it stops filling at once when the models are idle.",
    )
    text_batch_size: int = Field(
        0, ge=0, description="Texts per encoder forward pass (0: 16 on a CPU, 256 on CUDA; see docs/BENCHMARKS.md)."
    )
    image_batch_size: int = Field(
        0, ge=0, description="Images per encoder forward pass (0: 16 on a CPU, 256 on CUDA; see docs/BENCHMARKS.md)."
    )
    # --- limits -------------------------------------------------------------------------------------------
    max_message_bytes: int = Field(
        900_000, ge=1024, description="Largest post message accepted (Apache Kafka's default limit is about 1 MB)."
    )
    max_text_chars: int = Field(20_000, ge=1, description="Longest text accepted, in characters.")
    max_images_per_post: int = Field(16, ge=0, description="Most images accepted in one post.")
    max_image_bytes: int = Field(8_000_000, ge=1, description="Largest encoded image accepted.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest width x height accepted (bomb guard).")
    max_image_frames: int = Field(100, ge=1, description="Most frames accepted in an animated image.")
    max_json_depth: int = Field(32, ge=2, description="Deepest JSON nesting accepted in a post.")
    # --- known-bad media ----------------------------------------------------------------------------------
    hash_match_max_distance: int = Field(
        31,
        ge=0,
        le=63,
        description="Largest PDQ Hamming distance (of 256 bits) at which an image matches a known-bad hash-list "
        "entry; 31 is Meta's recommended threshold.",
    )
    hash_min_quality: int = Field(
        50,
        ge=0,
        le=100,
        description="Lowest PDQ quality (0-100) trusted: a flatter image is matched by its exact SHA-256 only, "
        "and is refused by `moderation hashes add`.",
    )
    hash_list_namespace: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        description="Namespace of the hash lists in Redis: workers and `moderation hashes` of one namespace share "
        "lists.",
    )
    # --- stores -------------------------------------------------------------------------------------------
    stores: dict[str, Path] = Field(
        default_factory=dict,
        description='Image stores by name, as JSON: {"media": "/srv/media"}. Only these may be referenced.',
    )
    # --- observability ------------------------------------------------------------------------------------
    metrics_port: int = Field(9400, ge=0, le=65535, description="Port of `/metrics`, `/healthz` and `/readyz`.")
    debug_kill_before_commit_batch: int = Field(
        0, ge=0, description="Fault-injection hook for crash tests: SIGKILL the worker before committing batch N."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")

    @field_validator("stores", mode="before")
    @classmethod
    def _parse_stores(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                example = '{"media": "/srv/media"}'
                raise ValueError(f"MODERATION_STORES must be a JSON object like {example}: {exc}") from exc
        return value

    @cached_property
    def resolved_device(self) -> str:
        """The concrete torch device: ``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def resolved_torch_threads(self) -> int:
        """``torch_threads``, or when it is 0: ``CUDA_TORCH_THREADS`` with CUDA, 0 (torch's default) on a CPU."""
        return self.torch_threads or self._on_device(cpu=0, cuda=CUDA_TORCH_THREADS)

    @property
    def resolved_prepare_priority(self) -> ThreadPriority:
        """``prepare_priority``, or when it is ``auto``: ``idle`` on a CPU, ``normal`` with CUDA."""
        if self.prepare_priority != "auto":
            return self.prepare_priority
        return "normal" if self.resolved_device.startswith("cuda") else "idle"

    @property
    def resolved_text_batch_size(self) -> int:
        """``text_batch_size``, or the device's default when it is 0."""
        return self.text_batch_size or self._default_batch_size()

    @property
    def resolved_image_batch_size(self) -> int:
        """``image_batch_size``, or the device's default when it is 0."""
        return self.image_batch_size or self._default_batch_size()

    def _default_batch_size(self) -> int:
        # Measured (docs/BENCHMARKS.md): on a CPU, forward passes of 16 beat 32 and 64 per item (less text padding,
        # activations that stay in cache: +50-90% worker throughput); a GPU needs large batches to be busy.
        return self._on_device(cpu=CPU_BATCH_SIZE, cuda=CUDA_BATCH_SIZE)

    def _on_device(self, *, cpu: int, cuda: int) -> int:
        """The default that fits the resolved device."""
        return cuda if self.resolved_device.startswith("cuda") else cpu


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides; a bad value raises ``ConfigError``."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"MODERATION_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process read exactly these settings (secrets included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODERATION_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if name in ("redis_url", "kafka_sasl_password"):
            value = getattr(settings, name).get_secret_value()
        env[f"MODERATION_{name.upper()}"] = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return env
