#!/usr/bin/env bash
# make-busybox-image.sh REGISTRY REPO:TAG [DATA_MB]
#
# Pushes a one-layer image holding Debian's static busybox as /bin/busybox with
# /bin/sh (and a few applets) as symlinks: enough for `runc run ... sh -c`; and
# /hello.txt = "hello from lazypull". With DATA_MB, a second layer adds /data.bin (DATA_MB MiB
# of random bytes, new every run) and /second.txt = "second layer".
set -euo pipefail
[ $# -eq 2 ] || [ $# -eq 3 ] || { echo "usage: make-busybox-image.sh REGISTRY REPO:TAG [DATA_MB]" >&2; exit 2; }
registry=$1 repotag=$2 data_mb=${3:-}
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
umoci repack --refresh-bundle --image "$work/oci:img" "$work/bundle" >/dev/null
if [ -n "$data_mb" ]; then
    head -c "$((data_mb * 1024 * 1024))" /dev/urandom > "$rootfs/data.bin"
    echo "second layer" > "$rootfs/second.txt"
    umoci repack --refresh-bundle --image "$work/oci:img" "$work/bundle" >/dev/null
fi
umoci config --image "$work/oci:img" --config.cmd /bin/sh >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$work/oci:img" "docker://$registry/$repotag"
