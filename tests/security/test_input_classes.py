"""Every class of hostile message, one message each, through a real worker on the real broker and cache.

Each must end as a dead-letter record with its reason code (or, for the two control posts among them, a verdict),
nothing may be lost or duplicated, the worker must stay up and answer ``/healthz`` afterwards, and the worker
process may not have opened a connection to anything but the broker and the cache the test started.

Limits used, and why they hold: the worker refuses posts over ``MODERATION_MAX_MESSAGE_BYTES`` = 900,000 bytes and
texts over ``MODERATION_MAX_TEXT_CHARS`` = 20,000 characters (at most 80,000 bytes of UTF-8), both below Apache
Kafka's default ``message.max.bytes`` of 1,048,588 bytes, so a deployment's broker never refuses what the worker
would accept. The embedded Tansu broker takes larger messages (10 MB were accepted), which is how the 950,000-byte
post below reaches the worker at all; its dead-letter record withholds the original (``too_large``) so that the
record itself would fit a 1 MB broker.
"""

from __future__ import annotations

import ast
import base64
import json
import time
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from moderation.contracts import SchemaName, validate
from moderation.demo.process import WorkerProcess
from moderation.ingest.cli import produce_messages
from moderation.ingest.connection import reader_options
from moderation.observability.server import free_port
from moderation.settings import Settings
from tests.conftest import Stack
from tests.security.conftest import SocketGuard
from tests.security.hostile import APACHE_KAFKA_DEFAULT_MESSAGE_MAX_BYTES, catalogue, make_store
from tests.security.report import SUMMARY, OutcomeRow

pytestmark = pytest.mark.integration

MAX_TEXT_CHARS = 20_000
MAX_MESSAGE_BYTES = 900_000
COLLECT_TIMEOUT_S = 240.0


@pytest.fixture
def settings(stack: Stack, model_dir: Path, tmp_path: Path, socket_guard: SocketGuard) -> Settings:
    stores = make_store(tmp_path / "store", tmp_path / "outside")
    settings = stack.unique_topics(
        model_dir=model_dir,
        stores={name: str(path) for name, path in stores.items()},
        metrics_port=free_port(),
        max_text_chars=MAX_TEXT_CHARS,
        max_message_bytes=MAX_MESSAGE_BYTES,
        batch_max_size=8,
        batch_max_wait_ms=20,
        torch_threads=1,
    )
    socket_guard.allow(settings.metrics_port)
    return settings


def collect(settings: Settings, keys: set[str]) -> tuple[dict[str, tuple[str, dict[str, object]]], int]:
    """Read verdicts and dead-letter records until every key has an outcome: ``{key: (topic, document)}`` and the
    number of keys that got more than one."""
    consumer = KafkaConsumer(
        settings.topic_verdicts,
        settings.topic_dead_letter,
        bootstrap_servers=settings.kafka_bootstrap,
        **reader_options(settings),
        fetch_max_bytes=8_000_000,
        max_partition_fetch_bytes=4_000_000,
    )
    outcomes: dict[str, tuple[str, dict[str, object]]] = {}
    duplicates = 0
    deadline = time.monotonic() + COLLECT_TIMEOUT_S
    try:
        while not keys <= set(outcomes) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    key = record.key.decode() if record.key else ""
                    duplicates += key in outcomes
                    outcomes[key] = (record.topic, json.loads(record.value))
    finally:
        consumer.close()
    return outcomes, duplicates


