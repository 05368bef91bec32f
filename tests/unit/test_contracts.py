"""The message contracts: schemas are valid 2020-12, examples pass or fail for their documented reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from moderation import contracts
from moderation.contracts import SchemaName, compiled_validator, schema, schema_path, validate, validator
from moderation.errors import SchemaError
from moderation.types import Action, Modality, ReasonCode

EXAMPLES = contracts.schemas_dir() / "examples"
DECISION_FIELDS = {
    "schema_version",
    "post_id",
    "tenant",
    "content_hash",
    "categories",
    "action",
    "modalities_present",
    "model_version",
    "policy_version",
    "automated",
    "reasons",
}


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _examples(kind: str) -> list[tuple[SchemaName, Path]]:
    return [
        (name, path)
        for name in SchemaName
        for path in sorted((EXAMPLES / name.value.split(".")[0] / kind).glob("*.json"))
        if path.name != "EXPECTED.json"
    ]


def _expected(name: SchemaName) -> dict[str, dict[str, str]]:
    expected: dict[str, dict[str, str]] = _load(EXAMPLES / name.value.split(".")[0] / "invalid" / "EXPECTED.json")
    return expected


def _pointer(error: ValidationError) -> str:
    return "".join(f"/{str(p).replace('~', '~0').replace('/', '~1')}" for p in error.absolute_path)


def _all_errors(errors: Iterator[ValidationError]) -> Iterator[ValidationError]:
    for error in errors:
        yield error
        yield from _all_errors(iter(error.context or ()))


# --- the schema files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SchemaName))
def test_schema_is_valid_2020_12_with_id_title_and_version(name: SchemaName) -> None:
    document = schema(name)
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == f"https://moderation.dev/schemas/{name.value}.json"
    assert document["title"] == name.value
    assert document["description"]
    assert document["properties"]["schema_version"]["const"] == name.value
    assert "schema_version" in document["required"]
    assert document["additionalProperties"] is False
    assert schema_path(name).name == f"{name.value}.json"


def _property_maps(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict) and "type" in node:  # an object schema, not an if/then condition
            yield where, node["properties"]
        for key, value in node.items():
            yield from _property_maps(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _property_maps(value, f"{where}/{index}")


@pytest.mark.parametrize("name", list(SchemaName))
def test_every_property_has_a_description(name: SchemaName) -> None:
    missing = [
        f"{where}/properties/{prop}"
        for where, props in _property_maps(schema(name))
        for prop, sub in props.items()
        if not sub.get("description")
    ]
    assert not missing


@pytest.mark.parametrize("name", list(SchemaName))
def test_objects_are_closed(name: SchemaName) -> None:
    open_objects = [
        where
        for where, _ in _property_maps(schema(name))
        if _node(schema(name), where).get("additionalProperties") is not False
    ]
    assert not open_objects


def _node(document: dict[str, Any], where: str) -> dict[str, Any]:
    node: Any = document
    for part in where.split("/")[1:]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    assert isinstance(node, dict)
    return node


def test_dead_letter_reasons_are_the_reason_codes() -> None:
    assert schema(SchemaName.DEAD_LETTER)["properties"]["reason"]["enum"] == [code.value for code in ReasonCode]


def test_verdict_enums_match_the_python_enums() -> None:
    verdict = schema(SchemaName.VERDICT)
    assert verdict["$defs"]["action"]["enum"] == [action.value for action in Action]
    assert verdict["properties"]["modalities_present"]["items"]["enum"] == [m.value for m in Modality]


def test_decision_fields_are_documented() -> None:
    verdict = schema(SchemaName.VERDICT)
    assert set(verdict["properties"]) == DECISION_FIELDS | {"timings", "published_at"}
    for field in DECISION_FIELDS:
        assert field in verdict["description"]
        assert "Decision field" in verdict["properties"][field]["description"]
    for field in ("timings", "published_at"):
        assert "NOT a decision field" in verdict["properties"][field]["description"]
    readme = (contracts.schemas_dir() / "README.md").read_text(encoding="utf-8")
    for field in DECISION_FIELDS | {"timings", "published_at"}:
        assert f"`{field}`" in readme


# --- the examples -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SchemaName))
def test_each_schema_has_several_examples(name: SchemaName) -> None:
    assert sum(1 for n, _ in _examples("valid") if n is name) >= 2
    assert sum(1 for n, _ in _examples("invalid") if n is name) >= 5


@pytest.mark.parametrize(("name", "path"), _examples("valid"), ids=lambda v: getattr(v, "name", str(v)))
def test_valid_example_validates(name: SchemaName, path: Path) -> None:
    document = _load(path)
    errors = [f"{_pointer(e)}: {e.message}" for e in validator(name).iter_errors(document)]
    assert not errors
    validate(name, document)


@pytest.mark.parametrize("name", list(SchemaName))
def test_every_invalid_example_documents_its_reason(name: SchemaName) -> None:
    files = {path.name for n, path in _examples("invalid") if n is name}
    expected = _expected(name)
    assert set(expected) == files
    for entry in expected.values():
        assert set(entry) == {"keyword", "path", "why"}


@pytest.mark.parametrize(("name", "path"), _examples("invalid"), ids=lambda v: getattr(v, "name", str(v)))
def test_invalid_example_fails_for_its_documented_reason(name: SchemaName, path: Path) -> None:
    document = _load(path)
    want = _expected(name)[path.name]
    best = best_match(validator(name).iter_errors(document))
    assert best is not None, "the example validates"
    found = {(e.validator, _pointer(e)) for e in _all_errors(validator(name).iter_errors(document))}
    assert (want["keyword"], want["path"]) in found | {(best.validator, _pointer(best))}, found
    # one fault per example: every top-level error is at the documented place or encloses it (oneOf)
    for error in validator(name).iter_errors(document):
        assert (want["path"] + "/").startswith(_pointer(error) + "/"), (_pointer(error), error.message)
    with pytest.raises(SchemaError) as raised:
        validate(name, document)
    assert raised.value.schema == name.value
    assert raised.value.path == _pointer(best)


@pytest.mark.parametrize(
    ("name", "path"), _examples("valid") + _examples("invalid"), ids=lambda v: getattr(v, "name", str(v))
)
def test_compiled_validator_agrees_with_the_reference_validator(name: SchemaName, path: Path) -> None:
    document = _load(path)
    assert compiled_validator(name).is_valid(document) == validator(name).is_valid(document)


# --- the module ---------------------------------------------------------------------------------------


def test_validate_reports_a_json_pointer_and_keyword() -> None:
    post = _load(EXAMPLES / "post" / "valid" / "image-ref.json")
    post["images"][0]["ref"]["key"] = "https://cdn.example.com/a.jpg"
    with pytest.raises(SchemaError) as raised:
        validate(SchemaName.POST, post)
    assert raised.value.path == "/images/0/ref/key"
    assert "keyword 'not'" in raised.value.detail
    assert str(raised.value).startswith("post.v1: at /images/0/ref/key: ")


def test_validate_bounds_the_message_of_a_huge_value() -> None:
    post = _load(EXAMPLES / "post" / "valid" / "image-inline.json")
    post["images"][0]["extra"] = "A" * 1_000_000
    with pytest.raises(SchemaError) as raised:
        validate(SchemaName.POST, post)
    assert len(str(raised.value)) < 500


def test_validate_rejects_a_non_object() -> None:
    documents: list[object] = [None, [], "post", 3]
    for document in documents:
        with pytest.raises(SchemaError) as raised:
            validate(SchemaName.POST, document)
        assert raised.value.path == ""


def test_date_time_format_is_checked_without_optional_extras() -> None:
    verdict = _load(EXAMPLES / "verdict" / "valid" / "block-text.json")
    for good in ("2024-02-29T23:59:59Z", "2024-05-01T12:00:00.123456789+05:30", "2024-05-01T00:00:00-00:00"):
        validate(SchemaName.VERDICT, {**verdict, "published_at": good})
        assert validator(SchemaName.VERDICT).is_valid({**verdict, "published_at": good})
    for bad in ("2023-02-29T00:00:00Z", "2024-05-01T24:00:00Z", "2024-05-01T12:00:00", "2024-05-01t12:00:00z", "today"):
        with pytest.raises(SchemaError) as raised:
            validate(SchemaName.VERDICT, {**verdict, "published_at": bad})
        assert raised.value.path == "/published_at"


def test_names_are_the_schema_versions_and_validators_are_cached() -> None:
    assert [name.value for name in SchemaName] == ["post.v1", "verdict.v1", "dead_letter.v1", "review_decision.v1"]
    assert validator(SchemaName.POST) is validator(SchemaName.POST)
    assert schema_path(SchemaName.VERDICT).is_file()
    assert SchemaName("dead_letter.v1") is SchemaName.DEAD_LETTER
    with pytest.raises(ValueError):
        SchemaName("post.v2")
