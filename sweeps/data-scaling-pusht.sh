#!/usr/bin/env bash
# The Push-T data-scaling curve on 2 CPU cores, in the background, resumable (RESULTS.md "Data scaling"):
#
#   nohup bash sweeps/data-scaling-pusht.sh > data-scaling.log 2>&1 &     # re-run the same line to resume
#
# Settings by environment: PYTHON (.venv/bin/python), OUT (runs/data_scaling), SIZES (240,1000,3000), ENC_EPISODES
# (1000: the folder the encoder learns from), PRETRAIN_STEPS (2000); further arguments go to bench_data_scaling.py.
#
# 240 / 1,000 / 3,000 trajectories (SIZES), each generated (seed 0, 200 env steps, every 5th frame rendered),
# encoded with one frozen time-contrastive encoder (pretrained 2,000 steps on the 1,000-trajectory folder), trained
# 2,000 steps (the data alone varies), planned with CEM on 60 held-out goals, and scored with the ladder's rungs on
# the same goals; the curve is drawn beside DINO-WM's Table 5 (benchmarks/bench_data_scaling.py). Every stage is
# kept in its folder under OUT and skipped when done, so an interrupted sweep picks up where it stopped; niced so
# other work on the machine goes first. About 10 hours on 2 cores; the 10,000 point: benchmarks/gpu_data_scaling.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT="${OUT:-runs/data_scaling}"
SIZES="${SIZES:-240,1000,3000}"
ENC="$OUT/encoder/encoder"
ENC_N="${ENC_EPISODES:-1000}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
run() { nice -n 10 "$PY" "$@"; }

if [ ! -f "$OUT/n$ENC_N/episodes/generate.json" ]; then  # the same episodes the sweep's point of this size uses
  run -m latentwm.cli generate --out-dir "$OUT/n$ENC_N/episodes" --num-episodes "$ENC_N" --max-steps 200 \
    --render-every 5 --seed 0
fi
if [ ! -f "$ENC/pretrain.json" ]; then  # written when the encoder is complete
  run -m latentwm.cli pretrain-encoder --data-dir "$OUT/n$ENC_N/episodes" --out-dir "$OUT/encoder" \
    --objective time-contrastive --steps "${PRETRAIN_STEPS:-2000}" --image-size 112 --window 100 --sigma 20.0 \
    --resume
fi
run benchmarks/bench_data_scaling.py --sizes "$SIZES" --steps 2000 --goals 60 --encoder "$ENC" --out "$OUT" "$@"
