"""Encoders: text and images to vectors, behind a registry (see :mod:`moderation.encode.registry`)."""

from moderation.encode.base import Encoder, ImageEncoder, TextEncoder, flatten_images
from moderation.encode.registry import (
    create_encoder,
    create_image_encoder,
    create_settings_encoders,
    create_text_encoder,
    list_encoders,
    register_encoder,
)

__all__ = [
    "Encoder",
    "ImageEncoder",
    "TextEncoder",
    "create_encoder",
    "create_image_encoder",
    "create_settings_encoders",
    "create_text_encoder",
    "flatten_images",
    "list_encoders",
    "register_encoder",
]
