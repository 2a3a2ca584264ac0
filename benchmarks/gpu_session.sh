#!/usr/bin/env bash
# The one prepared script for a session that is lent a GPU machine (the `device` tool): everything the open issues
# need a GPU for, in priority order, each part under its own time limit, results under $OUT.
#
#   parts:  tests      the CUDA tests (CUDA-graph step, generation on cuda)             ~1 min   issue 18
#           generate   benchmarks/generate.py --device cuda (CUDA-graph step rows)     ~2 min   issue 18
#           diffusion  benchmarks/diffusion.py --device cuda --quick                  ~1.5 min issue 20
#           train      the 16 kHz digits recipe (docs/recipes/digits16k-a26.yaml from the shipped digits-m1;
#                      RECIPE= picks another), on the GPU in bf16-mixed for TRAIN_SECONDS, its exported model
#                      brought back in $OUT/model (continue it here, e.g. digits16k-a27.yaml)         issue 21
#
# Here, once per session (the wheels the device image lacks; its python3 is 3.12 with torch, lightning, scipy,
# safetensors, huggingface_hub, matplotlib, scikit-learn):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl soundfile soxr espeakng-loader cffi pycparser
# Then two device calls on the same warm machine (carry [".whl"], timeout_s 600 each; about 11 min of device time
# with the machine's start, of the 15 a session is lent):
#   bash benchmarks/gpu_session.sh tests generate diffusion          # ~5 min
#   TRAIN_SECONDS=200 bash benchmarks/gpu_session.sh train           # ~5 min: data ~0.5, probe ~1, training 200 s
# $OUT is emptied before each call: fetch the first call's files before the second.
# To continue the CPU chain instead (benchmarks/RESULTS.md, attempts 26-35; its stages are kept between sessions as
# the single commit of the local branch training-state: `git -C main archive training-state | tar -x` from /work
# restores runs/), copy its latest finished stage into the ignored runs/ folder and carry it, e.g.
# `cp -r /work/runs/digits16k-a33/model runs/a33-model`, carry [".whl", "runs/a33-model"], then
#   RECIPE=docs/recipes/digits16k-a34.yaml INIT_FROM=runs/a33-model TRAIN_SECONDS=200 bash benchmarks/gpu_session.sh train
# A CPU rehearsal of the plumbing (no GPU; tiny and quick): DEVICE=cpu TRAIN_SECONDS=20 bash benchmarks/gpu_session.sh train
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-session}
DEVICE=${DEVICE:-cuda}
TRAIN_SECONDS=${TRAIN_SECONDS:-240}
PY=${PY:-python3}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
say "machine: $(nvidia-smi -L 2>/dev/null | head -1); $(lscpu | grep 'Model name' | sed 's/  */ /g'); $($PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())')"

part_tests() {
  timeout 150 $PY -m pytest -q -rs -p no:cacheprovider tests/generation/test_graphs.py tests/cli/test_generate_cli.py \
    tests/diffusion/test_samplers.py 2>&1 | tail -25 > "$OUT/tests.txt"
}

part_generate() {
  (cd benchmarks && timeout 180 $PY generate.py --device "$DEVICE" 2>&1 | tail -40) > "$OUT/generate.txt"
}

part_diffusion() {
  (cd benchmarks && timeout 150 $PY diffusion.py --device "$DEVICE" --quick --weights float32 2>&1 | tail -20) \
    > "$OUT/diffusion.txt"
}

# A digits recipe on the GPU (default: the 16 kHz one, docs/recipes/digits16k-a26.yaml, from the shipped 8 kHz
# digits-m1: no 8 kHz model can meet the FID bar, benchmarks/RESULTS.md): its one-voice data made here, a batch 8x
# larger. A 30-step run measures the throughput first, so that the cosine schedule ends when the time does.
RECIPE=${RECIPE:-docs/recipes/digits16k-a26.yaml}
INIT_FROM=${INIT_FROM:-digits-m1}
part_train() {
  local data=/tmp/digits-start run=/tmp/digits-gpu batch=64 accel=gpu precision=bf16-mixed
  local val_batches=16
  [ "$DEVICE" = cpu ] && { batch=2; accel=cpu; precision=32-true; val_batches=1; }
  local n=$([ "$DEVICE" = cpu ] && echo 300 || echo 24000)
  timeout 300 $PY -m sashimi data synth-digits --root "$data" --n-clips "$n" --seed 0 --no-noise --voices m1,m3,f2 \
    --accents en-us --rate 170 --pitch 50 --word-start 100-150 >> "$LOG" 2>&1 || { say "synth-digits failed"; return 1; }
  local common=("$RECIPE" "trainer.init_from=$INIT_FROM" "data.root=$data"
                "trainer.batch_size=$batch" "trainer.accelerator=$accel" "trainer.precision=$precision"
                trainer.num_workers=8 trainer.val_batch_size=32 trainer.checkpoint_every=50
                "trainer.val_batches=$val_batches")
  rm -rf "$run-probe" "$run"
  timeout 240 $PY -m sashimi train "${common[@]}" trainer.max_steps=30 trainer.val_every=1000 \
    --run-dir "$run-probe" >> "$LOG" 2>&1 || { say "probe run failed"; return 1; }
  local steps
  steps=$($PY - "$run-probe" "$TRAIN_SECONDS" "$batch" <<'EOF'
import csv, glob, sys
rows = list(csv.DictReader(open(glob.glob(f"{sys.argv[1]}/csv/*/metrics.csv")[0])))
rate = [float(r["train/clips_per_s"]) for r in rows if r.get("train/clips_per_s")][-1]
print(max(10, int(float(sys.argv[2]) * rate / int(sys.argv[3]))))
EOF
)
  [ -n "$steps" ] || { say "the probe run logged no throughput"; return 1; }
  say "train: $steps steps of batch $batch"
  local rc=0
  timeout $((TRAIN_SECONDS + 180)) $PY -m sashimi train "${common[@]}" "trainer.max_steps=$steps" \
    "trainer.val_every=$((steps / 4 > 0 ? steps / 4 : 1))" --run-dir "$run" >> "$LOG" 2>&1 || rc=$?
  cp "$run"/csv/*/metrics.csv "$OUT/train-metrics.csv" 2>/dev/null
  mkdir -p "$OUT/model"
  if [ -f "$run/model/model.safetensors" ]; then
    cp "$run"/model/* "$OUT/model/"
  else  # stopped early: export the last checkpoint's weights (the .ckpt itself is over the 16 MiB a file may be)
    $PY -c "import sys, sashimi; from sashimi.train.evaluate import load_for_evaluation as load
sashimi.save_model(load(sys.argv[1])[0], sys.argv[2])" \
      "$run/checkpoints/last.ckpt" "$OUT/model" >> "$LOG" 2>&1
  fi
  return $rc
}

for part in "${@:-tests generate diffusion train}"; do
  for p in $part; do
    say "part $p"
    start=$SECONDS
    "part_$p" || say "part $p: failed (see $LOG)"
    say "part $p: $((SECONDS - start)) s"
  done
done
ls -la "$OUT" >> "$LOG"
