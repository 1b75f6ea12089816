#!/usr/bin/env bash
# The Seurat 5 test tier: R 4.5 / Seurat 5 / SeuratObject 5 / reticulate 1.41 / NumPy 2, in the
# Debian trixie root that scripts/seurat5-root.sh builds (the host tier is R 4.2 / Seurat 4.3 /
# NumPy 1.26: scripts/test.sh runs it first, then this script).
#
#   scripts/seurat5-test.sh            the whole tier (what `make test` and CI run)
#   scripts/seurat5-test.sh --fast     its fast part (no model training, no vignettes)
#   scripts/seurat5-test.sh --prepare  only build what it needs (root, virtualenv); no tests
#   scripts/seurat5-test.sh --only r [REGEX]     only the R tests (files matching REGEX)
#   scripts/seurat5-test.sh --only py [ARGS]     only the Python tests (ARGS go to pytest)
#   make test-seurat5                  the same, alone
#
# Steps (each idempotent, each skipped when already up to date):
#   1. the trixie root (scripts/seurat5-root.sh build; waits if a background build is running);
#   2. a second virtualenv, without the numpy<2 pin (NumPy 2), default
#      /var/cache/pybridge/venv-seurat5 (PYBRIDGE_SEURAT5_VENV), made from the same base Python
#      as the host tier's; pybridge's dependencies (from pyproject.toml; pybridge itself comes from
#      the checkout through PYTHONPATH, so any checkout can use the venv) are installed from the
#      host, then rpy2 >= 3.6 is built inside the root against its R 4.5 (rpy2 3.6 needs R >= 4.5);
#   3. the R package (this checkout's r-package/) installed into the root's R library;
#   4. inside the root, with the checkout, ../shared/data, the venv and its base Python
#      bind-mounted at their own paths (unmounted afterwards, also on failure):
#      the R tests (testthat, vignettes included), then pytest -m "not slow or needs_r" on NumPy 2:
#      the fast Python tier (the engine on NumPy 2) plus every test that runs R (marked needs_r:
#      read_seurat / write_seurat / convert through rpy2, the Rscript parity tests, the README's R
#      block) against R 4.5. The slow Python tests without R run in the host tier only.
# CPU-heavy steps hold /tmp/pybridge-cpu.lock (flock), as the project's other test runs do; the
# times printed per step are measured with the lock held (waiting for it is not counted).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARGV=("$@")
FAST=""
PREPARE=""
ONLY=""
RFILTER=${PYBRIDGE_SEURAT5_RFILTER:-}
case "${1:-}" in
  --fast) FAST=1; shift ;;
  --prepare) PREPARE=1; shift ;;  # steps 1-2 only (scripts/test.sh runs it in the background)
  --only)
    ONLY=${2:-}; shift 2 || true
    case "$ONLY" in
      r) RFILTER=${1:-$RFILTER}; [ $# -gt 0 ] && shift ;;
      py) ;;
      *) echo "[seurat5] ERROR: --only takes r or py (got '$ONLY')" >&2; exit 2 ;;
    esac ;;
