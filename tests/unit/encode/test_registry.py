"""Encoders by name: known names, unknown and duplicate names, options, timm checkpoints and folders by path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moderation.encode import (
    TextEncoder,
    create_encoder,
    create_image_encoder,
    create_text_encoder,
    list_encoders,
    register_encoder,
    registry,
)
from moderation.encode.text import minilm_l6_folder
from moderation.errors import ConfigError, ModelError, RegistryError
from moderation.types import Modality


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    list_encoders()  # the built-ins are registered on first use
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_builtins_are_listed_by_modality() -> None:
    assert "minilm-l6" in list_encoders(Modality.TEXT)
    assert {"efficientnet-lite0", "mobilenetv2-100"} <= set(list_encoders(Modality.IMAGE))
    assert list_encoders() == sorted(list_encoders(Modality.TEXT) + list_encoders(Modality.IMAGE))


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(RegistryError) as caught:
        create_encoder("no-such-encoder")
    message = str(caught.value)
    assert "'no-such-encoder'" in message
    for name in list_encoders():
        assert name in message
    assert "timm:" in message


def test_duplicate_registration_is_an_error(isolated_registry: None, text_encoder: TextEncoder) -> None:
    with pytest.raises(RegistryError, match="already registered"):
        register_encoder("minilm-l6", lambda: text_encoder, modality=Modality.TEXT)
    register_encoder("fake-text", lambda: text_encoder, modality=Modality.TEXT)
    with pytest.raises(RegistryError, match="already registered"):
        register_encoder("fake-text", lambda: text_encoder, modality=Modality.TEXT)


def test_registered_factory_is_called_with_the_options(isolated_registry: None, text_encoder: TextEncoder) -> None:
    seen: dict[str, object] = {}

    def factory(*, device: str = "auto") -> TextEncoder:
        seen["device"] = device
        return text_encoder

    register_encoder("fake-text", factory, modality=Modality.TEXT)
    assert create_encoder("fake-text", device="cpu") is text_encoder
    assert seen == {"device": "cpu"}
    assert "fake-text" in list_encoders(Modality.TEXT)
    with pytest.raises(ConfigError, match="its options are: device"):
        create_encoder("fake-text", colour="red")
    with pytest.raises(RegistryError, match="image encoders"):
        create_image_encoder("fake-text")


def test_timm_names_are_reserved(isolated_registry: None, text_encoder: TextEncoder) -> None:
    with pytest.raises(RegistryError, match="reserved"):
        register_encoder("timm:mine", lambda: text_encoder, modality=Modality.IMAGE)


def test_unknown_option_names_the_accepted_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        create_encoder("efficientnet-lite0", colour="red")
    assert "channels_last" in str(caught.value) and "batch_size" in str(caught.value)


def test_timm_model_needs_local_weights() -> None:
    with pytest.raises(ConfigError, match="weights="):
        create_encoder("timm:test_efficientnet")
    with pytest.raises(RegistryError, match="timm has no model"):
        create_encoder("timm:no_such_network", weights="x.pth")


def test_timm_model_with_a_local_checkpoint(tmp_path: Path) -> None:
    """A tiny timm network's checkpoint (with its classifier) loads; features come out, the head is dropped."""
    from moderation.encode.weights import create_timm_model

    weights = tmp_path / "tiny.pth"
    torch.save(create_timm_model("test_efficientnet", num_classes=7).state_dict(), weights)
    encoder = create_image_encoder("timm:test_efficientnet", weights=str(weights), device="cpu")
    assert encoder.name == "timm:test_efficientnet"
    assert encoder.version.startswith("timm:test_efficientnet@") and len(encoder.version.split("@")[1]) == 12
    size = getattr(encoder, "input_size")  # noqa: B009 - not part of the protocol
    features = encoder.encode([torch.zeros(size), torch.ones(size)])
    assert features.shape == (2, encoder.dim)

    other = tmp_path / "other.pth"
    torch.save(create_timm_model("test_vit").state_dict(), other)
    with pytest.raises(ModelError, match="does not fit"):
        create_encoder("timm:test_efficientnet", weights=str(other), device="cpu")
    with pytest.raises(ModelError, match="does not exist"):
        create_encoder("timm:test_efficientnet", weights=str(tmp_path / "missing.pth"), device="cpu")


def test_sentence_transformers_folder_by_path(text_encoder: TextEncoder) -> None:
    folder = str(minilm_l6_folder())
    encoder = create_text_encoder(folder, device="cpu")
    assert encoder.name == folder
    # The version names the folder, not where it lies, and has the same weights fingerprint as minilm-l6.
    assert encoder.version == f"st:{minilm_l6_folder().name}@{text_encoder.version.split('@')[1]}"
    assert torch.allclose(encoder.encode(["hello"]), text_encoder.encode(["hello"]), atol=1e-6)


def test_a_folder_that_is_no_model_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="unknown encoder"):
        create_encoder(str(tmp_path))
