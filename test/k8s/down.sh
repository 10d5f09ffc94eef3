#!/usr/bin/env bash
# Stops the control plane that up.sh started from the same state dir (by its recorded pids).
# Leaves the binary cache, and the state dir's certificates, kubeconfigs and logs for inspection;
# the next up.sh starts a fresh cluster (new etcd data, new certificates).
#
# Environment: LOOM_K8S_STATE (default ~/.cache/loom/k8s/run)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
# shellcheck source=wait.sh
source "$HERE/wait.sh"

if [[ ! -d "$STATE" ]]; then
  log "nothing to stop: no state dir $STATE"
  exit 0
fi
exec 8>"$STATE/.up.lock"
lock_fd 8 "$STATE/.up.lock" "start or stop of the test cluster in $STATE"
if [[ ! -s "$PIDS" ]]; then
  log "nothing to stop in $STATE"
  rm -f "$PIDS"
  exit 0
fi
stop_recorded
rm -f "$STATE/cluster.env"
log "stopped the cluster in $STATE"
