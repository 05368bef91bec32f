"""Every Prometheus metric of the project, declared once, on an injected registry.

Label values are bounded: actions, categories (from the model), reason codes, cache kinds, stage names and
topics; never post, author or tenant ids. Tests build a fresh ``Metrics`` on their own registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Buckets from 1 ms (a GPU batch) to 60 s (a CPU backlog), so one set serves both.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """The worker's metrics; one instance per process (or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.posts_consumed = Counter(
            "moderation_posts_consumed", "Messages consumed from the posts topic.", registry=r
        )
        self.verdicts = Counter("moderation_verdicts", "Verdicts published, by overall action.", ["action"], registry=r)
        self.category_decisions = Counter(
            "moderation_category_decisions",
            "Per-category decisions published.",
            ["category", "decision", "mode"],
            registry=r,
        )
        self.review_published = Counter(
            "moderation_review_published", "Verdicts copied to the review topic.", registry=r
        )
        self.dead_letters = Counter(
            "moderation_dead_letters", "Dead-letter records published, by reason.", ["reason"], registry=r
        )
        self.cache_lookups = Counter(
            "moderation_cache_lookups", "Cache lookups by kind and result (hit/miss).", ["kind", "result"], registry=r
        )
        self.cache_errors = Counter(
            "moderation_cache_errors", "Cache calls that failed (Redis unreachable).", ["kind"], registry=r
        )
        self.cache_up = Gauge("moderation_cache_up", "1 while Redis answers, 0 during an outage.", registry=r)
        self.encoded_items = Counter(
            "moderation_encoded_items", "Items run through an encoder (cache misses).", ["modality"], registry=r
        )
        self.stage_seconds = Histogram(
            "moderation_stage_seconds", "Time per batch in each stage.", ["stage"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.end_to_end_seconds = Histogram(
            "moderation_end_to_end_seconds",
            "Post created-at to verdict published.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "moderation_batch_size", "Items per encoder forward pass.", ["encoder"], buckets=BATCH_BUCKETS, registry=r
        )
        self.in_flight = Gauge("moderation_in_flight_posts", "Posts consumed but not yet committed.", registry=r)
        self.commit_failures = Counter(
            "moderation_commit_failures", "Offset commits refused (a rebalance moved the partition).", registry=r
        )
        self.lag_messages = Gauge(
            "moderation_consumer_lag_messages", "Posts not yet consumed, per partition.", ["partition"], registry=r
        )
        self.lag_seconds = Gauge(
            "moderation_consumer_lag_seconds",
            "Age of the oldest post not yet processed, per partition (0 when caught up).",
            ["partition"],
            registry=r,
        )
        self.gpu_memory_bytes = Gauge(
            "moderation_gpu_memory_bytes", "GPU memory allocated by torch (CUDA only).", registry=r
        )
        self.gpu_utilization = Gauge(
            "moderation_gpu_utilization_ratio", "GPU utilisation 0..1 (CUDA only).", registry=r
        )
        self.hash_matches = Counter(
            "moderation_hash_matches",
            "Images that matched a known-bad hash list, by list (operator-defined, few) and kind (sha256/pdq).",
            ["list", "kind"],
            registry=r,
        )
        self.hash_list_entries = Gauge(
            "moderation_hash_list_entries", "Known-bad hash-list entries loaded, by kind.", ["kind"], registry=r
        )
        self.hash_list_version = Gauge(
            "moderation_hash_list_version", "Version of the hash lists this worker matches against.", registry=r
        )
        self.model_info = Info("moderation_model", "Model and policy versions in use.", registry=r)
        self.cache_up.set(1)


class SupervisorMetrics:
    """The metrics of ``moderation worker`` when it supervises several worker processes (beside theirs)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.worker_restarts = Counter(
            "moderation_worker_restarts",
            "Worker processes restarted after they exited unasked, by worker index.",
            ["worker"],
            registry=self.registry,
        )
