#!/usr/bin/env bash
# reference-tree.sh - the reference answer: pull REF with containerd, mount
# its rootfs read-only (containerd's overlayfs snapshotter) and write
# treedump.py's description of it to OUTFILE.
#
# Usage:
#   reference-tree.sh CONTAINERD_SOCKET REF OUTFILE
#   e.g. reference-tree.sh /tmp/ctd/containerd.sock 127.0.0.1:5000/conformance:v1 ref.txt
#
# REF is pulled over plain HTTP (loopback test registries).  Environment:
# CTR_NAMESPACE (default "default"), CTR_SNAPSHOTTER (default "overlayfs").
# The mount is removed (`ctr images unmount --rm`) and the temp dir deleted
# on every exit path.  OUTFILE is written atomically (temp file + rename).
# The root line's mtime is not dumped (treedump.py never prints it).
set -euo pipefail

die() { echo "reference-tree.sh: $*" >&2; exit 1; }
[ $# -eq 3 ] || { sed -n 's/^#   \(reference-tree.sh CON.*\)/usage: \1/p' "$0" >&2; exit 2; }
sock=$1
ref=$2
out=$3
[ -S "$sock" ] || die "not a socket: $sock"
here=$(cd "$(dirname "$0")" && pwd)
treedump="$here/treedump.py"
[ -f "$treedump" ] || die "treedump.py not found next to $0"

ns=${CTR_NAMESPACE:-default}
snap=${CTR_SNAPSHOTTER:-overlayfs}
ctr_() { ctr --address "$sock" --namespace "$ns" "$@"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lazypull-reftree.XXXXXX")
mnt="$tmp/rootfs"
mkdir "$mnt"
outtmp="$out.tmp.$$"
mounted=0
cleanup() {
    local rc=$?
    if [ "$mounted" = 1 ] || mountpoint -q "$mnt" 2>/dev/null; then
        ctr_ images unmount --snapshotter "$snap" --rm "$mnt" >/dev/null 2>&1 ||
            umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
    if mountpoint -q "$mnt" 2>/dev/null; then
        echo "reference-tree.sh: could not unmount $mnt" >&2
        rc=1
    else
        rm -rf "$tmp"
    fi
    rm -f "$outtmp"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ctr_ images pull --plain-http --snapshotter "$snap" "$ref" >"$tmp/pull.log" 2>&1 ||
    { cat "$tmp/pull.log" >&2; die "pull of $ref failed"; }
mounted=1
ctr_ images mount --snapshotter "$snap" "$ref" "$mnt" >"$tmp/mount.log" 2>&1 ||
    { cat "$tmp/mount.log" >&2; die "mount of $ref failed"; }
mountpoint -q "$mnt" || die "ctr images mount did not mount $mnt"

python3 "$treedump" "$mnt" >"$outtmp"
mv -f "$outtmp" "$out"
