#!/usr/bin/env python3
"""make-hostile-lazy-images.py - push images whose eStargz/zstd:chunked metadata lies.

Usage:
  make-hostile-lazy-images.py REGISTRY REPO [TAG ...]

Pushes REGISTRY/REPO:<tag> for every tag below (or the ones named), each a valid OCI image
(manifest, config with the layer's real diff_id) whose single layer is a real eStargz blob
(gzip members of one tar stream, the TOC as `stargz.index.json`, the 51-byte footer) written
here, with one field of its TOC, footer or annotations made hostile. The TOC digest annotation
always matches the TOC, so the hostile value reaches lazypull's validation: a digest proves the
bytes are the ones the image names, not that they are benign (docs/security.md).

Tags (the hostile part):
  uid-minus-one        a file's uid is -1
  mode-minus-one       a file's mode is -1
  dev-major-2-32       a character device's devMajor is 2^32
  size-near-max        a file's size is 2^63 - 2 (one chunk)
  sizes-past-max       two files of 2^62 + 2^61 bytes each
  chunk-offset-past    a chunk whose chunkOffset is past its file's size
  inner-offset-neg     a chunk with innerOffset -1
  chunk-size-2-44      a chunk of 2^44 bytes
  offset-past-toc      a file whose offset lies past the TOC
  nul-name             a file named "..\\0x/..\\0x/etc/passwd-lazy"
  dotdot-name          a file named "../../etc/passwd-lazy"
  deep-path            a file 30,000 directories deep
  duplicates           40,000 entries with the same name (valid: the last wins)
  many-entries         600,000 entries (more than the validator allows)
  huge-file            a file of 2^40 bytes in 16,384 chunks that all lie (valid structure)
  elf-phoff            the default program is an ELF file with e_phoff near 2^63
  footer-negative      the footer's TOC offset is "-fffffffffffffff" and the manifest's layer size 2^63 - 1
  zstd-position-max    a zstd:chunked layer whose manifest position is "9223372036854775807:1:1:1"
  layer-sizes-past-max two layers whose sizes add up past 2^63 - 1

Prints one line per tag pushed: "<tag> <manifest digest>". Needs skopeo.

  make-hostile-lazy-images.py --poison REGISTRY LYING_DIR

pushes REGISTRY/victim:v1 and victim:v2 (the same eStargz layer: /bin/app "victim app", /secret
0600 "victim secret"; v2 adds a layer) and writes to LYING_DIR (for lying-registry.py) the image
evil:v1, whose manifest names the victim's blob digest and whose config claims the victim's
diff_id, while the bytes served under that digest are the attacker's own eStargz (/bin/app
"evil app", /secret "evil secret") with a TOC of its own and its own TOC digest annotation.
"""
import gzip, hashlib, io, json, os, shutil, struct, subprocess, sys, tarfile, tempfile

MTIME = 1700000000
MODTIME = "2023-11-14T22:13:20Z"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def member(data):
    return gzip.compress(data, compresslevel=1, mtime=0)


def header(name, kind, size=0, linkname="", mode=0o644, devmajor=0, devminor=0):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = mode
    info.mtime = MTIME
    info.linkname = linkname
    info.devmajor, info.devminor = devmajor, devminor
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT)


