#!/usr/bin/env python3
"""mix-layers.py REGISTRY REPO PLAIN_TAG LAZY_TAG OUT_TAG N [break-toc]

Pushes REPO:OUT_TAG, an image whose first N layers come from PLAIN_TAG (ordinary gzip
layers) and the rest from LAZY_TAG (the same image converted to eStargz or zstd:chunked),
with the config's diff_ids taken to match. Both images must be single-platform OCI or
Docker manifests in the same repository, so every blob is already there. With
`break-toc`, the top layer's TOC digest annotation is wrong (its TOC fails verification).
"""
import hashlib
import json
import sys
import urllib.request

ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def get(url, accept=None):
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request) as response:
        return response.read()


def main():
    if len(sys.argv) not in (7, 8) or (len(sys.argv) == 8 and sys.argv[7] != "break-toc"):
        sys.exit(__doc__)
    registry, repo, plain_tag, lazy_tag, out_tag, n = sys.argv[1:7]
    break_toc = len(sys.argv) == 8
    n = int(n)
    base = f"http://{registry}/v2/{repo}"
    plain = json.loads(get(f"{base}/manifests/{plain_tag}", ACCEPT))
    lazy = json.loads(get(f"{base}/manifests/{lazy_tag}", ACCEPT))
    plain_config = json.loads(get(f"{base}/blobs/{plain['config']['digest']}"))
    lazy_config = json.loads(get(f"{base}/blobs/{lazy['config']['digest']}"))
    if len(plain["layers"]) != len(lazy["layers"]):
        sys.exit("mix-layers.py: the two images have different layer counts")

    config = dict(lazy_config)
    config["rootfs"] = {"type": "layers", "diff_ids":
                        plain_config["rootfs"]["diff_ids"][:n] + lazy_config["rootfs"]["diff_ids"][n:]}
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    upload = urllib.request.Request(f"{base}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(upload) as response:
        location = response.headers["Location"]
    if location.startswith("/"):
        location = f"http://{registry}{location}"
    separator = "&" if "?" in location else "?"
    put = urllib.request.Request(f"{location}{separator}digest={config_digest}", data=config_bytes, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(put).close()

    manifest = dict(lazy)
    manifest["config"] = dict(lazy["config"], digest=config_digest, size=len(config_bytes))
    manifest["layers"] = plain["layers"][:n] + lazy["layers"][n:]
    if break_toc:
        top = dict(manifest["layers"][-1])
        top["annotations"] = dict(top.get("annotations", {}),
                                  **{"containerd.io/snapshot/stargz/toc.digest": "sha256:" + "0" * 64})
        manifest["layers"][-1] = top
    body = json.dumps(manifest, separators=(",", ":")).encode()
    put = urllib.request.Request(f"{base}/manifests/{out_tag}", data=body, method="PUT",
                                 headers={"Content-Type": manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json")})
    urllib.request.urlopen(put).close()


if __name__ == "__main__":
    main()
