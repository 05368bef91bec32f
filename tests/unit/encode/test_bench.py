"""``moderation encoders bench`` and ``list``: rows for every encoder and batch size, a Markdown table."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner
from PIL import Image

from moderation import allocator
from moderation.decode.images import ImageLimits
from moderation.encode import ImageEncoder, TextEncoder, registry
from moderation.encode.bench import bench, format_table, synthetic_jpeg, synthetic_texts
from moderation.encode.cli import encoders


def test_synthetic_inputs_are_deterministic() -> None:
    assert synthetic_texts(5) == synthetic_texts(5) != synthetic_texts(5, seed=1)
    data = synthetic_jpeg(64, 48)
    assert data == synthetic_jpeg(64, 48)
    assert Image.open(io.BytesIO(data)).size == (64, 48)


def test_bench_rows_and_table(
    text_encoder: TextEncoder, image_encoder: ImageEncoder, photos: list[bytes], limits: ImageLimits
) -> None:
    rows = bench([text_encoder, image_encoder], [1, 2], 4, photos, limits)
    assert [(row.encoder, row.batch_size) for row in rows] == [
        ("minilm-l6", 1),
        ("minilm-l6", 2),
        ("efficientnet-lite0", 1),
        ("efficientnet-lite0", 2),
    ]
    assert all(row.end_to_end_per_s > 0 for row in rows)
    assert rows[0].model_per_s is None and rows[2].model_per_s is not None and rows[2].decode_per_s is not None
    table = format_table(rows).splitlines()
    assert table[0].startswith("| encoder | device | batch |") and len(table) == 2 + len(rows)
    assert "| minilm-l6 | cpu | 1 | - | - |" in table[2]


def test_bench_command(monkeypatch: pytest.MonkeyPatch, text_encoder: TextEncoder, image_encoder: ImageEncoder) -> None:
    built: dict[str, TextEncoder | ImageEncoder] = {"minilm-l6": text_encoder, "efficientnet-lite0": image_encoder}
    calls: list[tuple[str, dict[str, object]]] = []

    def fake_create(name: str, **cfg: object) -> TextEncoder | ImageEncoder:
        calls.append((name, cfg))
        return built[name]

    monkeypatch.setattr(registry, "create_encoder", fake_create)
    allocators: list[str] = []  # recorded, not applied: the setting is process-wide, and this is pytest's process
    monkeypatch.setattr(allocator, "configure_allocator", allocators.append)
    result = CliRunner().invoke(encoders, ["bench", "--n", "2", "--batch-sizes", "1,2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert allocators == ["reuse"]  # as the worker runs the encoders, so the rates compare
    assert "| efficientnet-lite0 | cpu | 2 |" in result.output
    assert [name for name, _ in calls] == ["minilm-l6", "efficientnet-lite0"]
    assert "channels_last" not in calls[0][1] and calls[1][1]["channels_last"] is True
    assert calls[0][1]["batch_size"] == 2 and calls[0][1]["device"] == "cpu"


def test_bench_rejects_bad_batch_sizes() -> None:
    result = CliRunner().invoke(encoders, ["bench", "--batch-sizes", "8,zero"])
    assert result.exit_code == 2 and "positive integers" in result.output


def test_list_command() -> None:
    result = CliRunner().invoke(encoders, ["list"])
    assert result.exit_code == 0
    assert "text\tminilm-l6" in result.output and "image\tefficientnet-lite0" in result.output
