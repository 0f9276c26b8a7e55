#!/usr/bin/env bash
# make-hostile-images.sh - push four single-layer images whose layer tries
# to write outside the extraction root, to a (plain-HTTP, loopback) registry.
#
# Usage:
#   make-hostile-images.sh REGISTRY CANARY_DIR
#   e.g. make-hostile-images.sh 127.0.0.1:5000 /tmp/lazypull-canary
#
# CANARY_DIR must be absolute; it is normalised like os.path.abspath
# (trailing slashes, "." and ".." removed; symlinks NOT resolved) and need
# not exist.  Below, C = the normalised CANARY_DIR.  The images (valid OCI
# images: manifest, config with correct diff_ids, one tar+gzip layer made
# with python tarfile and `umoci raw add-layer` on an empty `umoci new`
# image) are:
#
#   REGISTRY/hostile:dotdot    regular file "../../../../../../../../..C/canary"
#                              (9 ".." components, then C), content "pwned"
#   REGISTRY/hostile:absolute  regular file "C/canary" (leading "/"),
#                              content "pwned"
#   REGISTRY/hostile:symlink   symlink "evil" -> "C", then regular file
#                              "evil/canary", content "pwned"
#   REGISTRY/hostile:hardlink  hardlink "link" whose target is "C/canary"
#                              (absolute)
#
# "pwned" is 5 bytes, no newline.  A safe extractor never creates or
# changes C/canary (nor links to it).  Before pushing, the script re-reads
# each layer blob from the OCI layout and checks the entries are exactly as
# listed (no name normalisation happened).  Prints nothing but errors.
set -euo pipefail

die() { echo "make-hostile-images.sh: $*" >&2; exit 1; }
[ $# -eq 2 ] || { sed -n 's/^#   \(make-hostile-images.sh REG.*\)/usage: \1/p' "$0" >&2; exit 2; }
registry=$1
canary_dir=$2
case "$canary_dir" in /*) ;; *) die "CANARY_DIR must be absolute: $canary_dir" ;; esac
canary_dir=$(python3 -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "$canary_dir")
[ "$canary_dir" != / ] || die "CANARY_DIR must not be /"
for c in umoci skopeo python3; do
    command -v "$c" >/dev/null || die "$c not found"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/lazypull-hostile.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

img="$work/oci"
umoci init --layout "$img"

# Writes $work/<tag>.tar for every tag; with --check LAYOUT, instead checks
# the last layer of each tag in the OCI layout.
cat > "$work/hostile.py" <<'EOF'
import gzip, io, json, os, sys, tarfile

MTIME = 1700000000
PWNED = b"pwned"


def entries(canary_dir):
    """tag -> list of (name, type, linkname, data)."""
    c = canary_dir
    return {
        "dotdot": [("../" * 8 + ".." + c + "/canary", tarfile.REGTYPE, "", PWNED)],
        "absolute": [(c + "/canary", tarfile.REGTYPE, "", PWNED)],
        "symlink": [("evil", tarfile.SYMTYPE, c, b""),
                    ("evil/canary", tarfile.REGTYPE, "", PWNED)],
        "hardlink": [("link", tarfile.LNKTYPE, c + "/canary", b"")],
    }


def write(tag, ents, path):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, type_, linkname, data in ents:
            # TarInfo built by hand: TarFile.add()/gettarinfo() would strip
            # the leading "/", addfile() writes the name as given.
            ti = tarfile.TarInfo(name)
            ti.type = type_
            ti.linkname = linkname
            ti.mode = 0o777 if type_ == tarfile.SYMTYPE else 0o644
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mtime = MTIME
            ti.size = len(data) if type_ == tarfile.REGTYPE else 0
            tf.addfile(ti, io.BytesIO(data) if type_ == tarfile.REGTYPE else None)


def check(layout, tag, ents):
    blob = lambda d: os.path.join(layout, "blobs", *d.split(":", 1))
    idx = json.load(open(os.path.join(layout, "index.json")))
    descs = [m for m in idx["manifests"]
             if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    if len(descs) != 1:
        sys.exit("tag %s: %d manifests" % (tag, len(descs)))
    manifest = json.load(open(blob(descs[0]["digest"])))
    if len(manifest["layers"]) != 1:
        sys.exit("tag %s: %d layers" % (tag, len(manifest["layers"])))
    with gzip.open(blob(manifest["layers"][0]["digest"])) as f:
        raw = f.read()
    got = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        for ti in tf:
            data = tf.extractfile(ti).read() if ti.isreg() else b""
            got.append((ti.name, ti.type, ti.linkname, data))
    if got != ents:
        sys.exit("tag %s: layer entries %r, expected %r" % (tag, got, ents))


def main():
    mode, arg, canary_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    for tag, ents in entries(canary_dir).items():
        if mode == "--write":
            write(tag, ents, os.path.join(arg, tag + ".tar"))
        else:
            check(arg, tag, ents)


main()
EOF

python3 "$work/hostile.py" --write "$work" "$canary_dir"
tags="dotdot absolute symlink hardlink"
for t in $tags; do
    umoci new --image "$img:$t"
    umoci raw add-layer --history.created_by "lazypull hostile layer ($t)" \
        --image "$img:$t" "$work/$t.tar"
done
python3 "$work/hostile.py" --check "$img" "$canary_dir" ||
    die "layer entries are not as intended"
for t in $tags; do
    skopeo --insecure-policy copy -q --dest-tls-verify=false \
        "oci:$img:$t" "docker://$registry/hostile:$t" >/dev/null
done
