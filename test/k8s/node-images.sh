#!/usr/bin/env bash
# Builds the real node's two images as OCI archives into DIR (node.sh imports them into
# containerd): loom.local/pause:1, the pod sandbox (a tiny Go program that waits and reaps), and
# loom.local/busybox:1, Debian's busybox-static with its applets as links, uid 1000 `loom`.
# Made with umoci from nothing (no base image, no registry). Usage: node-images.sh DIR
set -euo pipefail
umask 022
out=$1
for tool in umoci busybox go; do
  command -v "$tool" >/dev/null || {
    echo "$tool is required for the real node's images (apt-get install umoci busybox-static)" >&2
    exit 1
  }
done
work="$out.tmp"
rm -rf "$work"
mkdir -p "$work/pause-src"
cat >"$work/pause-src/main.go" <<'GO'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

// The sandbox holds the pod's namespaces: it waits for a signal and reaps orphans.
func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			if pid, _ := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
	}
}
GO
printf 'module loom.local/pause\n\ngo 1.26\n' >"$work/pause-src/go.mod"
(cd "$work/pause-src" && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o ../pause-bin .)

# image NAME ENTRYPOINT FILL_FN: an OCI layout with the one tag "1", archived as NAME.tar.
image() {
  local name=$1
  local layout="$work/$name-layout" bundle="$work/$name-bundle"
  umoci init --layout "$layout"
  umoci new --image "$layout:1"
  umoci unpack --image "$layout:1" "$bundle" >/dev/null
  "$3" "$bundle/rootfs"
  umoci repack --image "$layout:1" "$bundle"
  umoci config --image "$layout:1" --os linux --architecture amd64 --config.entrypoint "$2" \
    --config.env PATH=/bin --config.workingdir /
  umoci gc --layout "$layout"
  tar -C "$layout" -cf "$work/$name.tar" .
}
fill_pause() { install -m 0755 "$work/pause-bin" "$1/pause"; }
fill_busybox() {
  mkdir -p "$1/bin" "$1/etc" "$1/tmp" "$1/proc" "$1/sys" "$1/dev"
  chmod 1777 "$1/tmp"
  install -m 0755 "$(command -v busybox)" "$1/bin/busybox"
  local applet
  for applet in $("$1/bin/busybox" --list); do [[ -e "$1/bin/$applet" ]] || ln -s busybox "$1/bin/$applet"; done
  printf 'root:x:0:0:root:/:/bin/sh\nloom:x:1000:1000:loom:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$1/etc/passwd"
  printf 'root:x:0:\nloom:x:1000:\nnobody:x:65534:\n' >"$1/etc/group"
}
image pause /pause fill_pause
image busybox /bin/sh fill_busybox
rm -rf "$out"
mkdir -p "$out"
mv "$work/pause.tar" "$work/busybox.tar" "$out/"
rm -rf "$work"
ls -la "$out"