class EStargz:
    """One eStargz blob written entry by entry; `toc` entries may be changed before `blob()`."""

    def __init__(self):
        self.parts = []          # compressed members
        self.offset = 0          # compressed bytes so far
        self.pending = b""       # uncompressed tar bytes not yet in a member
        self.tar = io.BytesIO()  # the whole uncompressed stream, for the diff_id
        self.toc = []

    def _flush(self):
        if self.pending:
            data = member(self.pending)
            self.parts.append(data)
            self.offset += len(data)
            self.pending = b""

    def _raw(self, data):
        self.pending += data
        self.tar.write(data)

    def dir(self, name, **toc):
        self._raw(header(name, tarfile.DIRTYPE, mode=0o755))
        self.toc.append(dict({"name": name, "type": "dir", "mode": 0o755, "modtime": MODTIME}, **toc))

    def file(self, name, data, mode=0o644, **toc):
        self._raw(header(name, tarfile.REGTYPE, size=len(data), mode=mode))
        entry = {"name": name, "type": "reg", "size": len(data), "mode": mode, "modtime": MODTIME}
        if data:
            self._flush()
            entry.update(offset=self.offset, digest=sha256(data), chunkDigest=sha256(data))
            self._raw(data)
            self._flush()
            self._raw(b"\0" * ((512 - len(data) % 512) % 512))
        entry.update(toc)
        self.toc.append(entry)
        return entry

    def char(self, name, major, minor, **toc):
        self._raw(header(name, tarfile.CHRTYPE, devmajor=major, devminor=minor, mode=0o600))
        entry = dict({"name": name, "type": "char", "mode": 0o600, "devMajor": major, "devMinor": minor,
                      "modtime": MODTIME}, **toc)
        self.toc.append(entry)
        return entry

    def blob(self, footer_offset=None):
        """The blob and its TOC digest; the TOC goes in the tar stream as stargz.index.json."""
        self._flush()
        toc_json = json.dumps({"version": 1, "entries": self.toc}, separators=(",", ":")).encode()
        toc_offset = self.offset
        toc_tar = header("stargz.index.json", tarfile.REGTYPE, size=len(toc_json)) + toc_json
        toc_tar += b"\0" * ((512 - len(toc_json) % 512) % 512) + b"\0" * 1024
        self.tar.write(toc_tar)
        text = footer_offset if footer_offset is not None else "%016x" % toc_offset
        extra = b"SG" + struct.pack("<H", 22) + text.encode() + b"STARGZ"
        footer = bytes([0x1F, 0x8B, 8, 4, 0, 0, 0, 0, 0, 0xFF]) + struct.pack("<H", len(extra)) + extra
        footer += b"\x01\x00\x00\xff\xff" + struct.pack("<II", 0, 0)   # an empty stored block, CRC, size
        assert len(footer) == 51
        return b"".join(self.parts) + member(toc_tar) + footer, sha256(toc_json), sha256(self.tar.getvalue())


ELF_PHOFF = (b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
             + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x401000, 2**63 - 16, 0, 0, 64, 56, 4, 64, 0, 0))


def base_layer():
    """A few ordinary entries every hostile layer starts with."""
    e = EStargz()
    e.dir("etc/")
    e.file("etc/motd", b"hostile image\n")
    return e


