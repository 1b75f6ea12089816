#!/usr/bin/env bash
# The README's main command: set up (idempotent, as scripts/test.sh), then run the R demo on the
# embedded real data and render the HTML report.
#   bash scripts/demo.sh [quick|full] [--out DIR] [--device auto|cpu|cuda]
# quick (default, `make demo`): < 15 min on 2 CPU cores; full (`make demo-full`): the methods'
# usual settings, on the GPU when there is one. Presets: demo/presets.R.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PRESET=quick
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then PRESET=$1; shift; fi
case "$PRESET" in quick|full) ;; *) echo "usage: $0 [quick|full] [--out DIR] [--device auto|cpu|cuda]" >&2; exit 2 ;; esac

source "$ROOT/scripts/setup.sh"
export PYBRIDGE_PYTHON
# Threads: without PASSIVE, OpenMP threads spin while waiting, which slows torch by 10x or more
# on a machine whose cores are busy with anything else.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}

OUT_ARGS=()
case " $* " in *" --out "*|*" --out="*) ;; *) OUT_ARGS=(--out "$ROOT/demo-output") ;; esac
Rscript "$ROOT/demo/run_demo.R" --preset "$PRESET" "${OUT_ARGS[@]}" "$@"
echo "[demo] wall time of this command, setup included: ${SECONDS} s"
