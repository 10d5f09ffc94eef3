#!/usr/bin/env bash
# CI: build helm from its Go module and both images (cached in ~/.cache/loom/{helm,image}), so
# the chart, image and real-node tests find them. Needs root and the Debian packages
# mmdebstrap (root filesystems), umoci and skopeo (test/image.e2e.test.ts reads the images with them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/helm-build.sh
time bash scripts/image.sh loom python
