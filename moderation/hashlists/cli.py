"""``moderation hashes``: manage the known-bad media lists that every worker matches before any model runs.

Every change increments the lists' version in Redis; running workers see it at their next batch and reload,
no restart needed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import redis

from moderation.decode.images import ImageLimits
from moderation.errors import ConfigError
from moderation.hashlists.entries import HashEntry, HashKind, read_jsonl, utc_now, write_jsonl
from moderation.hashlists.store import HashListStore
from moderation.settings import Settings, load_settings


def redis_url_for(settings: Settings) -> str:
    """``MODERATION_REDIS_URL``, else the embedded stack's cache; ``ConfigError`` with the fix when neither."""
    if settings.redis_url is not None and settings.redis_url.get_secret_value():
        return settings.redis_url.get_secret_value()
    from moderation.embedded.stack import read_state

    state = read_state(settings)
    if state is None:
        raise ConfigError(
            "hash lists live in Redis and none is configured: run `moderation up`, "
            "or set MODERATION_REDIS_URL=redis://host:port/0"
        )
    return state.redis_url


def open_store(settings: Settings | None = None) -> HashListStore:
    settings = settings or load_settings()
    return HashListStore.from_url(redis_url_for(settings), settings.hash_list_namespace)


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise ConfigError(
            f"cannot reach Redis ({exc}); start it with `moderation up` or check MODERATION_REDIS_URL"
        ) from exc


@click.group("hashes")
def hashes() -> None:
    """Known-bad media lists (exact SHA-256 and PDQ perceptual hashes), matched before any model runs."""


@hashes.command("add")
@click.option("--list", "list_name", required=True, help="List name, like ncmec or internal.")
@click.option("--category", required=True, help="Verdict category a match blocks, like csam.")
@click.option("--source", default="", help="Where the hashes came from (free text, for audit).")
@click.option("--sha256", "sha256s", multiple=True, help="An exact SHA-256 to add (repeatable).")
@click.option("--pdq", "pdqs", multiple=True, help="A PDQ hash in hex to add (repeatable).")
@click.option(
    "--perceptual/--no-perceptual",
    default=True,
    show_default=True,
    help="For images: also add PDQ hashes (of the image and of its 5% and 10% centred crops).",
)
@click.argument("images", nargs=-1, type=click.Path(exists=True, path_type=Path))
def add_command(
    list_name: str,
    category: str,
    source: str,
    sha256s: tuple[str, ...],
    pdqs: tuple[str, ...],
    perceptual: bool,
    images: tuple[Path, ...],
) -> None:
    """Add images (files or folders: their SHA-256 and PDQ hashes) and/or given hashes to a list."""
    settings = load_settings()
    entries = hashes_to_add(settings, list_name, category, source, sha256s, pdqs, images, perceptual)
    if not entries:
        raise click.UsageError("give images, --sha256 or --pdq")
    with _redis_errors():
        store = open_store(settings)
        added = store.add(entries)
        version = store.version()
    click.echo(f"{list_name}: {added} new of {len(entries)} entries; lists now at version {version}")


def hashes_to_add(
    settings: Settings,
    list_name: str,
    category: str,
    source: str,
    sha256s: tuple[str, ...] = (),
    pdqs: tuple[str, ...] = (),
    images: tuple[Path, ...] = (),
    perceptual: bool = True,
) -> list[HashEntry]:
    """The entries ``moderation hashes add`` would store."""
    from moderation.hashlists.enrol import entries_for_image, image_files

    stamp = utc_now()
    entries = [HashEntry.create(HashKind.SHA256, v, list_name, category, source, stamp) for v in sha256s]
    entries += [HashEntry.create(HashKind.PDQ, v, list_name, category, source, stamp) for v in pdqs]
    limits = ImageLimits.from_settings(settings)
    for path in image_files(images):
        entries += entries_for_image(
            path.read_bytes(),
            list_name,
            category,
            source or path.name,
            limits,
            min_quality=settings.hash_min_quality,
            perceptual=perceptual,
            added_at=stamp,
            name=str(path),
        )
    return entries