esac
ROOTSH="$ROOT/scripts/seurat5-root.sh"
VENV5=${PYBRIDGE_SEURAT5_VENV:-/var/cache/pybridge/venv-seurat5}
SHARED=${PYBRIDGE_SHARED_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}
LOCK=${PYBRIDGE_CPU_LOCK:-/tmp/pybridge-cpu.lock}
say() { printf '[seurat5] %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then  # debootstrap, mount and chroot need root: through sudo when it asks no password
  sudo -n true 2>/dev/null || die "the Seurat 5 tier needs root (it builds and chroots into a Debian trixie root): run it as root or allow sudo without a password."
  mapfile -t keep_env < <(env | grep -E '^(PYBRIDGE_|OMP_)[A-Za-z0-9_]*=' || true)
  exec sudo -n env "PATH=$PATH" "PYBRIDGE_BASE_PYTHON=$(command -v "${PYBRIDGE_BASE_PYTHON:-python3}")" \
    "${keep_env[@]}" bash "${BASH_SOURCE[0]}" "${ARGV[@]}"
fi
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
# pybridge's dependencies (the extras the tests need), from pyproject.toml
deps=$("$BASEPY" -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]; o = p["optional-dependencies"]; print("\n".join(p["dependencies"] + o["deconvolution"] + o["test"]))' "$ROOT/pyproject.toml")
py_hash=$( (echo "$BASE_PREFIX" "$rstamp" "$deps"; cat "$ROOT/constraints.txt") | sha256sum | cut -c1-16)
if [ "$(cat "$VENV5/.pybridge-stamp" 2>/dev/null)" != "$py_hash" ]; then
  t0=$SECONDS
  say "building the NumPy 2 virtualenv $VENV5 (base $BASE_PREFIX)"
  rm -rf "$VENV5"
  mkdir -p "$(dirname "$VENV5")"
  "$BASEPY" -m venv "$VENV5"
  # the host tier's pins without numpy<2 and rpy2<3.6 (those are for R 4.2 / reticulate 1.28)
  grep -v -E '^(numpy|rpy2)' "$ROOT/constraints.txt" > "$VENV5/constraints-seurat5.txt"
  "$VENV5/bin/python" -m pip install -q --upgrade pip 2>/dev/null || true
  echo "$deps" > "$VENV5/requirements-seurat5.txt"
  "$VENV5/bin/python" -m pip install -q -c "$VENV5/constraints-seurat5.txt" torch==2.13.0 "numpy>=2" \
      -r "$VENV5/requirements-seurat5.txt" 2>&1 | grep -v -E "^WARNING: Location|^ " || true
  # rpy2 >= 3.6, compiled inside the root against R 4.5: downloaded here (the host's pip
  # configuration reaches the package index; the root needs no network), built there
  "$VENV5/bin/python" -m pip install -q setuptools wheel "cffi>=1.15" packaging
  "$VENV5/bin/python" -m pip download -q --no-binary rpy2-rinterface -d "$VENV5/rpy2-dist" "rpy2>=3.6" 2>&1 | grep -v "^WARNING: Location" || true
  PYBRIDGE_SEURAT5_BINDS="$binds" bash "$ROOTSH" run "$VENV5/bin/python" -m pip install -q --no-cache-dir \
    --no-index --find-links "$VENV5/rpy2-dist" --no-build-isolation "rpy2>=3.6" \
    || die "building rpy2 >= 3.6 inside the root (against its R) failed (see above)"
  PYBRIDGE_SEURAT5_BINDS="$binds" PYBRIDGE_SEURAT5_ENV="PYTHONPATH=$ROOT" bash "$ROOTSH" run "$VENV5/bin/python" -c \
    "import importlib.metadata as md, numpy, rpy2.robjects as ro, pybridge, scvi; assert int(numpy.__version__.split('.')[0]) >= 2, numpy.__version__; print('venv:', 'numpy', numpy.__version__, 'rpy2', md.version('rpy2'), ro.r('R.version.string')[0])" \
    || die "the NumPy 2 virtualenv does not import numpy 2 + rpy2 + pybridge inside the root"
  echo "$py_hash" > "$VENV5/.pybridge-stamp"
  say "virtualenv ready ($((SECONDS - t0)) s)"
fi

if [ -n "$PREPARE" ]; then say "prepared in $((SECONDS - t_start)) s"; exit 0; fi

# 3 + 4. inside the root: install the R package (when it changed), then the tests
export PYBRIDGE_SEURAT5_BINDS="$binds"
export PYBRIDGE_SEURAT5_ENV="PYBRIDGE_PYTHON=$VENV5/bin/python RETICULATE_PYTHON=$VENV5/bin/python PYTHONPATH=$ROOT PYBRIDGE_SHARED_DATA=$SHARED OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=PASSIVE PYBRIDGE_TIER=seurat5${FAST:+ PYBRIDGE_TEST_FAST=1}"
# The lock is not taken again when a caller already holds it (`flock LOCK make test`: an ancestor
# process has the lock file open), which would wait forever; PYBRIDGE_CPU_LOCK= (empty) takes none.
lock_held_above() {
  local pid=$PPID f
  while [ "${pid:-0}" -gt 1 ]; do
    for f in /proc/"$pid"/fd/*; do [ "$(readlink "$f" 2>/dev/null)" = "$LOCK" ] && return 0; done
    pid=$(awk '{print $4}' /proc/"$pid"/stat 2>/dev/null || echo 0)
  done
  return 1
}
if [ -n "$LOCK" ] && [ -e "$LOCK" ] && lock_held_above; then say "the CPU lock $LOCK is held by a caller: not taken again"; LOCK=""; fi
inside() {
  if [ -n "$LOCK" ]; then flock "$LOCK" bash "$ROOTSH" run /bin/bash "$ROOT/scripts/seurat5-inside.sh" "$ROOT" "$@"
  else bash "$ROOTSH" run /bin/bash "$ROOT/scripts/seurat5-inside.sh" "$ROOT" "$@"; fi
}
status=0
t0=$SECONDS
inside install || die "installing the R package inside the root failed"
say "R package ready ($((SECONDS - t0)) s with the wait for the CPU lock)"
if [ "$ONLY" != py ]; then
  t0=$SECONDS
  if [ -n "$RFILTER" ]; then
    inside rtests "$RFILTER" || status=$?
  else  # in two parts, each taking the CPU lock (the vignettes alone are several minutes)
    inside rtests '^vignettes$' invert || status=$?
    inside rtests '^vignettes$' || status=$?
  fi
  say "R tests: $((SECONDS - t0)) s with the wait for the CPU lock"
fi
if [ "$ONLY" != r ]; then
  t0=$SECONDS
  inside pytest "$@" || status=$?
  say "Python tests (NumPy 2): $((SECONDS - t0)) s with the wait for the CPU lock"
fi
say "Seurat 5 tier: $((SECONDS - t_start)) s in all, status $status"
exit $status
