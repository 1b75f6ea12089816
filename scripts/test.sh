#!/usr/bin/env bash
# Set up (idempotent), then run the tests: Python (pytest) and R (testthat).
#   scripts/test.sh          every test (what `make test` and CI run): the host tier (R 4.2 / Seurat 4.3 /
#                            NumPy 1.26), then the Seurat 5 tier (scripts/seurat5-test.sh; needs root)
#   scripts/test.sh --fast   the fast tier (`make test-fast`): no model training, one file where the full
#                            tier goes over every shared file (under 2 min on 2 cores once set up)
# Further arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FAST=""
if [ "${1:-}" = "--fast" ]; then FAST=1; shift; fi
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
export PYBRIDGE_PYTHON OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export PYBRIDGE_SHARED_DATA=${PYBRIDGE_SHARED_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}
PYTEST_ARGS=()
if [ -n "$FAST" ]; then export PYBRIDGE_TEST_FAST=1; PYTEST_ARGS=(-m "not slow"); fi
status=0
# The Seurat 5 tier (scripts/seurat5-test.sh: R 4.5 / Seurat 5 / NumPy 2 in a Debian trixie root)
# runs after these; its root and virtualenv are prepared in the background meanwhile.
S5=""
if [ -z "$FAST" ] && [ -z "${PYBRIDGE_SKIP_SEURAT5:-}" ]; then
  bash "$ROOT/scripts/seurat5-test.sh" --prepare >"${TMPDIR:-/tmp}/pybridge-seurat5-prepare.log" 2>&1 & S5=$!
fi
echo "== Python tests (pytest${FAST:+, fast tier}) =="
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -rs "${PYTEST_ARGS[@]}" "$@" tests || status=$?
echo "== R tests (testthat${FAST:+, fast tier}) =="
Rscript -e 'res <- testthat::test_dir("r-package/tests/testthat", package = "pybridge", load_package = "installed", reporter = testthat::SummaryReporter$new(show_praise = FALSE), stop_on_failure = FALSE); df <- as.data.frame(res); nf <- sum(df$failed) + sum(df$error); cat(sprintf("R: %d passed, %d failed, %d skipped\n", sum(df$nb) - sum(df$failed) - sum(df$skipped), nf, sum(df$skipped))); quit(status = as.integer(nf > 0))' || status=$?
if [ -n "$S5" ]; then
  echo "== Seurat 5 tier (scripts/seurat5-test.sh) =="
  wait "$S5" || echo "(its background preparation failed; retried now. Log: ${TMPDIR:-/tmp}/pybridge-seurat5-prepare.log)"
  bash "$ROOT/scripts/seurat5-test.sh" || status=$?
elif [ -z "$FAST" ]; then
  echo "== Seurat 5 tier NOT run (PYBRIDGE_SKIP_SEURAT5 is set) =="
fi
exit $status
