#!/usr/bin/env bash
# npm run image: Loom's container images, built without Docker and reproducibly.
#
#   loom:<version>         Debian bookworm (minbase) + Node.js (this machine's node binary) + the
#                          built package (dist/, bin/, runtimes/) + its production node_modules
#   loom-python:<version>  Debian bookworm (minbase) + python3, pip, venv and Debian's CPU PyTorch
#                          (python3-torch: what runtimes/loom-tinygpt and the examples need)
#                          + the official MLflow client (mlflow-skinny, from PyPI: the wheels pinned
#                          with their hashes in scripts/image-python-requirements.txt)
#
# Each image is written as an OCI image layout directory and as one tarball holding that layout
# plus a docker-save manifest.json, which `ctr -n k8s.io images import`, `docker load` and
# `skopeo copy oci-archive:` all accept. The Debian root filesystems come from mmdebstrap and are
# cached (by suite and package list; LOOM_IMAGE_REBASE=1 refreshes them), so a rebuild only re-packs
# Loom's layer. The Debian layer's mtimes are a fixed day (BASE_EPOCH), so it is the same layer in every version.
#
# Reproducible: every layer is a tar sorted by name with owner 0:0 and every mtime set to
# SOURCE_DATE_EPOCH (default: the last commit's time), gzip without name or time; the config's
# dates are that epoch too. Given the same cached root filesystems (or the same Debian snapshot),
# two builds give the same digests (test/image.e2e.test.ts).
#
# Usage: scripts/image.sh [loom|python]...   (default: both)
#        scripts/image.sh python-lock            re-resolve PYTHON_PACKAGES into the requirements file
# Environment:
#   LOOM_IMAGE_CACHE  cache root (default ~/.cache/loom/image); the rootfs tarballs live here
#   LOOM_IMAGE_OUT    output directory (default $LOOM_IMAGE_CACHE/out)
#   SOURCE_DATE_EPOCH fixed timestamp for every file and date in the images
# The last lines printed are "<name:tag> <tarball> <manifest digest> <bytes>", one per image.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VERSION="$(node -p 'require("./package.json").version')"
SUITE=bookworm
MIRROR="${LOOM_IMAGE_MIRROR:-http://deb.debian.org/debian}"
CACHE="${LOOM_IMAGE_CACHE:-$HOME/.cache/loom/image}"
OUT="${LOOM_IMAGE_OUT:-$CACHE/out}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH
# The Debian layer's own fixed time (bookworm's release day), not the commit's: the base layer and
# its cache stay the same from commit to commit, so nodes that hold it pull only Loom's layer.
BASE_EPOCH=1686355200
# Both images run as this non-root uid (the chart's runAsUser).
LOOM_UID=1000
# loom-python's packages from PyPI (the same client the tests pin, test/tracking-client.ts), and
# the lock that pins them and all they need, wheel by wheel (`scripts/image.sh python-lock`).
PYTHON_PACKAGES=(mlflow-skinny==3.17.2)
PYTHON_LOCK="$ROOT/scripts/image-python-requirements.txt"

log() { echo "[image] $*" >&2; }
need() { command -v "$1" >/dev/null || { echo "image: $1 is missing; install it: apt-get install -y $2" >&2; exit 1; }; }
need mmdebstrap mmdebstrap
need gzip gzip

mkdir -p "$CACHE" "$OUT"

# Deterministic tar of a directory's contents (names relative, "./" first) on stdout; every mtime
# is $2 (default SOURCE_DATE_EPOCH).
tar_dir() {
  tar -C "$1" --sort=name --mtime="@${2:-$SOURCE_DATE_EPOCH}" --owner=0 --group=0 --numeric-owner \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --xattrs --xattrs-include='security.capability' -cf - .
}

