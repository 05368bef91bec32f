"""The product's cost per post outside the models, and its Kafka client's consume rate: the walls a GPU worker
meets once the models are fast.

1. ``Pipeline.process`` + ``after_publish`` on batches of real post messages with the encoders replaced by stubs
   that return zeros at once (no tokenising, no image decode either): everything else is real (JSON, schema and
   limits, base64, sha256, stores, hash lists, the Redis caches and verdict claims, the fusion head with its
   explanation, the policy, the verdict messages). Comparable with the figures before tokenising was added.
2. The same with the texts normalised and tokenised for real: what one GPU worker process's CPU must do per post
   besides the models (the GPU decodes its JPEGs).
3. The same as 1 with the real image decode (PIL on the CPU) kept: a worker that does not decode on the GPU.
4. ``StreamConsumer.poll_batch`` alone (the worker's aiokafka consumer) draining a backlog: the client's ceiling.

Usage: ``.venv/bin/python bench/pipeline_overhead.py [--posts 1024] [--batch 64] [--runs 3] [--threads 0]
[--model models/default] [--sources FOLDER (bench/pack.sh's sources/; default: the installed data)]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from moderation.allocator import configure_allocator, freeze_loaded_objects
from moderation.bench.posts import STORE, PostSet, default_sources, folder_sources, stamp, utc_stamp
from moderation.bench.runner import Bench, ContenderSpec, Plan, Producer, bench_stack
from moderation.decide.policy import PolicySource
from moderation.decode.images import ImageLimits
from moderation.decode.post import PostDecoder
from moderation.decode.stores import StoreRegistry
from moderation.encode.base import PreparedTexts, set_threads
from moderation.encode.cached import CachedEncoders
from moderation.fuse import load_fusion_model
from moderation.hashlists.matcher import HashMatcher
from moderation.observability.metrics import Metrics
from moderation.pipeline import Pipeline
from moderation.settings import Settings, load_settings
from moderation.state.cache import Cache
from moderation.types import Modality, RawRecord


class StubText:
    name, version, modality, dim, device = "stub-text", "stub-text@0", Modality.TEXT, 384, torch.device("cpu")

    def __init__(self, real: Any = None) -> None:
        self.real = real  # a real encoder whose prepare (normalise, tokenise) is kept

    def prepare(self, texts: Sequence[str]) -> PreparedTexts:
        if self.real is not None:
            return self.real.prepare(texts)  # type: ignore[no-any-return]
        return PreparedTexts(len(texts))

    def encode_prepared(self, prepared: PreparedTexts) -> torch.Tensor:
        return torch.zeros((prepared.count, self.dim))


class StubImage:
    name, version, modality, dim, device = "stub-image", "stub-image@0", Modality.IMAGE, 1280, torch.device("cpu")

    def __init__(self, real: Any = None) -> None:
        self.real = real  # a real encoder whose preprocess (decode) is kept

    def preprocess_many(self, images: Sequence[tuple[bytes, str | None]], limits: ImageLimits) -> list[Any]:
        if self.real is not None:
            return self.real.preprocess_many(images, limits)  # type: ignore[no-any-return]
        return [torch.zeros(1) for _ in images]

    def encode(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.zeros((len(images), self.dim))


#: What each pass keeps real besides everything outside the encoders: (label, tokenise texts, decode images).
PASSES = (
    ("models and image decode stubbed", False, False),
    ("models and image decode stubbed, texts tokenised", True, False),
    ("models stubbed, images decoded on the CPU", False, True),
)


def pipeline(settings: Settings, redis_url: str, tokenise: bool, decode: bool) -> Pipeline:
    from moderation.encode import create_image_encoder, create_text_encoder

    metrics = Metrics()
    model = load_fusion_model(settings.model_dir)
    text = create_text_encoder(model.text_encoder, device="cpu") if tokenise else None
    image = create_image_encoder(model.image_encoder, device="cpu") if decode else None
    cache = Cache(redis_url, settings.cache_ttl_s, metrics)
    return Pipeline(
        settings=settings,
        decoder=PostDecoder(settings, StoreRegistry.from_folders(settings.stores)),
        encoders=CachedEncoders(StubText(text), StubImage(image), cache, metrics),  # type: ignore[arg-type]
        model=model,
        policies=PolicySource(settings.model_dir / "policy.yaml"),
        cache=cache,
        metrics=metrics,
        hashes=HashMatcher.from_settings(settings, redis_url, metrics),
    )


def records(posts: PostSet, topic: str) -> list[RawRecord]:
    now = utc_stamp(time.time())
    return [
        RawRecord(topic, n % 4, n, key, stamp(value, now), int(time.time() * 1000))
        for n, (key, value) in enumerate(zip(posts.keys, posts.values, strict=True))
    ]


def consume_rate(settings: Settings, count: int) -> float:
    from moderation.ingest.stream import StreamConsumer

    async def drain() -> float:
        consumer = StreamConsumer(settings, settings.kafka_bootstrap, settings.topic_posts)
        await consumer.start()
        try:
            seen = len(await consumer.poll_batch(settings.batch_max_size, settings.batch_max_wait_ms, 30_000))
            started = time.perf_counter()
            while seen < count:
                seen += len(await consumer.poll_batch(settings.batch_max_size, settings.batch_max_wait_ms))
            return (seen - 1) / (time.perf_counter() - started)
        finally:
            await consumer.stop()

    return asyncio.run(drain())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--model", type=Path, default=Path("models/default"))
    parser.add_argument("--sources", type=Path, default=None, help="a folder of texts.txt and photos/")
    args = parser.parse_args()
    base = load_settings(model_dir=args.model.resolve(), log_level="WARNING", batch_max_size=args.batch)
    configure_allocator(base.host_allocator)  # as the worker does, before any thread starts
    set_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="moderation-overhead-"))
    with bench_stack(base, out, base.topic_partitions) as stacked:
        settings = load_settings(**{**stacked.model_dump(), "stores": {STORE: str(out / "store")}})
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else ""
        sources = folder_sources(args.sources) if args.sources else default_sources()
        bench = Bench(settings, Plan(posts=2 * args.posts, half_posts=1, naive_posts=1), sources, out, print)
        print(
            f"{args.posts} posts per run, batches of {args.batch}, best of {args.runs} runs (posts/s, one Python "
            f"thread, {torch.get_num_threads()} torch threads)"
        )
        for number, (label, tokenise, decode) in enumerate(PASSES):
            pipe = pipeline(settings, redis_url, tokenise, decode)
            freeze_loaded_objects()  # as the worker does once its pipeline is built
            for shape in ("inline", "ref"):
                rates = []
                for run in range(args.runs + 1):
                    posts = bench.post_set(f"o{number}{shape}{run}", args.posts, shape)  # type: ignore[arg-type]
                    batch = records(posts, "posts")
                    started = time.perf_counter()
                    for offset in range(0, len(batch), args.batch):
                        result = pipe.process(batch[offset : offset + args.batch])
                        pipe.after_publish(result)
                    if run:  # the first pass warms up
                        rates.append(len(batch) / (time.perf_counter() - started))
                    bench.drop_store(posts)
                best, median = max(rates), statistics.median(rates)
                print(f"  pipeline, {label}, images {shape}: {best:,.0f} (median {median:,.0f})")
        for shape in ("inline", "ref"):
            spec = ContenderSpec(f"consume-{shape}", "consume", "product", shape)  # type: ignore[arg-type]
            consumer_settings = bench.contender_settings(spec)
            posts = bench.post_set(f"c{shape}", args.posts * 2, shape)  # type: ignore[arg-type]
            producer = Producer(consumer_settings)
            producer.send(consumer_settings.topic_posts, posts)
            producer.close()
            rate = consume_rate(consumer_settings, len(posts))
            print(f"  worker's Kafka consumer alone (StreamConsumer.poll_batch), images {shape}: {rate:,.0f} msg/s")


if __name__ == "__main__":
    main()
