#!/usr/bin/env bash
# Builds the test control plane from Go modules into a per-version cache:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes)
#   etcd                                                               (go.etcd.io/etcd/server/v3)
#   kwok                                                               (sigs.k8s.io/kwok/cmd/kwok)
# Only what is missing is built. Nothing is written into the repository.
# The last line printed is the bin directory holding all six binaries.
#
# Environment:
#   LOOM_K8S_CACHE   cache root (default ~/.cache/loom/k8s)
set -euo pipefail

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
KWOK_VERSION=v0.8.0

CACHE="${LOOM_K8S_CACHE:-$HOME/.cache/loom/k8s}"
K8S_DIR="$CACHE/kubernetes-$K8S_VERSION"
ETCD_DIR="$CACHE/etcd-$ETCD_VERSION"
KWOK_DIR="$CACHE/kwok-$KWOK_VERSION"
BIN="$CACHE/bin-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
# A benchmark elsewhere in the project already built etcd here; reuse it when the version matches.
SHARED_ETCD="$HOME/.cache/loom/etcd/etcd"

# Never fetch a prebuilt Go toolchain; build with the one installed.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { echo "[k8s build] $*" >&2; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=wait.sh
source "$HERE/wait.sh"

mkdir -p "$CACHE"
# Two test runs may call this at once; only one builds, and the other says it waits for it.
exec 9>"$CACHE/.build.lock"
lock_fd 9 "$CACHE/.build.lock" "build of the test control plane"

have_k8s() {
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x "$K8S_DIR/bin/$b" ]] || return 1
  done
}

build_k8s() {
  local start src mod staging build_date minor
  start=$SECONDS
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $K8S_VERSION (cold: 20-35 min on 2 cores); log: $K8S_DIR/build.log"
  mkdir -p "$K8S_DIR"
  src="$K8S_DIR/src"
  rm -rf "$src" "$K8S_DIR/bin.tmp"
  mkdir -p "$src"
  {
    # The kubernetes go.mod pins its staging modules at v0.0.0 with replaces into ./staging that a
    # consumer does not get; read the list from the real go.mod and point each at its published tag.
    mod=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    [[ -f "$mod" ]] || { echo "cannot find go.mod of k8s.io/kubernetes@$K8S_VERSION"; return 1; }
    staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/src/.*#\1#p' "$mod" | sort -u)
    [[ -n "$staging" ]] || { echo "no staging replaces found in $mod"; return 1; }
    echo "staging modules: $(echo "$staging" | wc -l)"
    {
      echo "module loom.local/k8s-build"
      echo
      echo "go $(sed -n 's/^go \([0-9.]*\)$/\1/p' "$mod")"
      # Carry the kubernetes module's godebug defaults: they apply only to the main module.
      grep '^godebug ' "$mod" || true
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      echo "replace ("
      local m
      for m in $staging; do echo "	$m => $m v0.${K8S_VERSION#v1.}"; done
      echo ")"
    } >"$src/go.mod"
    cat "$src/go.mod"
    (cd "$src" && go get \
      "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION")
    # Release time of the tag as the build date, so rebuilds are reproducible.
    build_date=$(cd "$src" && go list -m -json "k8s.io/kubernetes" | sed -n 's/^[[:space:]]*"Time": "\(.*\)",*$/\1/p')
    build_date=${build_date:-1970-01-01T00:00:00Z}
    minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    local ld="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
      # The module proxy does not carry the commit; an all-zero hash marks a module build.
      ld+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000"
    done
    mkdir -p "$K8S_DIR/bin.tmp"
    # One invocation so the packages the four commands share compile once.
    (cd "$src" && nice -n 10 go build -trimpath -ldflags "$ld" -o "$K8S_DIR/bin.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl)
  } >"$K8S_DIR/build.log" 2>&1 || {
    log "FAILED after $((SECONDS - start))s; tail of $K8S_DIR/build.log:"
    tail -30 "$K8S_DIR/build.log" >&2
    return 1
  }
  rm -rf "${K8S_DIR:?}/bin"
  mv "$K8S_DIR/bin.tmp" "$K8S_DIR/bin"
  log "built kubernetes $K8S_VERSION in $((SECONDS - start))s"
}

have_etcd() { [[ -x "$ETCD_DIR/bin/etcd" ]]; }

build_etcd() {
  local start=$SECONDS want=${ETCD_VERSION#v}
  mkdir -p "$ETCD_DIR/bin"
  if [[ -x "$SHARED_ETCD" ]] && "$SHARED_ETCD" --version 2>/dev/null | grep -qx "etcd Version: $want"; then
    cp "$SHARED_ETCD" "$ETCD_DIR/bin/etcd.tmp"
    mv "$ETCD_DIR/bin/etcd.tmp" "$ETCD_DIR/bin/etcd"
    log "reused etcd $ETCD_VERSION from $SHARED_ETCD"
    return 0
  fi
  log "building etcd $ETCD_VERSION (about 2 min); log: $ETCD_DIR/build.log"
  local src="$ETCD_DIR/src"
  rm -rf "$src"
  mkdir -p "$src"
  {
    printf 'module loom.local/etcd-build\n\ngo 1.26\n' >"$src/go.mod"
    (cd "$src" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
    (cd "$src" && nice -n 10 go build -trimpath -ldflags "-s -w" -o "$ETCD_DIR/bin/etcd.tmp" go.etcd.io/etcd/server/v3)
  } >"$ETCD_DIR/build.log" 2>&1 || {
    log "FAILED after $((SECONDS - start))s; tail of $ETCD_DIR/build.log:"
    tail -30 "$ETCD_DIR/build.log" >&2
    return 1
  }
  mv "$ETCD_DIR/bin/etcd.tmp" "$ETCD_DIR/bin/etcd"
  log "built etcd $ETCD_VERSION in $((SECONDS - start))s"
}

have_kwok() { [[ -x "$KWOK_DIR/bin/kwok" ]]; }

build_kwok() {
  local start=$SECONDS
  log "building kwok $KWOK_VERSION (a few min); log: $KWOK_DIR/build.log"
  mkdir -p "$KWOK_DIR"
  rm -rf "$KWOK_DIR/bin.tmp"
  mkdir -p "$KWOK_DIR/bin.tmp"
  (GOBIN="$KWOK_DIR/bin.tmp" nice -n 10 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION") \
    >"$KWOK_DIR/build.log" 2>&1 || {
    log "FAILED after $((SECONDS - start))s; tail of $KWOK_DIR/build.log:"
    tail -30 "$KWOK_DIR/build.log" >&2
    return 1
  }
  rm -rf "${KWOK_DIR:?}/bin"
  mv "$KWOK_DIR/bin.tmp" "$KWOK_DIR/bin"
  log "built kwok $KWOK_VERSION in $((SECONDS - start))s"
}

have_etcd || ticking "building etcd" "$ETCD_DIR/build.log" build_etcd
have_kwok || ticking "building kwok" "$KWOK_DIR/build.log" build_kwok
have_k8s || ticking "building kubernetes" "$K8S_DIR/build.log" build_k8s

mkdir -p "$BIN"
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do ln -sfn "$K8S_DIR/bin/$b" "$BIN/$b"; done
ln -sfn "$ETCD_DIR/bin/etcd" "$BIN/etcd"
ln -sfn "$KWOK_DIR/bin/kwok" "$BIN/kwok"
echo "$BIN"
