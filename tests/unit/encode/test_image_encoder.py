"""The image encoder: preprocessing from the model's data config, order, batch invariance, decode errors."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
import torch
from PIL import Image

from moderation.decode.images import ImageLimits
from moderation.encode import ImageEncoder
from moderation.errors import ConfigError, DecodeError
from moderation.types import ReasonCode

from .conftest import BATCH


def test_preprocess_gives_model_input(image_encoder: ImageEncoder, photos: list[bytes], limits: ImageLimits) -> None:
    tensor = image_encoder.preprocess(photos[0], limits)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    # EfficientNet-Lite's own normalisation: mean and std 0.5 map [0, 1] to [-1, 1].
    assert -1.0 <= tensor.min().item() < -0.5 and 0.5 < tensor.max().item() <= 1.0
    assert re.fullmatch(r"efficientnet-lite0@[0-9a-f]{12}", image_encoder.version)
    assert image_encoder.dim == 1280


def test_batch_invariance_and_order(image_encoder: ImageEncoder, photos: list[bytes], limits: ImageLimits) -> None:
    """An image alone and inside a batch of 64 gives the same features within 1e-5 (CPU), rows in input order."""
    base = [image_encoder.preprocess(photo, limits) for photo in photos]
    generator = torch.Generator().manual_seed(0)
    images = [base[i % 2] + 0.05 * torch.randn(base[0].shape, generator=generator) for i in range(BATCH)]
    batch = image_encoder.encode(images)
    assert batch.shape == (BATCH, 1280)
    for index in (0, 1, 17, BATCH - 1):
        alone = image_encoder.encode([images[index]])[0]
        assert (batch[index] - alone).abs().max().item() < 1e-5


def test_encode_bytes_is_preprocess_then_encode(
    image_encoder: ImageEncoder, photos: list[bytes], limits: ImageLimits
) -> None:
    direct = image_encoder.encode_bytes(photos, limits)
    stepwise = image_encoder.encode([image_encoder.preprocess(photo, limits) for photo in photos])
    assert torch.equal(direct, stepwise)
    assert image_encoder.encode([]).shape == (0, 1280)


def test_other_formats_encode_like_the_jpeg(
    image_encoder: ImageEncoder, photos: list[bytes], limits: ImageLimits
) -> None:
    """PNG, GIF and WebP copies of a photo land next to the JPEG's features."""
    photo = Image.open(io.BytesIO(photos[1])).convert("RGB")
    copies = []
    for fmt in ("PNG", "GIF", "WEBP"):
        out = io.BytesIO()
        photo.save(out, fmt)
        copies.append(out.getvalue())
    features = image_encoder.encode_bytes([photos[1], *copies], limits)
    similarity = torch.nn.functional.cosine_similarity(features[1:], features[:1])
    assert similarity.min().item() > 0.9


def test_declared_type_is_checked(image_encoder: ImageEncoder, photos: list[bytes], limits: ImageLimits) -> None:
    image_encoder.preprocess(photos[0], limits, "image/jpeg")
    with pytest.raises(DecodeError) as caught:
        image_encoder.preprocess(photos[0], limits, "image/png")
    assert caught.value.reason is ReasonCode.IMAGE_CONTENT_TYPE_MISMATCH


def test_undecodable_bytes_raise_with_a_reason(image_encoder: ImageEncoder, limits: ImageLimits) -> None:
    with pytest.raises(DecodeError) as caught:
        image_encoder.encode_bytes([b"not an image at all"], limits)
    assert caught.value.reason is ReasonCode.IMAGE_UNSUPPORTED_TYPE


def test_wrong_tensor_shape_is_explained(image_encoder: ImageEncoder) -> None:
    with pytest.raises(ConfigError, match="preprocess"):
        image_encoder.encode([torch.zeros(3, 100, 100)])


