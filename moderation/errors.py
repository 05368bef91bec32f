"""The exception tree of the project, drawn in one place.

Every error the project raises on purpose derives from :class:`ModerationError`, so callers can catch the
project's failures without catching programming bugs. Each message says what went wrong and how to fix it.

::

    ModerationError
    ├── ConfigError              a setting, file or argument is wrong; the message names it
    ├── SchemaError              a message does not match its JSON schema
    ├── InputRejected            one post cannot be processed; carries a machine-readable ``ReasonCode``
    │   └── DecodeError          the bytes of an image (or text) cannot be decoded within the limits
    ├── RegistryError            an unknown or duplicate encoder / fusion-head name
    ├── ModelError               a model file is missing, malformed, or does not match its config
    └── EmbeddedStackError       the embedded broker or cache cannot be started, found or stopped
"""

from __future__ import annotations

from moderation.types import ReasonCode


class ModerationError(Exception):
    """Root of every error the project raises on purpose."""


class ConfigError(ModerationError):
    """A setting, file or command-line argument is wrong; the message names it and the fix."""


class SchemaError(ModerationError):
    """A message does not validate against its JSON schema."""

    def __init__(self, schema: str, path: str, message: str) -> None:
        super().__init__(f"{schema}: at {path or '<root>'}: {message}")
        self.schema = schema
        self.path = path
        self.detail = message


class InputRejected(ModerationError):
    """One post (or one part of it) cannot be processed; it becomes a dead-letter record with ``reason``."""

    def __init__(self, reason: ReasonCode, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.detail = message


class DecodeError(InputRejected):
    """Media bytes cannot be decoded within the configured limits."""


class RegistryError(ModerationError):
    """An unknown name was asked of a registry, or a name was registered twice."""


class ModelError(ModerationError):
    """A model artifact is missing, malformed or inconsistent with its configuration."""


class EmbeddedStackError(ModerationError):
    """The embedded broker or cache cannot be started, found or stopped."""
