#!/usr/bin/env bash
# Mints a kubeconfig for any user name and groups, with a client certificate signed by the test
# cluster's CA, and prints its path (STATE/users/NAME.kubeconfig) as the last line.
# The user has no permissions until a test binds a Role to the name or a group.
#
# Usage: test/k8s/user-kubeconfig.sh NAME [GROUP...]
# Environment: LOOM_K8S_STATE (default ~/.cache/loom/k8s/run); the cluster must be up.
set -euo pipefail
umask 077

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

(($# >= 1)) || die "usage: $0 NAME [GROUP...]"
name=$1
shift
[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._@:-]*$ ]] || die "user name '$name' has characters this script does not quote"
[[ -f "$STATE/cluster.env" && -f "$PKI/ca.key" ]] || die "no running cluster in $STATE; run test/k8s/up.sh first"
# shellcheck disable=SC1091
source "$STATE/cluster.env"

subject=""
for group in "$@"; do
  [[ "$group" =~ ^[A-Za-z0-9][A-Za-z0-9._@:-]*$ ]] || die "group '$group' has characters this script does not quote"
  subject+="/O=$group"
done
subject+="/CN=$name"

mkdir -p "$STATE/users/pki"
new_cert "$STATE/users/pki" "$name" "$subject" clientAuth
write_kubeconfig "$STATE/users/$name.kubeconfig" "$LOOM_K8S_SERVER" "$name" cert \
  "$STATE/users/pki/$name.key" "$STATE/users/pki/$name.crt"
echo "$STATE/users/$name.kubeconfig"
