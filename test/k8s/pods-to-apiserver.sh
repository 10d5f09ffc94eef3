#!/usr/bin/env bash
# Two things a real cluster's network gives pods that the test cluster's real node lacks; Loom's
# own pods (installed by Helm: test/helm-realnode.suite.ts) need both.
#
# 1. The API server through the `kubernetes` Service (10.96.0.1:443), as in-cluster clients
#    (Loom's operator) reach it. The test API server listens on the host's loopback only
#    (127.0.0.1:PORT), which the `kubernetes` Service cannot name (its endpoints may not be
#    loopback, so it has none): without this a pod's TLS connection to 10.96.0.1:443 leaves by
#    the default route and is answered by whatever is out there ("self-signed certificate in
#    certificate chain"). Here: traffic from the pod bridge to 10.96.0.1:443 is DNATed to
#    127.0.0.1:PORT (the kubelet's KUBE-FIREWALL lets DNATed traffic to loopback in) with
#    route_localnet on the bridge. The API server's certificate names 10.96.0.1.
# 2. A Service address that kube-proxy has no ready endpoint for (the operator's pod between an
#    upgrade's old and new one) must not leave the host either: it went out by the default route
#    and this machine's egress proxy answered (HTTP 404), on a kept-alive connection the gateway
#    then used for every later request, so it never saw the new operator. (kube-proxy's own
#    REJECT for such a Service comes after kube-router's ACCEPT in FORWARD, so it never acts.)
#    Here: traffic from the pod bridge that kube-proxy's KUBE-SERVICES left un-DNATed is DNATed
#    to a closed port on the host's loopback, so the connection is refused at once.
# Idempotent. Usage: pods-to-apiserver.sh STATE [--remove]
set -euo pipefail
STATE=$1
BRIDGE=loomreal0
SERVICE_CIDR=10.96.0.0/16 # up.sh's
TAG="loom test: pods to the API server"
# Ours from before (a restarted cluster has a new port) go first.
for table in nat filter; do
  while read -r old; do
    eval "iptables -t $table ${old/-A/-D}"
  done < <(iptables -t "$table" -S | grep -F "\"$TAG\"" || true)
done
[[ "${2:-}" == --remove ]] && exit 0
port=$(sed -n 's#.*server: https://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$STATE/admin.kubeconfig" | head -1)
[[ -n "$port" ]] || { echo "pods-to-apiserver: no API server port in $STATE/admin.kubeconfig" >&2; exit 1; }
# The bridge CNI makes the bridge with the first pod; route_localnet must be set on it before.
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add name "$BRIDGE" type bridge
  ip link set "$BRIDGE" up
fi
sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
iptables -t nat -I PREROUTING 1 -i "$BRIDGE" -d 10.96.0.1/32 -p tcp --dport 443 -m comment --comment "$TAG" \
  -j DNAT --to-destination "127.0.0.1:$port"
# Appended: after kube-proxy's KUBE-SERVICES jump, which it keeps where it is.
iptables -t nat -A PREROUTING -i "$BRIDGE" -d "$SERVICE_CIDR" -p tcp -m comment --comment "$TAG" \
  -j DNAT --to-destination 127.0.0.1:1
