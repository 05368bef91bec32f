"""The limit's arithmetic, the statistics, the contender list and the report, on made-up numbers."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from moderation.bench.limit import LimitRuns, mix_rate, worker_windows
from moderation.bench.report import format_report, limit_figures, ratios, to_json
from moderation.bench.runner import (
    BenchResult,
    ContenderResult,
    ContenderSpec,
    Plan,
    backlog_size,
    contender_specs,
)
from moderation.bench.stats import Figure, Latency, percentile


def test_mix_rate() -> None:
    # 0.8 texts at 100/s (8 ms) + 0.6 images at 50/s (12 ms) = 20 ms a post
    assert mix_rate(0.8, 0.6, 100.0, 50.0) == pytest.approx(50.0)
    assert mix_rate(1.0, 0.0, 200.0, 1.0) == pytest.approx(200.0)
    assert mix_rate(0.0, 2.0, 1.0, 30.0) == pytest.approx(15.0)
    with pytest.raises(ValueError):
        mix_rate(0.0, 0.0, 1.0, 1.0)


def test_figure_and_percentiles() -> None:
    figure = Figure.of([3.0, 1.0, 2.0, 10.0, 4.0])
    assert (figure.median, figure.low, figure.high, figure.runs) == (3.0, 1.0, 10.0, 5)
    assert figure.format(1) == "3.0 [1.0-10.0]"
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 95) == 7.0
    latency = Latency.of(values)
    assert latency.p50 < latency.p95 < latency.p99
    with pytest.raises(ValueError):
        Figure.of([])


def test_contender_specs_split_the_cores() -> None:
    specs = contender_specs(Plan(), cpus=2)
    names = [spec.name for spec in specs]
    assert names == ["product-inline", "product-ref", "plain", "naive", "product-inline-2w", "product-inline-4w"]
    threads = {spec.name: spec.threads for spec in specs}
    assert threads["product-inline-2w"] == 1 and threads["product-inline-4w"] == 1
    assert contender_specs(Plan(), cpus=16)[-1].threads == 4
    posts = {spec.name: spec.posts for spec in specs}  # on a CPU each of N processes a backlog of plan.posts
    assert posts["product-inline-2w"] == 2 * Plan().posts and posts["product-inline-4w"] == 4 * Plan().posts
    assert contender_specs(Plan(), cpus=16, cuda=True)[-1].posts == 0  # sized by --min-run-s there
    assert contender_specs(Plan(), cpus=16, cuda=True)[-1].threads == 0  # the CUDA default, for every worker
    quick = contender_specs(Plan.quick(), cpus=2)
    assert [spec.name for spec in quick][-1] == "product-inline-2w"


def _result() -> BenchResult:
    limit = LimitRuns(
        text_per_s=[100.0, 110.0, 90.0],
        image_per_s=[50.0, 55.0, 45.0],
        decode_per_s=[200.0, 210.0, 190.0],
        text_encoder="minilm-l6@x",
        image_encoder="efficientnet-lite0@y",
        device="cpu",
        torch_threads=2,
        text_batch_size=64,
        image_batch_size=32,
        texts=256,
        images=192,
        peak_gpu_bytes=None,
    )
    lat = Latency(1.0, 2.0, 3.0)

    def contender(name: str, kind: str, rates: list[float], processes: int = 1) -> ContenderResult:
        spec = ContenderSpec(name, name, kind, "inline", processes=processes)  # type: ignore[arg-type]
        return ContenderResult(
            spec=spec, posts=320, throughput=rates, saturation=[lat] * len(rates), peak_rss_bytes=[2**30] * processes
        )

    return BenchResult(
        machine={"cpu": "test cpu", "nproc": 2, "memory": "8 GiB", "python": "3.11", "torch": "2", "date": "today"},
        plan=Plan(runs=3, min_run_s=0.0),
        settings={
            "device": "cpu",
            "torch_threads": 2,
            "precision": "float32",
            "memory_format": "channels-last",
            "batch_max_size": 64,
            "batch_max_wait_ms": 50,
            "text_batch_size": 64,
            "image_batch_size": 32,
            "partitions": 4,
            "text_encoder": "minilm-l6@x",
            "image_encoder": "efficientnet-lite0@y",
            "model_dir": "models/default",
        },
        mix={"text_share": 0.8, "images_per_post": 0.6},
        limit=limit,
        contenders=[
            contender("product-inline", "product", [46.0, 45.0, 47.0]),
            contender("plain", "plain", [47.0, 48.0, 46.0]),
            contender("naive", "naive", [20.0, 21.0, 19.0]),
            contender("product-inline-2w", "product", [60.0, 61.0, 59.0], processes=2),
        ],
        message_bytes={"inline": 70_000.0},
        started_at="now",
    )


def test_limit_and_ratios() -> None:
    result = _result()
    figures = limit_figures(result)
    assert figures["limit"].median == pytest.approx(50.0)
    assert figures["limit"].low == pytest.approx(mix_rate(0.8, 0.6, 90, 45))
    assert result.limit.mix_per_s(0.8, 0.6) == pytest.approx([50.0, 55.0, 45.0])  # run by run, as the log prints
    assert figures["limit_with_decode"].median < figures["limit"].median
    rows = {label: (value, met) for label, value, _, met in ratios(result)}
    assert rows["product (images inline) / limit"][0] == pytest.approx(0.92)
    assert rows["product (images inline) / limit"][1] is True
    assert rows["product (images inline) / plain batched loop"][0] == pytest.approx(46 / 47)
    assert rows["product (images inline) / plain batched loop"][1] is True
    assert rows["product (images inline) / naive consumer"][0] == pytest.approx(46 / 20)
    assert rows["product (images inline) / naive consumer"][1] is True


def test_gpu_targets() -> None:
    result = _result()
    result.settings["device"] = "cuda"
    product = result.contenders[0]
    product.half = [Latency(0.05, 0.07, 0.09)] * 3
    rows = {label: (value, target, met) for label, value, target, met in ratios(result)}
    assert rows["product (images inline) / naive consumer"][0] == pytest.approx(46 / 20)
    assert rows["product (images inline) / naive consumer"][1:] == (">= 50.00", False)
    assert rows["product posts/s on GPU (images inline)"][0] == pytest.approx(46.0)
    assert rows["product posts/s on GPU (images inline)"][1:] == (">= 10,000", False)
    assert rows["p99 latency at half load, s (images inline)"][0] == pytest.approx(0.09)
    assert rows["p99 latency at half load, s (images inline)"][1:] == ("< 0.100", True)
    assert "| product posts/s on GPU (images inline) | 46.00 | >= 10,000 | **no** |" in format_report(result)


def test_report_and_json() -> None:
    result = _result()
    report = format_report(result)
    assert "**limit for the mix** (posts/s)" in report
    assert "| product-inline | 1 x 2 | 320 / - | 46.0 [45.0-47.0] |" in report
    assert "drains in" not in report
    result.plan = replace(result.plan, min_run_s=Plan().min_run_s)  # the default: runs sized by time
    assert f"as many as each contender drains in {Plan().min_run_s:g} s" in format_report(result)
    assert Plan.quick().min_run_s == 0
    assert "### Scaling" in report and "| 2 | 2 | 320 | 60.0 [59.0-61.0] | 1.30x | - | - |" in report
    assert "RANDOMLY INITIALISED" not in report
    result.machine["weights"] = "random"
    assert "RANDOMLY INITIALISED" in format_report(result)
    payload = json.loads(to_json(result))
    assert payload["figures"]["limit"]["median"] == pytest.approx(50.0)
    assert payload["contenders"][0]["throughput"] == [46.0, 45.0, 47.0]


def test_several_workers_are_compared_with_the_limit_in_their_layout() -> None:
    result = _result()
    two = result.contenders[-1]
    two.spec = replace(two.spec, threads=1)
    assert not any("same layout" in label for label, *_ in ratios(result))  # none measured: no row
    result.layout_limits = {"product-inline-2w": [64.0, 62.0, 66.0]}
    rows = {label: (value, met) for label, value, _, met in ratios(result)}
    same_layout = rows["product (images inline, 2 workers x 1 thread) / limit in the same layout"]
    assert same_layout[0] == pytest.approx(60 / 64)
    assert same_layout[1] is True
    report = format_report(result)
    assert "| 1 | 2 | 320 | 46.0 [45.0-47.0] | 1.00x | 50.0 | 0.92 |" in report  # the one-process limit
    assert "| 2 | 1 | 320 | 60.0 [59.0-61.0] | 1.30x | 64.0 | 0.94 |" in report
    assert json.loads(to_json(result))["layout_limits"] == {"product-inline-2w": [64.0, 62.0, 66.0]}


def test_limits_measured_at_both_ends_are_reported_apart_and_used_together() -> None:
    result = _result()
    two = result.contenders[-1]
    two.spec = replace(two.spec, threads=1)
    result.layout_limits = {"product-inline-2w": [64.0, 62.0, 66.0]}
    assert "at the start / at the end" not in format_report(result)  # measured once: no such rows
    end = replace(result.limit, text_per_s=[80.0] * 3, image_per_s=[40.0] * 3, decode_per_s=[150.0] * 3)
    result.limit, result.limit_runs_at_start = result.limit.joined(end), 3
    result.layout_limits["product-inline-2w"] += [52.0, 50.0, 54.0]
    report = format_report(result)
    # 0.8 texts and 0.6 images a post; start 1 / (0.8 / 100 + 0.6 / 50) = 50 (45-55), end 1 / (0.8 / 80 + 0.6 / 40)
    ends = "at the start / at the end of the run (posts/s)"
    assert f"| the limit for the mix, {ends} | 50.0 [45.0-55.0] / 40.0 [40.0-40.0] |" in report
    assert f"| the limit in the layout 2 x 1 thread, {ends} | 64.0 [62.0-66.0] / 52.0 [50.0-54.0] |" in report
    assert "(3 run(s) at each end)" in report
    combined = limit_figures(result)["limit"]
    assert combined.median == pytest.approx((40.0 + 45.0) / 2)  # the median of all six runs
    rows = {label: value for label, value, _, _ in ratios(result)}
    assert rows["product (images inline) / limit"] == pytest.approx(46 / combined.median)
    assert rows["product (images inline, 2 workers x 1 thread) / limit in the same layout"] == pytest.approx(60 / 58)
    assert json.loads(to_json(result))["limit_runs_at_start"] == 3


def test_backlog_size() -> None:
    # 3,000 posts/s for 8 s; producing at 10,000 posts/s allows 0.8 * 6 s of it
    assert backlog_size(2000, 3000.0, 10_000.0, 8.0) == 24_000
    assert backlog_size(2000, 3000.0, 1000.0, 8.0) == 4800  # capped by the pause the consumers can take
    assert backlog_size(320, 20.0, 1000.0, 8.0) == 320  # never below the planned size
    assert backlog_size(320, 0.0, 1000.0, 8.0) == 320


def test_worker_windows() -> None:
    kinds = ["text", "image", "both", "text", "both"]
    assert worker_windows(kinds, 2) == ([1, 2, 1], [1, 1, 1])
    assert worker_windows(kinds, 64) == ([4], [3])