def image(tag):
    """(layers as [(blob, toc digest, diff_id, media type, extra annotations)], config extras)."""
    e = base_layer()
    config = {}
    footer = None
    if tag == "uid-minus-one":
        e.file("bin/app", b"x" * 100, uid=-1)
    elif tag == "mode-minus-one":
        e.file("bin/app", b"x" * 100, mode=0o755)["mode"] = -1
    elif tag == "dev-major-2-32":
        e.char("dev/evil", 1, 3)["devMajor"] = 2**32
    elif tag == "size-near-max":
        f = e.file("big", b"y" * 100)
        f["size"] = 2**63 - 2
    elif tag == "sizes-past-max":
        for name in ("a", "b"):
            e.file(name, b"z" * 100)["size"] = 2**62 + 2**61
    elif tag == "chunk-offset-past":
        f = e.file("bin/app", b"x" * 100, chunkSize=50)
        e.toc.append({"name": "bin/app", "type": "chunk", "offset": f["offset"], "chunkOffset": 500,
                      "chunkSize": 50, "chunkDigest": f["digest"]})
    elif tag == "inner-offset-neg":
        e.file("bin/app", b"x" * 100, innerOffset=-1)
    elif tag == "chunk-size-2-44":
        e.file("bin/app", b"x" * 100)["chunkSize"] = 2**44
    elif tag == "offset-past-toc":
        e.file("bin/app", b"x" * 100)["offset"] = 10**9
    elif tag == "nul-name":
        e.file("bin/app", b"x" * 100)["name"] = "..\0x/..\0x/..\0x/etc/passwd-lazy"
    elif tag == "dotdot-name":
        e.file("bin/app", b"x" * 100)["name"] = "../../../../etc/passwd-lazy"
    elif tag == "deep-path":
        e.file("deep", b"x" * 100)["name"] = "d/" * 30000 + "file"
    elif tag == "duplicates":
        for _ in range(40000):
            e.toc.append({"name": "dup", "type": "reg", "size": 0, "mode": 0o644, "modtime": MODTIME})
    elif tag == "many-entries":
        e.toc.extend({"name": "m%d" % i, "type": "reg", "size": 0} for i in range(600000))
    elif tag == "huge-file":
        f = e.file("huge", b"h" * 100)
        size, chunk = 2**40, 64 << 20
        f.update(size=size, chunkSize=chunk)
        for i in range(1, size // chunk):
            e.toc.append({"name": "huge", "type": "chunk", "offset": f["offset"], "chunkOffset": i * chunk,
                          "chunkSize": chunk, "chunkDigest": f["digest"]})
    elif tag == "elf-phoff":
        e.dir("bin/")
        e.file("bin/app", ELF_PHOFF, mode=0o755)
        config = {"Entrypoint": ["/bin/app"]}
    elif tag == "footer-negative":
        footer = "-fffffffffffffff"
    elif tag in ("zstd-position-max", "layer-sizes-past-max"):
        pass
    else:
        sys.exit("unknown tag " + tag)
    blob, toc_digest, diff_id = e.blob(footer)
    annotations = {"containerd.io/snapshot/stargz/toc.digest": toc_digest}
    media = "application/vnd.oci.image.layer.v1.tar+gzip"
    layers = [(blob, diff_id, media, annotations, None)]
    if tag == "footer-negative":
        layers = [(blob, diff_id, media, annotations, 2**63 - 1)]
    elif tag == "zstd-position-max":
        zstd_annotations = {"io.github.containers.zstd-chunked.manifest-position": "9223372036854775807:1:1:1",
                            "io.github.containers.zstd-chunked.manifest-checksum": sha256(b"")}
        layers = [(blob, diff_id, "application/vnd.oci.image.layer.v1.tar+zstd", zstd_annotations, None)]
    elif tag == "layer-sizes-past-max":
        layers = [(blob, diff_id, media, annotations, 2**62 + 2**61), (blob, diff_id, media, annotations, 2**62 + 2**61)]
    return layers, config


def write_layout(layout, tag, layers, exec_config):
    def put(data):
        path = os.path.join(layout, "blobs", "sha256", sha256(data)[7:])
        with open(path, "wb") as f:
            f.write(data)
        return sha256(data)

    config = {"architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
              "rootfs": {"type": "layers", "diff_ids": [diff for _, diff, _, _, _ in layers]},
              "config": dict({"Cmd": ["/bin/sh"]}, **exec_config)}
    config_bytes = json.dumps(config).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config_bytes),
                           "size": len(config_bytes)},
                "layers": [{"mediaType": media, "digest": put(blob), "size": size if size is not None else len(blob),
                            "annotations": annotations} for blob, _, media, annotations, size in layers]}
    manifest_bytes = json.dumps(manifest).encode()
    index_path = os.path.join(layout, "index.json")
    index = json.load(open(index_path))
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest_bytes),
                               "size": len(manifest_bytes),
                               "annotations": {"org.opencontainers.image.ref.name": tag}})
    json.dump(index, open(index_path, "w"))
    return sha256(manifest_bytes)


