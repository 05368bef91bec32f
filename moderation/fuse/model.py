"""The fusion model artifact and its runtime API: load a folder, score a batch of embedded posts.

An artifact is a folder with ``model.safetensors`` (the head's weights), ``config.json`` (head name and config,
encoder names and versions, categories and the signal each has, calibration per category per availability, how it
was trained, version string) and ``policy.yaml`` (the thresholds proposed for it). The worker calls::

    model = load_fusion_model(path)
    outputs = model.predict(FusionInput(...))   # one FusionOutput per post
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from moderation.errors import ModelError
from moderation.fuse.calibration import FloatArray, apply_platt
from moderation.fuse.heads import FusionHead, HeadOutput, create_fusion_head
from moderation.fuse.inputs import AVAILABILITY_NAMES, BOTH, IMAGE_ONLY, NONE, TEXT_ONLY, FusionInput
from moderation.taxonomy import Signal
from moderation.types import Modality

FORMAT = "moderation.fusion-model.v1"
CONFIG_FILE, WEIGHTS_FILE, POLICY_FILE = "config.json", "model.safetensors", "policy.yaml"
BUILD_HINT = "run `moderation build-default-model` (or `moderation train ... --out DIR`)"

DrivenBy = tuple[Modality | Literal["both"] | None, int | None]


@dataclass(frozen=True)
class FusionOutput:
    """The model's answer for one post.

    ``scores``: calibrated probability per category. ``driven_by``: per category, the modality that drove the
    score (found by occlusion; ``"both"`` when neither text nor images alone explain it, ``None`` when the post has
    no content or the category has no model) and, when an image took part, its index among the post's images.
    """

    scores: dict[str, float]
    driven_by: dict[str, DrivenBy]


@dataclass(frozen=True)
class EncoderRef:
    """Which encoder produced the embeddings the head was trained on."""

    name: str
    version: str
    dim: int


class FusionModel:
    """A fusion head with its calibration and metadata; ``predict`` is the worker's entry point."""

    def __init__(
        self,
        head: FusionHead,
        *,
        head_name: str,
        head_categories: tuple[str, ...],
        categories: tuple[str, ...],
        signal: Mapping[str, Signal],
        text_encoder: EncoderRef,
        image_encoder: EncoderRef,
        calibration: Mapping[str, Mapping[str, list[float]]],
        version: str = "unsaved",
        training: Mapping[str, Any] | None = None,
    ) -> None:
        missing = set(head_categories) - set(categories)
        if missing:
            raise ModelError(f"head categories {sorted(missing)} are not among the model's categories")
        self.head = head.eval()
        self.head_name = head_name
        self.head_categories = head_categories
        self.categories = categories
        self.signal = dict(signal)
        self.text_encoder_ref = text_encoder
        self.image_encoder_ref = image_encoder
        self.calibration = {subset: {c: list(v) for c, v in table.items()} for subset, table in calibration.items()}
        self.version = version
        self.training = dict(training or {})

    @property
    def text_encoder(self) -> str:
        return self.text_encoder_ref.name

    @property
    def image_encoder(self) -> str:
        return self.image_encoder_ref.name

    # ------------------------------------------------------------------------------------------------ scoring
    def logits(self, batch: FusionInput) -> HeadOutput:
        """Uncalibrated head output for a batch (inference mode, dropout off)."""
        self._check_dims(batch)
        self.head.eval()
        with torch.inference_mode():
            return self.head.run(batch)

    def calibrate(self, output: HeadOutput) -> FloatArray:
        """``[B, len(head_categories)]`` calibrated probabilities from the parts of the head's logits."""
        parts = output.parts().double().numpy()
        availability = output.availability.numpy()
        probs = np.zeros(parts.shape[:2])
        for code in np.unique(availability):
            rows = availability == code
            for column, category in enumerate(self.head_categories):
                *weights, bias = self._calibration(int(code), category)
                probs[rows, column] = apply_platt(parts[rows, column], weights, bias)
        return probs

    def _calibration(self, code: int, category: str) -> list[float]:
        """``[w_text, w_image, w_interaction, b]`` for a category in an availability subset."""
        subset = AVAILABILITY_NAMES[code]
        table = self.calibration.get(subset)
        if table is None or category not in table:
            raise ModelError(f"model {self.version} has no calibration for {category!r} with {subset!r}: {BUILD_HINT}")
        return table[category]

    def predict_proba(self, batch: FusionInput) -> FloatArray:
        """``[B, len(head_categories)]`` calibrated probabilities (for evaluation and threshold fitting)."""
        return self.calibrate(self.logits(batch))

    def predict(self, batch: FusionInput) -> list[FusionOutput]:
        """One :class:`FusionOutput` per post, in batch order; categories without a model score 0 (signal none)."""
        output = self.logits(batch)
        probs = self.calibrate(output)
        explain = _Explanation(self, batch, output, probs)
        results = []
        for row in range(batch.batch_size):
            scores = dict.fromkeys(self.categories, 0.0)
            driven: dict[str, DrivenBy] = dict.fromkeys(self.categories, (None, None))
            for column, category in enumerate(self.head_categories):
                scores[category] = float(probs[row, column])
                driven[category] = explain.driver(row, column)
            results.append(FusionOutput(scores=scores, driven_by=driven))
        return results

    def _check_dims(self, batch: FusionInput) -> None:
        if batch.text is not None and batch.text.shape[1] != self.text_encoder_ref.dim:
            raise ModelError(
                f"text embeddings have {batch.text.shape[1]} dimensions, model {self.version} expects "
                f"{self.text_encoder_ref.dim} from {self.text_encoder}: use the encoder named in its config.json"
            )
        if batch.image_post_index.numel() and batch.image_emb.shape[1] != self.image_encoder_ref.dim:
            raise ModelError(
                f"image embeddings have {batch.image_emb.shape[1]} dimensions, model {self.version} expects "
                f"{self.image_encoder_ref.dim} from {self.image_encoder}: use the encoder named in its config.json"
            )

    # ------------------------------------------------------------------------------------------------ storage
    def config(self) -> dict[str, Any]:
        """The ``config.json`` document."""
        return {
            "format": FORMAT,
            "version": self.version,
            "head": {"name": self.head_name, "config": self.head.config},
            "categories": list(self.categories),
            "head_categories": list(self.head_categories),
            "signal": self.signal,
            "text_encoder": vars(self.text_encoder_ref),
            "image_encoder": vars(self.image_encoder_ref),
            "calibration": self.calibration,
            "training": self.training,
        }

    def save(self, folder: Path, name: str) -> str:
        """Write weights and config to ``folder``; the version is ``name`` plus a digest of weights and config."""
        folder.mkdir(parents=True, exist_ok=True)
        state = {key: value.detach().contiguous().clone() for key, value in self.head.state_dict().items()}
        digest = hashlib.sha256()
        for key in sorted(state):
            digest.update(key.encode())
            digest.update(state[key].numpy().tobytes())
        self.version = "unsaved"
        digest.update(json.dumps(self.config(), sort_keys=True).encode())
        self.version = f"{name}-{digest.hexdigest()[:12]}"
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"version": self.version})
        (folder / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2, sort_keys=True) + "\n")
        return self.version


