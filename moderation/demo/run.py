"""``moderation demo``: the embedded stack, a real worker process, the sample stream, and a summary table.

Each run uses its own topics and consumer group (suffixed with a run id), so runs never see each other's
messages, even on a stack that stays up between them. The worker is the same ``moderation worker`` a deployment
runs, started as a subprocess; the summary is computed from what it published (verdicts and dead-letter records
read back from the broker) and from its ``/metrics`` endpoint.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click

from moderation.demo.process import WorkerProcess
from moderation.demo.samples import SampleStream, build_sample_stream, stores
from moderation.embedded.stack import ensure_topics, up
from moderation.ingest.cli import produce_messages
from moderation.observability.server import free_port
from moderation.settings import Settings, load_settings

DRAIN_TIMEOUT_S = 240.0


@dataclass
class Outcome:
    """What came back from the broker for one run."""

    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0

    def seen(self) -> int:
        return len(self.verdicts) + len(self.dead_letters)


def run_demo(count: int, seed: int) -> None:
    """Start what is missing, run the stream through a worker, print the summary, stop what it started."""
    base = load_settings()
    state, started_stack = up(base)
    ensure_default_model(base)
    run_id = f"demo-{uuid.uuid4().hex[:6]}"
    settings = load_settings(
        **{
            **base.model_dump(),
            "kafka_bootstrap": base.kafka_bootstrap or state.kafka_bootstrap,
            "redis_url": (base.redis_url.get_secret_value() if base.redis_url else state.redis_url),
            "topic_posts": f"posts-{run_id}",
            "topic_verdicts": f"verdicts-{run_id}",
            "topic_review": f"review-{run_id}",
            "topic_dead_letter": f"dead-letter-{run_id}",
            "topic_decisions": f"decisions-{run_id}",
            "consumer_group": f"workers-{run_id}",
            "stores": {**{k: str(v) for k, v in base.stores.items()}, **{k: str(v) for k, v in stores().items()}},
            "metrics_port": free_port(),
        }
    )
    ensure_topics(settings, settings.kafka_bootstrap)
    log_path = settings.state_dir / f"{run_id}-worker.log"
    worker = WorkerProcess(settings, log_path).start()
    try:
        click.echo(f"worker starting (log: {log_path}) ...")
        worker.wait_ready()
        stream = build_sample_stream(count, seed, run_id)
        click.echo(
            f"replaying {len(stream.messages)} sample posts: "
            + ", ".join(f"{n} {shape}" for shape, n in sorted(stream.shapes.items()))
        )
        started = time.time()
        produce_messages(settings, stream.messages, settings.topic_posts)
        outcome = collect(settings, stream, started)
        click.echo("")
        click.echo(summary(stream, outcome, started, worker))
    finally:
        worker.stop()
        if started_stack:
            from moderation.embedded.stack import down

            down(base)
            click.echo("stopped the embedded stack this demo started")


def ensure_default_model(settings: Settings) -> None:
    """Build the default model artifact if it is not there yet (a few minutes, once)."""
    if (settings.model_dir / "config.json").exists():
        return
    from moderation.fuse.build import build_default_model

    click.echo(f"no model in {settings.model_dir}: building the default model once (a few minutes on a CPU) ...")
    build_default_model(settings.model_dir)


def collect(settings: Settings, stream: SampleStream, started: float) -> Outcome:
    """Read verdicts and dead-letter records until every post is accounted for, with a live progress line."""
    from kafka import KafkaConsumer

    from moderation.ingest.connection import reader_options

    consumer = KafkaConsumer(
        settings.topic_verdicts,
        settings.topic_dead_letter,
        bootstrap_servers=settings.kafka_bootstrap,
        **reader_options(settings),
    )
    outcome = Outcome()
    total = len(stream.messages)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    try:
        while outcome.seen() < total and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    document = json.loads(record.value)
                    key = record.key.decode() if record.key else ""
                    target = outcome.verdicts if record.topic == settings.topic_verdicts else outcome.dead_letters
                    outcome.duplicates += key in target
                    target[key] = document
            rate = outcome.seen() / max(1e-9, time.time() - started)
            click.echo(
                f"\r  {outcome.seen()}/{total} posts done: {len(outcome.verdicts)} verdicts, "
                f"{len(outcome.dead_letters)} dead letters, {rate:.1f} posts/s",
                nl=False,
            )
    finally:
        consumer.close()
    return outcome


def summary(stream: SampleStream, outcome: Outcome, started: float, worker: WorkerProcess) -> str:
    """The demo's closing table."""
    lines = []
    total = len(stream.messages)
    missing = total - outcome.seen()
    actions = Counter(v["action"] for v in outcome.verdicts.values())
    lines.append(
        f"posts sent {total}   verdicts {len(outcome.verdicts)}   dead letters {len(outcome.dead_letters)}"
        f"   missing {missing}   duplicate deliveries {outcome.duplicates}"
    )
    lines.append("actions: " + ", ".join(f"{a} {actions.get(a, 0)}" for a in ("allow", "review", "block")))
    lines.append("")
    lines.append(f"{'category':<20}{'mode':<9}{'allow':>7}{'review':>8}{'block':>7}  (observe: would-be action)")
    per_category: dict[tuple[str, str], Counter[str]] = {}
    for verdict in outcome.verdicts.values():
        for category, entry in verdict["categories"].items():
            effective = entry.get("would_be_action", entry["decision"])
            per_category.setdefault((category, entry["mode"]), Counter())[effective] += 1
    for (category, mode), counts in sorted(per_category.items()):
        lines.append(f"{category:<20}{mode:<9}{counts['allow']:>7}{counts['review']:>8}{counts['block']:>7}")
    lines.append("")
    reasons = Counter(d["reason"] for d in outcome.dead_letters.values())
    lines.append("dead letters by reason: " + (", ".join(f"{r} {n}" for r, n in sorted(reasons.items())) or "none"))
    wrong = [
        k
        for k, reason in stream.expected_rejections.items()
        if outcome.dead_letters.get(k, {}).get("reason") != reason.value
    ]
    lines.append(
        f"malformed posts with the expected reason: {len(stream.expected_rejections) - len(wrong)}"
        f"/{len(stream.expected_rejections)}"
    )
    created = _epoch(stream.created_at)
    latencies = sorted(_epoch(v["published_at"]) - created for v in outcome.verdicts.values())
    if latencies:
        last = max(_epoch(v["published_at"]) for v in outcome.verdicts.values())
        throughput = len(outcome.verdicts) / max(1e-9, last - started)
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
        lines.append(
            f"throughput {throughput:.1f} posts/s   end-to-end latency p50 {cuts[49]:.2f} s, "
            f"p95 {cuts[94]:.2f} s, p99 {cuts[98]:.2f} s (the whole stream was sent at once)"
        )
    lines.append(f"metrics: {worker.metrics_url}/metrics (served while the worker runs)")
    lines.append(_scrape_cache_line(worker))
    return "\n".join(lines)


def _scrape_cache_line(worker: WorkerProcess) -> str:
    try:
        text = worker.scrape()
    except OSError as exc:
        return f"(metrics not reachable: {exc})"
    wanted = [
        line
        for line in text.splitlines()
        if line.startswith(("moderation_cache_lookups_total", "moderation_encoded_items_total"))
    ]
    return "from /metrics: " + "; ".join(wanted)


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@click.command()
@click.option("--posts", "count", type=int, default=300, show_default=True, help="Sample posts to replay.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the sample stream.")
def demo(count: int, seed: int) -> None:
    """Run the whole product once on the embedded stack and print a summary."""
    run_demo(count, seed)


COMMANDS = [demo]
