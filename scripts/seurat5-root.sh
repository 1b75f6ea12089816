#!/usr/bin/env bash
# The Seurat 5 test tier's system: a Debian 13 (trixie) root with R 4.5, Seurat 5.2, SeuratObject 5.0,
# reticulate 1.41 (the host is Debian 12: R 4.2, Seurat 4.3). A test fixture like a CI matrix entry,
# cached OUTSIDE the checkout; trixie packages never touch the host system.
#
#   scripts/seurat5-root.sh build          build the root, or rebuild it when missing or when its
#                                          package list (below) changed; a no-op when up to date
#   scripts/seurat5-root.sh run CMD ...    run CMD inside the root as root, with /proc, /sys, /dev
#                                          mounted and the paths in PYBRIDGE_SEURAT5_BINDS
#                                          (colon-separated) bind-mounted at the same paths;
#                                          everything is unmounted afterwards, also on failure
#   scripts/seurat5-root.sh path           print the root's directory
#
# Environment: PYBRIDGE_SEURAT5_ROOT (default /var/cache/pybridge/trixie-seurat5),
# PYBRIDGE_DEBIAN_MIRROR (default http://deb.debian.org/debian). Needs root (debootstrap, mount,
# chroot) and network for the build (~75 s debootstrap + ~3-4 min apt); debootstrap is installed
# on the host with apt when missing (a bookworm package; nothing else is installed on the host).
set -euo pipefail
ROOTDIR=${PYBRIDGE_SEURAT5_ROOT:-/var/cache/pybridge/trixie-seurat5}
MIRROR=${PYBRIDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
# What the tier needs: R + Seurat 5 + the R package's imports, testthat, the vignettes' tools,
# DelayedArray (to test the on-disk-layer error), a compiler and headers for R CMD INSTALL and
# for building rpy2 against this R, ca-certificates for pip inside the root.
PKGS=(r-base-core r-base-dev r-cran-seurat r-cran-seuratobject r-cran-reticulate r-cran-hdf5r
      r-cran-matrix r-cran-testthat r-cran-rmarkdown r-cran-knitr r-cran-ggplot2 pandoc
      r-cran-mixtools r-cran-lmtest r-cran-dplyr
      r-bioc-delayedarray ca-certificates libpcre2-dev libbz2-dev liblzma-dev zlib1g-dev libicu-dev libhdf5-dev)
# (r-cran-mixtools: Seurat's RunMixscape, which the Mixscape parity test runs; lmtest + dplyr: R Augur's
# select_variance, which tests/tl/test_augur.py runs as the reference.)
STAMP_VERSION=1  # bump to force a rebuild from scratch when the build steps change
say() { printf '[seurat5-root] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# The stamp names the package list too: a root whose base is current but whose list changed gets the
# missing packages installed in place (apt-get, idempotent); a new STAMP_VERSION or suite rebuilds it.
base_stamp() { printf '%s\n' "$STAMP_VERSION" "$SUITE" | sha256sum | cut -c1-16; }
stamp() { printf '%s\n' "$STAMP_VERSION" "$SUITE" "${PKGS[*]}" | sha256sum | cut -c1-16; }

# Paths mounted under $1 (deepest first), from /proc/self/mountinfo (handles no escaping: our paths have none).
mounts_under() {
  awk -v r="$1" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

unmount_all() {
  local r=$1 m
  for m in $(mounts_under "$r"); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true  # stacked mounts appear twice
  done
  if [ -n "$(mounts_under "$r")" ]; then say "still mounted under $r: $(mounts_under "$r" | tr '\n' ' ')"; fi
}

# rm -rf a root only when nothing is mounted inside it (a bind mount would take host files with it).
safe_rm() {
  local r=$1
  [ -e "$r" ] || return 0
  unmount_all "$r"
  if [ -n "$(mounts_under "$r")" ]; then die "refusing to delete $r: still mounted: $(mounts_under "$r" | tr '\n' ' ')"; fi
  rm -rf --one-file-system "$r"
}

mount_system() {  # proc, sys, dev (+ devpts) inside root $1
  local r=$1
  mount -t proc proc "$r/proc"
  mount --rbind /sys "$r/sys"
  mount --make-rslave "$r/sys"
  mount --rbind /dev "$r/dev"      # with /dev/pts and /dev/shm (Python's multiprocessing needs it)
  mount --make-rslave "$r/dev"     # unmounting the copies never propagates to the host
  cp -L /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
}

_ns_apt() {  # inside a private mount namespace: install the packages into root $1
  local r=$1
  trap 'unmount_all "'"$r"'"' EXIT
  mount_system "$r"
  chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
    sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PKGS[*]} && apt-get clean"
}

build() {
  [ "$(id -u)" = 0 ] || die "building the root needs root (debootstrap, chroot)."
  mkdir -p "$(dirname "$ROOTDIR")"
  local want; want=$(stamp)
  up_to_date() { [ -x "$ROOTDIR/usr/bin/Rscript" ] && [ "$(cat "$ROOTDIR/.pybridge-stamp" 2>/dev/null)" = "$want" ]; }
  up_to_date && return 0
  exec 9>"$ROOTDIR.lock"
  flock 9  # one build at a time, and none while tests run in the root (they hold it shared)
  up_to_date && return 0  # built by the caller we waited for
  if [ -x "$ROOTDIR/usr/bin/Rscript" ] && [ "$(cat "$ROOTDIR/.pybridge-base-stamp" 2>/dev/null)" = "$(base_stamp)" ]; then
    local t0=$SECONDS
    say "the package list changed: apt-get install into the existing root $ROOTDIR"
    unshare --mount --propagation private /bin/bash "$0" _ns_apt "$ROOTDIR" >>"$ROOTDIR.build.log" 2>&1 \
      || { tail -30 "$ROOTDIR.build.log"; die "apt-get install inside the root failed (log: $ROOTDIR.build.log)"; }
    echo "$want" > "$ROOTDIR/.pybridge-stamp"
    say "root updated in $((SECONDS - t0)) s"
    return 0
  fi
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap on the host (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  [ -e /usr/share/debootstrap/scripts/$SUITE ] || die "this debootstrap does not know '$SUITE'; upgrade debootstrap."
  local tmp="$ROOTDIR.new"
  safe_rm "$tmp"
  local t0=$SECONDS
  say "debootstrap --variant=minbase $SUITE $tmp $MIRROR"
  debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$tmp.log" 2>&1 || { tail -20 "$tmp.log"; die "debootstrap failed (log: $tmp.log)"; }
  say "debootstrap took $((SECONDS - t0)) s; installing ${#PKGS[@]} packages"
  local t1=$SECONDS
  unshare --mount --propagation private /bin/bash "$0" _ns_apt "$tmp" >>"$tmp.log" 2>&1 \
    || { tail -30 "$tmp.log"; die "apt-get install inside the root failed (log: $tmp.log)"; }
  say "apt-get install took $((SECONDS - t1)) s"
  chroot "$tmp" Rscript -e 'cat(R.version.string, "Seurat", format(packageVersion("Seurat")), "SeuratObject", format(packageVersion("SeuratObject")), "reticulate", format(packageVersion("reticulate")), "\n")' >&2
  echo "$want" > "$tmp/.pybridge-stamp"
  base_stamp > "$tmp/.pybridge-base-stamp"
  safe_rm "$ROOTDIR"
  mv "$tmp" "$ROOTDIR"
  mv "$tmp.log" "$ROOTDIR.build.log"
  say "root ready in $ROOTDIR ($((SECONDS - t0)) s)"
}

# Each run gets its own mount namespace (unshare): its mounts are invisible to the host and to
# other runs, and vanish when it ends, even when killed; the trap unmounts them explicitly too.
run() {
  [ "$(id -u)" = 0 ] || die "running in the root needs root (mount, chroot)."
  [ -x "$ROOTDIR/usr/bin/Rscript" ] || die "no root at $ROOTDIR: run scripts/seurat5-root.sh build first."
  exec 9>"$ROOTDIR.lock"
  flock -s 9  # a rebuild (exclusive lock) waits for running tests, and tests wait for a rebuild
  unshare --mount --propagation private /bin/bash "$0" _ns_run "$@"
}

_ns_run() {  # inside the private mount namespace
  local r=$ROOTDIR p
  trap 'unmount_all "'"$r"'"' EXIT INT TERM
  mount_system "$r"
  local IFS=:
  for p in ${PYBRIDGE_SEURAT5_BINDS:-}; do
    [ -n "$p" ] || continue
    [ -e "$p" ] || die "bind path $p does not exist"
    p=$(readlink -f "$p")
    mkdir -p "$r$p"
    mount --bind "$p" "$r$p"
  done
  unset IFS
  local status=0
  chroot "$r" /usr/bin/env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    TERM="${TERM:-dumb}" ${PYBRIDGE_SEURAT5_ENV:-} "$@" || status=$?
  return $status
}

case "${1:-}" in
  build) build ;;
  run) shift; [ $# -gt 0 ] || die "run: give a command"; run "$@" ;;
  _ns_run) shift; _ns_run "$@" ;;
  _ns_apt) shift; _ns_apt "$@" ;;
  path) echo "$ROOTDIR" ;;
  *) die "usage: $0 build | run CMD ... | path" ;;
esac
