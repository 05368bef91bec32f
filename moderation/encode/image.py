"""Image encoders: any timm network, returning its pooled features (the classifier is removed).

Preprocessing is always the model's own data config (input size, resize/crop, interpolation, mean and std), as
timm resolves it. On the CPU, JPEGs are decoded at reduced size straight to what that resize needs; on CUDA,
JPEGs are decoded by nvjpeg on the GPU and resized there, since the CPU decode is the wall at GPU speeds. Either
way the resize and crop run on uint8 pixel tensors (torchvision), the normalisation after it: see
:func:`pixel_steps`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch import nn

from moderation.decode.images import JPEG, ImageLimits, decode_image, open_image, sniff_content_type
from moderation.encode.base import (
    bucket_size,
    bucket_sizes,
    check_batch_size,
    inference_context,
    resolve_device,
    set_threads,
)
from moderation.errors import ConfigError, DecodeError
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
        self._pixel_steps = pixel_steps(self._transform)
        scale = math.floor(max(self.input_size[1:]) / float(config.get("crop_pct") or 1.0))
        self._decode_size = (scale, scale)  # the transform resizes the shorter side to ``scale``, then crops
        self._gpu_jpeg = self.device.type == "cuda"

    def preprocess(self, data: bytes, limits: ImageLimits, declared_type: str | None = None) -> torch.Tensor:
        """Encoded bytes -> normalised ``[3, H, W]`` model input (on the GPU when JPEGs decode there).

        ``declared_type`` is the content type the post claims, checked against the sniffed one.
        """
        (item,) = self.preprocess_many([(data, declared_type)], limits)
        if isinstance(item, DecodeError):
            raise item
        return item

    def preprocess_many(
        self, images: Sequence[tuple[bytes, str | None]], limits: ImageLimits
    ) -> list[torch.Tensor | DecodeError]:
        """:meth:`preprocess` for a list, each failure in its own slot. On CUDA the JPEGs are decoded in batched
        nvjpeg calls and resized, cropped and normalised in one call per image size: one call per image costs
        more host time than the GPU work it launches."""
        results: list[torch.Tensor | DecodeError | None] = [None] * len(images)
        on_gpu: list[tuple[int, int]] = []  # (index, pixels)
        for index, (data, declared_type) in enumerate(images):
            try:
                if self._gpu_jpeg and sniff_content_type(data) == JPEG:
                    image, _ = open_image(data, limits, declared_type)  # every limit, from the header, first
                    on_gpu.append((index, image.width * image.height))
                else:
                    results[index] = self._preprocess_on_cpu(data, limits, declared_type)
            except DecodeError as exc:
                results[index] = exc
        for chunk in _pixel_chunks(on_gpu, GPU_DECODE_PIXELS):
            for index, decoded in zip(chunk, self._decode_jpegs([images[i][0] for i in chunk]), strict=True):
                results[index] = decoded
        final: list[torch.Tensor | DecodeError] = []
        for (data, declared_type), item in zip(images, results, strict=True):
            if item is None:  # nvjpeg could not decode it (CMYK, unusual sampling): the CPU decodes or refuses it
                try:
                    item = self._preprocess_on_cpu(data, limits, declared_type)
                except DecodeError as exc:
                    item = exc
            final.append(item)
        return final

    def _preprocess_on_cpu(self, data: bytes, limits: ImageLimits, declared_type: str | None) -> torch.Tensor:
        from torchvision.transforms.functional import pil_to_tensor

        image = decode_image(data, self._decode_size, limits, declared_type)
        if self._pixel_steps is None:
            return self._transform(image)
        return self._pixel_steps(pil_to_tensor(image))

    def _model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., 3, H, W]`` pixels -> the model's normalised input, by :func:`pixel_steps` when the
        transform has their shape, else by the transform itself on ``[0, 1]`` floats."""
        if self._pixel_steps is None:
            return self._transform(pixels.float().div_(255.0))
        return self._pixel_steps(pixels)

    def _decode_jpegs(self, jpegs: Sequence[bytes]) -> list[torch.Tensor | None]:
        """Batched ``decode_jpeg`` on this encoder's device (nvjpeg on CUDA), then the model's transform once per
        distinct image size; ``None`` for an image it cannot decode (a failed batch is retried one by one to find
        which). The product uses it on CUDA only: on the CPU, PIL's reduced-size JPEG decode is faster."""
        from torchvision.io import ImageReadMode, decode_jpeg

        if not jpegs:
            return []
        raws = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]
        mode = ImageReadMode.RGB
        decoded: list[torch.Tensor | None]
        try:
            decoded = list(decode_jpeg(raws, mode=mode, device=self.device, apply_exif_orientation=True))
        except RuntimeError:
            decoded = []
            for raw in raws:
                try:
                    decoded.append(decode_jpeg(raw, mode=mode, device=self.device, apply_exif_orientation=True))
                except RuntimeError:
                    decoded.append(None)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(decoded):
            if image is not None:
                by_size.setdefault(tuple(image.shape), []).append(index)
        out: list[torch.Tensor | None] = [None] * len(jpegs)
        for members in by_size.values():
            batch = torch.stack([decoded[i] for i in members])  # type: ignore[misc]
            for index, tensor in zip(members, self._model_input(batch).unbind(0), strict=True):
                out[index] = tensor
        return out

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
        tensors = []
        for item in self.preprocess_many([(data, None) for data in images], limits):
            if isinstance(item, DecodeError):
                raise item
            tensors.append(item)
        return self.encode(tensors)

    def _batch(self, chunk: Sequence[torch.Tensor]) -> torch.Tensor:
        shapes = {tuple(image.shape) for image in chunk}
        if shapes != {self.input_size}:
            raise ConfigError(
                f"{self.name} expects preprocessed images of shape {self.input_size}, got {sorted(shapes)}; "
                "pass the output of preprocess()"
            )
        batch = torch.stack([image.to(self.device, non_blocking=True) for image in chunk])
        padded = bucket_size(len(chunk), IMAGE_BUCKET_STEP)
        if self.device.type == "cuda" and len(chunk) < padded:
            padding = batch.new_zeros((padded - len(chunk), *self.input_size))
            batch = torch.cat([batch, padding])
        return batch.contiguous(memory_format=self._memory_format)

    def warm_up(self) -> None:
        if self.device.type != "cuda":
            return
        with inference_context(self.device):
            for size in bucket_sizes(self.batch_size, IMAGE_BUCKET_STEP):
                self._model(torch.zeros((size, *self.input_size), device=self.device).contiguous(
                    memory_format=self._memory_format))  # fmt: skip
        limits = ImageLimits(max_bytes=1 << 20, max_pixels=1 << 20, max_frames=1)
        self.preprocess_many([(_warm_up_jpeg(), None)] * 2, limits)  # nvjpeg and the resize kernels
        torch.cuda.synchronize(self.device)

    def _probe_dim(self) -> int:
        with inference_context(self.device):
            probe = torch.zeros((1, *self.input_size), device=self.device)
            return int(self._model(probe.contiguous(memory_format=self._memory_format)).shape[-1])


