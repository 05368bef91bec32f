"""Known-bad media on the real broker and cache: lists in Redis, a real worker, the `moderation hashes` CLI."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer
from PIL import Image

from moderation.contracts import SchemaName, validate
from moderation.demo.process import WorkerProcess
from moderation.hashlists.cli import hashes
from moderation.hashlists.entries import HashEntry, HashKind, read_jsonl
from moderation.hashlists.store import HashListStore
from moderation.ingest.cli import produce_messages
from moderation.ingest.connection import reader_options
from moderation.observability.server import free_port
from moderation.settings import Settings
from tests.conftest import Stack
from tests.support import encoded_items
from tests.unit.hashlists.conftest import jpeg, png, reposted, sklearn_photos

pytestmark = pytest.mark.integration

LIST = "known-bad-test"
CATEGORY = "csam"


def noise_png(seed: int, size: int = 96) -> bytes:
    """A unique image: never seen (so never cached) before this test run."""
    rng = np.random.default_rng(seed)
    return png(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))


def post(post_id: str, *images: tuple[bytes, str], text: str | None = None) -> tuple[bytes, bytes]:
    document: dict[str, Any] = {
        "schema_version": "post.v1",
        "post_id": post_id,
        "tenant": "acme",
        "author_id": "u-1",
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "images": [{"inline": {"data": base64.b64encode(d).decode(), "content_type": t}} for d, t in images],
    }
    if text:
        document["text"] = text
    return post_id.encode(), json.dumps(document).encode()


class Topics:
    """Reads a topic from the start, remembering what it saw, so each wait continues where the last stopped."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap,
            **reader_options(settings),
        )
        self.raw: list[bytes] = []

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=200).values():
                self.raw.extend(record.value for record in records)
            for value in self.raw:
                document: dict[str, Any] = json.loads(value)
                if predicate(document):
                    self.raw.remove(value)
                    return document
        raise AssertionError(f"no matching message within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def store(stack: Stack, namespace: str) -> Iterator[HashListStore]:
    store = HashListStore.from_url(stack.redis_url, namespace)
    yield store
    store.clear()


@pytest.fixture(scope="module")
def running(
    stack: Stack, model_dir: Path, namespace: str, store: HashListStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, WorkerProcess, Path]]:
    settings = stack.unique_topics(
        model_dir=model_dir,
        metrics_port=free_port(),
        batch_max_size=8,
        batch_max_wait_ms=20,
        hash_list_namespace=namespace,
    )
    log = tmp_path_factory.mktemp("hashlists") / "worker.log"
    worker = WorkerProcess(settings, log).start()
    try:
        worker.wait_ready()
        yield settings, worker, log
    finally:
        worker.kill()


def cli(stack: Stack, namespace: str, *args: str) -> str:
    env = {"MODERATION_REDIS_URL": stack.redis_url, "MODERATION_HASH_LIST_NAMESPACE": namespace}
    result = CliRunner().invoke(hashes, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def metric(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{selector}\}} (\S+)$", text, re.M) if labels else None
    found = found or re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_store_and_cli_add_import_list_export_remove(stack: Stack, tmp_path: Path) -> None:
    namespace = f"cli-{uuid.uuid4().hex[:8]}"
    store = HashListStore.from_url(stack.redis_url, namespace)
    try:
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(jpeg(Image.open(io.BytesIO(sklearn_photos()[1])), 90))
        assert store.version() == 0
        output = cli(stack, namespace, "add", "--list", "a", "--category", CATEGORY, "--source", "unit", str(photo))
        assert "4 new of 4 entries" in output and store.version() == 1
        cli(stack, namespace, "add", "--list", "b", "--category", "terror", "--sha256", "ab" * 32)
        exported = tmp_path / "lists.jsonl"
        cli(stack, namespace, "export", "--output", str(exported))
        entries = list(read_jsonl(exported.open()))
        assert [(e.list, e.kind) for e in entries] == [("a", HashKind.PDQ)] * 3 + [("a", HashKind.SHA256)] * 1 + [
            ("b", HashKind.SHA256)
        ]
        listing = cli(stack, namespace, "list")
        assert "version 2; 2 lists" in listing and re.search(r"^a\s+csam\s+1\s+3", listing, re.M)
        removed = cli(stack, namespace, "remove", "--list", "a", str(photo))
        assert "removed 4 entries" in removed and store.version() == 3
        cli(stack, namespace, "import", str(exported), "--list", "c")
        assert {e.list for e in store.entries()} == {"b", "c"} and store.counts()[HashKind.PDQ] == 3
        cli(stack, namespace, "remove", "--list", "c", "--all")
        assert [e.list for e in store.entries()] == ["b"]
        assert store.version() == 5
    finally:
        store.clear()


