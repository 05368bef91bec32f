"""Image encoders: any timm network, returning its pooled features (the classifier is removed).

Preprocessing is always the model's own data config (input size, resize/crop, interpolation, mean and std), as
timm resolves it. On the CPU, JPEGs are decoded at reduced size straight to what that resize needs; on CUDA,
JPEGs are decoded by nvjpeg on the GPU and resized there, since the CPU decode is the wall at GPU speeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from moderation.decode.images import JPEG, ImageLimits, decode_image, open_image, sniff_content_type
from moderation.encode.base import (
    bucket_size,
    check_batch_size,
    inference_context,
    resolve_device,
    set_threads,
)
from moderation.errors import ConfigError
from moderation.types import Modality


class TimmImageEncoder:
    """A timm network behind the :class:`~moderation.encode.base.ImageEncoder` protocol."""

    modality = Modality.IMAGE

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        version: str,
        device: str = "auto",
        threads: int = 0,
        batch_size: int = 32,
        channels_last: bool = True,
    ) -> None:
        """Wrap ``model`` (a timm network without classifier) for inference on ``device``.

        ``channels_last`` stores activations NHWC: for EfficientNet-Lite0 on a 2-core CPU it measured 1.1x
        (batch 1) to 1.7x (batch 32) the images/s of the default layout; ``moderation encoders bench
        --no-channels-last`` measures it for other networks and devices.
        """
        from timm.data.config import resolve_data_config
        from timm.data.transforms_factory import create_transform

        set_threads(threads)
        self.name = name
        self.version = version
        self.device = resolve_device(device)
        self.batch_size = check_batch_size(batch_size)
        self.channels_last = channels_last
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._model = model.eval().to(self.device).to(memory_format=self._memory_format)
        config = resolve_data_config({}, model=model)  # type: ignore[no-untyped-call]
        self.input_size: tuple[int, int, int] = tuple(config["input_size"])  # type: ignore[assignment]
        self.dim = int(getattr(model, "num_features", 0)) or self._probe_dim()
        self._transform: Callable[[object], torch.Tensor] = create_transform(**config)
        scale = math.floor(max(self.input_size[1:]) / float(config.get("crop_pct") or 1.0))
        self._decode_size = (scale, scale)  # the transform resizes the shorter side to ``scale``, then crops
        self._gpu_jpeg = self.device.type == "cuda"

    def preprocess(self, data: bytes, limits: ImageLimits, declared_type: str | None = None) -> torch.Tensor:
        """Encoded bytes -> normalised ``[3, H, W]`` model input (on the GPU when JPEGs decode there).

        ``declared_type`` is the content type the post claims, checked against the sniffed one.
        """
        if self._gpu_jpeg and sniff_content_type(data) == JPEG:
            decoded = self._decode_jpeg_on_gpu(data, limits, declared_type)
            if decoded is not None:
                return self._transform(decoded)
        return self._transform(decode_image(data, self._decode_size, limits, declared_type))

    def encode(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Preprocessed images -> float32 ``[N, dim]`` pooled features on the CPU, in input order."""
        out = torch.empty((len(images), self.dim), dtype=torch.float32)
        with inference_context(self.device):
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                batch = self._batch(chunk)
                out[start : start + len(chunk)] = self._model(batch)[: len(chunk)].float().cpu()
        return out

    def encode_bytes(self, images: Sequence[bytes], limits: ImageLimits) -> torch.Tensor:
        """Decode and encode; the first image that cannot be decoded raises its ``DecodeError``."""
        return self.encode([self.preprocess(data, limits) for data in images])

    def _batch(self, chunk: Sequence[torch.Tensor]) -> torch.Tensor:
        shapes = {tuple(image.shape) for image in chunk}
        if shapes != {self.input_size}:
            raise ConfigError(
                f"{self.name} expects preprocessed images of shape {self.input_size}, got {sorted(shapes)}; "
                "pass the output of preprocess()"
            )
        batch = torch.stack([image.to(self.device, non_blocking=True) for image in chunk])
        if self.device.type == "cuda" and len(chunk) < bucket_size(len(chunk)):
            padding = batch.new_zeros((bucket_size(len(chunk)) - len(chunk), *self.input_size))
            batch = torch.cat([batch, padding])
        return batch.contiguous(memory_format=self._memory_format)

    def _decode_jpeg_on_gpu(self, data: bytes, limits: ImageLimits, declared_type: str | None) -> torch.Tensor | None:
        """nvjpeg decode to float ``[3, H, W]`` in [0, 1] on the GPU, limits checked from the header first.

        ``None`` when nvjpeg cannot decode it (CMYK, unusual sampling): the CPU path then decodes or refuses.
        """
        from torchvision.io import ImageReadMode, decode_jpeg

        open_image(data, limits, declared_type)
        try:
            raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            image: torch.Tensor = decode_jpeg(
                raw, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True
            )
        except RuntimeError:
            return None
        return image.float().div_(255.0)

    def _probe_dim(self) -> int:
        with inference_context(self.device):
            probe = torch.zeros((1, *self.input_size), device=self.device)
            return int(self._model(probe.contiguous(memory_format=self._memory_format)).shape[-1])
