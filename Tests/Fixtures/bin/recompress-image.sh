#!/usr/bin/env bash
# recompress-image.sh SRC_REF DST_REF zstd|none
#
# Copies an image from a (plain-http) registry to another tag with its layers recompressed:
# `zstd` through skopeo's own zstd support, `none` by decompressing every gzip layer into a
# plain tar (media type application/vnd.oci.image.layer.v1.tar), pushed with the registry API
# directly (skopeo would compress them again). The config and its diff_ids are unchanged, so
# the unpacked tree must be too.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: recompress-image.sh SRC_REF DST_REF zstd|none" >&2; exit 2; }
src=$1 dst=$2 format=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case "$format" in
zstd)
    skopeo copy -q --src-tls-verify=false --dest-compress --dest-compress-format zstd "docker://$src" "oci:$work/oci:img"
    ;;
none)
    skopeo copy -q --src-tls-verify=false "docker://$src" "oci:$work/oci:img"
    python3 - "$work/oci" "$dst" <<'PY'
import gzip, hashlib, json, os, sys, urllib.request
layout, dst = sys.argv[1], sys.argv[2]
host, rest = dst.split("/", 1)
name, tag = rest.rsplit(":", 1)
def upload(digest, data):
    req = urllib.request.Request(f"http://{host}/v2/{name}/blobs/uploads/", method="POST", data=b"")
    location = urllib.request.urlopen(req).headers["Location"]
    if location.startswith("/"): location = f"http://{host}{location}"
    sep = "&" if "?" in location else "?"
    req = urllib.request.Request(f"{location}{sep}digest={digest}", method="PUT", data=data,
                                 headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req).read()
def blob(d): return os.path.join(layout, "blobs", "sha256", d.split(":", 1)[1])
def put(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    open(blob(d), "wb").write(data)
    return d
index = json.load(open(os.path.join(layout, "index.json")))
entry = index["manifests"][0]
manifest = json.load(open(blob(entry["digest"])))
for layer in manifest["layers"]:
    raw = gzip.decompress(open(blob(layer["digest"]), "rb").read())
    layer["digest"], layer["size"] = put(raw), len(raw)
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
for d in [manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]:
    upload(d, open(blob(d), "rb").read())
data = json.dumps(manifest).encode()
req = urllib.request.Request(f"http://{host}/v2/{name}/manifests/{tag}", method="PUT", data=data,
                             headers={"Content-Type": manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json")})
urllib.request.urlopen(req).read()
PY
    exit 0
    ;;
*) echo "recompress-image.sh: format must be zstd or none" >&2; exit 2 ;;
esac
skopeo copy -q --dest-tls-verify=false "oci:$work/oci:img" "docker://$dst"
