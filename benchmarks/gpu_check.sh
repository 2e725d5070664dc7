#!/usr/bin/env bash
# GPU checks that fit one short lease of a GPU machine (about 11 minutes on an H200):
#   1. training img/s, fp32 / bf16 / fp16, ours against the bare loop (bench_train.py), and
#      ours with train.compile (CUDA graphs) at 32x32 against the bare loop, eager
#   2. sampling image-steps/s and wall times for 64 samples (bench_sample.py --full)
#   3. a 32x32 InSAR-noise model trained on the GPU (bf16), then the sampler study on it, and
#      4096 samples of it with --batch-size auto, eager and --compile
#   4. the test suite with a GPU present (Trainer and sampling then run on CUDA)
# Each stage has its own time limit, so a slow stage cannot starve the later ones.
# Usage (repository root, radardiff importable):  OUT=gpu_out bash benchmarks/gpu_check.sh
# A shorter pass (about 5 minutes): QUICK=1 (no --full sampling, a shorter training, fewer
# study rows, no test suite).
set -u
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  STEPS=15; FULL=; TRAIN_S=80; STUDY="ddim,dpmsolver++"; STUDY_STEPS=25,100,1000; STUDY_S=90
else
  STEPS=20; FULL=--full; TRAIN_S=120; STUDY="ddpm,ddim,dpmsolver++"; STUDY_STEPS=10,25,50,100,1000
  STUDY_S=110
fi
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

stage bench_train
timeout 110 python3 benchmarks/bench_train.py --device cuda --precisions fp32,bf16,fp16 \
  --batch 128 --steps $STEPS --warmup 4 --sizes 32,64 2>&1 | tee "$OUT/bench_train.txt"

stage "bench_train: train.compile (reduce-overhead: CUDA graphs) at 32x32, the bare loop eager"
timeout 150 python3 benchmarks/bench_train.py --device cuda --precisions fp32,bf16 --compile \
  --batch 128 --steps $STEPS --warmup 4 --sizes 32 2>&1 | tee "$OUT/bench_train_compile.txt"

stage bench_sample
timeout 140 python3 benchmarks/bench_sample.py --device cuda --precisions fp32 bf16 \
  --steps 10 --repeats 2 $FULL 2>&1 | tee "$OUT/bench_sample.txt"

stage train for the sampler study
$RD data synth insar_noise --n 20000 --size 32 --out "$W/train.h5" --seed 1 >/dev/null
$RD data synth insar_noise --n 1024 --size 32 --out "$W/val.h5" --seed 2 >/dev/null
# stopped by the time limit if it has not finished: the last complete checkpoint is used
timeout $TRAIN_S $RD -q train configs/insar_noise_32.toml --out "$W/run" \
  --set data.train="$W/train.h5" --set data.val="$W/val.h5" \
  --set model.base_channels=64 --set model.layers_per_block=2 \
  --set train.steps=3000 --set train.batch_size=256 --set train.lr=2e-4 \
  --set train.warmup_steps=200 --set train.mixed_precision=bf16 \
  --set 'train.ema_halflife_kimg=[50.0]' --set train.checkpoint_every=250 \
  --set train.val_every=1000 --set train.log_every=50 2>&1 | tail -5
ls "$W/run/checkpoints"
cp "$W/run/stats.jsonl" "$W/run/config.toml" "$OUT/" 2>/dev/null

FEAT=()
if [ "$QUICK" != 1 ]; then
  stage feature extractor
  timeout 45 $RD features train "$W/train.h5" --out "$W/feat" --epochs 4 2>&1 | tail -2
  [ -e "$W/feat" ] && FEAT=(--features "$W/feat")
fi

stage sampler study
timeout $STUDY_S $RD study samplers "$W/run" --samplers $STUDY \
  --steps $STUDY_STEPS --n 256 --batch-size 256 --real "$W/val.h5" "${FEAT[@]}" \
  --out "$W/study" 2>&1 | tail -25
cp "$W"/study/samplers.* "$OUT/" 2>/dev/null

stage "sampling: --batch-size auto, eager then --compile (CUDA graphs)"
for c in "" --compile; do
  rm -rf "$W/s$c.h5"*
  timeout 100 $RD sample "$W/run" --n 4096 --out "$W/s$c.h5" --batch-size auto $c 2>&1 \
    | tr '\r' '\n' | grep -E "batch size|torch.compile|wrote|rror" | tee -a "$OUT/sample_compile.txt"
done
python3 -c "
import sys, numpy as np; sys.path.insert(0, 'src')
from radardiff.data.dataset_file import DatasetFile
a, b = (DatasetFile('$W/s' + s + '.h5').images() for s in ('', '--compile'))
print('compiled vs eager: max |diff|', float(np.abs(a - b).max()), 'of', float(np.abs(a).max()))
" 2>&1 | tee -a "$OUT/sample_compile.txt"

stage tests with a GPU present
left=$((530 - SECONDS))
if [ "$QUICK" != 1 ] && [ $left -gt 30 ]; then
  timeout $left python3 -m pytest -q -x -p no:cacheprovider -n 8 tests 2>&1 | tail -30 \
    | tee "$OUT/pytest.txt"
fi
stage done
