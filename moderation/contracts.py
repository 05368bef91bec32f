"""The message contracts: the JSON schemas of every message the pipeline reads or writes, and their validation.

The schemas live in ``schemas/*.json`` (JSON Schema 2020-12, one file per message type and version; see
``schemas/README.md``). They are loaded once and their validators cached. Validation checks ``format``
deterministically: only ``date-time`` is used, and it is checked here (RFC 3339 syntax by the schemas' own
pattern, calendar validity by :func:`datetime.fromisoformat`) whatever optional ``jsonschema`` extras are installed.

Two validators serve each schema. ``jsonschema_rs`` (compiled, about 1 µs for a post against about 140 µs) answers
"is it valid?" for every message; only a message it rejects goes through ``jsonschema``, whose ``best_match``
gives the clear error that the dead-letter record carries. Both get the same ``date-time`` check, and a test keeps
them in agreement on every example.

A message whose ``schema_version`` is unknown fails validation on ``/schema_version``; callers that want to tell
"unsupported version" from "invalid" (the dead-letter reason codes differ) read ``schema_version`` first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from moderation.errors import SchemaError

__all__ = ["SchemaName", "compiled_validator", "schema", "schema_path", "schemas_dir", "validate", "validator"]

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


def _is_calendar_date_time(instance: str) -> bool:
    try:
        return _is_date_time(instance)
    except ValueError:
        return False


_FORMAT_CHECKER = FormatChecker(formats=())
_FORMAT_CHECKER.checks("date-time", raises=ValueError)(_is_date_time)


@cache
def validator(name: SchemaName) -> Validator:
    """The cached Draft 2020-12 validator of ``name``, with ``format`` checked."""
    return Draft202012Validator(schema(SchemaName(name)), format_checker=_FORMAT_CHECKER)


@cache
def compiled_validator(name: SchemaName) -> jsonschema_rs.Draft202012Validator:
    """The cached compiled validator of ``name``, with the same ``date-time`` check: the fast yes/no."""
    return jsonschema_rs.Draft202012Validator(
        schema(SchemaName(name)), formats={"date-time": _is_calendar_date_time}, validate_formats=True
    )


def validate(name: SchemaName, document: object) -> None:
    """Check ``document`` against the schema ``name``; raise :class:`SchemaError` with the best-matching error.

    The error's path is a JSON Pointer into ``document`` (``""`` for the document itself, ``/images/0/ref``).
    """
    name = SchemaName(name)
    if compiled_validator(name).is_valid(document):
        return
    error = best_match(validator(name).iter_errors(document))
    if error is None:  # the two validators disagree (a test guards against it): the compiled one's first error
        first = next(iter(compiled_validator(name).iter_errors(document)))
        raise SchemaError(name.value, _pointer(first.instance_path), _bounded(first.message))
    detail = f"{_bounded(error.message)} (keyword '{error.validator}')"
    raise SchemaError(name.value, _pointer(error.absolute_path), detail)


def _bounded(message: str) -> str:
    """Messages repeat the failing value, which may be megabytes of base64."""
    return message if len(message) <= _MAX_MESSAGE_CHARS else message[: _MAX_MESSAGE_CHARS - 1] + "…"


def _pointer(parts: Iterable[str | int]) -> str:
    return "".join(f"/{str(part).replace('~', '~0').replace('/', '~1')}" for part in parts)