def _index_within_post(image_post_index: torch.Tensor) -> list[int]:
    """For each image of the batch, its position among the images of its own post."""
    seen: dict[int, int] = {}
    local = []
    for post in image_post_index.tolist():
        local.append(seen.get(post, 0))
        seen[post] = local[-1] + 1
    return local


class _Explanation:
    """Which modality drove each score, by occlusion: a post with both modalities is also scored with text alone,
    images alone and nothing (each calibrated for that availability).

    For a post with both, the modality whose score alone covers at least half of the way from the no-content score
    to the full score drove it (the one covering more, if both do); when neither does, the combination did
    (``"both"``). The image reported is the one the max-pooling picked: in the image-only scoring for ``image``, in
    the full scoring for ``both``.

    The three views of the posts with both run as one batch through the head: one forward pass and one
    calibration instead of three of each over the whole batch.
    """

    VIEWS = ("text", "image", "none")

    def __init__(self, model: FusionModel, batch: FusionInput, output: HeadOutput, probs: FloatArray) -> None:
        self.output, self.probs = output, probs
        self.local_index = _index_within_post(batch.image_post_index)
        both = torch.nonzero(output.availability == BOTH).flatten()
        self.position = {int(row): position for position, row in enumerate(both.tolist())}
        self.count = int(both.numel())
        if self.count:
            sub = batch.select(both)
            everything = torch.ones(self.count, dtype=torch.bool)
            nothing = torch.zeros(self.count, dtype=torch.bool)
            views = FusionInput.stack(
                [sub.drop(nothing, everything), sub.drop(everything, nothing), sub.drop(everything, everything)]
            )
            self.views = model.logits(views)
            self.view_probs = model.calibrate(self.views)
            self.view_local_index = _index_within_post(views.image_post_index)

    def _image(self, output: HeadOutput, local_index: list[int], row: int, column: int) -> int | None:
        deciding = int(output.deciding_image[row, column])
        return local_index[deciding] if 0 <= deciding < len(local_index) else None

    def _view_row(self, view: str, row: int) -> int:
        """The row of the stacked views that holds the post in ``row`` seen with only ``view``'s modality."""
        return self.VIEWS.index(view) * self.count + self.position[row]

    def _alone(self, view: str, row: int, column: int) -> float:
        """The calibrated score of the post in ``row`` with only ``view``'s modality."""
        return float(self.view_probs[self._view_row(view, row), column])

    def driver(self, row: int, column: int) -> DrivenBy:
        availability = int(self.output.availability[row])
        if availability == NONE:
            return (None, None)
        if availability == TEXT_ONLY:
            return (Modality.TEXT, None)
        if availability == IMAGE_ONLY:
            return (Modality.IMAGE, self._image(self.output, self.local_index, row, column))
        full = float(self.probs[row, column])
        base = self._alone("none", row, column)
        distance = max(abs(full - base), 1e-9)
        covered = {name: 1.0 - abs(full - self._alone(name, row, column)) / distance for name in ("text", "image")}
        winner = max(covered, key=lambda name: covered[name])
        if covered[winner] < 0.5:
            return ("both", self._image(self.output, self.local_index, row, column))
        if winner == "text":
            return (Modality.TEXT, None)
        return (Modality.IMAGE, self._image(self.views, self.view_local_index, self._view_row("image", row), column))


