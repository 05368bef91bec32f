#!/usr/bin/env bash
# Build the folder that bench/gpu.sh needs, on a machine with registry access and the data packages installed:
#   wheels/              the packages a CUDA machine lacks (bench/requirements-gpu.txt), for its Python version
#   sources/             SMS texts and 64 textile photos, to make the benchmark's posts from
#   model/               the fusion model artifact (models/default)
#   minilm-l6-config/    all-MiniLM-L6-v2's configuration and tokenizer, without weights
# About 30 MB in all. Usage: bench/pack.sh OUT [PYTHON_VERSION (default 3.12)]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bench/pack.sh OUT [PYTHON_VERSION]}
PYVER=${2:-3.12}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT/wheels"
grep -v '^#' bench/requirements-gpu.txt | grep -v '^$' > "$OUT/requirements.txt"
"$PY" -m pip download --quiet --only-binary=:all: --python-version "$PYVER" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any -c constraints.txt -d "$OUT/wheels" -r "$OUT/requirements.txt"
"$PY" -m moderation.bench.offline pack "$OUT" --model "${MODEL_DIR:-models/default}"
du -sh "$OUT"
