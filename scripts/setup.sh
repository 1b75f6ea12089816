#!/usr/bin/env bash
# One-command setup on a fresh Debian machine; idempotent and quiet on a second run.
#   - apt: R 4.2 with Seurat, reticulate, testthat, roxygen2, hdf5r, rmarkdown (+ pandoc), mixtools
#     (RunMixscape, which the Mixscape parity test runs), libhdf5-dev + pkg-config (the R package's
#     C routines link the libhdf5 that hdf5r uses; its configure finds it with pkg-config)
#   - a virtualenv (default ~/.virtualenvs/r-pybridge, the one library(pybridge) finds) with
#     pybridge and its extras, under constraints.txt (numpy<2 for reticulate 1.28, ...)
#   - the R package from r-package/
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PYBRIDGE_VENV:-$HOME/.virtualenvs/r-pybridge}
STAMP_DIR="$VENV/.pybridge-stamps"
say() { printf '[setup] %s\n' "$*"; }

APT_PKGS=(r-base-core r-base-dev r-cran-seurat r-cran-reticulate r-cran-testthat r-cran-roxygen2
          r-cran-hdf5r r-cran-rmarkdown r-cran-knitr r-cran-ggplot2 r-cran-mixtools pandoc
          libhdf5-dev pkg-config)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYBRIDGE_BASE_PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>/dev/null
fi
mkdir -p "$STAMP_DIR"
# the checkout's path is part of the stamp: the editable install must point at this checkout
py_hash=$( (echo "$ROOT"; cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt") | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP_DIR/python" 2>/dev/null)" != "$py_hash" ] || ! "$VENV/bin/python" -c "import pybridge" 2>/dev/null; then
  say "installing pybridge (Python) into $VENV"
  "$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" torch==2.13.0 \
      -e "$ROOT[r,deconvolution,test]" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import pybridge, scvi, cell2location, rpy2" >/dev/null
  echo "$py_hash" > "$STAMP_DIR/python"
fi

r_hash=$(cd "$ROOT/r-package" && find . -type f ! -name '*.o' ! -name '*.so' -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP_DIR/r" 2>/dev/null)" != "$r_hash" ] || ! Rscript -e 'library(pybridge)' >/dev/null 2>&1; then
  say "installing the pybridge R package"
  rm -f "$ROOT"/r-package/src/*.o "$ROOT"/r-package/src/*.so
  R CMD INSTALL --no-test-load "$ROOT/r-package" >/tmp/pybridge-r-install.log 2>&1 || { cat /tmp/pybridge-r-install.log; exit 1; }
  rm -f "$ROOT"/r-package/src/*.o "$ROOT"/r-package/src/*.so
  echo "$r_hash" > "$STAMP_DIR/r"
fi
export PYBRIDGE_PYTHON="$VENV/bin/python"
