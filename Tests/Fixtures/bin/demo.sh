#!/usr/bin/env bash
# demo.sh — what `make run` shows: a loopback registry holding a sample image this
# project builds itself, pulled and mounted by lazypull, then everything cleaned up.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lazypull=${LAZYPULL_BIN:-$here/../../../.build/release/lazypull}
work=$(mktemp -d /tmp/lazypull-demo-XXXXXX)
root=$work/state
mnt=$work/rootfs
port=${DEMO_PORT:-5055}

cleanup() {
    "$lazypull" umount --root "$root" "$mnt" >/dev/null 2>&1 || true
    "$here/registry.sh" stop "$work/registry" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting Debian's docker-registry on 127.0.0.1:$port"
"$here/registry.sh" start "$work/registry" "$port" plain

step "building a sample image (busybox + files) with umoci and pushing it with skopeo"
"$here/make-busybox-image.sh" "127.0.0.1:$port" demo:v1
skopeo inspect --tls-verify=false "docker://127.0.0.1:$port/demo:v1" | grep -E '"(Digest|Layers)"' -A2 | head -6

step "lazypull mount --eager 127.0.0.1:$port/demo:v1 $mnt"
"$lazypull" mount --eager --root "$root" "127.0.0.1:$port/demo:v1" "$mnt"

step "lazypull images"
"$lazypull" images --root "$root"

step "what is mounted"
grep " $mnt " /proc/mounts
ls -l "$mnt" "$mnt/bin"
printf 'hello.txt: '; cat "$mnt/hello.txt"

step "fetched from the registry and stored"
du -sh "$root/content/blobs" "$root/snapshots"

step "lazypull umount $mnt"
"$lazypull" umount --root "$root" "$mnt"
echo "done; the demo cleans up its registry and state on exit"
