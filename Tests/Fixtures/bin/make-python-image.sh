#!/usr/bin/env bash
# make-python-image.sh OCI_DIR TAG
#
# Builds the benchmark image: Debian bookworm (minbase) as layer 1, python3 on top as
# layer 2, both from the machine's apt sources with mmdebstrap, assembled with umoci.
# About 80 MB compressed, 210 MB unpacked; takes about a minute, so the result is kept in
# $LAZYPULL_FIXTURE_CACHE (default /var/tmp/lazypull-fixture-cache), keyed by this script's
# content, and copied from there on later calls.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: make-python-image.sh OCI_DIR TAG" >&2; exit 2; }
out=$1 tag=$2
cache=${LAZYPULL_FIXTURE_CACHE:-/var/tmp/lazypull-fixture-cache}
cached=$cache/python-$(sha256sum "$0" | cut -c1-16)-$tag
if [ -f "$cached/index.json" ]; then
    rm -rf "$out"
    cp -a "$cached" "$out"
    exit 0
fi
work=$(mktemp -d /var/tmp/lazypull-pyimg-XXXXXX)
trap 'rm -rf "$work"' EXIT

mmdebstrap --quiet --variant=minbase --format=tar bookworm "$work/base.tar"
mmdebstrap --quiet --variant=minbase --include=python3 --format=tar bookworm "$work/python.tar"

rm -rf "$out"
umoci init --layout "$out"
umoci new --image "$out:$tag"
umoci config --image "$out:$tag" --os linux --architecture amd64 --config.cmd /usr/bin/python3
umoci unpack --image "$out:$tag" "$work/bundle" >/dev/null
tar -xf "$work/base.tar" -C "$work/bundle/rootfs"
umoci repack --refresh-bundle --image "$out:$tag" "$work/bundle"
# Layer 2: the python rootfs replaces the base; umoci records only the difference.
find "$work/bundle/rootfs" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
tar -xf "$work/python.tar" -C "$work/bundle/rootfs"
umoci repack --image "$out:$tag" "$work/bundle"
umoci gc --layout "$out"
mkdir -p "$cache"
cp -a "$out" "$work/cached"
mv -T "$work/cached" "$cached" 2>/dev/null || true   # another run may have cached it first
