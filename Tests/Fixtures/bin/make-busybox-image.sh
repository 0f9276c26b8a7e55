#!/usr/bin/env bash
# make-busybox-image.sh REGISTRY REPO:TAG
#
# Pushes a one-layer image holding Debian's static busybox as /bin/busybox with
# /bin/sh (and a few applets) as symlinks: enough for `runc run ... sh -c`.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: make-busybox-image.sh REGISTRY REPO:TAG" >&2; exit 2; }
registry=$1 repotag=$2
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || { echo "make-busybox-image.sh: busybox (Debian's busybox-static) is not installed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/oci" >/dev/null
umoci new --image "$work/oci:img" >/dev/null
umoci unpack --rootless --image "$work/oci:img" "$work/bundle" >/dev/null 2>&1 || umoci unpack --image "$work/oci:img" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc"
cp "$busybox" "$rootfs/bin/busybox"
for applet in sh echo cat ls id; do ln -sf busybox "$rootfs/bin/$applet"; done
echo "hello from lazypull" > "$rootfs/hello.txt"
umoci repack --image "$work/oci:img" "$work/bundle" >/dev/null
umoci config --image "$work/oci:img" --config.cmd /bin/sh >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$work/oci:img" "docker://$registry/$repotag"
