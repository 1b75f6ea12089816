#!/bin/bash
# Runs INSIDE the trixie root (called by scripts/seurat5-test.sh through seurat5-root.sh run):
#   seurat5-inside.sh CHECKOUT install          R CMD INSTALL r-package into the root's R library
#                                               (from a copy: the checkout stays untouched; skipped
#                                               when the package files did not change)
#   seurat5-inside.sh CHECKOUT rtests [REGEX [invert]]  testthat (vignettes included), like scripts/test.sh;
#                                               REGEX selects test files (with "invert": all but those)
#   seurat5-inside.sh CHECKOUT pytest [ARGS]    pytest with the NumPy 2 virtualenv: -m "not slow or needs_r"
#                                               (the fast tier + every test that runs R) unless ARGS give -m
# PYBRIDGE_TEST_FAST=1 (set by --fast) skips training and vignettes, as in the host tier.
set -euo pipefail
ROOT=$1; STEP=$2; shift 2
cd "$ROOT"
t_step=$SECONDS
trap 'echo "[seurat5] $STEP: $((SECONDS - t_step)) s with the CPU lock held"' EXIT
LIB=/usr/local/lib/R/site-library
case "$STEP" in
  install)
    h=$(cd r-package && find . -type f ! -name '*.o' ! -name '*.so' -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)
    if [ "$(cat "$LIB/pybridge/.pybridge-stamp" 2>/dev/null)" = "$h" ] && Rscript -e 'library(pybridge)' >/dev/null 2>&1; then
      exit 0
    fi
    tmp=$(mktemp -d)
    cp -r r-package "$tmp/pybridge"
    rm -f "$tmp"/pybridge/src/*.o "$tmp"/pybridge/src/*.so
    R CMD INSTALL --no-test-load -l "$LIB" "$tmp/pybridge" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; exit 1; }
    echo "$h" > "$LIB/pybridge/.pybridge-stamp"
    rm -rf "$tmp"
    ;;
  rtests)
    Rscript -e 'cat(R.version.string, "| Seurat", format(packageVersion("Seurat")), "| SeuratObject", format(packageVersion("SeuratObject")), "| reticulate", format(packageVersion("reticulate")), "\n")'
    FILTER=${1:-} INVERT=${2:-} Rscript -e 'options(testthat.progress.max_fails = Inf, testthat.summary.max_reports = 1000L); f <- Sys.getenv("FILTER"); res <- testthat::test_dir("r-package/tests/testthat", filter = if (nzchar(f)) f else NULL, invert = Sys.getenv("INVERT") == "invert", package = "pybridge", load_package = "installed", reporter = testthat::SummaryReporter$new(show_praise = FALSE), stop_on_failure = FALSE); df <- as.data.frame(res); nf <- sum(df$failed) + sum(df$error); cat(sprintf("R (Seurat 5 tier): %d passed, %d failed, %d skipped\n", sum(df$nb) - sum(df$failed) - sum(df$skipped), nf, sum(df$skipped))); quit(status = as.integer(nf > 0))'
    ;;
  pytest)
    ARGS=(-m "not slow or needs_r")
    if [ -n "${PYBRIDGE_TEST_FAST:-}" ]; then ARGS=(-m "not slow"); fi
    for a in "$@"; do case "$a" in -m|-m*) ARGS=() ;; esac; done
    "$PYBRIDGE_PYTHON" -c 'import importlib.metadata as md, numpy; print("Python tests (Seurat 5 tier): numpy", numpy.__version__, "rpy2", md.version("rpy2"))'
    paths=(tests)  # test paths given: only those
    for a in "$@"; do case "$a" in tests|tests/*) paths=() ;; esac; done
    "$PYBRIDGE_PYTHON" -m pytest -q -p no:cacheprovider -rs "${ARGS[@]}" "$@" "${paths[@]}"
    ;;
  *) echo "unknown step $STEP" >&2; exit 2 ;;
esac
