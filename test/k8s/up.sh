#!/usr/bin/env bash
# Starts a real Kubernetes control plane for tests on 127.0.0.1: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok with N fake nodes. Builds the binaries first
# if the cache lacks them. Reuses a healthy cluster already running from the same state dir.
# The last line printed is the admin kubeconfig's path; everything else goes to stderr.
#
# Environment:
#   LOOM_K8S_STATE   state dir (default ~/.cache/loom/k8s/run): pki, kubeconfigs, etcd data, logs, pids
#   LOOM_K8S_NODES   fake nodes to have (default 4); a reused cluster gains missing ones
#   LOOM_K8S_CACHE   binary cache (see build.sh)
#   LOOM_K8S_REAL_NODE=1  also a real node, real-0: containerd + kubelet (see node.sh)
#   LOOM_K8S_AUDIT_POLICY  an audit policy file: kube-apiserver then writes its audit log (JSON
#                    lines, batched, flushed within a second) to $STATE/logs/audit.log (benches
#                    count and time requests from it)
set -euo pipefail
umask 077

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
# shellcheck source=wait.sh
source "$HERE/wait.sh"

NODES="${LOOM_K8S_NODES:-4}"
[[ "$NODES" =~ ^[0-9]+$ ]] || die "LOOM_K8S_NODES must be a number, got '$NODES'"
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1 # first address of SERVICE_CIDR: the kubernetes Service
POD_CIDR=10.128.0.0/10 # node i gets 10.(128 + i/256).(i%256).0/24

for tool in openssl curl ss flock base64 setsid; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

started=$SECONDS
BIN="$("$HERE/build.sh" | tail -n 1)"
[[ -x "$BIN/kube-apiserver" ]] || die "build.sh did not produce binaries (got '$BIN')"
KUBECTL="$BIN/kubectl"

mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
PIDS="$STATE/pids"
LOGS="$STATE/logs"
PKI="$STATE/pki"
ADMIN="$STATE/admin.kubeconfig"

# One up/down at a time per state dir (test workers may race to start the shared cluster).
# The components must not inherit this descriptor, or they would hold the lock for their lifetime.
exec 8>"$STATE/.up.lock"
lock_fd 8 "$STATE/.up.lock" "start or stop of the test cluster in $STATE"

k() { "$KUBECTL" --kubeconfig "$ADMIN" "$@"; }

