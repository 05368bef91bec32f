"""The evaluation report: ``docs/eval/<dataset>.md`` with ROC and reliability plots beside it.

Every number in the report comes from an :class:`~moderation.fuse.evaluate.EvalResult`; the acceptance section
states each target, the measured value and whether it holds, and nothing is rounded into a pass.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moderation.fuse.evaluate import (
    ALL_POSTS_VIEW,
    FUSION,
    IMAGE_BASELINE,
    INFORMATIVE_MACRO,
    LOST_VIEW,
    MACRO,
    NAIVE,
    REMAINING,
    SUBSET_VIEWS,
    TEXT_BASELINE,
    EvalResult,
    MetricRow,
)
from moderation.fuse.metrics import Estimate, reliability_curve, roc_points

ECE_TARGET = 0.05
MODEL_ORDER = (FUSION, TEXT_BASELINE, IMAGE_BASELINE, NAIVE)


@dataclass(frozen=True)
class Check:
    """One acceptance point as measured."""

    name: str
    target: str
    measured: str
    passed: bool


def acceptance_checks(result: EvalResult) -> list[Check]:
    """The issue's acceptance points that this dataset can speak to."""
    checks: list[Check] = []
    text_view = SUBSET_VIEWS[1] if result.row(SUBSET_VIEWS[1], FUSION, "spam") else "as given"
    spam = result.row(text_view, FUSION, "spam")
    if spam is not None and (text_view != "as given" or result.info.get("unique_photos") == 0):
        checks.append(
            Check("`spam` AUROC, text branch (text-only posts)", ">= 0.99", str(spam.auroc), spam.auroc.value >= 0.99)
        )
    fusion_combo = result.row(SUBSET_VIEWS[3], FUSION, "combination_decided")
    if fusion_combo is not None:
        for baseline in (TEXT_BASELINE, IMAGE_BASELINE):
            other = result.row(SUBSET_VIEWS[3], baseline, "combination_decided")
            if other is not None:
                checks.append(
                    Check(
                        f"`combination_decided`, both modalities: fusion vs {baseline}",
                        "intervals do not overlap (fusion above)",
                        f"{fusion_combo.auroc} vs {other.auroc}",
                        fusion_combo.auroc.low > other.auroc.high,
                    )
                )
    informative = tuple(result.info.get("missing", {}).get("informative", ()))
    for category in (*informative, INFORMATIVE_MACRO):
        near = result.difference(LOST_VIEW, category, FUSION, REMAINING)
        above = result.difference(LOST_VIEW, category, FUSION, NAIVE)
        if near is None or above is None:
            continue
        label = "macro AUROC over informative categories" if category == INFORMATIVE_MACRO else f"`{category}` AUROC"
        checks.append(
            Check(
                f"70%-missing, lost posts, {label}: fusion - remaining-modality baseline",
                ">= -0.01",
                _signed(near.auroc),
                near.auroc.value >= -0.01,
            )
        )
        checks.append(
            Check(
                f"70%-missing, lost posts, {label}: fusion - naive fusion",
                ">= 0.05, interval above 0",
                _signed(above.auroc),
                above.auroc.value >= 0.05 and above.auroc.low > 0,
            )
        )
    for view in _ece_views(result):
        pooled = result.pooled_ece[(view, FUSION)]
        worst = max(
            (r for r in result.rows if r.view == view and r.model == FUSION and r.category != MACRO),
            key=lambda r: r.ece,
        )
        checks.append(
            Check(
                f"ECE, fusion, {view} (all categories pooled)",
                f"<= {ECE_TARGET}",
                f"{pooled:.3f}",
                pooled <= ECE_TARGET,
            )
        )
        checks.append(
            Check(
                f"ECE, fusion, {view}, worst single category (`{worst.category}`)",
                f"<= {ECE_TARGET}",
                f"{worst.ece:.3f}",
                worst.ece <= ECE_TARGET,
            )
        )
    return checks


def _signed(estimate: Estimate) -> str:
    return f"{estimate.value:+.3f} [{estimate.low:+.3f}, {estimate.high:+.3f}]"


def _ece_views(result: EvalResult) -> list[str]:
    subsets = [v for v in SUBSET_VIEWS.values() if (v, FUSION) in result.pooled_ece]
    return subsets or ["as given"]


def _models(result: EvalResult, view: str) -> list[str]:
    present = {r.model for r in result.rows if r.view == view}
    return [m for m in (*MODEL_ORDER, REMAINING) if m in present]


def _metric_table(result: EvalResult, view: str) -> list[str]:
    lines = [
        "| category | model | AUROC [95% CI] | average precision [95% CI] | ECE | posts (positive) |",
        "|---|---|---|---|---|---|",
    ]
    for category in (*result.categories, MACRO):
        for model in _models(result, view):
            row = result.row(view, model, category)
            if row is not None:
                lines.append(
                    f"| `{category}` | {model} | {row.auroc} | {row.average_precision} | {row.ece:.3f} | "
                    f"{row.count} ({row.positives}) |"
                )
    return lines


