#!/usr/bin/env bash
# One prepared GPU check (issue 18): install the project from its own files, then run benchmarks/gpu_check.py
# (the device tests + training / attention / generation / planning / encoder throughput; see its docstring).
#
#   bash benchmarks/gpu_check.sh [--quick] [--no-record] [--only SECTIONS] [gpu_check.py options]
#
# At most ~8 minutes on one H100/H200 (GPU_CHECK_TOTAL_S, default 470 s, covers the install and every section).
# Writes $OUT/gpu_check.json (OUT defaults to runs/gpu_check), gpu_check.log, pytest.log, install.log and
# gpu_check.md (the section appended to benchmarks/RESULTS.md, which --quick / --no-record skip). Idempotent: it
# only installs (again) and appends a dated section.
#
# Install step, offline (the GPU machine has no network; pip never reaches an index here):
#   - wheels in .whl/ (missing pure-python dependencies: tyro, webdataset, av, ...) go to /tmp/site on PYTHONPATH;
#   - the project itself: pip install --no-deps --no-build-isolation -e . (else src/ goes on PYTHONPATH);
#   - the machine's torch is never replaced; without any torch, a torch wheel in .whl/ is installed, else it stops.
# Environment: PYTHON (interpreter; default python3 if it has torch, else .venv/bin/python), GPU_CHECK_SKIP_INSTALL=1
# (skip the install step), GPU_CHECK_SKIP_TESTS=1 (skip the pytest section): the test suite sets both.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD
T0=$SECONDS
export OUT="${OUT:-runs/gpu_check}"
mkdir -p "$OUT"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if python3 -c "import torch" >/dev/null 2>&1 || [ ! -x .venv/bin/python ]; then PY=python3; else PY=.venv/bin/python; fi
fi

if [ -z "${GPU_CHECK_SKIP_INSTALL:-}" ]; then
    echo "== install ($PY; log: $OUT/install.log)"
    {
        set -x
        if compgen -G ".whl/*.whl" >/dev/null; then
            wheels=$(ls .whl/*.whl | grep -v '/torch-') || true
            if [ -n "$wheels" ]; then
                # shellcheck disable=SC2086
                "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
                    $wheels && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
            fi
        fi
        if ! "$PY" -c "import torch" 2>/dev/null; then
            if compgen -G ".whl/torch-*.whl" >/dev/null; then
                "$PY" -m pip install -q --no-index --find-links .whl .whl/torch-*.whl
            fi
        fi
        "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
            || echo "editable install failed: putting src/ on PYTHONPATH"
        set +x
    } >"$OUT/install.log" 2>&1
    tail -n 5 "$OUT/install.log"
    if ! "$PY" -c "import torch" 2>/dev/null; then
        echo "no torch for $PY: install a CUDA build of torch (2.5 - 2.14) first, or put its wheel in .whl/" >&2
        exit 2
    fi
    where=$("$PY" -c "import latentwm, os; print(os.path.dirname(os.path.dirname(os.path.abspath(latentwm.__file__))))" 2>/dev/null)
    if [ "$where" != "$ROOT/src" ]; then
        export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    fi
    "$PY" -c "import torch, latentwm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| latentwm from', latentwm.__file__)"
fi

total="${GPU_CHECK_TOTAL_S:-470}"
budget=$(( total - (SECONDS - T0) - 10 ))
args=()
if [ -n "${GPU_CHECK_SKIP_TESTS:-}" ]; then args+=(--skip-tests); fi
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py --out "$OUT" --budget-s "$budget" ${args[@]+"${args[@]}"} "$@"
