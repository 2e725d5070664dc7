#!/usr/bin/env bash
# GPU checks of the throughput work, sized for one short lease of a GPU machine (one command of at
# most 10 minutes; the stages' time limits add up to about 8.5):
#   1. training img/s, fp32 / bf16, ours against the bare loop (bench_train.py), 32 and 64 px
#   2. ours with train.compile (auto: CUDA graphs) at 32 px against the bare loop, eager
#   3. ours and the bare loop channels-last, bf16
#   4. sampling image-steps/s (bench_sample.py)
#   5. a short GPU training of the 32 px recipe, then 4096 samples of it with --batch-size auto,
#      eager and --compile (CUDA graphs), and their difference
#   6. the compile and batch-size tests with a GPU present (the CUDA-only one runs there)
# Each stage has its own time limit, so a slow stage cannot starve the later ones.
# Usage (repository root, radardiff importable):  OUT=gpu_out bash benchmarks/gpu_check.sh
# STUDY=1: instead, the sampler study of the fast-sampling work (a longer GPU training, the
# feature extractor, ddpm/ddim/dpmsolver++ at 10-1000 steps; about 6 minutes).
set -u
OUT=${OUT:-gpu_out}
W=${WORK:-/tmp/radardiff_gpu}
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
RD="python3 -m radardiff"
stage() { echo; echo "== $* ($(date +%T), ${SECONDS}s)"; }

stage environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/env.txt"
python3 -c "import torch, diffusers, accelerate, pydantic; print('torch', torch.__version__, \
'diffusers', diffusers.__version__, 'accelerate', accelerate.__version__, \
'pydantic', pydantic.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/env.txt"

NTRAIN=$([ "${STUDY:-0}" = 1 ] && echo 20000 || echo 6000)
$RD data synth insar_noise --n $NTRAIN --size 32 --out "$W/train.h5" --seed 1 >/dev/null
$RD data synth insar_noise --n 1024 --size 32 --out "$W/val.h5" --seed 2 >/dev/null
# the 32 px recipe, made smaller and trained briefly on the GPU (bf16); stopped by its time limit
# if it has not finished: the last complete checkpoint is used
train_run() {  # $1 time limit (s), $2 steps, $3 checkpoint every
  local limit=$1 steps=$2 every=$3
  timeout "$limit" $RD -q train configs/insar_noise_32.toml --out "$W/run" \
    --set data.train="$W/train.h5" --set data.val="$W/val.h5" \
    --set model.base_channels=64 --set model.layers_per_block=2 \
    --set train.steps="$steps" --set train.batch_size=256 --set train.lr=2e-4 \
    --set train.warmup_steps=200 --set train.mixed_precision=bf16 \
    --set 'train.ema_halflife_kimg=[50.0]' --set train.checkpoint_every="$every" \
    --set train.val_every=1000 --set train.log_every=50 2>&1 | tail -5
  ls "$W/run/checkpoints"
  cp "$W/run/stats.jsonl" "$W/run/config.toml" "$OUT/" 2>/dev/null
}

if [ "${STUDY:-0}" = 1 ]; then
  stage train for the sampler study
  train_run 120 3000 250
  stage feature extractor
  FEAT=()
  timeout 45 $RD features train "$W/train.h5" --out "$W/feat" --epochs 4 2>&1 | tail -2
  [ -e "$W/feat" ] && FEAT=(--features "$W/feat")
  stage sampler study
  timeout 150 $RD study samplers "$W/run" --samplers ddpm,ddim,dpmsolver++ \
    --steps 10,25,50,100,1000 --n 256 --batch-size 256 --real "$W/val.h5" "${FEAT[@]}" \
    --out "$W/study" 2>&1 | tail -25
  cp "$W"/study/samplers.* "$OUT/" 2>/dev/null
  stage done
  exit 0
fi

stage "bench_train: eager, fp32 and bf16"
timeout 80 python3 benchmarks/bench_train.py --device cuda --precisions fp32,bf16 \
  --batch 128 --steps 12 --warmup 3 --sizes 32,64 2>&1 | tee "$OUT/bench_train.txt"

stage "bench_train: train.compile (auto: CUDA graphs) at 32 px, the bare loop eager"
timeout 130 python3 benchmarks/bench_train.py --device cuda --precisions fp32,bf16 --compile \
  --batch 128 --steps 12 --warmup 3 --sizes 32 2>&1 | tee "$OUT/bench_train_compile.txt"

stage "bench_train: channels-last, bf16"
timeout 50 python3 benchmarks/bench_train.py --device cuda --precisions bf16 --channels-last \
  --batch 128 --steps 12 --warmup 3 --sizes 32,64 2>&1 | tee "$OUT/bench_train_cl.txt"

stage bench_sample
timeout 50 python3 benchmarks/bench_sample.py --device cuda --precisions fp32 bf16 \
  --steps 10 --repeats 2 2>&1 | tee "$OUT/bench_sample.txt"

stage "a short GPU training for the sampling checks"
train_run 35 200 50

stage "sampling: --batch-size auto, eager then --compile (CUDA graphs)"
for c in "" --compile; do
  rm -rf "$W/s$c.h5"*
  timeout $([ -z "$c" ] && echo 50 || echo 100) $RD sample "$W/run" --n 4096 \
    --out "$W/s$c.h5" --batch-size auto $c 2>&1 | tr '\r' '\n' \
    | grep -E "batch size|torch.compile|wrote|rror" | tee -a "$OUT/sample_compile.txt"
done
python3 -c "
import sys, numpy as np; sys.path.insert(0, 'src')
from radardiff.data.dataset_file import DatasetFile
a, b = (DatasetFile('$W/s' + s + '.h5').images() for s in ('', '--compile'))
print('compiled vs eager: max |diff|', float(np.abs(a - b).max()), 'of', float(np.abs(a).max()))
" 2>&1 | tee -a "$OUT/sample_compile.txt"

stage "compile and batch-size tests with a GPU present (the CUDA-only one first)"
T=(tests/sample/test_batch_and_compile.py tests/train/test_compile.py)
timeout 30 python3 -m pytest -q -p no:cacheprovider -rs "${T[0]}" -k cuda 2>&1 | tail -5 \
  | tee "$OUT/pytest.txt"
left=$((570 - SECONDS))
if [ $left -gt 20 ]; then
  timeout $left python3 -m pytest -q -x -p no:cacheprovider -rs "${T[@]}" 2>&1 | tail -15 \
    | tee -a "$OUT/pytest.txt"
fi
stage done
