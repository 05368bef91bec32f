"""The limit (the encoders alone on ready tensors, as ``moderation bench`` measures it) in the layout of N worker
processes with T torch threads each: N limit measurements at once, each in its own process, summed.

``moderation bench`` measures the limit in one process with the worker's threads; a product run as
``MODERATION_WORKER_PROCESSES=N`` with one thread each is compared fairly with this instead. Usage::

    .venv/bin/python bench/limit_processes.py [--processes 2] [--threads 1] [--posts 320] [--runs 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
from pathlib import Path

from moderation.bench.limit import measure_limit, worker_windows
from moderation.bench.posts import default_sources
from moderation.bench.runner import Bench, Plan
from moderation.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--posts", type=int, default=320)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", type=Path, default=Path("models/default"))
    args = parser.parse_args()
    settings = load_settings(model_dir=args.model.resolve(), log_level="WARNING", torch_threads=args.threads)
    bench = Bench(
        settings,
        Plan(posts=args.posts, half_posts=1, naive_posts=1),
        default_sources(),
        Path(tempfile.mkdtemp()),
        print,
    )
    posts = bench.post_set("limit", args.posts, "inline")
    windows = worker_windows(posts.kinds, settings.batch_max_size)
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        jobs = [
            pool.apply_async(measure_limit, (settings, posts.texts, posts.images, args.runs, *windows))
            for _ in range(args.processes)
        ]
        results = [job.get() for job in jobs]
    rates = [statistics.median(r.mix_per_s(posts.text_share, posts.images_per_post)) for r in results]
    each = ", ".join(f"{rate:.1f}" for rate in rates)
    print(f"{args.processes} x {args.threads} thread(s): {sum(rates):.1f} posts/s for the mix together ({each} each)")


if __name__ == "__main__":
    main()
