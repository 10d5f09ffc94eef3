#!/usr/bin/env bash
# Builds what a real node needs, from Go modules into the same cache as build.sh:
#   kubelet, kube-proxy           (k8s.io/kubernetes, the same version and ldflags as build.sh)
#   containerd, ctr, containerd-shim-runc-v2   (github.com/containerd/containerd/v2)
#   kube-router, as the NetworkPolicy enforcer only   (github.com/cloudnativelabs/kube-router/v2)
#   CoreDNS, for cluster DNS                          (github.com/coredns/coredns, node-dns.sh)
# runc and the CNI plugins come from Debian (runc, containernetworking-plugins). Only what is
# missing is built. The last line printed is the bin directory holding the node's binaries.
#
# Environment: LOOM_K8S_CACHE (default ~/.cache/loom/k8s)
set -euo pipefail

K8S_VERSION=v1.37.2
CONTAINERD_VERSION=v2.4.2
KUBE_ROUTER_VERSION=v2.1.0

CACHE="${LOOM_K8S_CACHE:-$HOME/.cache/loom/k8s}"
K8S_DIR="$CACHE/kubernetes-$K8S_VERSION"
NODE_DIR="$CACHE/kubelet-$K8S_VERSION"
CTRD_DIR="$CACHE/containerd-$CONTAINERD_VERSION"
KR_DIR="$CACHE/kube-router-$KUBE_ROUTER_VERSION"
BIN="$CACHE/bin-node-$K8S_VERSION-containerd-$CONTAINERD_VERSION-kube-router-$KUBE_ROUTER_VERSION"

export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { echo "[k8s node build] $*" >&2; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=wait.sh
source "$HERE/wait.sh"

mkdir -p "$CACHE"
exec 9>"$CACHE/.node-build.lock"
lock_fd 9 "$CACHE/.node-build.lock" "build of the real node"

have_kubelet() { [[ -x "$NODE_DIR/bin/kubelet" && -x "$NODE_DIR/bin/kube-proxy" ]]; }

build_kubelet() {
  local start=$SECONDS src="$NODE_DIR/src"
  # build.sh's consumer module (staging replaces at their tags) is the starting point, so the
  # packages the control plane already compiled are reused from the Go build cache.
  [[ -f "$K8S_DIR/src/go.mod" ]] || { log "run build.sh first: no $K8S_DIR/src/go.mod"; return 1; }
  log "building kubelet, kube-proxy $K8S_VERSION; log: $NODE_DIR/build.log"
  rm -rf "$src" "$NODE_DIR/bin.tmp"
  mkdir -p "$src" "$NODE_DIR/bin.tmp"
  {
    cp "$K8S_DIR/src/go.mod" "$K8S_DIR/src/go.sum" "$src/"
    (cd "$src" && go get "k8s.io/kubernetes/cmd/kubelet@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-proxy@$K8S_VERSION")
    local build_date minor ld="-s -w" pkg
    build_date=$(cd "$src" && go list -m -json "k8s.io/kubernetes" | sed -n 's/^[[:space:]]*"Time": "\(.*\)",*$/\1/p')
    build_date=${build_date:-1970-01-01T00:00:00Z}
    minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
      ld+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000"
    done
    (cd "$src" && nice -n 10 go build -trimpath -ldflags "$ld" -o "$NODE_DIR/bin.tmp/" \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  } >"$NODE_DIR/build.log" 2>&1 || {
    log "FAILED after $((SECONDS - start))s; tail of $NODE_DIR/build.log:"
    tail -30 "$NODE_DIR/build.log" >&2
    return 1
  }
  rm -rf "${NODE_DIR:?}/bin"
  mv "$NODE_DIR/bin.tmp" "$NODE_DIR/bin"
  log "built kubelet, kube-proxy $K8S_VERSION in $((SECONDS - start))s"
}

have_containerd() {
  local b
  for b in containerd ctr containerd-shim-runc-v2; do [[ -x "$CTRD_DIR/bin/$b" ]] || return 1; done
}

build_containerd() {
  local start=$SECONDS src="$CTRD_DIR/src" m=github.com/containerd/containerd/v2
  log "building containerd $CONTAINERD_VERSION; log: $CTRD_DIR/build.log"
  rm -rf "$src" "$CTRD_DIR/bin.tmp"
  mkdir -p "$src" "$CTRD_DIR/bin.tmp"
  {
    printf 'module loom.local/containerd-build\n\ngo 1.26\n' >"$src/go.mod"
    (cd "$src" && go get "$m/cmd/containerd@$CONTAINERD_VERSION" "$m/cmd/ctr@$CONTAINERD_VERSION" \
      "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION")
    # No cgo: the btrfs snapshotter (the one cgo user) is left out; overlayfs is what the node uses.
    local ld="-s -w -X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Revision=module"
    (cd "$src" && CGO_ENABLED=0 nice -n 10 go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags "$ld" -o "$CTRD_DIR/bin.tmp/" "$m/cmd/containerd" "$m/cmd/ctr" "$m/cmd/containerd-shim-runc-v2")
  } >"$CTRD_DIR/build.log" 2>&1 || {
    log "FAILED after $((SECONDS - start))s; tail of $CTRD_DIR/build.log:"
    tail -30 "$CTRD_DIR/build.log" >&2
    return 1
  }
  rm -rf "${CTRD_DIR:?}/bin"
  mv "$CTRD_DIR/bin.tmp" "$CTRD_DIR/bin"
  log "built containerd $CONTAINERD_VERSION in $((SECONDS - start))s"
}

have_kube_router() { [[ -x "$KR_DIR/bin/kube-router" ]]; }

build_kube_router() {
  local start=$SECONDS src="$KR_DIR/src" m=github.com/cloudnativelabs/kube-router/v2
  log "building kube-router $KUBE_ROUTER_VERSION; log: $KR_DIR/build.log"
  rm -rf "$src" "$KR_DIR/bin.tmp"
  mkdir -p "$src" "$KR_DIR/bin.tmp"
  {
    printf 'module loom.local/kube-router-build\n\ngo 1.26\n' >"$src/go.mod"
    (cd "$src" && go get "$m/cmd/kube-router@$KUBE_ROUTER_VERSION")
    (cd "$src" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$KR_DIR/bin.tmp/" "$m/cmd/kube-router")
  } >"$KR_DIR/build.log" 2>&1 || {
    log "FAILED after $((SECONDS - start))s; tail of $KR_DIR/build.log:"
    tail -30 "$KR_DIR/build.log" >&2
    return 1
  }
  rm -rf "${KR_DIR:?}/bin"
  mv "$KR_DIR/bin.tmp" "$KR_DIR/bin"
  log "built kube-router $KUBE_ROUTER_VERSION in $((SECONDS - start))s"
}

have_containerd || ticking "building containerd" "$CTRD_DIR/build.log" build_containerd
have_kubelet || ticking "building kubelet" "$NODE_DIR/build.log" build_kubelet
have_kube_router || ticking "building kube-router" "$KR_DIR/build.log" build_kube_router

# CoreDNS (node-dns.sh builds it; here too, so a CI's prebuild of the node covers it).
bash "$HERE/node-dns.sh" >/dev/null

mkdir -p "$BIN"
for b in kubelet kube-proxy; do ln -sfn "$NODE_DIR/bin/$b" "$BIN/$b"; done
for b in containerd ctr containerd-shim-runc-v2; do ln -sfn "$CTRD_DIR/bin/$b" "$BIN/$b"; done
ln -sfn "$KR_DIR/bin/kube-router" "$BIN/kube-router"
echo "$BIN"
