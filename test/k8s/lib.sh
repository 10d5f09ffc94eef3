# Shared by up.sh and down.sh; sourced, not run.
# shellcheck shell=bash

STATE="${LOOM_K8S_STATE:-$HOME/.cache/loom/k8s/run}"
if [[ -d "$STATE" ]]; then STATE="$(cd "$STATE" && pwd)"; fi
PIDS="$STATE/pids"
# shellcheck disable=SC2034 # used by up.sh
LOGS="$STATE/logs"
PKI="$STATE/pki"

log() { echo "[k8s] $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# The pids file holds one "name pid executable" line per component, in start order.

# True when pid is alive and is still the executable recorded for it (pids get reused).
pid_is() {
  local pid=$1 exe=$2
  [[ -e /proc/$pid ]] || return 1
  [[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]]
}

# stop_pid NAME PID EXE TENTHS: TERM, then KILL if it still runs after TENTHS tenths of a second.
stop_pid() {
  local name=$1 pid=$2 exe=$3 tenths=$4 waited=0
  pid_is "$pid" "$exe" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while pid_is "$pid" "$exe" && ((waited < tenths)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  if pid_is "$pid" "$exe"; then
    log "$name (pid $pid) ignored SIGTERM for $((tenths / 10))s; killing"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  log "stopped $name (pid $pid)"
}

# Stops every recorded component, last started first; TERM, then KILL after 15s.
stop_recorded() {
  [[ -f "$PIDS" ]] || return 0
  stop_real_node
  local lines=() line name pid exe i
  mapfile -t lines <"$PIDS"
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    line=${lines[i]}
    [[ -n "$line" ]] || continue
    read -r name pid exe <<<"$line"
    stop_pid "$name" "$pid" "$exe" 150
  done
  rm -f "$PIDS"
}

# --- certificates (openssl, EC P-256 except the RSA service-account key) ---

OPENSSL_REQ_CONF='[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
'

# new_key FILE: an EC P-256 private key (PKCS#8).
new_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

# new_ca PREFIX CN: PREFIX.key and PREFIX.crt, a CA valid ten years.
new_ca() {
  local prefix=$1 cn=$2
  new_key "$prefix.key"
  openssl req -x509 -new -sha256 -days 3650 -key "$prefix.key" -subj "/CN=$cn" \
    -config <(printf '%s[v3]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign, digitalSignature\nsubjectKeyIdentifier = hash\n' "$OPENSSL_REQ_CONF") \
    -extensions v3 -out "$prefix.crt" 2>/dev/null
}

# new_cert DIR NAME SUBJECT USAGE [SAN]: DIR/NAME.{key,crt} signed by $CA.{crt,key}
# (default CA=$PKI/ca).
# SUBJECT like "/O=system:masters/CN=admin"; USAGE clientAuth or serverAuth.
new_cert() {
  local dir=$1 name=$2 subject=$3 usage=$4 san=${5:-}
  local ext="basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $usage
authorityKeyIdentifier = keyid"
  [[ -n "$san" ]] && ext+=$'\n'"subjectAltName = $san"
  new_key "$dir/$name.key"
  openssl req -new -sha256 -key "$dir/$name.key" -subj "$subject" -config <(printf '%s' "$OPENSSL_REQ_CONF") \
    -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -sha256 -days 3650 -in "$dir/$name.csr" -CA "${CA:-$PKI/ca}.crt" -CAkey "${CA:-$PKI/ca}.key" \
    -set_serial "0x$(openssl rand -hex 16)" -extfile <(printf '%s\n' "$ext") -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr"
}

b64() { base64 -w0 <"$1"; }

# host_client DIR NAME USER RULES: what a component on the host (CoreDNS, kube-router) reads the
# API with: a client certificate for USER ($PKI/NAME), the kubeconfig DIR/NAME.kubeconfig, and a
# ClusterRole USER with RULES (YAML list items) bound to USER.
host_client() {
  local dir=$1 name=$2 user=$3 rules=$4
  new_cert "$PKI" "$name" "/CN=$user" clientAuth
  write_kubeconfig "$dir/$name.kubeconfig" "${LOOM_K8S_SERVER:-$SERVER}" "$user" \
    cert "$PKI/$name.key" "$PKI/$name.crt"
  k apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "$user"}
rules:
$rules
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "$user"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "$user"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "$user"}
EOF
}

# write_kubeconfig FILE SERVER USER (cert KEYFILE CRTFILE | token TOKEN)
write_kubeconfig() {
  local file=$1 server=$2 user=$3 kind=$4
  local cred
  if [[ "$kind" == cert ]]; then
    cred="    client-certificate-data: $(b64 "$6")
    client-key-data: $(b64 "$5")"
  else
    cred="    token: $5"
  fi
  cat >"$file.tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: loom-test
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $user
  user:
$cred
contexts:
- name: $user@loom-test
  context:
    cluster: loom-test
    user: $user
current-context: $user@loom-test
KUBECONFIG
  mv "$file.tmp" "$file"
}

# shellcheck source=node.sh
source "$(dirname "${BASH_SOURCE[0]}")/node.sh"
