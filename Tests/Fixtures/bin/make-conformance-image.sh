#!/usr/bin/env bash
# make-conformance-image.sh - build lazypull's layer-semantics conformance
# image with umoci and push it to a (plain-HTTP, loopback) registry.
#
# Usage:
#   make-conformance-image.sh REGISTRY REPO:TAG
#   e.g. make-conformance-image.sh 127.0.0.1:5000 conformance:v1
#
# Needs: umoci, skopeo, python3, setfattr (attr), setcap (libcap2-bin),
# mknod/mkfifo; must run as root (device nodes, chown, security.capability).
# Prints nothing but errors; exit 0 on success.
#
# The image is an OCI image (manifest + config, gzip layers) with 4 layers.
# Every mtime is fixed (see T1..T4), so only gzip/umoci history timestamps
# differ between runs.  Expected merged tree (what a correct snapshotter must
# show), by layer:
#
# L1 (umoci repack, T1=1700000000)
#   /hello.txt                       "hello from lazypull\n", 0644
#   /empty                           empty file
#   /big/random-20M.bin              20 MiB, python random.Random(20240229)
#   /del/file-a /del/file-b /del/keep
#   /deldir/{x,y,sub/z}              whole dir deleted in L2
#   /opq/{old1,old2,sub/old3}        hidden by the opaque dir of L3
#   /recreated/{old-a,old-b}         deleted in L2, recreated in L4
#   /replace/file-to-dir (file)      becomes a dir in L4
#   /replace/dir-to-file/child       dir becomes a file in L3
#   /meta/chmod-me (0644)            chmod 0600 in L2 (metadata only)
#   /meta/chown-me (0:0)             chown 1000:1000 in L2 (metadata only)
#   /meta/xattr-me                   gets user.added=later in L2
#   /hardlinks/{a,b,c}               one inode, 3 names, 0640 1000:1000
#   /links/rel -> ../hello.txt, /links/abs -> /hello.txt,
#   /links/dangling -> /does/not/exist, /links/dirlink -> ../names
#   /dev-nodes/fifo (p 0644), /dev-nodes/null (c 1,3 0666),
#   /dev-nodes/loop0 (b 7,0 0660)
#   /modes/setuid (04755), /modes/setgid (02755), /modes/sticky-file (01644),
#   /modes/sticky-dir (01777 dir), /modes/setgid-dir (02775 dir 1000:1000)
#   /caps/netraw                     security.capability = cap_net_raw+ep
#   /xattrs/file                     user.color=blue, user.bin=0x00ff10
#   /xattrs/dir (dir)                user.dirattr=d
#   /owners/u1000 (1000:1000), /owners/nobody (65534:65534),
#   /owners/big (100000:100000), /owners/mixed (1000:65534),
#   /owners/dir-1000 (dir 1000:1000)
#   /names/<176 x 'n'>.txt           180-character file name
#   /names/ünïcödé-日本語.txt
#   /names/with space.txt
#   /deep/<5 x 60-char dirs>/leaf.txt  total path > 300 bytes
#   /modified.txt                    "v1\n" (becomes "v2\n" in L4)
# L2 (umoci repack, T2=1700000100)
#   rm /del/file-a; rm -r /deldir; rm -r /recreated;
#   chmod 0600 /meta/chmod-me; chown 1000:1000 /meta/chown-me;
#   setfattr user.added=later /meta/xattr-me
# L3 (hand-made tar via python tarfile, `umoci raw add-layer`, T3=1700000200)
#   opq/ + opq/.wh..wh..opq + opq/new1.txt + opq/newsub/new2.txt
#   del/ + del/.wh.file-b            explicit whiteout of a lower file
#   pax/pax-xattr.txt                PAX SCHILY.xattr.user.pax=v
#   owners/huge-uid                  uid/gid 2500000 (PAX uid/gid records)
#   replace/ + replace/dir-to-file   regular file replacing a lower dir
# L4 (umoci repack after a fresh unpack, T4=1700000300)
#   /recreated/new-c; /replace/file-to-dir/child (dir replacing a file);
#   /modified.txt "v2\n"
#
# No layer holds a hardlink to a file of a lower layer.
set -euo pipefail