def _jpeg(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def _mixed_batch(photos: list[bytes]) -> list[tuple[bytes, str | None]]:
    """JPEGs of two sizes, a PNG, garbage, a type lie and a CMYK JPEG, each with the type the post declares."""
    small = _jpeg(Image.open(io.BytesIO(photos[1])).convert("RGB").resize((300, 200)))
    png = io.BytesIO()
    Image.open(io.BytesIO(photos[0])).convert("RGB").save(png, "PNG")
    cmyk = _jpeg(Image.open(io.BytesIO(photos[0])).convert("CMYK"))
    return [
        (photos[0], "image/jpeg"),
        (b"not an image at all", None),
        (small, None),
        (png.getvalue(), "image/png"),
        (photos[1], "image/png"),
        (cmyk, None),
        (photos[1], None),
    ]


def _check_mixed(results: list[torch.Tensor | DecodeError], one_by_one: list[torch.Tensor | DecodeError]) -> None:
    assert [type(item) for item in results] == [type(item) for item in one_by_one]
    assert isinstance(results[1], DecodeError) and results[1].reason is ReasonCode.IMAGE_UNSUPPORTED_TYPE
    assert isinstance(results[4], DecodeError) and results[4].reason is ReasonCode.IMAGE_CONTENT_TYPE_MISMATCH
    for got, alone in zip(results, one_by_one, strict=True):
        if isinstance(got, torch.Tensor):
            assert isinstance(alone, torch.Tensor) and got.shape == (3, 224, 224)
            assert torch.allclose(got.cpu(), alone.cpu(), atol=1e-5)


def _one_by_one(
    encoder: ImageEncoder, batch: list[tuple[bytes, str | None]], limits: ImageLimits
) -> list[torch.Tensor | DecodeError]:
    out: list[torch.Tensor | DecodeError] = []
    for data, declared_type in batch:
        try:
            out.append(encoder.preprocess(data, limits, declared_type))
        except DecodeError as exc:
            out.append(exc)
    return out


def test_preprocess_many_keeps_each_failure_in_its_slot(
    image_encoder: ImageEncoder, photos: list[bytes], limits: ImageLimits
) -> None:
    batch = _mixed_batch(photos)
    _check_mixed(image_encoder.preprocess_many(batch, limits), _one_by_one(image_encoder, batch, limits))


def test_batched_jpeg_decode_matches_one_image_at_a_time(
    image_encoder: ImageEncoder, photos: list[bytes], limits: ImageLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CUDA path (batched ``decode_jpeg``, one transform per image size), run on the CPU."""
    monkeypatch.setattr(image_encoder, "_gpu_jpeg", True)
    batch = _mixed_batch(photos)
    _check_mixed(image_encoder.preprocess_many(batch, limits), _one_by_one(image_encoder, batch, limits))


def test_pixel_steps_match_the_models_own_transform(
    image_encoder: ImageEncoder, photos: list[bytes], limits: ImageLimits
) -> None:
    """The uint8 resize and crop land within one pixel level of timm's transform on PIL images, and the features
    barely move: the fusion model was trained on features of the PIL path."""
    from moderation.decode.images import decode_image

    encoder: Any = image_encoder
    assert encoder._pixel_steps is not None  # EfficientNet-Lite0's transform has the usual shape
    sizes = [(640, 427), (300, 200), (200, 300), (97, 61), (1000, 1000)]
    images = [Image.open(io.BytesIO(photo)).convert("RGB").resize(size) for photo in photos for size in sizes]
    jpegs = [_jpeg(image) for image in images]
    fast = [encoder.preprocess(data, limits) for data in jpegs]
    reference = [encoder._transform(decode_image(data, encoder._decode_size, limits)) for data in jpegs]
    one_level = 1 / 255 / 0.5  # EfficientNet-Lite's std is 0.5
    for got, want in zip(fast, reference, strict=True):
        assert got.shape == want.shape == (3, 224, 224)
        assert (got - want).abs().max().item() <= one_level + 1e-6
    similarity = torch.nn.functional.cosine_similarity(encoder.encode(fast), encoder.encode(reference))
    assert similarity.min().item() > 0.999


def test_other_transform_shapes_keep_the_transform() -> None:
    from torchvision import transforms

    from moderation.encode.image import pixel_steps

    usual = [transforms.Resize(8), transforms.CenterCrop(4), transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]
    assert pixel_steps(transforms.Compose(usual)) is not None
    assert pixel_steps(transforms.Compose([transforms.RandomHorizontalFlip(), *usual])) is None
    assert pixel_steps(transforms.Compose([transforms.Resize((4, 4)), *usual[2:]])) is None
    assert pixel_steps(lambda image: image) is None


def test_batched_decode_is_cut_by_pixel_budget() -> None:
    from moderation.encode.image import _pixel_chunks

    assert _pixel_chunks([(0, 40), (1, 40), (2, 30), (3, 500), (4, 10)], budget=100) == [[0, 1], [2], [3], [4]]
    assert _pixel_chunks([], budget=100) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batched_decode_matches_one_image_at_a_time(photos: list[bytes], limits: ImageLimits) -> None:
    from moderation.encode import create_image_encoder

    cuda = create_image_encoder("efficientnet-lite0", device="cuda")
    batch = _mixed_batch(photos)
    _check_mixed(cuda.preprocess_many(batch, limits), _one_by_one(cuda, batch, limits))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_decodes_jpeg_on_the_gpu(photos: list[bytes], limits: ImageLimits) -> None:
    from moderation.encode import create_image_encoder

    cpu = create_image_encoder("efficientnet-lite0", device="cpu")
    cuda = create_image_encoder("efficientnet-lite0", device="cuda")
    tensor = cuda.preprocess(photos[0], limits)
    assert tensor.device.type == "cuda" and tensor.shape == (3, 224, 224)
    similarity = torch.nn.functional.cosine_similarity(
        cuda.encode_bytes(photos, limits), cpu.encode_bytes(photos, limits)
    )
    assert similarity.min().item() > 0.98
