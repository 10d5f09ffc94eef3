# A real node beside the kwok ones: containerd + runc + bridge CNI + kubelet, kube-proxy for
# Services and kube-router for NetworkPolicy,
# registering node `real-0` (label loom.dev/real-node=true, loom.dev/node-pool=real; taint
# loom.dev/real-node=true:NoSchedule, so pods the default scheduler places never land there unless
# they tolerate it). Sourced by lib.sh (definitions only); up.sh calls ensure_real_node when
# LOOM_K8S_REAL_NODE=1, and stop_recorded calls stop_real_node first.
# Images reach the node by import into containerd (no registry): loom.local/pause:1 (the sandbox)
# and loom.local/busybox:1 (Debian's busybox-static), built with umoci. Pods use them as is
# (a tag other than :latest means imagePullPolicy IfNotPresent: never pulled).
# One real node per machine: its bridge (loomreal0, 10.200.0.0/24) and kube-proxy's iptables
# chains are the host's.
# shellcheck shell=bash

# shellcheck source=node-dns.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-dns.sh"

REAL_NODE=real-0
REAL_POD_CIDR=10.200.0.0/24
REAL_BRIDGE=loomreal0
REAL_NODE_IMAGES_VERSION=1
# The state dir of the cluster whose real node runs on this machine (there can be one).
REAL_NODE_OWNER=/run/loom-k8s-real-node

real_node_dir() { echo "$STATE/node"; }

# ctr against the node's containerd, in the CRI's namespace.
real_ctr() {
  local dir
  dir="$(real_node_dir)"
  "$dir/bin/ctr" --address "$dir/containerd.sock" -n k8s.io "$@"
}

# build_real_node_images: OCI archives of the pause and busybox images in the cache (once);
# prints their dir.
build_real_node_images() {
  local out="${LOOM_K8S_CACHE:-$HOME/.cache/loom/k8s}/images-v$REAL_NODE_IMAGES_VERSION"
  if [[ ! -f "$out/pause.tar" || ! -f "$out/busybox.tar" ]]; then
    bash "$(dirname "${BASH_SOURCE[0]}")/node-images.sh" "$out" >&2 || die "building the real node's images failed"
  fi
  echo "$out"
}

# The host's address towards the API server and other nodes: kubelet refuses a loopback node IP.
real_node_ip() { ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1; }

# stop_real_node: kubelet and kube-proxy first (so nothing restarts pods), then every pod's
# containers, their network namespaces and mounts; containerd itself is left to stop_recorded.
stop_real_node() {
  local dir name pid exe ns c
  dir="$(real_node_dir)"
  [[ -d "$dir" && -f "$PIDS" ]] || return 0
  while read -r name pid exe; do
    [[ "$name" == kubelet || "$name" == kube-proxy || "$name" == kube-router || "$name" == coredns ]] || continue
    stop_pid "$name" "$pid" "$exe" 50
  done <"$PIDS"
  if [[ -S "$dir/containerd.sock" ]] && grep -q '^containerd ' "$PIDS"; then
    for c in $(real_ctr tasks ls -q 2>/dev/null); do real_ctr tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 0.5
    for c in $(real_ctr containers ls -q 2>/dev/null); do
      ns=$(real_ctr containers info "$c" 2>/dev/null | sed -n 's#.*"path": "\(/var/run/netns/cni-[^"]*\)".*#\1#p' | head -1)
      real_ctr tasks delete -f "$c" >/dev/null 2>&1 || true
      real_ctr containers rm "$c" >/dev/null 2>&1 || true
      [[ -n "$ns" ]] && ip netns delete "$(basename "$ns")" 2>/dev/null || true
    done
  fi
  bash "$HERE/pods-to-apiserver.sh" "$STATE" --remove || true
  remove_policy_rules
  # kube-proxy's chains in the host's iptables (and nftables) go with it.
  [[ -x "$dir/bin/kube-proxy" ]] && "$dir/bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  # And the kubelet's: its canaries and the rule that drops outside traffic to 127.0.0.0/8.
  local table chain
  while iptables -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
  while iptables -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
  for table in filter nat mangle; do
    for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
      iptables -t "$table" -F "$chain" 2>/dev/null && iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
  # Volumes (tmpfs for secrets) and snapshot mounts under the node's dirs, deepest first.
  local m
  for m in $(findmnt -rn -o TARGET | grep "^$dir/" | sort -r || true); do umount -l "$m" 2>/dev/null || true; done
  if [[ "$(cat "$REAL_NODE_OWNER" 2>/dev/null)" == "$STATE" ]]; then
    ip link delete "$REAL_BRIDGE" 2>/dev/null || true
    rm -f "$REAL_NODE_OWNER"
  fi
}

