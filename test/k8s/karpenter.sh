#!/usr/bin/env bash
# Karpenter with its kwok cloud provider (sigs.k8s.io/karpenter/kwok), the real node autoscaler
# the autoscaling e2e runs against Loom's queue (test/autoscale-karpenter.e2e.test.ts).
#
#   karpenter.sh build   builds the binary from the Go module into a per-version cache (only when
#                        missing); the last line printed is its path
#   karpenter.sh up      also installs Karpenter's CRDs (NodePool, NodeClaim, KWOKNodeClass) and a
#                        Ready KWOKNodeClass "default" into the test cluster of LOOM_K8S_STATE, and
#                        starts the controller there as a host process, recorded in the cluster's
#                        pids file (test/k8s/down.sh stops it with the cluster); the last line
#                        printed is the cluster's admin kubeconfig
#
# Why Karpenter and not the cluster-autoscaler: the Go module proxy refuses
# k8s.io/autoscaler/cluster-autoscaler (403, every version), so it cannot be built here.
# Why v1.14.1 and not v1.15.0 or v1.14.3: their go.mod asks for go >= 1.26.9 / 1.26.10, newer than
# the toolchain installed here (GOTOOLCHAIN=local: never fetch one).
#
# Environment:
#   LOOM_K8S_CACHE                 cache root (default ~/.cache/loom/k8s)
#   LOOM_K8S_STATE                 the test cluster (test/k8s/up.sh; must be up for `up`)
#   LOOM_KARPENTER_INSTANCE_TYPES  instance types file (default: karpenter-instance-types.json
#                                  beside this script: one 8-GPU type)
set -euo pipefail

KARPENTER_VERSION=v1.14.1

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
# shellcheck source=wait.sh
source "$HERE/wait.sh"
log() { echo "[karpenter] $*" >&2; }

export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
CACHE="${LOOM_K8S_CACHE:-$HOME/.cache/loom/k8s}"
DIR="$CACHE/karpenter-$KARPENTER_VERSION"
BINARY="$DIR/bin/kwok"

build() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.karpenter-build.lock"
  lock_fd 9 "$CACHE/.karpenter-build.lock" "build of Karpenter"
  if [[ -x "$BINARY" ]]; then
    exec 9>&-
    return
  fi
  local start=$SECONDS
  mkdir -p "$DIR"
  log "building Karpenter's kwok provider $KARPENTER_VERSION (cold: ~13 min on 2 busy cores); log: $DIR/build.log"
  rm -rf "$DIR/bin.tmp"
  # `go install module/pkg@version` builds it with the module's own go.mod and go.sum.
  if ! GOBIN="$DIR/bin.tmp" ticking "building Karpenter" "$DIR/build.log" \
    bash -c "go install 'sigs.k8s.io/karpenter/kwok@$KARPENTER_VERSION' >'$DIR/build.log' 2>&1"; then
    tail -n 30 "$DIR/build.log" >&2
    exit 1
  fi
  mv "$DIR/bin.tmp" "$DIR/bin"
  log "built Karpenter in $((SECONDS - start))s"
  exec 9>&-
}

# The module's CRDs: NodePool, NodeClaim, NodeOverlay (all from pkg/apis/crds, as the kwok chart
# ships them) and KWOKNodeClass.
crd_files() {
  local src
  src="$(go mod download -json "sigs.k8s.io/karpenter@$KARPENTER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$src" ]] || die "cannot find the source of sigs.k8s.io/karpenter@$KARPENTER_VERSION"
  echo "$src/pkg/apis/crds/karpenter.sh_nodepools.yaml"
  echo "$src/pkg/apis/crds/karpenter.sh_nodeclaims.yaml"
  echo "$src/pkg/apis/crds/karpenter.sh_nodeoverlays.yaml"
  echo "$src/kwok/apis/crds/karpenter.kwok.sh_kwoknodeclasses.yaml"
}

up() {
  [[ -f "$STATE/cluster.env" ]] || die "no test cluster in $STATE: start it first (test/k8s/up.sh)"
  # shellcheck disable=SC1091
  source "$STATE/cluster.env"
  local admin="$LOOM_K8S_KUBECONFIG" kubectl="$LOOM_K8S_BIN/kubectl" f
  k() { "$kubectl" --kubeconfig "$admin" "$@"; }
  exec 8>"$STATE/.karpenter.lock"
  lock_fd 8 "$STATE/.karpenter.lock" "start of Karpenter in $STATE"
  if [[ -f "$PIDS" ]] && grep -q '^karpenter ' "$PIDS"; then
    local pid exe
    read -r _ pid exe < <(grep '^karpenter ' "$PIDS" | tail -n 1)
    if pid_is "$pid" "$exe"; then
      log "Karpenter already running (pid $pid)"
      echo "$admin"
      return
    fi
  fi
  for f in $(crd_files); do k apply --server-side --force-conflicts -f "$f" >/dev/null; done
  k wait --for=condition=Established --timeout=60s crd/nodepools.karpenter.sh crd/nodeclaims.karpenter.sh \
    crd/kwoknodeclasses.karpenter.kwok.sh >/dev/null
  # The kwok provider has no controller for its node class: a NodePool counts as ready only once
  # its class says Ready, so say it here (as a real provider's class controller would).
  k apply -f - >/dev/null <<'EOF'
apiVersion: karpenter.kwok.sh/v1alpha1
kind: KWOKNodeClass
metadata:
  name: default
EOF
  k patch kwoknodeclass default --subresource=status --type=merge -p \
    "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"Ready\",\"message\":\"\",\"lastTransitionTime\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}]}}" >/dev/null

  local metrics health types exe pid
  metrics=$(free_port)
  health=$(free_port)
  while [[ "$health" == "$metrics" ]]; do health=$(free_port); done
  types="${LOOM_KARPENTER_INSTANCE_TYPES:-$HERE/karpenter-instance-types.json}"
  exe="$(readlink -f "$BINARY")"
  mkdir -p "$STATE/logs"
  # Host process, one replica: no leader election; batches cut short so a test's gang is asked
  # for within a second or two (defaults: 1 s idle, 10 s max).
  KUBECONFIG="$admin" DISABLE_LEADER_ELECTION=true METRICS_PORT="$metrics" HEALTH_PROBE_PORT="$health" \
    INSTANCE_TYPES_FILE_PATH="$types" BATCH_IDLE_DURATION=1s BATCH_MAX_DURATION=3s LOG_LEVEL=debug \
    FEATURE_GATES="NodeRepair=false,ReservedCapacity=true,SpotToSpotConsolidation=false,NodeOverlay=false,StaticCapacity=false,CapacityBuffer=false" \
    setsid "$exe" >"$STATE/logs/karpenter.log" 2>&1 </dev/null 8>&- 9>&- &
  pid=$!
  echo "karpenter $pid $exe" >>"$PIDS"
  log "started Karpenter (pid $pid), log $STATE/logs/karpenter.log"
  local waited=0
  until curl -sf --max-time 2 "http://127.0.0.1:$health/readyz" >/dev/null; do
    pid_is "$pid" "$exe" || { tail -n 30 "$STATE/logs/karpenter.log" >&2; die "Karpenter exited"; }
    ((waited++ < 120)) || { tail -n 30 "$STATE/logs/karpenter.log" >&2; die "Karpenter not ready in 60 s"; }
    sleep 0.5
  done
  log "Karpenter ready"
  echo "$admin"
}

# free_port: a TCP port nothing listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "${1:-build}" in
build)
  build
  echo "$BINARY"
  ;;
up)
  build
  up
  ;;
*) die "usage: karpenter.sh [build|up]" ;;
esac
