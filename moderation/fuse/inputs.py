"""The fusion model's input: a batch of posts as embeddings, with explicit presence of each modality.

A post may have text or not, and zero or more images. Text rows come with a boolean presence mask (a row whose
mask is false is never read as data); images are a flat list of embeddings, each tagged with the index of the
post it belongs to, so a post can carry any number of images, including none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moderation.errors import ConfigError

# Availability codes: which modalities a post has. Calibration is fitted per code.
NONE, TEXT_ONLY, IMAGE_ONLY, BOTH = 0, 1, 2, 3
AVAILABILITY_NAMES: tuple[str, ...] = ("none", "text", "image", "both")


@dataclass(frozen=True)
class FusionInput:
    """A batch of ``B`` posts as embeddings.

    ``text``: ``[B, Dt]`` (rows whose ``text_present`` is false are ignored, whatever they hold) or ``None`` when
    no post of the batch has text. ``image_emb``: ``[M, Di]``; ``image_post_index``: ``[M]``, the post (``0..B-1``)
    of each image, images of one post in their order in the post.
    """

    text: torch.Tensor | None
    text_present: torch.Tensor
    image_emb: torch.Tensor
    image_post_index: torch.Tensor

    def __post_init__(self) -> None:
        size = self.batch_size
        if self.text_present.dtype != torch.bool or self.text_present.dim() != 1:
            raise ConfigError("FusionInput.text_present must be a 1-d bool tensor, one entry per post")
        if self.text is not None and (self.text.dim() != 2 or self.text.shape[0] != size):
            raise ConfigError(f"FusionInput.text must be [B, Dt] with B={size}, got {tuple(self.text.shape)}")
        if self.image_post_index.dim() != 1 or self.image_emb.shape[0] != self.image_post_index.shape[0]:
            raise ConfigError("FusionInput.image_emb [M, Di] and image_post_index [M] must have the same M")
        if self.image_post_index.numel() and (
            int(self.image_post_index.min()) < 0 or int(self.image_post_index.max()) >= size
        ):
            raise ConfigError(f"FusionInput.image_post_index must lie in 0..{size - 1}")

    @property
    def batch_size(self) -> int:
        return int(self.text_present.shape[0])

    def has_text(self) -> torch.Tensor:
        """``[B]`` bool: the post has text (and the batch carries text rows)."""
        if self.text is None:
            return torch.zeros_like(self.text_present)
        return self.text_present

    def has_image(self) -> torch.Tensor:
        """``[B]`` bool: the post has at least one image."""
        present = torch.zeros(self.batch_size, dtype=torch.bool)
        present[self.image_post_index] = True
        return present

    def availability(self) -> torch.Tensor:
        """``[B]`` long: ``NONE``, ``TEXT_ONLY``, ``IMAGE_ONLY`` or ``BOTH`` for each post."""
        return self.has_text().long() + 2 * self.has_image().long()

    def select(self, posts: torch.Tensor) -> FusionInput:
        """The sub-batch of the given post indices, in that order (images follow their posts)."""
        posts = posts.long()
        new_index = torch.full((self.batch_size,), -1, dtype=torch.long)
        new_index[posts] = torch.arange(posts.numel())
        keep = new_index[self.image_post_index] >= 0
        image_post_index = new_index[self.image_post_index[keep]]
        order = torch.argsort(image_post_index, stable=True)
        return FusionInput(
            text=None if self.text is None else self.text[posts],
            text_present=self.text_present[posts],
            image_emb=self.image_emb[keep][order],
            image_post_index=image_post_index[order],
        )

    def drop(self, drop_text: torch.Tensor, drop_image: torch.Tensor) -> FusionInput:
        """The same posts with the text of posts in ``drop_text`` and the images of posts in ``drop_image`` removed.

        Removal is real (presence false, image rows gone), never a zero vector standing in for data.
        """
        keep_images = ~drop_image[self.image_post_index]
        return FusionInput(
            text=self.text,
            text_present=self.text_present & ~drop_text,
            image_emb=self.image_emb[keep_images],
            image_post_index=self.image_post_index[keep_images],
        )

    @staticmethod
    def stack(parts: list[FusionInput]) -> FusionInput:
        """One batch of the posts of ``parts``, in order: part ``k``'s post ``i`` becomes post
        ``sum(sizes before k) + i``. Each part must carry text rows (``text`` not ``None``)."""
        texts = [part.text for part in parts]
        if any(text is None for text in texts):
            raise ConfigError("FusionInput.stack needs text rows in every part")
        image_post_index, offset = [], 0
        for part in parts:
            image_post_index.append(part.image_post_index + offset)
            offset += part.batch_size
        return FusionInput(
            text=torch.cat(texts),  # type: ignore[arg-type]
            text_present=torch.cat([part.text_present for part in parts]),
            image_emb=torch.cat([part.image_emb for part in parts]),
            image_post_index=torch.cat(image_post_index),
        )


@dataclass(frozen=True)
class LabeledInput:
    """Embedded posts with labels, for training and evaluation: ``labels`` is ``[B, C]``, NaN where unknown."""

    inputs: FusionInput
    labels: torch.Tensor
    categories: tuple[str, ...]
    post_ids: tuple[str, ...]

    def select(self, posts: torch.Tensor) -> LabeledInput:
        return LabeledInput(
            inputs=self.inputs.select(posts),
            labels=self.labels[posts],
            categories=self.categories,
            post_ids=tuple(self.post_ids[i] for i in posts.tolist()),
        )

    def drop(self, drop_text: torch.Tensor, drop_image: torch.Tensor) -> LabeledInput:
        return LabeledInput(self.inputs.drop(drop_text, drop_image), self.labels, self.categories, self.post_ids)

    def as_availability(self, code: int) -> LabeledInput:
        """Every post reduced to the modalities of availability ``code`` (posts lacking one keep lacking it)."""
        size = self.inputs.batch_size
        drop_text = torch.full((size,), not code & TEXT_ONLY, dtype=torch.bool)
        drop_image = torch.full((size,), not code & IMAGE_ONLY, dtype=torch.bool)
        return self.drop(drop_text, drop_image)
