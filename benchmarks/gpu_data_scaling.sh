#!/usr/bin/env bash
# The largest point of the Push-T data-scaling curve on one H100/H200: 10,000 trajectories generated on all CPU
# cores (one process per core), encoded, trained and planned on the GPU with the same model, steps and goals as the
# CPU points (benchmarks/bench_data_scaling.py), so the point joins their curve in benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_data_scaling.sh [--steps N] [--goals N]     (PYTHON: the interpreter, default python3)
#
# Budget: ≤ 10 minutes is the aim on 16 cores + one H100 (generation ≈ 3 min at ≈ 55 episodes/s, extrapolated
# from 7.3 episodes/s on 2 cores; training and planning not yet measured on a GPU). Every stage resumes: run it
# again after an interruption. Writes runs/data_scaling/n10000/ and appends a "Data scaling" section.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
exec "$PY" benchmarks/bench_data_scaling.py --sizes 10000 --out runs/data_scaling "$@"
