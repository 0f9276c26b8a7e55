#!/usr/bin/env bash
# make-small-image.sh - build and push a small two-layer gzip image.
#
# Usage:
#   make-small-image.sh REGISTRY REPO:TAG [SIZE_MB]
#
#   REGISTRY  host:port of a registry on loopback, e.g. 127.0.0.1:5000
#   SIZE_MB   size of /data.bin in MiB (default 8; 0 is allowed)
#
# Environment:
#   PUSH_CREDS=USER:PASS   credentials for the push (skopeo --dest-creds)
#   IMAGE_FORMAT=oci|v2s2  manifest format pushed (default oci: OCI manifest
#                          with application/vnd.oci.image.layer.v1.tar+gzip
#                          layers; v2s2: Docker schema 2 manifest with
#                          application/vnd.docker.image.rootfs.diff.tar.gzip)
#
# Image (linux/amd64, built with umoci):
#   layer 1: /hello.txt = "hello from lazypull\n"
#   layer 2: /data.bin  = SIZE_MB MiB of random (incompressible) bytes,
#            fresh for every run, so every run yields new blob digests.
#
# On success prints, one per line:
#   pushed REGISTRY/REPO:TAG
#   manifest-digest sha256:...
#   data.bin-sha256 <hex>
set -euo pipefail

usage() { sed -n 's/^#   \(make-small-image.sh .*\)/\1/p' "$0" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
registry=$1
ref=$2
size=${3:-8}
[[ $size =~ ^[0-9]+$ ]] || usage
case "$ref" in *:*) ;; *) usage ;; esac
repo=${ref%:*}

work=$(mktemp -d "${TMPDIR:-/tmp}/lazypull-small.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

layout=$work/oci
umoci init --layout "$layout"
umoci new --image "$layout:img"
umoci config --image "$layout:img" --os linux --architecture amd64 \
    --config.cmd /bin/sh --no-history

printf 'hello from lazypull\n' > "$work/hello.txt"
umoci insert --image "$layout:img" --history.comment "hello.txt" \
    "$work/hello.txt" /hello.txt

head -c $(( size * 1024 * 1024 )) /dev/urandom > "$work/data.bin"
umoci insert --image "$layout:img" --history.comment "data.bin" \
    "$work/data.bin" /data.bin
data_sha=$(sha256sum "$work/data.bin" | cut -d' ' -f1)

args=(--insecure-policy copy --quiet --dest-tls-verify=false)
if [ -n "${PUSH_CREDS:-}" ]; then args+=(--dest-creds "$PUSH_CREDS"); fi
case "${IMAGE_FORMAT:-oci}" in
    oci) args+=(--format oci) ;;
    v2s2) args+=(--format v2s2) ;;
    *) echo "make-small-image.sh: IMAGE_FORMAT must be oci or v2s2" >&2; exit 2 ;;
esac
args+=(--digestfile "$work/digest")
skopeo "${args[@]}" "oci:$layout:img" "docker://$registry/$repo:${ref##*:}"

echo "pushed $registry/$ref"
echo "manifest-digest $(cat "$work/digest")"
echo "data.bin-sha256 $data_sha"
