"""The benchmark's report: Markdown tables of the limit, every contender, the ratios against the targets, scaling."""

from __future__ import annotations

import dataclasses
import json
import statistics
from typing import Any

from moderation.bench.limit import mix_rate
from moderation.bench.runner import BenchResult, ContenderResult
from moderation.bench.stats import Figure, latency_figures

# Targets of the issue. On a CPU the product must beat the naive consumer; on a GPU by 50x, and reach 10,000
# posts/s with images by reference and a p99 under 100 ms at half load.
TARGET_LIMIT = 0.90
TARGET_PLAIN = 0.95
TARGET_NAIVE = 1.0
TARGET_GPU_NAIVE = 50.0
TARGET_GPU_POSTS_PER_S = 10_000
TARGET_GPU_HALF_LOAD_P99_S = 0.100


def limit_figures(result: BenchResult) -> dict[str, Figure]:
    """Per-modality rates, decode rate, and the mix's limit per run (the limit's runs pair up text and image)."""
    limit = result.limit
    share, images = result.mix["text_share"], result.mix["images_per_post"]
    combined = limit.mix_per_s(share, images)
    with_decode = [
        mix_rate(share, images, t, 1 / (1 / i + 1 / d))
        for t, i, d in zip(limit.text_per_s, limit.image_per_s, limit.decode_per_s, strict=True)
    ]
    return {
        "text": Figure.of(limit.text_per_s),
        "image": Figure.of(limit.image_per_s),
        "decode": Figure.of(limit.decode_per_s),
        "limit": Figure.of(combined),
        "limit_with_decode": Figure.of(with_decode),
    }


def _mib(values: list[int]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] / 2**20:,.0f} MiB"
    return f"{sum(values) / 2**20:,.0f} MiB ({len(values)} x ~{statistics.mean(values) / 2**20:,.0f})"


def _latency(runs: list[Any]) -> str:
    if not runs:
        return "-"
    p50, p95, p99 = latency_figures(runs)
    return f"{p50.format(3)} / {p95.format(3)} / {p99.format(3)}"


def _find(result: BenchResult, name: str) -> ContenderResult | None:
    return next((c for c in result.contenders if c.spec.name == name), None)


def _ratio(numerator: ContenderResult | None, denominator: float | None) -> float | None:
    if numerator is None or not numerator.throughput or not denominator:
        return None
    return statistics.median(numerator.throughput) / denominator


def ratios(result: BenchResult) -> list[tuple[str, float | None, str, bool | None]]:
    """(what, value, target, met) for each target of the issue, for every product shape measured; on CUDA also
    the GPU's own targets (posts/s and half-load p99, images by reference)."""
    cuda = str(result.settings["device"]).startswith("cuda")
    limit = limit_figures(result)["limit"].median
    plain = _find(result, "plain")
    naive = _find(result, "naive")
    plain_rate = statistics.median(plain.throughput) if plain and plain.throughput else None
    naive_rate = statistics.median(naive.throughput) if naive and naive.throughput else None
    rows: list[tuple[str, float | None, str, bool | None]] = []
    for contender in result.contenders:
        if contender.spec.kind != "product" or contender.spec.processes != 1:
            continue
        shape = contender.spec.shape
        for label, denominator, op, target in (
            ("limit", limit, ">=", TARGET_LIMIT),
            ("plain batched loop", plain_rate, ">=", TARGET_PLAIN),
            ("naive consumer", naive_rate, *((">=", TARGET_GPU_NAIVE) if cuda else (">", TARGET_NAIVE))),
        ):
            value = _ratio(contender, denominator)
            met = None if value is None else (value > target if op == ">" else value >= target)
            rows.append((f"product (images {shape}) / {label}", value, f"{op} {target:.2f}", met))
    for contender in result.contenders:
        layout = result.layout_limits.get(contender.spec.name)
        if layout:
            spec = contender.spec
            value = _ratio(contender, statistics.median(layout))
            label = f"product (images {spec.shape}, {spec.processes} workers x {spec.threads} thread) / limit"
            met = None if value is None else value >= TARGET_LIMIT
            rows.append((f"{label} in the same layout", value, f">= {TARGET_LIMIT:.2f}", met))
    product = _find(result, "product-ref") or _find(result, "product-inline")
    if cuda and product is not None and product.throughput:
        shape = product.spec.shape
        rate = statistics.median(product.throughput)
        rows.append((f"product posts/s on GPU (images {shape})", rate, f">= {TARGET_GPU_POSTS_PER_S:,}",
                     rate >= TARGET_GPU_POSTS_PER_S))  # fmt: skip
        if product.half:
            p99 = latency_figures(product.half)[2].median
            rows.append((f"p99 latency at half load, s (images {shape})", p99,
                         f"< {TARGET_GPU_HALF_LOAD_P99_S:.3f}", p99 < TARGET_GPU_HALF_LOAD_P99_S))  # fmt: skip
    return rows


