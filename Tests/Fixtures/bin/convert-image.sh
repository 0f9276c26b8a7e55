#!/usr/bin/env bash
# convert-image.sh CONTAINERD_SOCKET SRC_REF DST_REF estargz|zstdchunked
#
# Converts an image with Debian's ctr-remote (stargz-snapshotter) inside a private containerd's
# content store and pushes the result: the reference eStargz / zstd:chunked producer.
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: convert-image.sh CONTAINERD_SOCKET SRC_REF DST_REF estargz|zstdchunked" >&2; exit 2; }
sock=$1 src=$2 dst=$3 format=$4
ctr() { ctr-remote --address "$sock" "$@"; }
case "$format" in
estargz) flag=--estargz ;;
zstdchunked) flag=--zstdchunked ;;
*) echo "convert-image.sh: format must be estargz or zstdchunked" >&2; exit 2 ;;
esac
ctr images pull --plain-http "$src" >/dev/null
ctr images convert "$flag" --oci "$src" "$dst" >/dev/null
ctr images push --plain-http "$dst" >/dev/null