def test_every_hostile_input_class_is_dead_lettered_with_its_reason_and_the_worker_stays_healthy(
    settings: Settings,
    workers: list[WorkerProcess],
    tmp_path: Path,
    subprocess_netlog: Path,
    outcome_table: list[OutcomeRow],
    stack: Stack,
) -> None:
    cases = catalogue(MAX_TEXT_CHARS, settings.max_images_per_post, MAX_MESSAGE_BYTES)
    assert len({case.kafka_key for case in cases}) == len(cases)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    workers.append(worker)
    worker.wait_ready()
    sent = {case.kafka_key: case.value for case in cases}
    produce_messages(settings, [(key.encode(), value) for key, value in sent.items()], settings.topic_posts)
    outcomes, duplicates = collect(settings, set(sent))

    for case in cases:
        topic, document = outcomes.get(case.kafka_key, ("", {}))
        if not topic:
            outcome, reason, kept = "MISSING", "-", "-"
        elif topic == settings.topic_verdicts:
            validate(SchemaName.VERDICT, document)
            outcome, reason, kept = "verdict", f"(action {document['action']})", "-"
        else:
            validate(SchemaName.DEAD_LETTER, document)
            outcome, reason = "dead letter", str(document["reason"])
            if "original" in document:
                assert base64.b64decode(str(document["original"])) == sent[case.kafka_key], case.name
                kept = f"all {len(sent[case.kafka_key])} bytes"
            else:
                kept = f"withheld: {document['original_withheld_reason']}"
                assert document["original_size"] == len(sent[case.kafka_key])
        expected = case.reason.value if case.reason is not None else "a verdict"
        ok = outcome == "verdict" if case.reason is None else reason == case.reason.value
        outcome_table.append(OutcomeRow(case.name, outcome, reason, expected, kept, ok))

    assert worker.process is not None and worker.process.poll() is None, "the worker died"
    with urllib.request.urlopen(f"{worker.metrics_url}/healthz", timeout=5) as response:
        assert response.status == 200
    metrics = worker.scrape()
    assert not [row for row in outcome_table if row.outcome == "MISSING"], "messages were lost"
    assert duplicates == 0
    assert all(row.ok for row in outcome_table), [row for row in outcome_table if not row.ok]
    huge = next(case for case in cases if case.name.startswith("message of"))
    _, huge_record = outcomes[huge.kafka_key]
    assert huge_record["original_withheld_reason"] == "too_large"
    assert len(json.dumps(huge_record)) < APACHE_KAFKA_DEFAULT_MESSAGE_MAX_BYTES
    assert 'moderation_dead_letters_total{reason="store_key_escapes"} 4.0' in metrics
    assert_only_started_servers_reached(subprocess_netlog, worker, stack)
    kafka_limit = APACHE_KAFKA_DEFAULT_MESSAGE_MAX_BYTES
    SUMMARY.append(
        f"limits: worker MODERATION_MAX_MESSAGE_BYTES={MAX_MESSAGE_BYTES:,} and MODERATION_MAX_TEXT_CHARS="
        f"{MAX_TEXT_CHARS:,}, below Apache Kafka's default message.max.bytes={kafka_limit:,}; the embedded Tansu"
        f" broker accepted the {len(huge.value):,}-byte post; worker alive and /healthz 200 after all {len(cases)}"
        " messages: 0 crashes, 0 lost, 0 duplicated"
    )


def assert_only_started_servers_reached(netlog: Path, worker: WorkerProcess, stack: Stack) -> None:
    """The worker process connected to the broker and the cache the test started, and looked up no names."""
    assert worker.process is not None
    allowed = {
        ("127.0.0.1", int(stack.kafka_bootstrap.rsplit(":", 1)[1])),
        ("127.0.0.1", int(stack.redis_url.rsplit(":", 1)[1].split("/", 1)[0])),
    }
    reached: set[tuple[str, int]] = set()
    for line in netlog.read_text().splitlines():
        pid, kind, rest = line.split(" ", 2)
        if int(pid) != worker.process.pid:
            continue
        if kind == "lookup":
            host = ast.literal_eval(rest)
            assert host in (None, "localhost", "127.0.0.1"), f"the worker looked up {host!r}"
            continue
        family, address = rest.split(" ", 1)
        if int(family) == 1:  # AF_UNIX
            continue
        host, port = ast.literal_eval(address)[:2]
        reached.add((str(host), int(port)))
    assert reached, "the network log recorded nothing: is tests/security/netlog on the worker's PYTHONPATH?"
    assert reached <= allowed, f"the worker reached {sorted(reached - allowed)}"