die() { echo "make-conformance-image.sh: $*" >&2; exit 1; }
[ $# -eq 2 ] || { sed -n 's/^#   \(make-conformance-image.sh REG.*\)/usage: \1/p' "$0" >&2; exit 2; }
registry=$1
ref=$2
case "$ref" in
    *:*) repo=${ref%:*}; tag=${ref##*:} ;;
    *) die "REPO:TAG expected, got '$ref'" ;;
esac
[ -n "$repo" ] && [ -n "$tag" ] || die "REPO:TAG expected, got '$ref'"
[ "$(id -u)" = 0 ] || die "must run as root"
for c in umoci skopeo python3 setfattr setcap mknod mkfifo; do
    command -v "$c" >/dev/null || die "$c not found"
done

T1=1700000000
T2=1700000100
T3=1700000200
T4=1700000300
# Anything modified after this instant was touched by the current step.
NEWER=@1700001000

work=$(mktemp -d "${TMPDIR:-/tmp}/lazypull-conformance.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

img="$work/oci"
bundle="$work/bundle"
rootfs="$bundle/rootfs"

# Give every path changed during this step the layer's fixed mtime.
stamp_changed() { # T
    find "$rootfs" -newermt "$NEWER" -exec touch -h -d "@$1" {} +
}

umoci init --layout "$img"
umoci new --image "$img:$tag"
umoci unpack --image "$img:$tag" "$bundle"

# ---------------------------------------------------------------- layer 1
r=$rootfs
printf 'hello from lazypull\n' > "$r/hello.txt"
: > "$r/empty"
printf 'v1\n' > "$r/modified.txt"

mkdir -p "$r/big"
python3 - "$r/big/random-20M.bin" <<'EOF'
import random, sys
rng = random.Random(20240229)
with open(sys.argv[1], "wb") as f:
    for _ in range(20):
        f.write(rng.randbytes(1024 * 1024))
EOF

mkdir -p "$r/del" "$r/deldir/sub" "$r/opq/sub" "$r/recreated" "$r/replace/dir-to-file"
printf 'file a, deleted in layer 2\n' > "$r/del/file-a"
printf 'file b, whited out by hand in layer 3\n' > "$r/del/file-b"
printf 'kept\n' > "$r/del/keep"
printf 'x\n' > "$r/deldir/x"
printf 'y\n' > "$r/deldir/y"
printf 'z\n' > "$r/deldir/sub/z"
printf 'old1\n' > "$r/opq/old1"
printf 'old2\n' > "$r/opq/old2"
printf 'old3\n' > "$r/opq/sub/old3"
printf 'old-a\n' > "$r/recreated/old-a"
printf 'old-b\n' > "$r/recreated/old-b"
printf 'I am a file for now\n' > "$r/replace/file-to-dir"
printf 'child of a dir that becomes a file\n' > "$r/replace/dir-to-file/child"

mkdir -p "$r/meta"
printf 'chmod me\n' > "$r/meta/chmod-me"
chmod 0644 "$r/meta/chmod-me"
printf 'chown me\n' > "$r/meta/chown-me"
printf 'xattr me\n' > "$r/meta/xattr-me"

mkdir -p "$r/hardlinks"
printf 'one inode, three names\n' > "$r/hardlinks/a"
chown 1000:1000 "$r/hardlinks/a"
chmod 0640 "$r/hardlinks/a"
ln "$r/hardlinks/a" "$r/hardlinks/b"
ln "$r/hardlinks/a" "$r/hardlinks/c"

mkdir -p "$r/links"
ln -s ../hello.txt "$r/links/rel"
ln -s /hello.txt "$r/links/abs"
ln -s /does/not/exist "$r/links/dangling"
ln -s ../names "$r/links/dirlink"

mkdir -p "$r/dev-nodes"
mkfifo -m 0644 "$r/dev-nodes/fifo"
mknod -m 0666 "$r/dev-nodes/null" c 1 3
mknod -m 0660 "$r/dev-nodes/loop0" b 7 0

mkdir -p "$r/modes"
printf 'setuid\n' > "$r/modes/setuid"; chmod 04755 "$r/modes/setuid"
printf 'setgid\n' > "$r/modes/setgid"; chmod 02755 "$r/modes/setgid"
printf 'sticky\n' > "$r/modes/sticky-file"; chmod 01644 "$r/modes/sticky-file"
mkdir "$r/modes/sticky-dir"; chmod 01777 "$r/modes/sticky-dir"
mkdir "$r/modes/setgid-dir"; chown 1000:1000 "$r/modes/setgid-dir"; chmod 02775 "$r/modes/setgid-dir"

mkdir -p "$r/caps"
printf 'pretend ping\n' > "$r/caps/netraw"
chmod 0755 "$r/caps/netraw"
setcap cap_net_raw+ep "$r/caps/netraw"   # after chown/chmod: chown clears caps

mkdir -p "$r/xattrs/dir"
printf 'has user xattrs\n' > "$r/xattrs/file"
setfattr -n user.color -v blue "$r/xattrs/file"
setfattr -n user.bin -v 0x00ff10 "$r/xattrs/file"
setfattr -n user.dirattr -v d "$r/xattrs/dir"

mkdir -p "$r/owners/dir-1000"
chown 1000:1000 "$r/owners/dir-1000"
printf 'u1000\n' > "$r/owners/u1000"; chown 1000:1000 "$r/owners/u1000"
printf 'nobody\n' > "$r/owners/nobody"; chown 65534:65534 "$r/owners/nobody"
printf 'big\n' > "$r/owners/big"; chown 100000:100000 "$r/owners/big"
printf 'mixed\n' > "$r/owners/mixed"; chown 1000:65534 "$r/owners/mixed"

mkdir -p "$r/names"
long180="$(printf 'n%.0s' $(seq 1 176)).txt"
[ ${#long180} -eq 180 ] || die "internal: long name is ${#long180} chars"
printf '180-char name\n' > "$r/names/$long180"
printf 'non-ascii name\n' > "$r/names/ünïcödé-日本語.txt"
printf 'space\n' > "$r/names/with space.txt"

deep="$r/deep"
for i in 1 2 3 4 5; do
    deep="$deep/$(printf "d$i%.0s" $(seq 1 30))"   # 60 chars per component
done
mkdir -p "$deep"
printf 'deep leaf\n' > "$deep/leaf.txt"

stamp_changed "$T1"
umoci repack --refresh-bundle --history.created_by "lazypull conformance layer 1" \
    --image "$img:$tag" "$bundle"

# ---------------------------------------------------------------- layer 2
rm "$r/del/file-a"
rm -r "$r/deldir" "$r/recreated"
chmod 0600 "$r/meta/chmod-me"
chown 1000:1000 "$r/meta/chown-me"
setfattr -n user.added -v later "$r/meta/xattr-me"
# Metadata changes leave meta/'s mtime alone, so umoci would not emit meta/
# and containerd would give the parent an apply-time mtime: bump it.
touch -d "@$T2" "$r/meta"
stamp_changed "$T2"
umoci repack --refresh-bundle --history.created_by "lazypull conformance layer 2" \
    --image "$img:$tag" "$bundle"

# ---------------------------------------------------------------- layer 3
python3 - "$work/layer3.tar" "$T3" <<'EOF'
import io, sys, tarfile

out, mtime = sys.argv[1], int(sys.argv[2])
tf = tarfile.open(out, "w", format=tarfile.PAX_FORMAT)

def add(name, type_, mode, data=b"", uid=0, gid=0, pax=None):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.uname = ti.gname = ""
    ti.mtime = mtime
    if pax:
        ti.pax_headers = dict(pax)
    if type_ == tarfile.REGTYPE:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        tf.addfile(ti)

# Opaque directory: hides opq/old1, opq/old2, opq/sub of layer 1.
add("opq", tarfile.DIRTYPE, 0o755)
add("opq/.wh..wh..opq", tarfile.REGTYPE, 0o644)
add("opq/new1.txt", tarfile.REGTYPE, 0o644, b"new content after opaque\n")
add("opq/newsub", tarfile.DIRTYPE, 0o755)
add("opq/newsub/new2.txt", tarfile.REGTYPE, 0o644, b"new2\n")
# Hand-written whiteout of a file from layer 1.
add("del", tarfile.DIRTYPE, 0o755)
add("del/.wh.file-b", tarfile.REGTYPE, 0o644)
# xattr carried in a PAX record written by python, not by umoci.
add("pax", tarfile.DIRTYPE, 0o755)
add("pax/pax-xattr.txt", tarfile.REGTYPE, 0o644, b"pax xattr\n",
    pax={"SCHILY.xattr.user.pax": "v"})
# ids above the ustar octal limit (2097151): PAX uid/gid records.
add("owners", tarfile.DIRTYPE, 0o755)
add("owners/huge-uid", tarfile.REGTYPE, 0o644, b"huge uid\n", uid=2500000, gid=2500000)
# A regular file replacing a directory (with content) of layer 1, with no
# whiteout: the applier must remove the lower directory.  (umoci repack
# would emit a stray whiteout below the new file, so this is done by hand.)
add("replace", tarfile.DIRTYPE, 0o755)
add("replace/dir-to-file", tarfile.REGTYPE, 0o644, b"I used to be a dir\n")
tf.close()
EOF
umoci raw add-layer --history.created_by "lazypull conformance layer 3 (hand-made)" \
    --image "$img:$tag" "$work/layer3.tar"
rm -f "$work/layer3.tar"

# ---------------------------------------------------------------- layer 4
rm -rf "$bundle"
umoci unpack --image "$img:$tag" "$bundle"
[ ! -e "$r/opq/old1" ] && [ -e "$r/opq/new1.txt" ] || die "umoci did not apply the opaque dir"
[ -f "$r/replace/dir-to-file" ] && [ ! -e "$r/del/file-b" ] || die "umoci did not apply layer 3"
mkdir "$r/recreated"
printf 'new-c\n' > "$r/recreated/new-c"
rm "$r/replace/file-to-dir"
mkdir "$r/replace/file-to-dir"
printf 'child of a file that became a dir\n' > "$r/replace/file-to-dir/child"
printf 'v2\n' > "$r/modified.txt"
stamp_changed "$T4"
umoci repack --refresh-bundle --history.created_by "lazypull conformance layer 4" \
    --image "$img:$tag" "$bundle"

umoci gc --layout "$img"

# Every layer must carry an entry for each parent dir of its entries:
# otherwise the applier invents the parent's metadata (apply-time mtime).
python3 - "$img" "$tag" <<'EOF'
import gzip, json, os, sys, tarfile
img, tag = sys.argv[1], sys.argv[2]
blob = lambda d: os.path.join(img, "blobs", *d.split(":", 1))
idx = json.load(open(os.path.join(img, "index.json")))
desc = [m for m in idx["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag][0]
manifest = json.load(open(blob(desc["digest"])))
for n, layer in enumerate(manifest["layers"], 1):
    with gzip.open(blob(layer["digest"])) as f, tarfile.open(fileobj=f, mode="r|") as tf:
        names = set()
        for ti in tf:
            name = ti.name.strip("/")
            name = "" if name == "." else name
            parent = os.path.dirname(name)
            if parent and parent not in names:
                sys.exit("make-conformance-image.sh: layer %d: %r has no parent entry" % (n, name))
            names.add(name)
EOF
skopeo --insecure-policy copy -q --dest-tls-verify=false \
    "oci:$img:$tag" "docker://$registry/$repo:$tag" >/dev/null
