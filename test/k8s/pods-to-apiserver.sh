#!/usr/bin/env bash
# Lets the real node's pods reach the test API server through the `kubernetes` Service
# (10.96.0.1:443), as in-cluster clients do (Loom's operator installed by Helm, kubectl in a pod).
# The test API server listens on the host's loopback only (127.0.0.1:PORT), which the `kubernetes`
# Service cannot name (its endpoints may not be loopback, so it has none) and kube-proxy cannot
# reach; without this a pod's TLS connection to 10.96.0.1:443 leaves by the default route and is
# answered by whatever is out there ("self-signed certificate in certificate chain").
# Here: traffic from the pod bridge to 10.96.0.1:443 is DNATed to 127.0.0.1:PORT (the kubelet's
# KUBE-FIREWALL lets DNATed traffic to loopback in) with route_localnet on the bridge. The API
# server's certificate names 10.96.0.1, so clients verify it with the service account's CA.
# Idempotent. Usage: pods-to-apiserver.sh STATE [--remove]
set -euo pipefail
STATE=$1
BRIDGE=loomreal0
port=$(sed -n 's#.*server: https://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$STATE/admin.kubeconfig" | head -1)
[[ -n "$port" ]] || { echo "pods-to-apiserver: no API server port in $STATE/admin.kubeconfig" >&2; exit 1; }
rule=(PREROUTING -i "$BRIDGE" -d 10.96.0.1/32 -p tcp --dport 443 -m comment --comment "loom test: pods to the API server" -j DNAT --to-destination "127.0.0.1:$port")
# A restarted cluster has a new port: drop every earlier rule of ours first.
while read -r old; do
  eval "iptables -t nat ${old/-A/-D}"
done < <(iptables -t nat -S PREROUTING | grep -F '"loom test: pods to the API server"' || true)
[[ "${2:-}" == --remove ]] && exit 0
sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
iptables -t nat -I "${rule[@]:0:1}" 1 "${rule[@]:1}"
