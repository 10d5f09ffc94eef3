#!/usr/bin/env bash
# Builds helm from its Go module (helm.sh/helm/v3/cmd/helm) into a per-version cache, with the
# installed Go toolchain only (GOTOOLCHAIN=local), as test/k8s/build.sh builds Kubernetes.
# Only a missing binary is built. The last line printed is the helm binary's path.
# Environment: LOOM_HELM_CACHE (default ~/.cache/loom/helm)
set -euo pipefail
HELM_VERSION=v3.22.1
CACHE="${LOOM_HELM_CACHE:-$HOME/.cache/loom/helm}"
BIN="$CACHE/$HELM_VERSION/helm"
if [[ ! -x "$BIN" ]]; then
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.build.lock"
  flock 9
  if [[ ! -x "$BIN" ]]; then
    echo "[helm build] building helm $HELM_VERSION from its Go module (cold: 5-10 min on 2 cores)" >&2
    GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false" GOBIN="$CACHE/$HELM_VERSION.tmp" \
      go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
    mkdir -p "$CACHE/$HELM_VERSION"
    mv "$CACHE/$HELM_VERSION.tmp/helm" "$BIN"
    rmdir "$CACHE/$HELM_VERSION.tmp"
  fi
fi
echo "$BIN"