def pixel_steps(transform: object) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``transform`` (timm's eval transform) as steps on uint8 pixel tensors, when it is the usual
    ``Resize, CenterCrop, ToTensor, Normalize``; ``None`` for any other shape (the caller keeps ``transform``).

    The same resize and crop, run by torchvision on uint8 tensors instead of PIL images: on the CPU that is its
    native uint8 antialiased kernel, 0.3 ms instead of PIL's 2.1 ms for a 640x480 photo to 341x256 (bicubic,
    one core), and every value within one uint8 level of PIL's (the test measures it). Only then are the pixels
    scaled to floats and normalised, on the 224x224 crop rather than the full image.
    """
    from torchvision import transforms
    from torchvision.transforms.v2 import functional

    steps = list(getattr(transform, "transforms", []))
    if len(steps) != 4:
        return None
    resize, crop, to_tensor, normalize = steps
    exact = (transforms.Resize, transforms.CenterCrop, transforms.Normalize)  # a subclass may behave otherwise
    if (type(resize), type(crop), type(normalize)) != exact or not isinstance(to_tensor, transforms.ToTensor):
        return None
    size, interpolation, max_size, antialias = resize.size, resize.interpolation, resize.max_size, resize.antialias
    mean, std = list(normalize.mean), list(normalize.std)

    def run(pixels: torch.Tensor) -> torch.Tensor:
        resized = functional.resize(pixels, size, interpolation, max_size=max_size, antialias=antialias)
        scaled = functional.center_crop(resized, crop.size).float().div_(255.0)
        normalized: torch.Tensor = functional.normalize(scaled, mean, std, inplace=True)
        return normalized

    return run


def _warm_up_jpeg() -> bytes:
    """A 640x480 JPEG, like a typical photo's shape."""
    out = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").resize((640, 480)).save(out, "JPEG", quality=90)
    return out.getvalue()


#: Image batches on CUDA above this many images pad to a multiple of it, not to the next power of two: the image
#: model is the GPU's largest cost, and a 256-post worker batch holds about 154 images, which a power of two pads by
#: 40%. It costs 4 more shapes to warm up (13 for batches of 256).
IMAGE_BUCKET_STEP = 32

#: Most decoded pixels one batched GPU decode holds at once (as float32 after decoding: 12 bytes a pixel, so
#: about 770 MB): enough for 200 photos of 640x480, and a batch of huge images is split instead of exhausting
#: GPU memory.
GPU_DECODE_PIXELS = 64_000_000


def _pixel_chunks(items: Sequence[tuple[int, int]], budget: int) -> list[list[int]]:
    """Indices of ``(index, pixels)`` items in order, cut into chunks of at most ``budget`` pixels (an item over
    the budget alone gets a chunk of its own)."""
    chunks: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, pixels in items:
        if current and used + pixels > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(index)
        used += pixels
    if current:
        chunks.append(current)
    return chunks
