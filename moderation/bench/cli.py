"""``moderation bench``: the product against the bare-model limit, a plain batched loop and a naive consumer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from moderation.settings import load_settings

if TYPE_CHECKING:
    from moderation.bench.posts import Shape


def _counts(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"{value!r}: give positive integers separated by commas, like 1,2,4")
    return counts


def _shapes(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    shapes = tuple(part.strip() for part in value.split(",") if part.strip())
    if not shapes or any(shape not in ("inline", "ref") for shape in shapes):
        raise click.BadParameter(f"{value!r}: inline, ref or both (inline,ref)")
    return shapes


def wait_for_quiet(threshold: float, max_wait_s: float, interval_s: float = 60.0) -> tuple[bool, float]:
    """Poll the 1-minute load average until it is below ``threshold``; (quiet, waited seconds)."""
    started = time.monotonic()
    while True:
        load = float(Path("/proc/loadavg").read_text().split()[0])
        waited = time.monotonic() - started
        if load < threshold:
            return True, waited
        if waited >= max_wait_s:
            return False, waited
        click.echo(f"load average {load:.2f} >= {threshold}: waiting ({waited / 60:.0f} min so far) ...")
        time.sleep(interval_s)


@click.command("bench")
@click.option("--quick", is_flag=True, help="A short smoke: 1 run each, tiny sizes, workers 1 and 2.")
@click.option("--runs", type=click.IntRange(min=1), default=None, help="Runs per figure (default 5; quick 1).")
@click.option("--posts", type=click.IntRange(min=1), default=None, help="Posts per saturation run (default 320).")
@click.option("--half-posts", type=click.IntRange(min=1), default=None, help="Posts per half-load run (default 160).")
@click.option("--naive-posts", type=click.IntRange(min=1), default=None, help="Posts per naive run (default 96).")
@click.option(
    "--min-run-s",
    type=click.FloatRange(min=0),
    default=None,
    help="Enlarge each contender's runs to last about this long, sized by an uncounted burst, so that filling and "
    "draining the pipeline weigh little in a saturation figure (default 10; quick 0; 0: sizes as given).",
)
@click.option(
    "--workers",
    default=None,
    callback=lambda c, p, v: _counts(c, p, v) if v else None,
    help="Worker processes for the scaling runs (default 1,2,4; quick 1,2).",
)
@click.option("--shapes", default="inline,ref", show_default=True, callback=_shapes, help="Image shapes to run.")
@click.option(
    "--scaling-shape",
    type=click.Choice(["inline", "ref"]),
    default=None,
    help="Image shape of the scaling runs (default inline when --shapes has it, else ref).",
)
@click.option("--no-baselines", is_flag=True, help="Skip the plain loop and the naive consumer.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers (default: an embedded broker started here).")
@click.option("--redis-url", default=None, help="Redis URL (default: an embedded cache started here).")
@click.option("--partitions", type=click.IntRange(min=1), default=None, help="Partitions per topic (default 4).")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Fusion model folder (default: MODERATION_MODEL_DIR).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Default: MODERATION_DEVICE.")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="Torch CPU threads (0: torch's default).")
@click.option(
    "--sources",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder with texts.txt and photos/*.jpg (bench/pack.sh); default: the installed data packages.",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write every run here."
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report here.",
)
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None, help="Keep logs here.")
@click.option("--wait-for-load", type=float, default=0.0, help="Start once the 1-min load is below this (0: now).")
@click.option("--max-wait-min", type=float, default=45.0, show_default=True, help="Longest wait for a quiet machine.")
def bench(
    quick: bool,
    runs: int | None,
    posts: int | None,
    half_posts: int | None,
    naive_posts: int | None,
    min_run_s: float | None,
    workers: tuple[int, ...] | None,
    shapes: tuple[str, ...],
    scaling_shape: Shape | None,
    no_baselines: bool,
    bootstrap: str | None,
    redis_url: str | None,
    partitions: int | None,
    model_dir: Path | None,
    device: str | None,
    threads: int | None,
    sources: Path | None,
    json_path: Path | None,
    markdown_path: Path | None,
    keep: Path | None,
    wait_for_load: float,
    max_wait_min: float,
) -> None:
    """Throughput and latency of the product against the bare-model limit, a plain batched loop and a naive
    consumer, on the same posts, models, settings and device; then 1, 2 and 4 workers. Prints Markdown."""
    from dataclasses import replace

    from moderation.bench.posts import default_sources, folder_sources
    from moderation.bench.report import format_report, to_json
    from moderation.bench.runner import Plan, run_bench

    plan = Plan.quick() if quick else Plan()
    plan = replace(
        plan,
        runs=runs or plan.runs,
        posts=posts or plan.posts,
        half_posts=half_posts or plan.half_posts,
        naive_posts=naive_posts or plan.naive_posts,
        min_run_s=plan.min_run_s if min_run_s is None else min_run_s,
        workers=workers or plan.workers,
        shapes=shapes,  # type: ignore[arg-type]
        scaling_shape=scaling_shape or ("inline" if "inline" in shapes else "ref"),
        baselines=not no_baselines,
    )
    overrides: dict[str, object] = {}
    if bootstrap:
        overrides["kafka_bootstrap"] = bootstrap
    if redis_url:
        overrides["redis_url"] = redis_url
    if device:
        overrides["device"] = device
    if threads is not None:
        overrides["torch_threads"] = threads
    base = load_settings(**overrides)
    settings = load_settings(
        **{
            **base.model_dump(),
            **overrides,
            "model_dir": (model_dir or base.model_dir).resolve(),
            "log_level": "WARNING",
        }
    )
    if not (settings.model_dir / "config.json").is_file():
        raise click.ClickException(
            f"no fusion model in {settings.model_dir}: run `moderation build-default-model` or pass --model DIR"
        )
    note = ""
    if wait_for_load > 0:
        quiet, waited = wait_for_quiet(wait_for_load, max_wait_min * 60)
        note = (
            f"machine quiet (1-min load < {wait_for_load}) after waiting {waited / 60:.0f} min"
            if quiet
            else f"machine NOT quiet after waiting {waited / 60:.0f} min: it was shared with other work"
        )
        click.echo(note)
    result = run_bench(
        settings,
        plan,
        folder_sources(sources) if sources else default_sources(),
        partitions or base.topic_partitions,
        echo=click.echo,
        keep=keep,
    )
    report = format_report(result)
    if note:
        report += f"\n\n{note}."
    click.echo("")
    click.echo(report)
    if markdown_path:
        markdown_path.write_text(report + "\n")
    if json_path:
        json_path.write_text(to_json(result) + "\n")


COMMANDS = [bench]
