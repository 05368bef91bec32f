"""``moderation bench``: throughput and latency of the product against the bare-model limit and two baselines.

One run measures, on the same posts, models, settings and device:

* the limit: the encoders alone on ready tensors, combined for the post mix (:mod:`moderation.bench.limit`);
* the product: ``moderation worker`` processes through the broker, images inline and by store reference;
* a plain batched loop and a naive one-post-at-a-time consumer (:mod:`moderation.bench.baselines`);
* scaling over 1, 2 and 4 worker processes.

Posts come from :mod:`moderation.bench.posts`; the orchestration is :mod:`moderation.bench.runner`.
"""