def test_an_exact_match_blocks_without_running_any_encoder(
    running: tuple[Settings, WorkerProcess, Path], store: HashListStore
) -> None:
    settings, worker, _ = running
    listed = noise_png(1)
    store.add([HashEntry.create("sha256", hashlib.sha256(listed).hexdigest(), LIST, CATEGORY, "test")])
    verdicts = Topics(settings, settings.topic_verdicts)
    before = worker.scrape()
    produce_messages(settings, [post("exact-1", (listed, "image/png"))], settings.topic_posts)
    verdict = verdicts.wait_for(lambda d: d["post_id"] == "exact-1")
    validate(SchemaName.VERDICT, verdict)
    assert verdict["action"] == "block"
    assert verdict["categories"][CATEGORY] == {
        "score": 1.0,
        "decision": "block",
        "mode": "enforce",
        "driven_by": {"modality": "image", "image_index": 0},
    }
    assert {
        "code": "known_bad_media_match",
        "category": CATEGORY,
        "score": 1.0,
        "threshold": 1.0,
        "rule": f"hashlist:{LIST}:sha256:distance=0",
    } in verdict["reasons"]
    after = worker.scrape()
    assert encoded_items(after) == encoded_items(before), "an encoder ran for a known-bad image"
    assert metric(after, "moderation_hash_matches_total", kind="sha256", list=LIST) == 1


def test_a_list_change_reaches_a_running_worker(
    running: tuple[Settings, WorkerProcess, Path], stack: Stack, namespace: str, tmp_path: Path
) -> None:
    settings, worker, _ = running
    original = tmp_path / "listed.png"
    original.write_bytes(sklearn_photos()[0])
    copy = reposted(original.read_bytes())  # resized, cropped, re-encoded: only a perceptual match finds it
    verdicts = Topics(settings, settings.topic_verdicts)
    message = post("change-1", (copy, "image/jpeg"))

    produce_messages(settings, [message], settings.topic_posts)
    first = verdicts.wait_for(lambda d: d["post_id"] == "change-1")
    assert not any(r["code"] == "known_bad_media_match" for r in first["reasons"])
    assert CATEGORY not in first["categories"]

    cli(stack, namespace, "add", "--list", "photos", "--category", CATEGORY, str(original))
    produce_messages(settings, [message], settings.topic_posts)  # the same post again
    second = verdicts.wait_for(lambda d: d["post_id"] == "change-1")
    validate(SchemaName.VERDICT, second)
    assert second["action"] == "block"
    (reason,) = [r for r in second["reasons"] if r["code"] == "known_bad_media_match"]
    distance = int(reason["rule"].rsplit("=", 1)[1])
    assert reason["rule"].startswith("hashlist:photos:pdq:") and distance <= settings.hash_match_max_distance
    assert reason["threshold"] == 1 - distance / 256
    scraped = worker.scrape()
    assert metric(scraped, "moderation_hash_matches_total", kind="pdq", list="photos") == 1
    assert metric(scraped, "moderation_hash_list_entries", kind="pdq") >= 3

    cli(stack, namespace, "remove", "--list", "photos", str(original))
    produce_messages(settings, [message], settings.topic_posts)
    third = verdicts.wait_for(lambda d: d["post_id"] == "change-1")

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in ("timings", "published_at")}

    assert strip(third) == strip(first), "unlisted again: the first decision is replayed"


def test_matched_media_never_reaches_dead_letter_records_or_logs(
    running: tuple[Settings, WorkerProcess, Path], store: HashListStore
) -> None:
    settings, _, log = running
    listed = noise_png(2, 48)
    store.add([HashEntry.create("sha256", hashlib.sha256(listed).hexdigest(), LIST, CATEGORY, "test")])
    corrupt = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    messages = [
        post("dl-matched", (listed, "image/png"), (corrupt, "image/png")),  # fails at encoding: corrupt image
        post("dl-malformed", *[(listed, "image/png")] * (settings.max_images_per_post + 1)),  # fails at decoding
        post("dl-clean", (corrupt, "image/png")),  # control: no known-bad media, the original is kept
    ]
    dead_letters = Topics(settings, settings.topic_dead_letter)
    produce_messages(settings, messages, settings.topic_posts)
    found = {
        post_id: dead_letters.wait_for(lambda d, p=post_id: d["post_id"] == p)  # type: ignore[misc]
        for post_id in ("dl-matched", "dl-malformed", "dl-clean")
    }
    for document in found.values():
        validate(SchemaName.DEAD_LETTER, document)
    assert found["dl-matched"]["reason"] == "image_corrupt"
    assert found["dl-malformed"]["reason"] == "too_many_images"
    for post_id in ("dl-matched", "dl-malformed"):
        assert found[post_id]["original_withheld_reason"] == "known_bad_media"
        assert "original" not in found[post_id]
    assert base64.b64decode(found["dl-clean"]["original"]) == messages[2][1]
    encoded = base64.b64encode(listed).decode()
    every_record = json.dumps(found) + "".join(v.decode() for v in dead_letters.raw)
    assert encoded not in every_record and encoded[:40] not in every_record
    worker_log = log.read_text(errors="replace")
    assert encoded[:40] not in worker_log and listed.hex()[:40] not in worker_log
