#!/usr/bin/env bash
# The Seurat 5 test tier: R 4.5 / Seurat 5 / SeuratObject 5 / reticulate 1.41 / NumPy 2, in the
# Debian trixie root that scripts/seurat5-root.sh builds (the host tier is R 4.2 / Seurat 4.3 /
# NumPy 1.26: scripts/test.sh runs it first, then this script).
#
#   scripts/seurat5-test.sh            the whole tier (what `make test` and CI run)
#   scripts/seurat5-test.sh --fast     its fast part (no model training, no vignettes)
#   make test-seurat5                  the same, alone
#
# Steps (each idempotent, each skipped when already up to date):
#   1. the trixie root (scripts/seurat5-root.sh build; waits if a background build is running);
#   2. a second virtualenv, without the numpy<2 pin (NumPy 2), default
#      /var/cache/pybridge/venv-seurat5 (PYBRIDGE_SEURAT5_VENV), made from the same base Python
#      as the host tier's; pybridge's dependencies are installed from the host, then rpy2 >= 3.6
#      is built inside the root against its R 4.5 (rpy2 3.6 needs R >= 4.5);
#   3. the R package (this checkout's r-package/) installed into the root's R library;
#   4. inside the root, with the checkout, ../shared/data, the venv and its base Python
#      bind-mounted at their own paths (unmounted afterwards, also on failure):
#      the R tests (testthat, vignettes included) and the whole pytest suite on NumPy 2
#      (the rpy2 tests, read_seurat / write_seurat / convert, run against R 4.5 there).
# CPU-heavy steps hold /tmp/pybridge-cpu.lock (flock), as the project's other test runs do.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FAST=""
if [ "${1:-}" = "--fast" ]; then FAST=1; shift; fi
ROOTSH="$ROOT/scripts/seurat5-root.sh"
VENV5=${PYBRIDGE_SEURAT5_VENV:-/var/cache/pybridge/venv-seurat5}
SHARED=${PYBRIDGE_SHARED_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}
LOCK=${PYBRIDGE_CPU_LOCK:-/tmp/pybridge-cpu.lock}
say() { printf '[seurat5] %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "the Seurat 5 tier needs root (it chroots into a Debian trixie root)."
[ -d "$SHARED" ] || die "test data not found at $SHARED (../shared/data beside the checkout, or PYBRIDGE_SHARED_DATA)."
SHARED=$(readlink -f "$SHARED")
t_start=$SECONDS

# 1. the root
t0=$SECONDS
bash "$ROOTSH" build
RDIR=$(bash "$ROOTSH" path)
say "root ready ($((SECONDS - t0)) s): $RDIR"

# 2. the NumPy 2 virtualenv. Its base interpreter is bind-mounted into the root at its own path,
# so it must live outside /usr (the root has its own /usr): pyenv, /opt, ...
BASEPY=${PYBRIDGE_BASE_PYTHON:-python3}
BASE_PREFIX=$("$BASEPY" -c 'import os, sys; print(os.path.realpath(sys.base_prefix))')
case "$BASE_PREFIX" in
  /usr|/usr/*|/) die "the base Python ($BASEPY, prefix $BASE_PREFIX) lives in /usr; the tier bind-mounts it into the root, which has its own /usr. Set PYBRIDGE_BASE_PYTHON to a Python installed elsewhere (pyenv, /opt)." ;;
esac
binds="$ROOT:$SHARED:$VENV5:$BASE_PREFIX"
rstamp=$(cat "$RDIR/.pybridge-stamp")
py_hash=$( (echo "$ROOT" "$BASE_PREFIX" "$rstamp"; cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt") | sha256sum | cut -c1-16)
if [ "$(cat "$VENV5/.pybridge-stamp" 2>/dev/null)" != "$py_hash" ]; then
  t0=$SECONDS
  say "building the NumPy 2 virtualenv $VENV5 (base $BASE_PREFIX)"
  rm -rf "$VENV5"
  mkdir -p "$(dirname "$VENV5")"
  "$BASEPY" -m venv "$VENV5"
  # the host tier's pins without numpy<2 and rpy2<3.6 (those are for R 4.2 / reticulate 1.28)
  grep -v -E '^(numpy|rpy2)' "$ROOT/constraints.txt" > "$VENV5/constraints-seurat5.txt"
  "$VENV5/bin/python" -m pip install -q --upgrade pip 2>/dev/null || true
  "$VENV5/bin/python" -m pip install -q -c "$VENV5/constraints-seurat5.txt" torch==2.13.0 "numpy>=2" \
      -e "$ROOT[deconvolution,test]" 2>&1 | grep -v -E "^WARNING: Location|^ " || true
  # rpy2 >= 3.6, compiled inside the root against R 4.5: downloaded here (the host's pip
  # configuration reaches the package index; the root needs no network), built there
  "$VENV5/bin/python" -m pip install -q setuptools wheel "cffi>=1.15" packaging
  "$VENV5/bin/python" -m pip download -q --no-binary rpy2-rinterface -d "$VENV5/rpy2-dist" "rpy2>=3.6" 2>&1 | grep -v "^WARNING: Location" || true
  PYBRIDGE_SEURAT5_BINDS="$binds" bash "$ROOTSH" run "$VENV5/bin/python" -m pip install -q --no-cache-dir \
    --no-index --find-links "$VENV5/rpy2-dist" --no-build-isolation "rpy2>=3.6" \
    || die "building rpy2 >= 3.6 inside the root (against its R) failed (see above)"
  PYBRIDGE_SEURAT5_BINDS="$binds" bash "$ROOTSH" run "$VENV5/bin/python" -c \
    "import importlib.metadata as md, numpy, rpy2.robjects as ro, pybridge, scvi; assert int(numpy.__version__.split('.')[0]) >= 2, numpy.__version__; print('venv:', 'numpy', numpy.__version__, 'rpy2', md.version('rpy2'), ro.r('R.version.string')[0])" \
    || die "the NumPy 2 virtualenv does not import numpy 2 + rpy2 + pybridge inside the root"
  echo "$py_hash" > "$VENV5/.pybridge-stamp"
  say "virtualenv ready ($((SECONDS - t0)) s)"
fi

# 3 + 4. inside the root: install the R package (when it changed), then the tests
export PYBRIDGE_SEURAT5_BINDS="$binds"
export PYBRIDGE_SEURAT5_ENV="PYBRIDGE_PYTHON=$VENV5/bin/python RETICULATE_PYTHON=$VENV5/bin/python PYTHONPATH=$ROOT PYBRIDGE_SHARED_DATA=$SHARED OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=PASSIVE PYBRIDGE_TIER=seurat5${FAST:+ PYBRIDGE_TEST_FAST=1}"
inside() { flock "$LOCK" bash "$ROOTSH" run /bin/bash "$ROOT/scripts/seurat5-inside.sh" "$ROOT" "$@"; }
status=0
t0=$SECONDS
inside install || die "installing the R package inside the root failed"
say "R package installed ($((SECONDS - t0)) s)"
t0=$SECONDS
inside rtests "${PYBRIDGE_SEURAT5_RFILTER:-}" || status=$?
say "R tests: $((SECONDS - t0)) s"
t0=$SECONDS
inside pytest "$@" || status=$?
say "Python tests (NumPy 2): $((SECONDS - t0)) s"
say "Seurat 5 tier: $((SECONDS - t_start)) s in all, status $status"
exit $status
