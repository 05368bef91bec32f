"""A GPU worker's host side on a machine without a GPU (``bench/profile_worker.py --emulate-gpu``).

Python imports this module at start-up when its folder is on ``PYTHONPATH``; it changes nothing unless
``BENCH_EMULATE_GPU=1``. Then the worker's encoders keep all of their host work (tokenising, the image checks
before nvjpeg, the copies of the JPEG bytes) and replace only what the GPU does by what it costs the host: one
GIL release per operation launched (a small torch op, as each CUDA launch releases and retakes the GIL), then a
wait with the GIL released for as long as the H200 of run C took for the batch (docs/BENCHMARKS.md): text model
28,868 texts/s, image model 17,551 images/s, nvjpeg decode and resize 6,962 images/s. The launch counts are the
aten operations of one forward pass of MiniLM-L6 (165) and EfficientNet-Lite0 (186), counted on the CPU.

What it is for: the worker's host path in the regime a GPU puts it in (the models cheap, one process's Python the
wall), to find and measure host-side gains between GPU loans. Its figures are emulated, never GPU figures: the
fusion head, Kafka and Redis are real and run on this machine's cores, and the device is not.
"""

from __future__ import annotations

import os

if os.environ.get("BENCH_EMULATE_GPU") == "1":
    import time
    from collections.abc import Sequence
    from typing import Any

    import torch

    import moderation.pipeline as _pipeline
    from moderation.decode.images import ImageLimits, open_image
    from moderation.errors import DecodeError

    TEXT_OPS, IMAGE_OPS, DECODE_OPS = 165, 186, 12
    TEXT_PER_S, IMAGE_PER_S, DECODE_PER_S = 28_868.0, 17_551.0, 6_962.0
    _SMALL = torch.zeros(64)

    def _device(launches: int, seconds: float) -> None:
        """``launches`` GIL-releasing ops, then the rest of ``seconds`` with the GIL released (the sync)."""
        started = time.perf_counter()
        value = _SMALL
        for _ in range(launches):
            value = torch.add(value, 1.0)
        time.sleep(max(0.0, seconds - (time.perf_counter() - started)))

    class _Emulated:
        """The real encoder for everything but the device's work."""

        def __init__(self, real: Any) -> None:
            self.real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def warm_up(self) -> None:
            """Nothing to warm: no device."""

    class _Text(_Emulated):
        def encode_prepared(self, prepared: Any) -> torch.Tensor:
            _device(TEXT_OPS, prepared.count / TEXT_PER_S)
            return torch.zeros((prepared.count, self.real.dim))

    class _Image(_Emulated):
        def preprocess_many(self, images: Sequence[tuple[bytes, str | None]], limits: ImageLimits) -> list[Any]:
            """The checks the CUDA path makes on the host, the copy it hands nvjpeg, then the device's time."""
            results: list[Any] = []
            for data, declared_type in images:
                try:
                    open_image(data, limits, declared_type)
                    torch.frombuffer(bytearray(data), dtype=torch.uint8)
                    results.append(torch.zeros(1))
                except DecodeError as exc:
                    results.append(exc)
            _device(DECODE_OPS + len(images), len(images) / DECODE_PER_S)
            return results

        def encode(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
            _device(IMAGE_OPS, len(images) / IMAGE_PER_S)
            return torch.zeros((len(images), self.real.dim))

    _real_encoders = _pipeline.create_settings_encoders

    def _emulated(settings: Any, text_name: str, image_name: str) -> tuple[Any, Any]:
        text, image = _real_encoders(settings, text_name, image_name)
        return _Text(text), _Image(image)

    _pipeline.create_settings_encoders = _emulated  # type: ignore[assignment]