# ensure_real_node: starts containerd, kubelet and kube-proxy for real-0 unless they run, and
# waits for the node to be Ready with its images.
ensure_real_node() {
  local dir nodebin images ip t0=$SECONDS
  dir="$(real_node_dir)"
  if grep -q '^kubelet ' "$PIDS" 2>/dev/null && k get node "$REAL_NODE" >/dev/null 2>&1; then
    wait_until "node $REAL_NODE Ready" 120 real_node_ready
    return 0
  fi
  command -v runc >/dev/null || die "runc is required for the real node (apt-get install runc)"
  [[ -x /usr/lib/cni/bridge ]] || die "CNI plugins are required for the real node (apt-get install containernetworking-plugins)"
  [[ "$(cat /proc/sys/vm/swappiness 2>/dev/null)" ]] || true
  # The kubelet (cAdvisor), containerd and every kube-apiserver on the machine each take inotify
  # instances; Debian's default of 128 per user ran out with a few test clusters up at once
  # ("Failed to start cAdvisor: inotify_init: too many open files"). kind's advice: raise it.
  if (($(cat /proc/sys/fs/inotify/max_user_instances) < 1024)); then
    echo 1024 >/proc/sys/fs/inotify/max_user_instances || log "could not raise fs.inotify.max_user_instances"
  fi
  nodebin="$("$HERE/node-build.sh" | tail -n 1)"
  images="$(build_real_node_images)"
  ip="$(real_node_ip)"
  [[ -n "$ip" ]] || die "cannot find this machine's IPv4 address for the real node (ip route get)"
  stop_real_node
  local owner
  owner=$(cat "$REAL_NODE_OWNER" 2>/dev/null || true)
  if [[ -n "$owner" && "$owner" != "$STATE" ]] && grep -q '^kubelet ' "$owner/pids" 2>/dev/null; then
    die "another test cluster's real node runs on this machine (state $owner); one at a time: stop it with LOOM_K8S_STATE=$owner bash test/k8s/down.sh"
  fi
  echo "$STATE" >"$REAL_NODE_OWNER"
  rm -rf "$dir"
  mkdir -p "$dir"/{containerd,cni/net.d,kubelet,pod-logs,volume-plugins,runc}
  ln -sfn "$nodebin" "$dir/bin"
  # Pods' files are read by uid 1000: the node's dirs must be searchable by all.
  chmod 755 "$dir" "$dir"/*

  pick_port KUBELET_PORT
  pick_port KUBELET_HEALTHZ_PORT
  pick_port PROXY_HEALTHZ_PORT
  pick_port PROXY_METRICS_PORT

  new_cert "$PKI" kubelet-client "/O=system:nodes/CN=system:node:$REAL_NODE" clientAuth
  new_cert "$PKI" kubelet-serving "/O=system:nodes/CN=system:node:$REAL_NODE" serverAuth "IP:$ip, DNS:$REAL_NODE"
  new_cert "$PKI" kube-proxy "/CN=system:kube-proxy" clientAuth
  write_kubeconfig "$dir/kubelet.kubeconfig" "${LOOM_K8S_SERVER:-$SERVER}" "system:node:$REAL_NODE" \
    cert "$PKI/kubelet-client.key" "$PKI/kubelet-client.crt"
  write_kubeconfig "$dir/kube-proxy.kubeconfig" "${LOOM_K8S_SERVER:-$SERVER}" system:kube-proxy \
    cert "$PKI/kube-proxy.key" "$PKI/kube-proxy.crt"

  cat >"$dir/cni/net.d/10-loom.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "loom-real",
  "plugins": [
    {
      "type": "bridge", "bridge": "$REAL_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$REAL_POD_CIDR" }]],
                "routes": [{ "dst": "0.0.0.0/0" }], "dataDir": "$dir/cni/ipam" }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  cat >"$dir/containerd.toml" <<EOF
version = 3
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'loom.local/pause:1'
[plugins.'io.containerd.cri.v1.runtime']
  # This machine's root lacks CAP_SYS_RESOURCE: no process may lower its OOM score, and runc
  # fails the pause container's -998 ("can't get final child's PID from pipe"). Keep scores at or
  # above containerd's own, as for rootless containerd.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '$(command -v runc)'
        Root = '$dir/runc'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '$dir/cni/net.d'
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
EOF
  # up.sh's umask 077 would make containerd's snapshot dirs, i.e. every container's root
  # directory, 0700: a non-root container could not even find its command. The node's daemons
  # run with the usual 022 (what they write that must stay private, they chmod themselves).
  local umask_was
  umask_was=$(umask)
  umask 022
  # The shim is found on PATH.
  PATH="$nodebin:$PATH" start containerd "$nodebin/containerd" --config "$dir/containerd.toml"
  wait_until "containerd" 60 real_ctr version
  # ctr warns on stderr that cgroup v1 is deprecated: say only what fails.
  local img out
  for img in pause busybox; do
    out=$(real_ctr images import --base-name "loom.local/$img" "$images/$img.tar" 2>&1) ||
      die "importing $images/$img.tar into containerd failed: $out"
  done
  log "imported loom.local/pause:1, loom.local/busybox:1 ($((SECONDS - t0))s)"

  start_cluster_dns "$dir" "$ip"
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1; kubelet 1.35+ refuses it unless told not to.
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$dir/containerd.sock
imageServiceEndpoint: unix://$dir/containerd.sock
address: $ip
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
podLogsDir: $dir/pod-logs
volumePluginDir: $dir/volume-plugins
clusterDomain: cluster.local
clusterDNS: [$ip]
resolvConf: /etc/resolv.conf
maxPods: 110
podCIDR: $REAL_POD_CIDR
registerWithTaints:
- {key: loom.dev/real-node, value: "true", effect: NoSchedule}
# Imported images cannot be pulled again: never collect them, and evict only when nearly full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
EOF
  start kubelet "$nodebin/kubelet" \
    --config "$dir/kubelet.yaml" \
    --kubeconfig "$dir/kubelet.kubeconfig" \
    --root-dir "$dir/kubelet" \
    --hostname-override "$REAL_NODE" \
    --node-ip "$ip" \
    --node-labels "loom.dev/real-node=true,loom.dev/node-pool=real,type=real"

  cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
hostnameOverride: $REAL_NODE
clusterCIDR: $REAL_POD_CIDR
bindAddress: $ip
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
nodePortAddresses: ["$ip/32"]
# Leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0}
EOF
  start kube-proxy "$nodebin/kube-proxy" --config "$dir/kube-proxy.yaml"
  # kube-router finds its node by name at start and exits if the kubelet has not registered it
  # yet (seen on CI: it started 0.2 s before real-0 existed).
  wait_until "node $REAL_NODE registered" 120 k get node "$REAL_NODE"
  start_policy_enforcer "$dir" "$nodebin"
  umask "$umask_was"

  wait_until "node $REAL_NODE Ready" 180 real_node_ready
  wait_until "kube-proxy /healthz" 60 curl -sf --max-time 2 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
  echo "LOOM_K8S_REAL_NODE=$REAL_NODE" >>"$STATE/cluster.env"
  log "real node $REAL_NODE Ready in $((SECONDS - t0))s (kubelet $ip:$KUBELET_PORT, pods $REAL_POD_CIDR)"
  bash "$HERE/pods-to-apiserver.sh" "$STATE" || die "routing pods to the API server failed"
}

# remove_policy_rules: kube-router's chains and ipsets leave the host (its own --cleanup-config
# panics without IPVS).
remove_policy_rules() {
  local rule chain set
  iptables -S 2>/dev/null | grep -E '^-A (INPUT|FORWARD|OUTPUT) .*kube-router netpol' | sed 's/^-A/-D/' |
    while read -r rule; do eval "iptables $rule" 2>/dev/null || true; done || true
  for chain in $(iptables -S 2>/dev/null | awk '/^-N (KUBE-ROUTER-|KUBE-NWPLCY-|KUBE-POD-FW-)/ {print $2}'); do
    iptables -F "$chain" 2>/dev/null || true
  done
  for chain in $(iptables -S 2>/dev/null | awk '/^-N (KUBE-ROUTER-|KUBE-NWPLCY-|KUBE-POD-FW-)/ {print $2}'); do
    iptables -X "$chain" 2>/dev/null || true
  done
  for set in $(ipset list -n 2>/dev/null | grep -E '^KUBE-(SRC|DST)-' || true); do ipset destroy "$set" 2>/dev/null || true; done
}

# start_policy_enforcer DIR BIN: kube-router with only its NetworkPolicy controller (iptables,
# ipset), under a ClusterRole that reads what policies select. kube-network-policies would be
# the smaller choice, but it needs nftables' queue statement, and this kernel lacks NFT_QUEUE.
start_policy_enforcer() {
  local dir=$1 nodebin=$2
  command -v ipset >/dev/null || die "ipset is required for the real node's NetworkPolicy enforcer (apt-get install ipset)"
  host_client "$dir" kube-router loom:network-policy '- apiGroups: [""]
  resources: [namespaces, pods, services, endpoints, nodes]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]'
  pick_port KR_HEALTH_PORT
  start kube-router "$nodebin/kube-router" \
    --kubeconfig "$dir/kube-router.kubeconfig" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
    --hostname-override "$REAL_NODE" \
    --service-cluster-ip-range "${SERVICE_CIDR:-10.96.0.0/16}" \
    --health-port "$KR_HEALTH_PORT" --metrics-port 0
  wait_until "kube-router (NetworkPolicy) /healthz" 60 curl -sf --max-time 2 "http://127.0.0.1:$KR_HEALTH_PORT/healthz"
}

real_node_ready() {
  [[ "$(k get node "$REAL_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
