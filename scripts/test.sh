#!/usr/bin/env bash
# Set up (idempotent), then run the tests: Python (pytest) and R (testthat).
#   scripts/test.sh          every test (what `make test` and CI run)
#   scripts/test.sh --fast   the fast tier (`make test-fast`): no model training, < 2 minutes
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
echo "== Python tests (pytest${FAST:+, fast tier}) =="
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -rs "${PYTEST_ARGS[@]}" "$@" tests || status=$?
echo "== R tests (testthat${FAST:+, fast tier}) =="
Rscript -e 'res <- testthat::test_dir("r-package/tests/testthat", package = "pybridge", load_package = "installed", reporter = testthat::SummaryReporter$new(show_praise = FALSE), stop_on_failure = FALSE); df <- as.data.frame(res); nf <- sum(df$failed) + sum(df$error); cat(sprintf("R: %d passed, %d failed, %d skipped\n", sum(df$nb) - sum(df$failed) - sum(df$skipped), nf, sum(df$skipped))); quit(status = as.integer(nf > 0))' || status=$?
exit $status
