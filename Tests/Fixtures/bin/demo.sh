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

step "building a sample image (layer 1: busybox, /hello.txt; layer 2: 4 MiB /data.bin, /second.txt) with umoci and pushing it with skopeo"
"$here/make-busybox-image.sh" "127.0.0.1:$port" demo:v1 4
skopeo inspect --tls-verify=false "docker://127.0.0.1:$port/demo:v1" | grep -E '"(Digest|Layers)"' -A2 | head -6

step "lazypull convert --estargz: rewrite it as eStargz (hello.txt prefetched) and push it"
echo /hello.txt > "$work/prefetch.txt"
"$lazypull" convert --root "$root" --estargz --prefetch-list "$work/prefetch.txt" \
    "127.0.0.1:$port/demo:v1" "127.0.0.1:$port/demo:esgz"

step "lazypull mount --no-background-fetch 127.0.0.1:$port/demo:esgz $mnt (lazy: returns at once)"
"$lazypull" mount --root "$root" --no-background-fetch "127.0.0.1:$port/demo:esgz" "$mnt"
grep -E " ($mnt|$root[^ ]*) " /proc/mounts | cut -d' ' -f1-3

step "lazypull status: fetched so far, the prefetched /hello.txt and the image's default program (its Cmd, /bin/sh: busybox); nothing of layer 2"
sleep 0.5
"$lazypull" status --root "$root"

step "reading /second.txt through the mount fetches it with an HTTP Range request; /data.bin stays remote"
cat "$mnt/second.txt"
"$mnt/bin/sh" -c 'echo "busybox runs from the lazy mount"'
sleep 0.5
"$lazypull" status --root "$root"

step "lazypull umount $mnt"
"$lazypull" umount --root "$root" "$mnt"
echo "done; the demo cleans up its registry and state on exit"
