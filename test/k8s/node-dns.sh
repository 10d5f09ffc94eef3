# Cluster DNS for the real node: CoreDNS, built from its Go module with only the plugins a
# cluster needs, runs on the host (like kube-proxy and kube-router) and serves
# `cluster.local` from the test API server through its kubernetes plugin; everything else is
# forwarded to the host's resolvers. It listens on the node's address, port 53, and the kubelet
# gives pods that address as their nameserver (clusterDNS), so a pod resolves
# `svc.ns.svc.cluster.local` and, for a headless Service, `hostname.svc.ns.svc.cluster.local`.
# Sourced by node.sh (definitions only); ensure_real_node calls start_cluster_dns before the
# kubelet starts. Run directly (`bash node-dns.sh build`) it only builds, printing the binary.
# shellcheck shell=bash

COREDNS_VERSION=v1.15.0

# coredns_bin: the path of the built CoreDNS (built once, into the k8s cache).
coredns_bin() { echo "${LOOM_K8S_CACHE:-$HOME/.cache/loom/k8s}/coredns-$COREDNS_VERSION/bin/coredns"; }

# build_coredns: builds CoreDNS unless it is in the cache. Not CoreDNS's own main: that links
# every plugin (route53, azure, clouddns pull in three cloud SDKs); a main of our own links
# only the plugins the Corefile below uses, in CoreDNS's order (plugin.cfg).
build_coredns() {
  local out dir src start=$SECONDS m=github.com/coredns/coredns
  out="$(coredns_bin)"
  [[ -x "$out" ]] && return 0
  dir="$(dirname "$(dirname "$out")")"
  src="$dir/src"
  echo "[k8s node dns] building CoreDNS $COREDNS_VERSION; log: $dir/build.log" >&2
  rm -rf "$src" "$dir/bin.tmp"
  mkdir -p "$src" "$dir/bin.tmp"
  printf 'module loom.local/coredns-build\n\ngo 1.26\n' >"$src/go.mod"
  cat >"$src/main.go" <<'EOF'
// CoreDNS with only what the real test node's cluster DNS uses.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order plugins run in, as in CoreDNS's plugin.cfg.
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes", "loop", "forward"}
}

func main() { coremain.Run() }
EOF
  {
    (cd "$src" && GOTOOLCHAIN=local go get "$m@$COREDNS_VERSION" && GOTOOLCHAIN=local go mod tidy)
    (cd "$src" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false" nice -n 10 \
      go build -trimpath -ldflags "-s -w" -o "$dir/bin.tmp/coredns" .)
  } >"$dir/build.log" 2>&1 || {
    echo "[k8s node dns] FAILED after $((SECONDS - start))s; tail of $dir/build.log:" >&2
    tail -30 "$dir/build.log" >&2
    return 1
  }
  rm -rf "$dir/bin"
  mv "$dir/bin.tmp" "$dir/bin"
  echo "[k8s node dns] built CoreDNS $COREDNS_VERSION in $((SECONDS - start))s" >&2
}

# build_coredns_locked: build_coredns, one build at a time on the machine (others wait, saying so).
build_coredns_locked() {
  local lockfile="${LOOM_K8S_CACHE:-$HOME/.cache/loom/k8s}/.node-dns-build.lock"
  mkdir -p "$(dirname "$lockfile")"
  (
    exec 9>"$lockfile"
    lock_fd 9 "$lockfile" "build of CoreDNS"
    ticking "building CoreDNS" "$(dirname "$(dirname "$(coredns_bin)")")/build.log" build_coredns
  )
}

# start_cluster_dns DIR IP: CoreDNS on IP:53 under a ClusterRole that reads Services,
# EndpointSlices, Pods and Namespaces; waits until it answers for kubernetes.default.
start_cluster_dns() {
  local dir=$1 ip=$2 t0=$SECONDS
  build_coredns_locked || die "building CoreDNS failed"
  host_client "$dir" coredns loom:coredns '- apiGroups: [""]
  resources: [services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]'
  pick_port DNS_HEALTH_PORT
  pick_port DNS_READY_PORT
  # `pods insecure` answers 10-200-0-5.ns.pod.cluster.local, as kubeadm's CoreDNS does.
  cat >"$dir/Corefile" <<EOF
.:53 {
  bind $ip
  errors
  health 127.0.0.1:$DNS_HEALTH_PORT
  ready 127.0.0.1:$DNS_READY_PORT
  kubernetes cluster.local in-addr.arpa ip6.arpa {
    kubeconfig $dir/coredns.kubeconfig loom:coredns@loom-test
    pods insecure
    fallthrough in-addr.arpa ip6.arpa
    ttl 5
  }
  forward . /etc/resolv.conf
  cache 5
  loop
}
EOF
  start coredns "$(coredns_bin)" -conf "$dir/Corefile"
  wait_until "CoreDNS ready (kubernetes plugin synced)" 60 curl -sf --max-time 2 "http://127.0.0.1:$DNS_READY_PORT/ready"
  log "cluster DNS on $ip:53 ($((SECONDS - t0))s)"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  log() { echo "[k8s node dns] $*" >&2; }
  # shellcheck source=wait.sh
  source "$(dirname "${BASH_SOURCE[0]}")/wait.sh"
  build_coredns_locked
  coredns_bin
fi
