"""The message contracts: the JSON schemas of every message the pipeline reads or writes, and their validation.

The schemas live in ``schemas/*.json`` (JSON Schema 2020-12, one file per message type and version; see
``schemas/README.md``). They are loaded once and their validators cached. Validation checks ``format``
deterministically: only ``date-time`` is used, and it is checked here (RFC 3339 syntax by the schemas' own
pattern, calendar validity by :func:`datetime.fromisoformat`) whatever optional ``jsonschema`` extras are installed.

A message whose ``schema_version`` is unknown fails validation on ``/schema_version``; callers that want to tell
"unsupported version" from "invalid" (the dead-letter reason codes differ) read ``schema_version`` first.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from moderation.errors import SchemaError

__all__ = ["SchemaName", "schema", "schema_path", "schemas_dir", "validate", "validator"]

_MAX_MESSAGE_CHARS = 300


class SchemaName(StrEnum):
    """A message type and version; the value is also the message's ``schema_version`` and its schema file's stem."""

    POST = "post.v1"
    VERDICT = "verdict.v1"
    DEAD_LETTER = "dead_letter.v1"
    REVIEW_DECISION = "review_decision.v1"


@cache
def schemas_dir() -> Path:
    """The schema folder: ``moderation/_schemas``, which in a checkout links to the top-level ``schemas/`` and in a
    built package holds copies of its files; the top-level folder itself where the link is missing (a checkout on a
    file system without symbolic links)."""
    packaged = Path(__file__).resolve().parent / "_schemas"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "schemas"


def schema_path(name: SchemaName) -> Path:
    """The file of the schema ``name``."""
    return schemas_dir() / f"{SchemaName(name).value}.json"


@cache
def schema(name: SchemaName) -> dict[str, Any]:
    """The parsed schema ``name`` (shared: do not modify it)."""
    document: dict[str, Any] = json.loads(schema_path(name).read_text(encoding="utf-8"))
    return document


def _is_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    datetime.fromisoformat(instance)  # the schema's pattern checks RFC 3339 syntax; this checks the calendar
    return True


_FORMAT_CHECKER = FormatChecker(formats=())
_FORMAT_CHECKER.checks("date-time", raises=ValueError)(_is_date_time)


@cache
def validator(name: SchemaName) -> Validator:
    """The cached Draft 2020-12 validator of ``name``, with ``format`` checked."""
    return Draft202012Validator(schema(SchemaName(name)), format_checker=_FORMAT_CHECKER)


def validate(name: SchemaName, document: object) -> None:
    """Check ``document`` against the schema ``name``; raise :class:`SchemaError` with the best-matching error.

    The error's path is a JSON Pointer into ``document`` (``""`` for the document itself, ``/images/0/ref``).
    """
    name = SchemaName(name)
    error = best_match(validator(name).iter_errors(document))
    if error is None:
        return
    path = "".join(f"/{_escape(part)}" for part in error.absolute_path)
    message = error.message
    if len(message) > _MAX_MESSAGE_CHARS:  # messages repeat the failing value, which may be megabytes of base64
        message = message[: _MAX_MESSAGE_CHARS - 1] + "…"
    raise SchemaError(name.value, path, f"{message} (keyword '{error.validator}')")


def _escape(part: str | int) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")
