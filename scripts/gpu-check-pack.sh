#!/usr/bin/env bash
# npm run gpu-check:pack: everything the GPU machine needs to run Loom, in one ignored folder,
# .gpucheck/, that the device tool carries next to the working tree. That machine has no network
# and may have no Node.js, and only the working tree travels (64 MiB in all, the carried folder
# included): dist/ and node_modules/ are ignored, so they go packed, and node itself too.
#   .gpucheck/node.xz      this machine's node binary (x86-64; it needs only glibc and libstdc++)
#   .gpucheck/loom.tar.xz  dist/ and the production node_modules/, pruned (no docs, types, maps,
#                          tests, native sources), unpacked into the repository root there
# Then, on the GPU machine: `bash scripts/gpu-check.sh` (docs/gpus.md, "Checking on a real GPU").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PACK="$ROOT/.gpucheck"
LIMIT=$((64 * 1024 * 1024))

[ "${LOOM_GPU_CHECK_PACK_SKIP_BUILD:-}" = 1 ] || npm run build >/dev/null
NODE=$(command -v node)
case "$(uname -m)" in x86_64) ;; *) echo "gpu-check:pack: the GPU machine is x86-64, this is $(uname -m): its node would not run there" >&2; exit 1 ;; esac

rm -rf "$PACK"
mkdir -p "$PACK"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

# The production dependency tree, as npm resolves it (node_modules may be a symlink to another
# checkout's: read the real one). Only packages not already inside another listed one are copied.
NM=$(readlink -f node_modules)
( cd "$(dirname "$NM")" && npm ls --omit=dev --parseable --all 2>/dev/null ) | tail -n +2 |
  sed "s|^$(dirname "$NM")/||" | sort -u >"$STAGE/prod.txt"
mkdir -p "$STAGE/root"
cp -a dist "$STAGE/root/dist"
while read -r p; do
  [ -d "$(dirname "$NM")/$p" ] || continue
  mkdir -p "$STAGE/root/$(dirname "$p")"
  [ -e "$STAGE/root/$p" ] || cp -a "$(dirname "$NM")/$p" "$STAGE/root/$p"
done <"$STAGE/prod.txt"
# Pruned: what only a developer or a compiler reads. better-sqlite3 keeps build/Release/*.node.
find "$STAGE/root/node_modules" \( -name '*.md' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \
  -o -name '*.map' -o -name '*.ts.map' -o -name 'LICENSE*' -o -name 'CHANGELOG*' \) -type f -delete
find "$STAGE/root/node_modules" -depth -type d \( -name test -o -name tests -o -name docs -o -name example -o -name examples -o -name benchmark -o -name .github \) -exec rm -rf {} +
BS="$STAGE/root/node_modules/better-sqlite3"
if [ -d "$BS" ]; then
  rm -rf "$BS/deps" "$BS/src" "$BS/build/Release/obj" "$BS/build/Release/obj.target" "$BS/build/Release/.deps" "$BS/build/deps"
  find "$BS/build" -type f ! -name '*.node' -delete 2>/dev/null || true
fi
RAW_NM=$(du -sb "$STAGE/root/node_modules" | cut -f1)
RAW_DIST=$(du -sb "$STAGE/root/dist" | cut -f1)
tar -C "$STAGE/root" -cf - dist node_modules | xz -T0 -6 >"$PACK/loom.tar.xz"
xz -T0 -9 -c "$NODE" >"$PACK/node.xz"
node --version >"$PACK/node.version"

TREE=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
UNTRACKED=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
UNTRACKED=${UNTRACKED:-0}
PACKED=$(du -cb "$PACK"/* | tail -1 | cut -f1)
TOTAL=$((TREE + UNTRACKED + PACKED))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "gpu-check:pack: .gpucheck/ $(mib "$PACKED") (node $(node --version) $(mib "$(stat -c %s "$PACK/node.xz")") xz;" \
  "dist $(mib "$RAW_DIST") + production node_modules $(mib "$RAW_NM") -> $(mib "$(stat -c %s "$PACK/loom.tar.xz")") xz)"
echo "gpu-check:pack: travels $(mib "$TOTAL") of 64 MiB (working tree $(mib "$TREE"), untracked $(mib "$UNTRACKED"), .gpucheck $(mib "$PACKED"))"
if [ "$TOTAL" -gt "$LIMIT" ]; then
  echo "gpu-check:pack: over the device's 64 MiB: the copy would be refused" >&2
  exit 1
fi
echo 'run it there: run(command="bash scripts/gpu-check.sh", carry=[".gpucheck"], timeout_s=600)'
