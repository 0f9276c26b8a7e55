#!/usr/bin/env bash
# make-multiplatform-image.sh - build and push a two-platform OCI image index.
#
# Usage:
#   make-multiplatform-image.sh REGISTRY REPO:TAG
#
#   REGISTRY  host:port of a registry on loopback, e.g. 127.0.0.1:5000
#
# Environment:
#   PUSH_CREDS=USER:PASS   credentials for push and check (skopeo --*-creds)
#
# Pushes an OCI image index (application/vnd.oci.image.index.v1+json) with
# two entries, platform {os: linux, architecture: amd64} and
# {os: linux, architecture: arm64} (no variant).  Each entry is an OCI image
# with one gzip layer holding /platform.txt = "amd64\n" resp. "arm64\n"; each
# config carries the matching "architecture" and "os".  Built with umoci (two
# tags in one layout), the index blob and index.json are written here, pushed
# with `skopeo copy --all`, then read back with `skopeo inspect --raw` to check
# that the registry holds the index with both platforms.
#
# On success prints, one per line:
#   pushed REGISTRY/REPO:TAG
#   index-digest sha256:...
#   linux/amd64 sha256:...      (manifest digests)
#   linux/arm64 sha256:...
set -euo pipefail

usage() { sed -n 's/^#   \(make-multiplatform-image.sh .*\)/\1/p' "$0" >&2; exit 2; }
[ $# -eq 2 ] || usage
registry=$1
ref=$2
case "$ref" in *:*) ;; *) usage ;; esac
repo=${ref%:*}
tag=${ref##*:}

work=$(mktemp -d "${TMPDIR:-/tmp}/lazypull-multi.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

layout=$work/oci
umoci init --layout "$layout"
for arch in amd64 arm64; do
    umoci new --image "$layout:$arch"
    umoci config --image "$layout:$arch" --os linux --architecture "$arch" \
        --config.cmd /bin/sh --no-history
    printf '%s\n' "$arch" > "$work/platform-$arch.txt"
    umoci insert --image "$layout:$arch" --history.comment "platform.txt" \
        "$work/platform-$arch.txt" /platform.txt
done

python3 - "$layout" "$tag" <<'EOF'
import hashlib, json, os, sys

layout, tag = sys.argv[1], sys.argv[2]

def blob_path(digest):
    algo, hexd = digest.split(":", 1)
    return os.path.join(layout, "blobs", algo, hexd)

def read_json_blob(digest):
    with open(blob_path(digest), "rb") as f:
        return json.load(f)

with open(os.path.join(layout, "index.json")) as f:
    top = json.load(f)
by_name = {d.get("annotations", {}).get("org.opencontainers.image.ref.name"): d
           for d in top["manifests"]}

entries = []
for arch in ("amd64", "arm64"):
    desc = by_name[arch]
    manifest = read_json_blob(desc["digest"])
    config = read_json_blob(manifest["config"]["digest"])
    if config.get("architecture") != arch or config.get("os") != "linux":
        sys.exit("config of %s says %s/%s" % (arch, config.get("os"),
                                               config.get("architecture")))
    entries.append({
        "mediaType": desc.get("mediaType", "application/vnd.oci.image.manifest.v1+json"),
        "digest": desc["digest"],
        "size": desc["size"],
        "platform": {"architecture": arch, "os": "linux"},
    })

index = {"schemaVersion": 2,
         "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": entries}
raw = json.dumps(index, indent=2).encode()
digest = "sha256:" + hashlib.sha256(raw).hexdigest()
with open(blob_path(digest), "wb") as f:
    f.write(raw)

top["manifests"] = [{
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "digest": digest,
    "size": len(raw),
    "annotations": {"org.opencontainers.image.ref.name": tag},
}]
tmp = os.path.join(layout, "index.json.tmp")
with open(tmp, "w") as f:
    json.dump(top, f)
os.replace(tmp, os.path.join(layout, "index.json"))
EOF

copy_args=(--insecure-policy copy --quiet --all --dest-tls-verify=false
           --digestfile "$work/digest")
inspect_args=(inspect --raw --tls-verify=false)
if [ -n "${PUSH_CREDS:-}" ]; then
    copy_args+=(--dest-creds "$PUSH_CREDS")
    inspect_args+=(--creds "$PUSH_CREDS")
fi
skopeo "${copy_args[@]}" "oci:$layout:$tag" "docker://$registry/$repo:$tag"
skopeo "${inspect_args[@]}" "docker://$registry/$repo:$tag" > "$work/pushed.json"

python3 - "$work/pushed.json" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    idx = json.load(f)
if idx.get("mediaType") != "application/vnd.oci.image.index.v1+json":
    sys.exit("registry does not hold an OCI index: mediaType=%r" % idx.get("mediaType"))
plats = sorted("%s/%s" % (m["platform"]["os"], m["platform"]["architecture"])
               for m in idx.get("manifests", []) if "platform" in m)
if plats != ["linux/amd64", "linux/arm64"]:
    sys.exit("unexpected platforms in pushed index: %r" % plats)
EOF

echo "pushed $registry/$ref"
echo "index-digest $(cat "$work/digest")"
python3 -c '
import json, sys
for m in json.load(open(sys.argv[1]))["manifests"]:
    p = m["platform"]
    print("%s/%s %s" % (p["os"], p["architecture"], m["digest"]))
' "$work/pushed.json"