# All recorded components alive, and the API server ready.
healthy() {
  [[ -f "$PIDS" && -f "$ADMIN" && -f "$STATE/cluster.env" ]] || return 1
  local name pid exe
  while read -r name pid exe; do
    pid_is "$pid" "$exe" || return 1
  done <"$PIDS"
  # shellcheck disable=SC1091
  source "$STATE/cluster.env"
  [[ "$(curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$LOOM_K8S_SERVER/readyz" 2>/dev/null)" == ok ]]
}

# Dies with the end of a component's log if any recorded component has exited.
check_alive() {
  local name pid exe
  while read -r name pid exe; do
    if ! pid_is "$pid" "$exe"; then
      log "$name (pid $pid) exited; last lines of $LOGS/$name.log:"
      tail -n 25 "$LOGS/$name.log" >&2 || true
      stop_recorded
      die "$name failed to start"
    fi
  done <"$PIDS"
}

# wait_until DESCRIPTION SECONDS COMMAND...: polls COMMAND while checking the components live.
wait_until() {
  local what=$1 limit=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    check_alive
    if ((SECONDS > deadline)); then
      stop_recorded
      die "timed out after ${limit}s waiting for $what (logs in $LOGS)"
    fi
    sleep 0.5
  done
  log "$what: ok ($((SECONDS - started))s)"
}

# start NAME BINARY ARGS...: runs it in its own session (so a test runner's Ctrl-C or exit does
# not take the cluster with it) and records its pid.
start() {
  local name=$1 exe
  exe="$(readlink -f "$2")"
  shift 2
  setsid "$exe" "$@" >"$LOGS/$name.log" 2>&1 </dev/null 8>&- &
  local pid=$!
  echo "$name $pid $exe" >>"$PIDS"
  log "started $name (pid $pid), log $LOGS/$name.log"
}

declare -A TAKEN=()
# Ports are picked below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by
# default): a port free when picked stays free until its component listens (kwok, 10-20 s later
# on a loaded machine) only if no outgoing connection and no listen(0) can take it meanwhile.
# CI: kwok failed with "bind: address already in use" on 47440, picked from 20000-49999.
read -r EPHEMERAL_LO EPHEMERAL_HI </proc/sys/net/ipv4/ip_local_port_range
if ((EPHEMERAL_LO > 12000)); then
  PORT_BASE=10000 PORT_SPAN=$((EPHEMERAL_LO - 10000))
else
  PORT_BASE=$((EPHEMERAL_HI + 1)) PORT_SPAN=$((65535 - EPHEMERAL_HI))
fi
# pick_port VAR: a free TCP port on this machine, distinct from the others picked in this run.
pick_port() {
  local used p
  used="$(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -u)"
  while :; do
    p=$((PORT_BASE + (RANDOM * 32768 + RANDOM) % PORT_SPAN))
    [[ -z "${TAKEN[$p]:-}" ]] || continue
    grep -qx "$p" <<<"$used" && continue
    TAKEN[$p]=1
    printf -v "$1" '%s' "$p"
    return
  done
}

node_name() { echo "kwok-node-$1"; }

# ensure_nodes N: creates kwok-node-0..N-1 where missing, then waits for all to be Ready.
ensure_nodes() {
  local n=$1 i name existing yaml=""
  existing="$(k get nodes -l type=kwok -o name)"
  for ((i = 0; i < n; i++)); do
    name=$(node_name "$i")
    grep -qx "node/$name" <<<"$existing" && continue
    # Pod CIDR from the index (room for 16,384 nodes). InternalIP is 127.0.0.1 for all: the API
    # server reaches every node's kubelet API (logs) at kwok's server there.
    yaml+="---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    type: kwok
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: \"\"
spec:
  podCIDR: 10.$((128 + i / 256)).$((i % 256)).0/24
  podCIDRs: [10.$((128 + i / 256)).$((i % 256)).0/24]
status:
  addresses:
  - {type: InternalIP, address: 127.0.0.1}
  - {type: Hostname, address: $name}
  capacity:
    cpu: \"32\"
    memory: 256Gi
    pods: \"110\"
    nvidia.com/gpu: \"8\"
    ephemeral-storage: 1Ti
  allocatable:
    cpu: \"32\"
    memory: 256Gi
    pods: \"110\"
    nvidia.com/gpu: \"8\"
    ephemeral-storage: 1Ti
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
"
  done
  if [[ -n "$yaml" ]]; then
    k create -f - <<<"$yaml" >/dev/null
    log "created $(grep -c '^kind: Node' <<<"$yaml") fake node(s)"
  fi
  # One LIST per poll: `kubectl wait` over 100 nodes with a per-node timeout outran the limit.
  ((n == 0)) || wait_until "$n fake nodes Ready" 120 nodes_ready "$n"
}

# nodes_ready N: succeeds when at least N kwok nodes report Ready=True.
nodes_ready() {
  local ready
  ready=$(k get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    grep -c '^True$')
  ((ready >= $1))
}

if healthy; then
  log "reusing the cluster already running from $STATE"
  ensure_nodes "$NODES"
  [[ "${LOOM_K8S_REAL_NODE:-}" != 1 ]] || ensure_real_node
  echo "$ADMIN"
  exit 0
fi

# Leftovers of a cluster that died or was half started: stop them and start clean.
stop_recorded
rm -rf "$PKI" "$LOGS" "$STATE/etcd" "$STATE/users" "$STATE"/*.kubeconfig "$STATE/cluster.env" \
  "$STATE/tokens.csv" "$STATE/kube-scheduler.yaml" "$STATE/kwok-default.log"
mkdir -p "$PKI" "$LOGS" "$STATE/users"
: >"$PIDS"

pick_port ETCD_PORT
pick_port ETCD_PEER_PORT
pick_port API_PORT
pick_port KCM_PORT
pick_port SCHED_PORT
pick_port KWOK_PORT
SERVER="https://127.0.0.1:$API_PORT"

# --- certificates and keys ---
new_ca "$PKI/ca" loom-test-ca
new_cert "$PKI" apiserver "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1, IP:$SERVICE_IP, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local"
new_cert "$PKI" admin "/O=system:masters/CN=loom-admin" clientAuth
new_cert "$PKI" kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
new_cert "$PKI" kube-scheduler "/CN=system:kube-scheduler" clientAuth
# The API server's client identity towards kubelets (here: kwok's server, for pod logs).
new_cert "$PKI" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
# kwok serves the kubelet API (logs) for every fake node on 127.0.0.1.
new_cert "$PKI" kwok-serving "/CN=kwok" serverAuth "IP:127.0.0.1, DNS:localhost"
# Front proxy: the request-header CA that delegated authentication in the controller manager and
# scheduler (and any aggregated API server) expects to find in extension-apiserver-authentication.
new_ca "$PKI/front-proxy-ca" loom-test-front-proxy-ca
CA="$PKI/front-proxy-ca" new_cert "$PKI" front-proxy-client "/CN=front-proxy-client" clientAuth
# Service-account tokens are signed with RSA, as in kubeadm clusters.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null

write_kubeconfig "$ADMIN" "$SERVER" loom-admin cert "$PKI/admin.key" "$PKI/admin.crt"
write_kubeconfig "$STATE/kube-controller-manager.kubeconfig" "$SERVER" system:kube-controller-manager \
  cert "$PKI/kube-controller-manager.key" "$PKI/kube-controller-manager.crt"
write_kubeconfig "$STATE/kube-scheduler.kubeconfig" "$SERVER" system:kube-scheduler \
  cert "$PKI/kube-scheduler.key" "$PKI/kube-scheduler.crt"

# Limited users: authenticated, in no groups, with no RBAC bindings until a test grants some.
: >"$STATE/tokens.csv"
for user in alice bob carol; do
  token="$(openssl rand -hex 24)"
  echo "$token,$user,$user" >>"$STATE/tokens.csv"
  write_kubeconfig "$STATE/users/$user.kubeconfig" "$SERVER" "$user" token "$token"
done

cat >"$STATE/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $STATE/kube-scheduler.kubeconfig
  qps: 200
  burst: 400
leaderElection:
  leaderElect: false
EOF

# --- etcd ---
# No fsync: the data is thrown away with the cluster, and fsync dominates write latency.
start etcd "$BIN/etcd" \
  --name loom-test \
  --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "loom-test=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync \
  --log-level warn
wait_until etcd 60 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver ---
AUDIT=()
if [[ -n "${LOOM_K8S_AUDIT_POLICY:-}" ]]; then
  [[ -f "$LOOM_K8S_AUDIT_POLICY" ]] || die "LOOM_K8S_AUDIT_POLICY names no file: $LOOM_K8S_AUDIT_POLICY"
  AUDIT=(--audit-policy-file "$LOOM_K8S_AUDIT_POLICY" --audit-log-path "$LOGS/audit.log"
    --audit-log-format json --audit-log-mode batch --audit-log-batch-max-wait 1s)
fi
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 \
  --secure-port "$API_PORT" \
  --advertise-address 127.0.0.1 \
  --endpoint-reconciler-type none \
  --tls-cert-file "$PKI/apiserver.crt" \
  --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --token-auth-file "$STATE/tokens.csv" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,ResourceQuota,NodeRestriction,DefaultTolerationSeconds,Priority,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User \
  --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$PKI/front-proxy-client.crt" \
  --proxy-client-key-file "$PKI/front-proxy-client.key" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" \
  --kubelet-preferred-address-types InternalIP \
  --allow-privileged=true \
  --profiling=false \
  "${AUDIT[@]}"
wait_until "kube-apiserver /readyz" 180 \
  curl -sf --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$SERVER/readyz"

# --- kube-controller-manager ---
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 \
  --secure-port "$KCM_PORT" \
  --leader-elect=false \
  --controllers '*' \
  --use-service-account-credentials=true \
  --service-account-private-key-file "$PKI/sa.key" \
  --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" \
  --cluster-signing-key-file "$PKI/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --allocate-node-cidrs=false \
  --cluster-name loom-test \
  --kube-api-qps 200 \
  --kube-api-burst 400 \
  --profiling=false

# --- kube-scheduler ---
start kube-scheduler "$BIN/kube-scheduler" \
  --config "$STATE/kube-scheduler.yaml" \
  --authentication-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
  --bind-address 127.0.0.1 \
  --secure-port "$SCHED_PORT" \
  --profiling=false

# --- kwok: fake nodes and simulated pod lifecycles ---
# Container logs come from kwok Logs / ClusterLogs objects (CRDs), so tests can give pods logs;
# pods/portforward from PortForward / ClusterPortForward objects (forward to a local address);
# pods/exec from Exec / ClusterExec objects (the command runs on this machine).
k apply -f "$HERE/crds" >/dev/null
wait_until "kwok CRDs established" 60 k wait --for=condition=Established --timeout=5s \
  crd/logs.kwok.x-k8s.io crd/clusterlogs.kwok.x-k8s.io \
  crd/portforwards.kwok.x-k8s.io crd/clusterportforwards.kwok.x-k8s.io \
  crd/execs.kwok.x-k8s.io crd/clusterexecs.kwok.x-k8s.io
# kwok reads log files in the CRI format: "<RFC 3339 nano time> stdout|stderr F <line>".
echo "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ) stdout F This container is simulated by kwok; give it logs with a kwok.x-k8s.io/v1alpha1 Logs object (see test/k8s/README.md)." \
  >"$STATE/kwok-default.log"
k apply -f - >/dev/null <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: loom-default
spec:
  selector: {}
  logs:
  - logsFile: $STATE/kwok-default.log
EOF
stage_args=()
for f in "$HERE"/stages/*.yaml; do stage_args+=(--config "$f"); done
start kwok "$BIN/kwok" \
  --kubeconfig "$ADMIN" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds 40 \
  --cidr "$POD_CIDR" \
  --node-ip 127.0.0.1 \
  --node-port "$KWOK_PORT" \
  --server-address "127.0.0.1:$KWOK_PORT" \
  --tls-cert-file "$PKI/kwok-serving.crt" \
  --tls-private-key-file "$PKI/kwok-serving.key" \
  --enable-crds Logs,ClusterLogs,PortForward,ClusterPortForward,Exec,ClusterExec \
  "${stage_args[@]}"

wait_until "kube-controller-manager /healthz" 120 curl -skf --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz"
wait_until "kube-scheduler /healthz" 120 curl -skf --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz"
wait_until "kwok /healthz" 60 curl -sf --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz"
# The service-account controller is running once the default namespace has its account.
wait_until "default service account" 120 k get serviceaccount default -n default

cat >"$STATE/cluster.env" <<EOF
LOOM_K8S_SERVER=$SERVER
LOOM_K8S_KUBECONFIG=$ADMIN
LOOM_K8S_BIN=$BIN
LOOM_K8S_USERS=$STATE/users
LOOM_K8S_ETCD=http://127.0.0.1:$ETCD_PORT
LOOM_K8S_KCM_PORT=$KCM_PORT
LOOM_K8S_SCHEDULER_PORT=$SCHED_PORT
LOOM_K8S_KWOK=http://127.0.0.1:$KWOK_PORT
EOF

ensure_nodes "$NODES"
[[ "${LOOM_K8S_REAL_NODE:-}" != 1 ]] || ensure_real_node
log "cluster up in $((SECONDS - started))s: $SERVER, $NODES fake nodes, state $STATE"
echo "$ADMIN"
