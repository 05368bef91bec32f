"""The limit (the encoders alone on ready tensors, as ``moderation bench`` measures it) in the layout of N worker
processes with T torch threads each: N limit measurements at once, each in its own process, summed.

``moderation bench`` measures this for its scaling contenders on a CPU (``Bench.layout_limit``); this runs it
alone, to compare with ``bench/profile_worker.py --processes N`` on longer backlogs. Usage::

    .venv/bin/python bench/limit_processes.py [--processes 2] [--threads 1] [--posts 320] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from moderation.bench.posts import default_sources
from moderation.bench.runner import Bench, ContenderSpec, Plan
from moderation.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--posts", type=int, default=320)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", type=Path, default=Path("models/default"))
    args = parser.parse_args()
    settings = load_settings(model_dir=args.model.resolve(), log_level="WARNING")
    plan = Plan(posts=args.posts, half_posts=1, naive_posts=1, runs=args.runs)
    bench = Bench(settings, plan, default_sources(), Path(tempfile.mkdtemp()), print)
    layout = ContenderSpec("layout", "layout", "product", "inline", processes=args.processes, threads=args.threads)
    summed = bench.layout_limit(layout)
    print(f"{args.processes} x {args.threads} thread(s): {statistics.median(summed):.1f} posts/s for the mix together")


if __name__ == "__main__":
    main()
