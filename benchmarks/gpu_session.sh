#!/usr/bin/env bash
# The GPU measurements of a session lent a GPU for a few minutes, as one script:
#
#   bash benchmarks/gpu_session.sh OUT_DIR [TRAIN_SECONDS]
#
# 1. benchmarks/throughput.py at the paper's size (240 x 240, widths 64-1024), float32,
#    batches 4 and 16, against the PyTorch twin in eager mode;
# 2. whole-volume inference (155 slices, 15 combinations, one compilation), JAX and eager;
# 3. the `paper` preset's URN + MD segmentation on a small phantom (8 BraTS-like cases,
#    1 mm, no N4 to save the minutes), stopped after TRAIN_SECONDS by SIGTERM (training saves
#    and stops cleanly), its metrics.jsonl kept: the start of the paper recipe's curve;
# 4. URN segmentation and the baseline in bfloat16 (batch 16), against the twin under
#    autocast in eager mode; 5. the same in float32 against torch.compile (slow to compile).
# On an H200 (2026-11-26) JAX compiled a step in 7-65 s at this size and torch.compile took
# minutes: stage 1 reached 4 rows of 6 in 170 s. Stages 1-3 have limits adding up to 540 s,
# plus the install and up to 20 s for each stage to stop: too close to a 600 s call, so run
# SKIP=345 for stages 1-2, then SKIP=12 for stages 3-5 (SKIP=12 bash benchmarks/gpu_session.sh OUT).
# Each stage has its own time limit and saves what it measured as it goes, so a stage that
# runs out of time loses nothing measured before. Where nibabel, ml-collections, grain,
# nilearn or tensorboardX are missing (the lent machines have JAX and PyTorch only), wheels
# in .whl/ are installed first (benchmarks/RESULTS.md says how they were fetched).
set -u
OUT=${1:?usage: gpu_session.sh OUT_DIR [TRAIN_SECONDS]}
TRAIN_SECONDS=${2:-240}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.6
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
{
  date -u; nvidia-smi -L
  python3 -c "import jax, flax, optax, orbax.checkpoint as o, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
} 2>&1 | tee "$OUT/versions.txt"

stage() {  # stage NAME SECONDS COMMAND...: its output to $OUT/NAME.log, its status noted
  local name=$1 seconds=$2 start=$SECONDS; shift 2
  echo "== $name (limit $seconds s): $*"
  timeout -s TERM -k 20 "$seconds" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: status $rc after $((SECONDS - start)) s" | tee -a "$OUT/$name.log"
  tail -n 12 "$OUT/$name.log"
}

SKIP=${SKIP:-}
run_stage() { case "$SKIP" in *"$1"*) return 1;; esac; }

run_stage 1 && stage throughput_f32 200 python3 benchmarks/throughput.py --torch eager \
  --batches 4,16 --skip-inference --repeats 6 --out "$OUT/gpu_f32.json"

run_stage 2 && stage inference_f32 100 python3 benchmarks/throughput.py --torch eager \
  --skip-training --repeats 3 --out "$OUT/gpu_inference_f32.json"

export URN_JAX_CACHE=/tmp/urn_cache
if run_stage 3; then
  stage paper_curve "$TRAIN_SECONDS" python3 launch.py --config=configs/segment.py:urn_md,paper \
    --workdir=/tmp/paper_urn_md --config.data.phantom_brats=8 --config.data.phantom_hcp=2 \
    --config.data.n4=False --config.data.workers=16 --config.train.eval_every=250 \
    --config.train.eval_slices=256 --config.train.checkpoint_every=100000
  cp /tmp/paper_urn_md/metrics.jsonl "$OUT/paper_urn_md_metrics.jsonl" 2>/dev/null
  cp /tmp/paper_urn_md/split.json "$OUT/paper_urn_md_split.json" 2>/dev/null
fi

run_stage 4 && stage throughput_bf16 200 python3 benchmarks/throughput.py --torch eager \
  --batches 16 --kinds urn_segment,baseline --skip-inference --dtype bfloat16 --repeats 6 \
  --out "$OUT/gpu_bf16.json"

run_stage 5 && stage torch_compile 300 python3 benchmarks/throughput.py --torch compile \
  --batches 16 --kinds baseline,urn_segment --skip-inference --repeats 6 \
  --out "$OUT/gpu_f32_compile.json"