def load_fusion_model(path: Path | str) -> FusionModel:
    """Read a model folder; a missing or inconsistent artifact raises ``ModelError`` saying how to build one."""
    folder = Path(path)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise ModelError(f"no fusion model in {folder} (needs {CONFIG_FILE} and {WEIGHTS_FILE}): {BUILD_HINT}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{config_path} is not valid JSON ({exc}): {BUILD_HINT}") from exc
    if config.get("format") != FORMAT:
        raise ModelError(f"{config_path} has format {config.get('format')!r}, expected {FORMAT!r}: {BUILD_HINT}")
    try:
        head = create_fusion_head(config["head"]["name"], **config["head"]["config"])
        head.load_state_dict(load_file(str(weights_path)))
        calibration = {
            subset: {c: [float(v) for v in values] for c, values in table.items()}
            for subset, table in config["calibration"].items()
        }
        return FusionModel(
            head,
            head_name=config["head"]["name"],
            head_categories=tuple(config["head_categories"]),
            categories=tuple(config["categories"]),
            signal=config["signal"],
            text_encoder=EncoderRef(**config["text_encoder"]),
            image_encoder=EncoderRef(**config["image_encoder"]),
            calibration=calibration,
            version=config["version"],
            training=config.get("training", {}),
        )
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise ModelError(f"model in {folder} does not match its config ({exc}): {BUILD_HINT}") from exc
