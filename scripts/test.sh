#!/usr/bin/env bash
# Set up (idempotent), then run every test: Python (pytest) and R (testthat).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
export PYBRIDGE_PYTHON OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export PYBRIDGE_SHARED_DATA=${PYBRIDGE_SHARED_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}
status=0
echo "== Python tests (pytest) =="
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" tests || status=$?
echo "== R tests (testthat) =="
Rscript -e 'res <- testthat::test_dir("r-package/tests/testthat", package = "pybridge", load_package = "installed", reporter = testthat::SummaryReporter$new(show_praise = FALSE), stop_on_failure = FALSE); df <- as.data.frame(res); nf <- sum(df$failed) + sum(df$error); cat(sprintf("R: %d passed, %d failed, %d skipped\n", sum(df$nb) - sum(df$failed) - sum(df$skipped), nf, sum(df$skipped))); quit(status = as.integer(nf > 0))' || status=$?
exit $status
