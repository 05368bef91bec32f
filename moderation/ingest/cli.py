"""Commands that move messages: ``worker``, ``produce`` and ``tail``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from moderation.ingest.connection import kafka_client_options, reader_options, resolve_endpoints
from moderation.settings import Settings, load_settings


@click.command()
def worker() -> None:
    """Run a stream worker: posts topic in, verdicts / review / dead-letter topics out.

    With ``MODERATION_WORKER_PROCESSES`` above 1, that many worker processes, supervised, behind one metrics port.
    """
    from moderation.observability.logs import configure_logging
    from moderation.supervise import run_supervised
    from moderation.worker import run_worker

    settings = load_settings()
    configure_logging(settings.log_level)
    asyncio.run(run_supervised(settings) if settings.worker_processes > 1 else run_worker(settings))


@click.command()
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="JSON lines, one message per line (lines that are not JSON are sent as they are).",
)
@click.option("--rate", type=float, default=0.0, help="Messages per second (0: as fast as the broker takes them).")
@click.option("--topic", default=None, help="Topic (default: the posts topic).")
def produce(path: Path, rate: float, topic: str | None) -> None:
    """Replay posts from a file into the posts topic, with a progress bar."""
    from tqdm import tqdm

    settings = load_settings()
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    messages = [(_post_id(line), line) for line in lines]
    sent = produce_messages(
        settings, messages, topic or settings.topic_posts, rate, progress=tqdm(total=len(lines), unit="msg")
    )
    click.echo(f"sent {sent} messages to {topic or settings.topic_posts}")


def produce_messages(
    settings: Settings,
    messages: Sequence[tuple[bytes | None, bytes]],
    topic: str,
    rate: float = 0.0,
    progress: Any = None,
) -> int:
    """Send ``(key, value)`` messages at ``rate`` per second (0: unpaced); returns once all are acknowledged."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=resolve_endpoints(settings).kafka_bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=max(1_048_576, settings.max_message_bytes * 2),
        **kafka_client_options(settings),
    )
    started = time.monotonic()
    futures = []
    for index, (key, value) in enumerate(messages):
        if rate > 0:
            time.sleep(max(0.0, started + index / rate - time.monotonic()))
        futures.append(producer.send(topic, key=key, value=value))
        if progress is not None:
            progress.update(1)
    for future in futures:
        future.get(timeout=60)
    producer.close()
    return len(futures)


def _post_id(line: bytes) -> bytes | None:
    try:
        post_id = json.loads(line).get("post_id")
    except (ValueError, AttributeError):
        return None
    return post_id.encode() if isinstance(post_id, str) else None


@click.command()
@click.argument("which", type=click.Choice(["verdicts", "review", "dead-letter", "decisions", "posts"]))
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message instead of new ones.")
@click.option("--limit", type=int, default=0, help="Stop after this many messages (0: never).")
def tail(which: str, from_beginning: bool, limit: int) -> None:
    """Print messages of a topic as they arrive, one JSON document a line."""
    from kafka import KafkaConsumer

    settings = load_settings()
    topic = {
        "verdicts": settings.topic_verdicts,
        "review": settings.topic_review,
        "dead-letter": settings.topic_dead_letter,
        "decisions": settings.topic_decisions,
        "posts": settings.topic_posts,
    }[which]
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=resolve_endpoints(settings).kafka_bootstrap,
        **reader_options(settings, from_beginning=from_beginning),
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)
    seen = 0
    try:
        for message in consumer:
            click.echo(message.value.decode("utf-8", errors="replace"))
            seen += 1
            if limit and seen >= limit:
                break
    finally:
        consumer.close()


COMMANDS = [worker, produce, tail]