@hashes.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--list", "list_name", default=None, help="Put every entry in this list (overrides the file's).")
@click.option("--category", default=None, help="Category of entries that give none.")
@click.option("--source", default=None, help="Source of entries that give none.")
def import_command(path: Path, list_name: str | None, category: str | None, source: str | None) -> None:
    """Import entries from a JSON-lines file (the format of `export`; '-' reads standard input)."""
    with click.open_file(str(path), encoding="utf-8") as stream:
        entries = list(read_jsonl(stream, list_name=list_name, category=category, source=source, name=str(path)))
    with _redis_errors():
        store = open_store()
        added = store.add(entries)
        version = store.version()
    click.echo(f"imported {len(entries)} entries ({added} new); lists now at version {version}")


@hashes.command("remove")
@click.option("--list", "list_name", required=True, help="The list to remove from.")
@click.option("--sha256", "sha256s", multiple=True, help="An exact SHA-256 to remove (repeatable).")
@click.option("--pdq", "pdqs", multiple=True, help="A PDQ hash to remove (repeatable).")
@click.option("--all", "whole_list", is_flag=True, help="Remove the whole list.")
@click.argument("images", nargs=-1, type=click.Path(exists=True, path_type=Path))
def remove_command(
    list_name: str, sha256s: tuple[str, ...], pdqs: tuple[str, ...], whole_list: bool, images: tuple[Path, ...]
) -> None:
    """Remove hashes, images (every hash made from them) or a whole list."""
    import hashlib

    from moderation.hashlists.enrol import image_files

    if not (sha256s or pdqs or images or whole_list):
        raise click.UsageError("give images, --sha256, --pdq or --all")
    values = [(HashKind.SHA256, v) for v in sha256s] + [(HashKind.PDQ, v) for v in pdqs]
    media = [hashlib.sha256(p.read_bytes()).hexdigest() for p in image_files(images)]
    with _redis_errors():
        store = open_store()
        removed = store.remove(list_name, values=values, media_sha256=media, whole_list=whole_list)
        version = store.version()
    click.echo(f"{list_name}: removed {removed} entries; lists now at version {version}")


@hashes.command("list")
@click.option("--list", "list_name", default=None, help="Print this list's entries as JSON lines.")
def list_command(list_name: str | None) -> None:
    """Summarise the lists (name, categories, entries per kind, sources, when added), or print one list."""
    with _redis_errors():
        store = open_store()
        if list_name is not None:
            count = write_jsonl(sorted(store.entries(list_name), key=_order), sys.stdout)
            if not count:
                click.echo(f"list {list_name!r} has no entries", err=True)
            return
        summaries = store.summaries()
        version = store.version()
    click.echo(f"version {version}; {len(summaries)} lists")
    if summaries:
        click.echo(f"{'list':<24} {'category':<16} {'sha256':>9} {'pdq':>9}  {'added':<41} sources")
    for s in summaries:
        click.echo(
            f"{s.name:<24} {','.join(s.categories):<16} {s.counts[HashKind.SHA256]:>9} {s.counts[HashKind.PDQ]:>9}"
            f"  {s.first_added + '..' + s.last_added:<41} {', '.join(x for x in s.sources if x)[:60]}"
        )


@hashes.command("export")
@click.option("--list", "list_name", default=None, help="Only this list (default: every list).")
@click.option(
    "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default="-", help="File or '-'."
)
def export_command(list_name: str | None, output: Path) -> None:
    """Write entries as JSON lines, sorted (the format `import` reads)."""
    with _redis_errors():
        entries = sorted(open_store().entries(list_name), key=_order)
    with click.open_file(str(output), "w", encoding="utf-8") as stream:
        count = write_jsonl(entries, stream)
    if str(output) != "-":
        click.echo(f"exported {count} entries to {output}")


def _order(entry: HashEntry) -> tuple[str, str, str]:
    return (entry.list, entry.kind.value, entry.value)


@hashes.command("bench")
@click.option("--sizes", default="1000,100000,1000000", show_default=True, help="List sizes, comma-separated.")
@click.option("--queries", default=50, show_default=True, type=click.IntRange(min=1), help="Query hashes per size.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1), help="Timed runs per query.")
@click.option(
    "--distance", default=None, type=click.IntRange(0, 63), help="Match distance (default: the configured one)."
)
def bench_command(sizes: str, queries: int, repeats: int, distance: int | None) -> None:
    """PDQ lookup cost at growing list sizes: index build time, median query latency, against brute force."""
    from moderation.hashlists.bench import format_rows, run_bench

    try:
        counts = [int(part.replace("_", "")) for part in sizes.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"{sizes!r}: give positive integers separated by commas, like 1000,100000")
    max_distance = load_settings().hash_match_max_distance if distance is None else distance
    rows = run_bench(counts, queries=queries, repeats=repeats, max_distance=max_distance)
    click.echo(format_rows(rows, max_distance))


COMMANDS = [hashes]