def _limit_ends(result: BenchResult) -> list[str]:
    """Where the limits were measured at both ends of the run: each limit at the start and at the end, and a note."""
    start = result.limit_runs_at_start
    if not start:
        return []
    ends = {"the limit for the mix": result.limit.mix_per_s(result.mix["text_share"], result.mix["images_per_post"])}
    for contender in result.contenders:
        if runs := result.layout_limits.get(contender.spec.name):
            ends[f"the limit in the layout {contender.spec.processes} x {contender.spec.threads} thread"] = runs
    return [
        *(
            f"| {label}, at the start / at the end of the run (posts/s) "
            f"| {Figure.of(runs[:start]).format()} / {Figure.of(runs[start:]).format()} |"
            for label, runs in ends.items()
        ),
        "",
        f"The limits were measured at both ends of the run ({start} run(s) at each end), before the first contender "
        "and after the last; the figures above and the ratios below take the runs of both ends together.",
    ]


def format_report(result: BenchResult) -> str:
    """The whole report as Markdown."""
    machine, settings, plan = result.machine, result.settings, result.plan
    figures = limit_figures(result)
    lines = [
        f"Machine: {machine['cpu']}, {machine['nproc']} cores (nproc), {machine['memory']} RAM"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU")
        + f"; Python {machine['python']}, torch {machine['torch']}; {machine['date']}.",
        f"Device {settings['device']}, {settings['torch_threads']} torch threads, {settings['precision']}, "
        f"{settings['memory_format']}; worker batches of up to {settings['batch_max_size']} posts "
        f"(wait {settings['batch_max_wait_ms']} ms), text batch {settings['text_batch_size']}, image batch "
        f"{settings['image_batch_size']}; {settings['partitions']} partitions per topic.",
        f"Encoders: {settings['text_encoder']}, {settings['image_encoder']}; fusion model {settings['model_dir']}."
        + (
            " Encoder weights: RANDOMLY INITIALISED stand-ins of the same architectures (speed does not depend on "
            "the weights; the verdicts mean nothing)."
            if machine.get("weights") == "random"
            else ""
        ),
        f"Posts: {plan.posts} per saturation run ({plan.naive_posts} for the naive consumer), {plan.half_posts} per "
        "half-load run"
        + (
            f", or as many as each contender drains in {plan.min_run_s:g} s, measured by an uncounted sizing burst "
            "(posts per run in the table)"
            if plan.min_run_s > 0
            else ""
        )
        + f"; mix 40% text only, 20% image only, 40% both ({result.mix['text_share']:.2f} texts and "
        f"{result.mix['images_per_post']:.2f} images per post); 640x480 JPEG q90, every text and image unique; "
        "mean message "
        + ", ".join(f"{size / 1024:,.1f} KiB ({shape})" for shape, size in result.message_bytes.items())
        + ".",
        f"Each figure: median [min-max] of {plan.runs} run(s). Load average (1, 5, 15 min) at start "
        f"{result.loadavg.get('start', '?')}, at end {result.loadavg.get('end', '?')}.",
        "",
        "### Limit: bare models on ready tensors",
        "",
        "| measurement | rate |",
        "|---|---:|",
        f"| text encoder, batch {result.limit.text_batch_size} (texts/s) | {figures['text'].format()} |",
        f"| image encoder, batch {result.limit.image_batch_size} (images/s) | {figures['image'].format()} |",
        f"| **limit for the mix** (posts/s) = 1 / ({result.mix['text_share']:.2f} / text + "
        f"{result.mix['images_per_post']:.2f} / image) | **{figures['limit'].format()}** |",
        f"| image decode to model input, one thread (images/s), beside the limit | {figures['decode'].format()} |",
        f"| the mix with decode added in series (posts/s), for reference | {figures['limit_with_decode'].format()} |",
        *_limit_ends(result),
        "",
        "### Throughput and latency",
        "",
        "| contender | processes x torch threads | posts a run, saturation / half load | posts/s at saturation "
        "| latency at saturation p50 / p95 / p99 (s) | half load (posts/s offered) "
        "| latency at half load p50 / p95 / p99 (s) | peak RSS | peak GPU memory |",
        "|---|---|---:|---:|---|---:|---|---:|---:|",
    ]
    threads = settings["torch_threads"]
    cuda = str(settings["device"]).startswith("cuda")
    for c in result.contenders:
        spec = c.spec
        rate = Figure.of(c.throughput).format() if c.throughput else "-"
        half = f"{c.half_rate:,.1f}" if c.half_rate else "-"
        if c.half_rate and c.half_achieved:
            achieved = statistics.median(c.half_achieved)
            if achieved < 0.95 * c.half_rate:
                half += f" (achieved {achieved:,.1f})"
        sizes = f"{c.posts:,} / {c.half_posts:,}" if c.half else f"{c.posts:,} / -"
        lines.append(
            f"| {spec.label} | {spec.processes} x {spec.threads or threads} | {sizes} | {rate} "
            f"| {_latency(c.saturation)} "
            f"| {half} | {_latency(c.half)} | {_mib(c.peak_rss_bytes)} | {_mib(c.peak_gpu_bytes)} |"
        )
    lines += ["", "### Ratios against the targets", "", "| ratio | value | target | met |", "|---|---:|---:|---|"]
    for label, value, target, met in ratios(result):
        shown = "-" if value is None else f"{value:,.2f}"
        verdict = "-" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {label} | {shown} | {target} | {verdict} |")
    scaling = [c for c in result.contenders if c.spec.kind == "product" and c.spec.shape == plan.scaling_shape]
    scaling.sort(key=lambda c: c.spec.processes)
    if len(scaling) > 1 and scaling[0].throughput:
        base = statistics.median(scaling[0].throughput)
        layouts = {scaling[0].spec.name: limit_figures(result)["limit"].median} | {
            name: statistics.median(runs) for name, runs in result.layout_limits.items()
        }
        lines += [
            "",
            f"### Scaling: worker processes on this machine (images {plan.scaling_shape})",
            "",
            "| workers | torch threads each | posts a run | posts/s | speed-up over 1 worker "
            "| limit in this layout (posts/s) | product / that limit |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in scaling:
            if c.throughput:
                achieved = statistics.median(c.throughput)
                layout = layouts.get(c.spec.name)
                against = f"{layout:,.1f} | {achieved / layout:.2f}" if layout and not cuda else "- | -"
                lines.append(
                    f"| {c.spec.processes} | {c.spec.threads or threads} | {c.posts:,} "
                    f"| {Figure.of(c.throughput).format()} | {achieved / base:.2f}x | {against} |"
                )
    notes = [f"{c.spec.label}: {note}" for c in result.contenders for note in c.notes]
    problems = [
        f"{c.spec.label}: {c.duplicates} duplicate verdicts, {c.dead_letters} dead letters"
        for c in result.contenders
        if c.duplicates or c.dead_letters
    ]
    if notes or problems:
        lines += ["", "Notes:", *[f"- {line}" for line in problems + notes]]
    return "\n".join(lines)


def to_json(result: BenchResult) -> str:
    """Every run's raw numbers, for later comparison."""

    def default(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    payload = dataclasses.asdict(result)
    payload["figures"] = {name: dataclasses.asdict(fig) for name, fig in limit_figures(result).items()}
    payload["ratios"] = [
        {"ratio": label, "value": value, "target": target, "met": met} for label, value, target, met in ratios(result)
    ]
    return json.dumps(payload, indent=2, default=default)