# A Debian root filesystem as a deterministic layer tar, built once per package list and kept
# (LOOM_IMAGE_REBASE=1 builds it again, e.g. for Debian's security updates; the digest then
# changes with the packages). Docs, man pages and locales are left out (dpkg path-exclude), apt's
# lists and caches emptied.
rootfs() {
  local name=$1 include=$2 key dir tmp
  key=$(printf '%s\n' "$SUITE" "$MIRROR" "$include" "$BASE_EPOCH" "$LOOM_UID" v1 | sha256sum | cut -c1-16)
  dir="$CACHE/rootfs-$name-$key.tar"
  # Two builds at once (CI and a test): one builds the root filesystem, the other waits for it.
  exec 8>"$dir.lock"
  flock 8
  if [[ ! -s "$dir" || -n "${LOOM_IMAGE_REBASE:-}" ]]; then
    log "building the $name root filesystem with mmdebstrap ($include); cached as $dir"
    tmp=$(mktemp -d "$CACHE/tmp.XXXXXX")
    SOURCE_DATE_EPOCH=$BASE_EPOCH mmdebstrap --quiet --variant=minbase --include="$include" \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook="chroot \"\$1\" groupadd -g $LOOM_UID loom && chroot \"\$1\" useradd -u $LOOM_UID -g $LOOM_UID -m -d /home/loom -s /bin/sh loom" \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/ldconfig/aux-cache "$1"/var/log/* "$1"/etc/machine-id "$1"/etc/hostname "$1"/etc/resolv.conf' \
      "$SUITE" "$tmp/rootfs.tar" "$MIRROR"
    # Re-pack through the same tar as every other layer: one normal form, whatever mmdebstrap wrote.
    mkdir "$tmp/x"
    tar -C "$tmp/x" --numeric-owner --xattrs --xattrs-include='*' -xpf "$tmp/rootfs.tar"
    tar_dir "$tmp/x" "$BASE_EPOCH" >"$tmp/layer.tar"
    mv "$tmp/layer.tar" "$dir"
    rm -rf "$tmp"
  fi
  exec 8>&-
  echo "$dir"
}

# Loom's own layer: /usr/local/bin/node and /opt/loom (package.json, bin/, dist/, runtimes/ and the
# production dependencies, read from `npm ls --omit=dev`; type declarations and source maps left out).
loom_layer() {
  local tmp=$1 app="$1/root/opt/loom"
  [[ -f dist/cli/main.js ]] || { echo "image: dist/ is missing: run npm run build first" >&2; exit 1; }
  mkdir -p "$app" "$tmp/root/usr/local/bin"
  cp "$(readlink -f "$(command -v node)")" "$tmp/root/usr/local/bin/node"
  cp package.json "$app/"
  cp -r bin dist runtimes "$app/"
  local deps
  deps=$(npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2 | sed "s#^$ROOT/##" | sort -u)
  # -h: node_modules may be a symlink in a worktree; its contents are what ships.
  # shellcheck disable=SC2086
  tar -C "$ROOT" -chf - --exclude='*.d.ts' --exclude='*.d.mts' --exclude='*.d.cts' --exclude='*.map' \
    --exclude='better-sqlite3/deps' --exclude='better-sqlite3/src' --exclude='better-sqlite3/build/Release/obj*' \
    --exclude='better-sqlite3/build/Release/.deps' --exclude='better-sqlite3/build/deps' --exclude='better-sqlite3/build/Release/test_extension.node' \
    $deps | tar -C "$app" -xf -
  # Reproducible whatever the umask of the machine that builds it.
  chmod -R u+rwX,go+rX,go-w "$tmp/root"
  tar_dir "$tmp/root"
}

# pip's wheel selection for the image's Python (bookworm: CPython 3.11, glibc 2.36, x86_64), not
# this machine's: pip 23 takes each manylinux tag given and no older one, so all are listed.
pip_platform() {
  local v
  printf -- '--python-version 3.11 --implementation cp --abi cp311 --only-binary=:all:'
  for v in 2_36 2_35 2_34 2_31 2_28 2_27 2_24 2_17 2_12 2_5; do printf -- ' --platform manylinux_%s_x86_64' "$v"; done
}

# Resolves PYTHON_PACKAGES for the image's Python and writes every wheel's version and hash.
python_lock() {
  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2046
  pip install --quiet --root-user-action=ignore --dry-run --ignore-installed --report "$tmp/report.json" --target "$tmp/t" \
    $(pip_platform) "${PYTHON_PACKAGES[@]}"
  {
    sed -n '1,/^# To change/p' "$PYTHON_LOCK"
    python3 -c '
import json, sys
for i in sorted(json.load(open(sys.argv[1]))["install"], key=lambda i: i["metadata"]["name"].lower()):
    print("%s==%s \\\n    --hash=sha256:%s" % (i["metadata"]["name"], i["metadata"]["version"], i["download_info"]["archive_info"]["hashes"]["sha256"]))
' "$tmp/report.json"
  } >"$tmp/lock.txt"
  mv "$tmp/lock.txt" "$PYTHON_LOCK"
  rm -rf "$tmp"
  log "wrote $PYTHON_LOCK"
}

# The locked PyPI packages as a layer under /usr/local/lib/python3.11/dist-packages (ahead of
# Debian's on sys.path), installed from exactly the locked wheels (--require-hashes, --no-deps),
# without byte code (its headers hold times) or console scripts (their shebang names this
# machine's python). Built once per lock and kept, its mtimes BASE_EPOCH, like the root filesystems.
python_packages() {
  local key layer tmp site
  need pip python3-pip
  key=$(printf '%s\n' "$(cat "$PYTHON_LOCK")" "$(pip_platform)" "$BASE_EPOCH" v1 | sha256sum | cut -c1-16)
  layer="$CACHE/pypi-python-$key.tar"
  exec 8>"$layer.lock"
  flock 8
  if [[ ! -s "$layer" ]]; then
    log "installing loom-python's PyPI packages ($(grep -c '^[A-Za-z]' "$PYTHON_LOCK") wheels); cached as $layer"
    tmp=$(mktemp -d "$CACHE/tmp.XXXXXX")
    site="$tmp/root/usr/local/lib/python3.11/dist-packages"
    # shellcheck disable=SC2046
    PIP_FIND_LINKS= pip install --quiet --root-user-action=ignore --no-cache-dir --disable-pip-version-check --no-compile --no-deps \
      --require-hashes --target "$site" $(pip_platform) -r "$PYTHON_LOCK"
    rm -rf "$site/bin"
    find "$site" -name __pycache__ -prune -exec rm -rf {} +
    chmod -R u+rwX,go+rX,go-w "$tmp/root"
    tar_dir "$tmp/root" "$BASE_EPOCH" >"$tmp/layer.tar"
    mv "$tmp/layer.tar" "$layer"
    rm -rf "$tmp"
  fi
  exec 8>&-
  echo "$layer"
}

python_layer() {
  local tmp=$1 app="$1/root/opt/loom"
  mkdir -p "$app"
  cp -r runtimes "$app/"
  chmod -R u+rwX,go+rX,go-w "$tmp/root"
  tar_dir "$tmp/root"
}

results=()
# build IMAGE TAG DEBIAN-PACKAGES LAYER-FUNCTION CONFIG [CACHED-LAYER...]: the Debian root
# filesystem, then the cached layers given, then the one the function writes.
build() {
  local image=$1 tag=$2 include=$3 layerfn=$4 config=$5 base tmp extra=() l
  shift 5
  for l in "$@"; do extra+=(--layer "$l"); done
  base=$(rootfs "$image" "$include")
  tmp=$(mktemp -d "$CACHE/tmp.XXXXXX")
  "$layerfn" "$tmp" >"$tmp/app.tar"
  log "assembling $image:$tag"
  local line
  exec 7>"$OUT/.$image.lock"
  flock 7
  line=$(node "$ROOT/scripts/image-oci.mjs" --name "$image:$tag" --out "$OUT" --epoch "$SOURCE_DATE_EPOCH" \
    --config "$config" --layer "$base" "${extra[@]}" --layer "$tmp/app.tar")
  exec 7>&-
  rm -rf "$tmp"
  results+=("$line")
}

targets=("$@")
((${#targets[@]})) || targets=(loom python)
for t in "${targets[@]}"; do
  case "$t" in
  loom)
    build loom "$VERSION" ca-certificates,libstdc++6 loom_layer \
      "{\"User\":\"$LOOM_UID:$LOOM_UID\",\"WorkingDir\":\"/opt/loom\",\"Env\":[\"PATH=/usr/local/bin:/usr/bin:/bin\",\"HOME=/home/loom\",\"NODE_ENV=production\"],\"Entrypoint\":[\"node\",\"/opt/loom/bin/loom.js\"],\"Cmd\":[\"operator\"]}"
    ;;
  python)
    pylayer=$(python_packages)
    build loom-python "$VERSION" ca-certificates,python3,python3-pip,python3-venv,python3-torch python_layer \
      "{\"User\":\"$LOOM_UID:$LOOM_UID\",\"WorkingDir\":\"/opt/loom\",\"Env\":[\"PATH=/usr/local/bin:/usr/bin:/bin\",\"HOME=/home/loom\",\"PYTHONDONTWRITEBYTECODE=1\"],\"Cmd\":[\"python3\"]}" \
      "$pylayer"
    ;;
  python-lock) python_lock ;;
  *) echo "image: unknown image $t (loom, python or python-lock)" >&2; exit 2 ;;
  esac
done
((${#results[@]} == 0)) || printf '%s\n' "${results[@]}"