def push_manifest_only(registry, repo, tag, layout):
    """skopeo refuses manifests whose layer sizes lie; those go up with the registry API."""
    import urllib.request
    index = json.load(open(os.path.join(layout, "index.json")))
    digest = [m["digest"] for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag][0]
    manifest = open(os.path.join(layout, "blobs", "sha256", digest[7:]), "rb").read()
    doc = json.loads(manifest)
    for desc in [doc["config"]] + doc["layers"]:
        data = open(os.path.join(layout, "blobs", "sha256", desc["digest"][7:]), "rb").read()
        start = urllib.request.Request("http://%s/v2/%s/blobs/uploads/" % (registry, repo), method="POST")
        location = urllib.request.urlopen(start).headers["Location"]
        if location.startswith("/"):
            location = "http://" + registry + location
        sep = "&" if "?" in location else "?"
        put = urllib.request.Request(location + sep + "digest=" + desc["digest"], data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(put).read()
    req = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (registry, repo, tag), data=manifest, method="PUT",
                                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    urllib.request.urlopen(req).read()


TAGS = ["uid-minus-one", "mode-minus-one", "dev-major-2-32", "size-near-max", "sizes-past-max", "chunk-offset-past",
        "inner-offset-neg", "chunk-size-2-44", "offset-past-toc", "nul-name", "dotdot-name", "deep-path", "duplicates",
        "many-entries", "huge-file", "elf-phoff", "footer-negative", "zstd-position-max", "layer-sizes-past-max"]


def poison(registry, lying_dir):
    victim = EStargz()
    victim.dir("bin/")
    victim.file("bin/app", b"victim app\n", mode=0o755)
    victim.file("secret", b"victim secret\n", mode=0o600)
    v_blob, v_toc, v_diff = victim.blob()
    top = EStargz()
    top.file("top.txt", b"second layer of v2\n")
    t_blob, t_toc, t_diff = top.blob()
    media = "application/vnd.oci.image.layer.v1.tar+gzip"
    v_layer = (v_blob, v_diff, media, {"containerd.io/snapshot/stargz/toc.digest": v_toc}, None)
    t_layer = (t_blob, t_diff, media, {"containerd.io/snapshot/stargz/toc.digest": t_toc}, None)
    work = tempfile.mkdtemp(prefix="lazypull-poison.")
    try:
        layout = os.path.join(work, "oci")
        os.makedirs(os.path.join(layout, "blobs", "sha256"))
        json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(layout, "oci-layout"), "w"))
        json.dump({"schemaVersion": 2, "manifests": []}, open(os.path.join(layout, "index.json"), "w"))
        for tag, layers in (("v1", [v_layer]), ("v2", [v_layer, t_layer])):
            write_layout(layout, tag, layers, {})
            subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                            "oci:%s:%s" % (layout, tag), "docker://%s/victim:%s" % (registry, tag)],
                           check=True, stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(work)
    # The attacker: its own bytes and TOC, filed under the victim's blob digest and diff_id.
    evil = EStargz()
    evil.dir("bin/")
    evil.file("bin/app", b"evil app\n", mode=0o755)
    evil.file("secret", b"evil secret\n", mode=0o644)
    e_blob, e_toc, _ = evil.blob()
    os.makedirs(os.path.join(lying_dir, "blobs"), exist_ok=True)
    os.makedirs(os.path.join(lying_dir, "manifests", "evil"), exist_ok=True)
    def put(name, data):
        open(os.path.join(lying_dir, "blobs", name), "wb").write(data)
    put(sha256(v_blob), e_blob)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [v_diff]},
                         "config": {"Cmd": ["/bin/app"]}}).encode()
    put(sha256(config), config)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config),
                           "size": len(config)},
                "layers": [{"mediaType": media, "digest": sha256(v_blob), "size": len(e_blob),
                            "annotations": {"containerd.io/snapshot/stargz/toc.digest": e_toc}}]}
    open(os.path.join(lying_dir, "manifests", "evil", "v1"), "wb").write(json.dumps(manifest).encode())
    print("victim-layer", sha256(v_blob))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--poison":
        return poison(sys.argv[2], sys.argv[3])
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    registry, repo, tags = sys.argv[1], sys.argv[2], sys.argv[3:] or TAGS
    work = tempfile.mkdtemp(prefix="lazypull-hostile-lazy.")
    try:
        layout = os.path.join(work, "oci")
        os.makedirs(os.path.join(layout, "blobs", "sha256"))
        json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(layout, "oci-layout"), "w"))
        json.dump({"schemaVersion": 2, "manifests": []}, open(os.path.join(layout, "index.json"), "w"))
        for tag in tags:
            layers, config = image(tag)
            digest = write_layout(layout, tag, layers, config)
            if any(size is not None for _, _, _, _, size in layers):
                push_manifest_only(registry, repo, tag, layout)
            else:
                subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                                "oci:%s:%s" % (layout, tag), "docker://%s/%s:%s" % (registry, repo, tag)],
                               check=True, stdout=subprocess.DEVNULL)
            print(tag, digest)
    finally:
        shutil.rmtree(work)


main()
