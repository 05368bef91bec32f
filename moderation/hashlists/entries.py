"""Hash-list entries: what one known-bad hash says, validated, and its JSON-lines form.

An entry is one hash in one list: ``kind`` (``sha256`` of the exact bytes, or ``pdq``, Meta's 256-bit perceptual
hash), ``value`` (64 lowercase hex digits for both), the ``list`` it belongs to, the verdict ``category`` a match
blocks, where it came from (``source``) and when it was added (``added_at``). PDQ entries made from an image also
record the image's SHA-256 (``media_sha256``, so removing the image removes every hash made from it), the PDQ
``quality`` and which ``variant`` of the image was hashed (``original`` or a centred crop such as ``crop-5%``).

The JSON-lines file format of ``moderation hashes import`` / ``export`` is one entry per line, with these
field names; the PDQ hex is the one Meta's ThreatExchange tools write (bit 0 of the hash vector is the most
significant bit of the first hex digit), so hashes exchanged with other platforms match as they are.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import IO, Any

from moderation.errors import ConfigError

LIST_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
CATEGORY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # as verdict.v1's category names
HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_SOURCE = 256
MAX_VARIANT = 32


class HashKind(enum.StrEnum):
    """How an entry's value was computed from the media."""

    SHA256 = "sha256"  # exact: the SHA-256 of the image bytes as posted
    PDQ = "pdq"  # perceptual: Meta's PDQ, 256 bits, compared by Hamming distance


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class HashEntry:
    """One known-bad hash in one list; construct it with :meth:`create` to validate every field."""

    kind: HashKind
    value: str
    list: str
    category: str
    source: str
    added_at: str
    quality: int | None = None
    media_sha256: str | None = None
    variant: str | None = None

    @classmethod
    def create(
        cls,
        kind: str,
        value: str,
        list_name: str,
        category: str,
        source: str = "",
        added_at: str | None = None,
        *,
        quality: int | None = None,
        media_sha256: str | None = None,
        variant: str | None = None,
    ) -> HashEntry:
        """A validated entry; ``ConfigError`` names the field that is wrong and the form it must take."""
        try:
            hash_kind = HashKind(kind)
        except ValueError:
            raise ConfigError(f"hash kind {kind!r} is unknown: use one of {', '.join(HashKind)}") from None
        hex_value = str(value).strip().lower()
        if not HEX64.match(hex_value):
            raise ConfigError(f"{hash_kind.value} value {value!r} is not 64 hexadecimal digits")
        check_list_name(list_name)
        if not CATEGORY.match(category):
            raise ConfigError(
                f"category {category!r} is not a verdict category name: lowercase letters, digits and _, "
                "starting with a letter (like csam or terrorism)"
            )
        if len(source) > MAX_SOURCE:
            raise ConfigError(f"source is {len(source)} characters; keep it under {MAX_SOURCE}")
        stamp = added_at or utc_now()
        try:
            datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"added_at {stamp!r} is not an ISO 8601 date-time like 2026-01-31T12:00:00Z") from None
        if quality is not None and not 0 <= int(quality) <= 100:
            raise ConfigError(f"quality {quality} is outside 0..100")
        media = media_sha256.lower() if media_sha256 else None
        if media is not None and not HEX64.match(media):
            raise ConfigError(f"media_sha256 {media_sha256!r} is not 64 hexadecimal digits")
        if variant is not None and len(variant) > MAX_VARIANT:
            raise ConfigError(f"variant {variant!r} is longer than {MAX_VARIANT} characters")
        return cls(
            hash_kind,
            hex_value,
            list_name,
            category,
            source,
            stamp,
            None if quality is None else int(quality),
            media,
            variant,
        )

    @property
    def field(self) -> str:
        """The entry's key inside its kind's Redis hash: ``<list>:<value>`` (unique per list and kind)."""
        return f"{self.list}:{self.value}"

    def as_json(self) -> dict[str, Any]:
        """The JSON-lines form: every field, optional ones only when set."""
        document = asdict(self)
        document["kind"] = self.kind.value
        return {k: v for k, v in document.items() if v is not None}

    def stored(self) -> bytes:
        """What Redis holds under :attr:`field` (the list and value are in the field already)."""
        document = {k: v for k, v in self.as_json().items() if k not in ("kind", "value", "list")}
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_stored(cls, kind: HashKind, field: str, stored: bytes | str) -> HashEntry:
        """Inverse of :meth:`stored`; trusted data (it was validated when it was added), so not re-validated."""
        list_name, _, value = field.partition(":")
        document = json.loads(stored)
        return cls(
            kind,
            value,
            list_name,
            document["category"],
            document.get("source", ""),
            document.get("added_at", ""),
            document.get("quality"),
            document.get("media_sha256"),
            document.get("variant"),
        )

    def with_list(self, list_name: str) -> HashEntry:
        check_list_name(list_name)
        return replace(self, list=list_name)


def check_list_name(name: str) -> str:
    if not LIST_NAME.match(name):
        raise ConfigError(
            f"list name {name!r} is not valid: 1-64 of lowercase letters, digits, '_', '-', '.', "
            "starting with a letter or digit (like ncmec or internal-2026)"
        )
    return name


def read_jsonl(
    stream: IO[str],
    *,
    list_name: str | None = None,
    category: str | None = None,
    source: str | None = None,
    name: str = "<input>",
) -> Iterator[HashEntry]:
    """Entries from JSON lines; ``list_name``, ``category`` and ``source`` fill fields a line leaves out
    (``list_name`` also overrides the file's list names). Errors name the line."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}:{number}: not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{name}:{number}: expected a JSON object with kind, value, list, category")
        unknown = set(document) - set(HashEntry.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{name}:{number}: unknown field(s) {', '.join(sorted(unknown))}")
        merged = {**document}
        if list_name is not None:
            merged["list"] = list_name
        for key, default in (("category", category), ("source", source)):
            if key not in merged and default is not None:
                merged[key] = default
        missing = [key for key in ("kind", "value", "list", "category") if key not in merged]
        if missing:
            raise ConfigError(
                f"{name}:{number}: missing {', '.join(missing)} (give them in the file or as --list / --category)"
            )
        try:
            yield HashEntry.create(
                str(merged["kind"]),
                str(merged["value"]),
                str(merged["list"]),
                str(merged["category"]),
                str(merged.get("source", "")),
                merged.get("added_at"),
                quality=merged.get("quality"),
                media_sha256=merged.get("media_sha256"),
                variant=merged.get("variant"),
            )
        except ConfigError as exc:
            raise ConfigError(f"{name}:{number}: {exc}") from None


def write_jsonl(entries: Iterable[HashEntry], stream: IO[str]) -> int:
    """Write entries as JSON lines (sorted keys); returns how many."""
    count = 0
    for entry in entries:
        stream.write(json.dumps(entry.as_json(), sort_keys=True, separators=(",", ":")) + "\n")
        count += 1
    return count
