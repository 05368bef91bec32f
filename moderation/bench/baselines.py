"""The two baselines the product is measured against, written as someone would in an afternoon.

* the **plain batched loop**: kafka-python (with ``crc32c`` installed), poll a batch, encode texts and images,
  fuse, decide, produce the verdicts, flush, commit;
* the **naive consumer**: the same, one post at a time, committing after each.

Both use the product's encoders (``create_settings_encoders`` with the fusion model's encoder names, the same
device, threads, batch sizes and warm-up), its fusion model and its policy; they decode images one at a time
with the encoder's own preprocessing (PIL on a CPU, nvjpeg on CUDA). What they leave out is what the product
adds around the models: no schema validation or limits, no Redis (no caches, no idempotent verdicts, no review
dedup), no metrics, no dead-letter handling, no known-bad hash lists. Their verdicts carry the post id, action,
scores and ``published_at``, which is all the benchmark reads.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from moderation.settings import Settings

Mode = Literal["plain", "naive"]


def run_baseline(settings: Settings, mode: Mode, ready: Any, stop: Any) -> None:
    """Consume ``settings.topic_posts`` and publish to ``settings.topic_verdicts`` until ``stop`` is set.

    ``ready`` (an event) is set once the models are loaded and the group assigned this consumer its partitions.
    """
    import torch
    from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer

    from moderation.allocator import configure_allocator
    from moderation.decide.policy import load_policy
    from moderation.decode.images import ImageLimits
    from moderation.encode import create_settings_encoders
    from moderation.fuse import FusionInput, load_fusion_model
    from moderation.ingest.connection import group_consumer_options, kafka_client_options
    from moderation.publish.messages import utc_now

    configure_allocator(settings.host_allocator)  # as the worker does, before any thread picks its arena
    logging.getLogger("kafka").setLevel(logging.ERROR)
    model = load_fusion_model(settings.model_dir)
    policy = load_policy(settings.policy_file or settings.model_dir / "policy.yaml")
    text_encoder, image_encoder = create_settings_encoders(settings, model.text_encoder, model.image_encoder)
    limits = ImageLimits.from_settings(settings)
    stores = {name: Path(folder) for name, folder in settings.stores.items()}

    class Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, assigned: Any) -> None:
            ready.set()

    options = kafka_client_options(settings)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **group_consumer_options(settings), **options)
    consumer.subscribe([settings.topic_posts], listener=Assigned())
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=max(1_048_576, settings.max_message_bytes * 2),
        **options,
    )

    def image_bytes(item: dict[str, Any]) -> bytes:
        if "inline" in item:
            return base64.b64decode(item["inline"]["data"])
        path: Path = stores[item["ref"]["store"]] / item["ref"]["key"]
        return path.read_bytes()

    def classify(values: Sequence[bytes]) -> list[tuple[str, bytes]]:
        posts = [json.loads(value) for value in values]
        with_text = [i for i, post in enumerate(posts) if post.get("text")]
        text = torch.zeros((len(posts), text_encoder.dim))
        present = torch.zeros(len(posts), dtype=torch.bool)
        if with_text:
            text[with_text] = text_encoder.encode([posts[i]["text"] for i in with_text])
            present[with_text] = True
        tensors, owners = [], []
        for i, post in enumerate(posts):
            for item in post.get("images") or []:
                tensors.append(image_encoder.preprocess(image_bytes(item), limits))
                owners.append(i)
        images = image_encoder.encode(tensors) if tensors else torch.zeros((0, image_encoder.dim))
        batch = FusionInput(
            text=text if with_text else None,
            text_present=present,
            image_emb=images,
            image_post_index=torch.tensor(owners, dtype=torch.long),
        )
        verdicts = []
        for post, output in zip(posts, model.predict(batch), strict=True):
            decision = policy.decide(post["tenant"], output.scores)
            verdict = {
                "post_id": post["post_id"],
                "action": decision.action.value,
                "scores": output.scores,
                "published_at": utc_now(),
            }
            verdicts.append((post["post_id"], json.dumps(verdict).encode()))
        return verdicts

    max_records = settings.batch_max_size if mode == "plain" else 1
    try:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=200, max_records=max_records)
            records = [record for batch in polled.values() for record in batch]
            if not records:
                continue
            if mode == "plain":
                for key, value in classify([record.value for record in records]):
                    producer.send(settings.topic_verdicts, key=key.encode(), value=value)
                producer.flush()
                consumer.commit()
            else:
                for record in records:
                    for key, value in classify([record.value]):
                        producer.send(settings.topic_verdicts, key=key.encode(), value=value)
                    producer.flush()
                    consumer.commit()
    finally:
        consumer.close()
        producer.close()