def _subset_table(result: EvalResult) -> list[str]:
    models = _models(result, SUBSET_VIEWS[3])
    lines = [
        "| availability | category | " + " | ".join(f"{m} AUROC" for m in models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for view in SUBSET_VIEWS.values():
        for category in (*result.categories, MACRO):
            cells = [result.row(view, m, category) for m in models]
            if not any(cells):
                continue
            lines.append(f"| {view} | `{category}` | " + " | ".join(str(c.auroc) if c else "" for c in cells) + " |")
    return lines


def _ece_table(result: EvalResult) -> list[str]:
    models = [m for m in MODEL_ORDER if any((v, m) in result.pooled_ece for v in _ece_views(result))]
    lines = [
        "| availability | model | ECE, categories pooled | " + " | ".join(f"`{c}`" for c in result.categories) + " |",
        "|---|---|---|" + "---|" * len(result.categories),
    ]
    for view in _ece_views(result):
        for model in models:
            if (view, model) not in result.pooled_ece:
                continue
            per = [result.row(view, model, c) for c in result.categories]
            lines.append(
                f"| {view} | {model} | {result.pooled_ece[(view, model)]:.3f} | "
                + " | ".join(f"{r.ece:.3f}" if r else "" for r in per)
                + " |"
            )
    return lines


def _missing_table(result: EvalResult) -> list[str]:
    lines = [
        "| category | fusion | remaining-modality baseline | naive fusion | fusion - remaining | fusion - naive "
        "| ECE fusion / remaining / naive |",
        "|---|---|---|---|---|---|---|",
    ]
    for category in (*result.categories, MACRO, INFORMATIVE_MACRO):
        rows = [result.row(LOST_VIEW, m, category) for m in (FUSION, REMAINING, NAIVE)]
        diffs = [result.difference(LOST_VIEW, category, FUSION, m) for m in (REMAINING, NAIVE)]
        if rows[0] is None:
            continue
        cells = [str(r.auroc) if r else "" for r in rows]
        cells += [_signed(d.auroc) if d else "" for d in diffs]
        cells.append(" / ".join(f"{r.ece:.3f}" if r else "" for r in rows))
        lines.append(f"| `{category}` | " + " | ".join(cells) + " |")
    return lines


def _seed_table(result: EvalResult) -> list[str]:
    """The protocol repeated with every model retrained from other seeds (same test posts, same degradation)."""
    if not result.seed_runs:
        return []
    lines = [
        "",
        "### The same comparison over training seeds",
        "",
        "Every model (fusion and the three baselines) retrained by the same recipe with training seed 0.."
        f"{len(result.seed_runs) - 1}; lost posts as above; macro AUROC over the informative categories.",
        "",
        "| training seed | fusion | remaining-modality baseline | naive fusion | fusion - remaining | fusion - naive |",
        "|---|---|---|---|---|---|",
    ]
    for run in result.seed_runs:
        lines.append(
            f"| {run.seed} | {run.fusion} | {run.remaining} | {run.naive} | "
            f"{_signed(run.fusion_minus_remaining)} | {_signed(run.fusion_minus_naive)} |"
        )
    near = [r.fusion_minus_remaining.value for r in result.seed_runs]
    above = [r.fusion_minus_naive.value for r in result.seed_runs]
    lines += [
        "",
        f"Across seeds: fusion - remaining {np.mean(near):+.3f} on average (min {min(near):+.3f}); "
        f"fusion - naive {np.mean(above):+.3f} on average (min {min(above):+.3f}, max {max(above):+.3f}); "
        f"naive fusion is at least 0.05 below fusion, interval above 0, in "
        f"{sum(r.fusion_minus_naive.value >= 0.05 and r.fusion_minus_naive.low > 0 for r in result.seed_runs)}"
        f" of {len(result.seed_runs)} seeds.",
    ]
    return lines


def _fmt_row(row: MetricRow | None) -> str:
    return str(row.auroc) if row else "n/a"


def write_report(result: EvalResult, out_dir: Path, command: str, notes: str = "", name: str | None = None) -> Path:
    """Write ``<name>.md`` (default: the dataset's name) and its plots into ``out_dir``; returns the Markdown file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or result.dataset
    roc_png, reliability_png = f"{name}-roc.png", f"{name}-reliability.png"
    _plot_roc(result, out_dir / roc_png)
    _plot_reliability(result, out_dir / reliability_png)
    info = result.info
    checks = acceptance_checks(result)
    lines = [
        f"# Evaluation: `{name}`",
        "",
        f"Generated by `{command}` on {datetime.date.today().isoformat()} (file written by the command; do not "
        "edit by hand).",
        "",
        f"- model: `{result.model_version}`",
        f"- test file: `{info['test_file']}`: {result.test_size} posts, {info['unique_texts']} distinct texts, "
        f"{info['unique_photos']} distinct photos",
        f"- baselines trained by the same trainer on `{info['train_file']}` ({info['train_size']} posts), "
        f"validated and calibrated on `{info['val_file']}` ({info['val_size']} posts)",
        f"- intervals: 95% percentile bootstrap over test posts, {info['resamples']} resamples (seed {info['seed']}); "
        "differences are paired (same resamples for both models). Posts that share a text or photo are resampled "
        "independently, so with repeated texts or photos the intervals are somewhat optimistic.",
        "- ECE: expected calibration error with 15 equal-width bins.",
    ]
    if notes:
        lines += ["", notes]
    lines += ["", "## Acceptance", "", "| check | target | measured | holds |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.target} | {c.measured} | {'yes' if c.passed else '**no**'} |" for c in checks]
    lines += ["", "## Posts as given", "", *_metric_table(result, "as given")]
    if any(r.view == SUBSET_VIEWS[3] for r in result.rows):
        lines += [
            "",
            "## By availability",
            "",
            "The test posts that have the modalities of each subset, cut down to exactly those (a post with both "
            "counts in all three).",
            "",
        ]
        lines += _subset_table(result)
    lines += ["", "## Calibration", "", *_ece_table(result)]
    if "missing" in info:
        missing = info["missing"]
        lines += [
            "",
            "## 70%-missing protocol",
            "",
            f"{info['missing_rate']:.0%} of the test posts (seed {info['seed']}) lose one modality, text or image "
            f"with equal chance: {missing['lost_text']} lost their text, {missing['lost_image']} their image, "
            f"{missing['complete']} stay complete. On the posts that lost one, the fusion model (masks) is compared "
            "with the baseline trained on the modality the post kept and with naive fusion (trained on complete "
            "posts without modality dropout or masks; the missing features are zero-filled). Informative "
            "categories (the remaining-modality baseline beats chance on the lost posts): "
            + (", ".join(f"`{c}`" for c in missing["informative"]) or "none")
            + ". ECE in the last column is per category (macro rows: mean over their categories).",
            "",
        ]
        lines += _missing_table(result)
        overall = MACRO if len(result.categories) > 1 else result.categories[0]
        fused_all, naive_all = result.row(ALL_POSTS_VIEW, FUSION, overall), result.row(ALL_POSTS_VIEW, NAIVE, overall)
        lines += [
            "",
            f"All posts of the protocol (complete and degraded), {overall} AUROC: fusion {_fmt_row(fused_all)}, "
            f"naive fusion {_fmt_row(naive_all)}.",
        ]
        lines += _seed_table(result)
    lines += ["", "## Plots", "", f"![ROC curves]({roc_png})", "", f"![Reliability diagrams]({reliability_png})", ""]
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(lines))
    return path


def _plot_roc(result: EvalResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = SUBSET_VIEWS[3] if any(s.view == SUBSET_VIEWS[3] for s in result.scores) else "as given"
    count = len(result.categories)
    figure, axes = plt.subplots(1, count, figsize=(3.4 * count, 3.3), squeeze=False)
    for column, category in enumerate(result.categories):
        axis = axes[0][column]
        for scores in (s for s in result.scores if s.view == view):
            known = ~np.isnan(scores.labels[:, column])
            fpr, tpr = roc_points(scores.probs[known, column], scores.labels[known, column])
            row = result.row(view, scores.model, category)
            auroc = f" {row.auroc.value:.3f}" if row and not math.isnan(row.auroc.value) else ""
            axis.plot(fpr, tpr, linewidth=1.2, label=f"{scores.model}{auroc}")
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.6, linestyle=":")
        axis.set(title=f"{category} ({view})", xlabel="false-positive rate", ylabel="true-positive rate")
        axis.title.set_fontsize(9)
        axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=72)
    plt.close(figure)


def _plot_reliability(result: EvalResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = _ece_views(result)
    figure, axes = plt.subplots(1, len(views), figsize=(3.4 * len(views), 3.3), squeeze=False)
    for column, view in enumerate(views):
        axis = axes[0][column]
        scores = next(s for s in result.scores if s.view == view and s.model == FUSION)
        for index, category in enumerate(result.categories):
            known = ~np.isnan(scores.labels[:, index])
            mean_p, freq, _ = reliability_curve(scores.probs[known, index], scores.labels[known, index])
            row = result.row(view, FUSION, category)
            ece = f" ECE {row.ece:.3f}" if row else ""
            axis.plot(mean_p, freq, marker="o", markersize=3, linewidth=1, label=f"{category}{ece}")
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.6, linestyle=":")
        axis.set(
            title=f"fusion, {view}",
            xlabel="predicted probability",
            ylabel="observed frequency",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        axis.title.set_fontsize(9)
        axis.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=72)
    plt.close(figure)
