"""``moderation encoders``: list the registered encoders and measure their throughput on this machine."""

from __future__ import annotations

import platform
from pathlib import Path

import click

from moderation.settings import Settings, load_settings
from moderation.types import Modality


@click.group("encoders")
def encoders() -> None:
    """Text and image encoders: what is registered, and how fast each runs here."""


@encoders.command("list")
def list_command() -> None:
    """Print the registered encoder names with their modality."""
    from moderation.encode.registry import list_encoders

    for modality in Modality:
        for name in list_encoders(modality):
            click.echo(f"{modality.value}\t{name}")
    click.echo("image\ttimm:<model name> (with weights=<file>)")
    click.echo("text\t<path of a sentence-transformers folder>")


def _batch_sizes(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"{value!r}: give positive integers separated by commas, like 1,8,32")
    return sizes


@encoders.command("bench")
@click.option(
    "--encoder",
    "names",
    multiple=True,
    help="Encoder to measure (repeatable). Default: MODERATION_TEXT_ENCODER and MODERATION_IMAGE_ENCODER.",
)
@click.option("--batch-sizes", default="1,8,32", show_default=True, callback=_batch_sizes, help="Comma-separated.")
@click.option("--n", "n", default=96, show_default=True, type=click.IntRange(min=1), help="Items per pass.")
@click.option(
    "--repeat", default=3, show_default=True, type=click.IntRange(min=1), help="Passes per number; the best counts."
)
@click.option("--device", default=None, help="auto, cpu or cuda. Default: MODERATION_DEVICE.")
@click.option(
    "--threads", default=None, type=click.IntRange(min=0), help="Torch CPU threads. Default: MODERATION_TORCH_THREADS."
)
@click.option(
    "--channels-last/--no-channels-last", default=True, show_default=True, help="Image models' memory format."
)
@click.option(
    "--image",
    "image_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Real image to use (repeatable). Default: a synthetic 1280x960 JPEG.",
)
@click.pass_context
def bench_command(
    ctx: click.Context,
    names: tuple[str, ...],
    batch_sizes: list[int],
    n: int,
    repeat: int,
    device: str | None,
    threads: int | None,
    channels_last: bool,
    image_paths: tuple[Path, ...],
) -> None:
    """Print items/s per encoder and batch size on this device, decode excluded and included (Markdown)."""
    import torch

    from moderation.allocator import configure_allocator
    from moderation.decode.images import ImageLimits
    from moderation.encode.bench import bench, format_table, synthetic_jpeg
    from moderation.encode.registry import create_encoder, modality_of

    settings = ctx.obj if isinstance(ctx.obj, Settings) else load_settings()
    configure_allocator(settings.host_allocator)  # as the worker does, so the rates compare
    options: dict[str, object] = {
        "device": device or settings.device,
        "threads": settings.torch_threads if threads is None else threads,
        "batch_size": max(batch_sizes),
    }
    built = []
    for name in names or (settings.text_encoder, settings.image_encoder):
        extra = {"channels_last": channels_last} if modality_of(name) is Modality.IMAGE else {}
        built.append(create_encoder(name, **options, **extra))
    images = [path.read_bytes() for path in image_paths] or [synthetic_jpeg()]
    rows = bench(built, batch_sizes, n, images, ImageLimits.from_settings(settings), repeat)
    source = ", ".join(path.name for path in image_paths) or "synthetic 1280x960 JPEG"
    click.echo(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}; best of {repeat} passes of {n} items; images: {source}; channels-last: {channels_last}"
    )
    click.echo(format_table(rows))


COMMANDS = [encoders]
