#!/usr/bin/env python3
"""make-seeds.py - writes the seed inputs of every fuzz target into Tests/Fuzz/<target>/.

Seeds are small valid inputs (and a few near-misses) for each parser, made here from the
formats' specifications with Python's standard library, so a fuzzer starts from inputs that
reach deep into each parser. Inputs a fuzzer found crashes with are added next to them by
hand (named crash-*) and stay as regression tests. Run from anywhere; rewrites seed-* files.
"""
import gzip, io, json, os, struct, tarfile

ROOT = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def tar_bytes(entries, fmt=tarfile.PAX_FORMAT, pax_headers=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers or {}) as t:
        for name, kind, data, extra in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mtime = 1700000000
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            for k, v in (extra or {}).items():
                setattr(info, k, v)
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return buf.getvalue()


# references
for i, ref in enumerate(["busybox", "docker.io/library/ubuntu:22.04", "127.0.0.1:5000/a/b:tag",
                         "localhost/x@sha256:" + "a" * 64, "[::1]:5000/img", "ghcr.io/o/r:v1.2-rc@sha256:" + "0" * 64,
                         "127.evil.example/img", "Ubuntu", "a//b", "img:-x"]):
    put("reference", str(i), ref)

# WWW-Authenticate
for i, h in enumerate(['Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull"',
                       'Basic realm="registry"', 'Bearer realm="gopher://x/",scope="a,b"',
                       'Bearer realm=unquoted, Basic realm="b"', 'Bearer realm="a\\"b"']):
    put("www-authenticate", str(i), h)

# manifests, indexes, configs (first byte: which Content-Type the registry claimed)
digest = "sha256:" + "ab" * 32
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 100},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": 10,
                        "annotations": {"containerd.io/snapshot/stargz/toc.digest": digest}},
                       {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": digest, "size": 20,
                        "annotations": {"io.github.containers.zstd-chunked.manifest-position": "1:2:3:1",
                                        "io.github.containers.zstd-chunked.manifest-checksum": digest}}]}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 5,
                        "platform": {"os": "linux", "architecture": "amd64"}}]}
config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest]},
          "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "Env": ["PATH=/usr/bin:/bin"]}}
put("manifest", "manifest", b"\x01" + json.dumps(manifest).encode())
put("manifest", "index", b"\x02" + json.dumps(index).encode())
put("manifest", "config", b"\x00" + json.dumps(config).encode())
put("manifest", "schema1", b"\x04" + json.dumps({"schemaVersion": 1, "name": "x"}).encode())
big = dict(manifest, layers=[dict(manifest["layers"][0], size=2**63 - 1)] * 2)
put("manifest", "sizes-overflow", b"\x01" + json.dumps(big).encode())

# Content-Range values
for i, v in enumerate(["bytes 0-0/1", "bytes 100-199/1000", "bytes */1000", "bytes 0-0/-9223372036854775808",
                       "bytes 5-4/10", "bytes 0-9223372036854775807/9223372036854775807", "items 0-1/2"]):
    put("content-range", str(i), v)

# tar streams
files = [("dir", tarfile.DIRTYPE, b"", None), ("dir/file", tarfile.REGTYPE, b"hello\n", None),
         ("dir/link", tarfile.SYMTYPE, b"", {"linkname": "file"}),
         ("dir/hard", tarfile.LNKTYPE, b"", {"linkname": "dir/file"}),
         ("dir/.wh.gone", tarfile.REGTYPE, b"", None), ("dir/.wh..wh..opq", tarfile.REGTYPE, b"", None)]
put("tar", "pax", tar_bytes(files))
put("tar", "gnu", tar_bytes(files + [("long/" + "n" * 150, tarfile.REGTYPE, b"x", None)], fmt=tarfile.GNU_FORMAT))
put("tar", "ustar", tar_bytes(files, fmt=tarfile.USTAR_FORMAT))
put("tar", "xattr", tar_bytes([("f", tarfile.REGTYPE, b"x", {"pax_headers": {"SCHILY.xattr.user.a": "v"}})]))
put("tar", "global", tar_bytes(files[:2], pax_headers={"comment": "global header"}))

# TOC JSON (stargz.index.json / zstd:chunked manifest schema)
toc = {"version": 1, "entries": [
    {"name": "bin/", "type": "dir", "mode": 493, "modtime": "2024-01-01T00:00:00Z"},
    {"name": "bin/app", "type": "reg", "size": 10, "mode": 493, "offset": 0, "chunkSize": 6,
     "digest": digest, "chunkDigest": digest, "uid": 0, "gid": 0, "modtime": "2024-01-01T00:00:00Z",
     "xattrs": {"user.a": "dmFsdWU="}},
    {"name": "bin/app", "type": "chunk", "offset": 20, "chunkOffset": 6, "chunkSize": 4, "chunkDigest": digest},
    {"name": "bin/sh", "type": "symlink", "linkName": "app"},
    {"name": "bin/hard", "type": "hardlink", "linkName": "bin/app"},
    {"name": "dev/null", "type": "char", "devMajor": 1, "devMinor": 3, "mode": 438},
    {"name": "etc/.wh.gone", "type": "reg", "size": 0},
    {"name": "etc/.wh..wh..opq", "type": "reg", "size": 0}]}
# toc-validator: 8 bytes of the blob's data end (big-endian), then the JSON.
put("toc-validator", "toc", struct.pack(">q", 100) + json.dumps(toc).encode())
bad = json.loads(json.dumps(toc))
bad["entries"][1].update(uid=-1, size=2**63 - 1)
put("toc-validator", "hostile", struct.pack(">q", 100) + json.dumps(bad).encode())

# eStargz blob: gzip members of a tar, then the TOC tar in its own member, then the footer.
def member(data):
    return gzip.compress(data, mtime=0)

payload = member(tar_bytes(files[:2])[:-1024])
toc_json = json.dumps(toc).encode()
toc_member = member(tar_bytes([("stargz.index.json", tarfile.REGTYPE, toc_json, None)]))
offset = len(payload)
extra = b"SG" + struct.pack("<H", 22) + b"%016xSTARGZ" % offset
footer = bytes([0x1F, 0x8B, 8, 4, 0, 0, 0, 0, 0, 0xFF]) + struct.pack("<H", len(extra)) + extra
footer += b"\x01\x00\x00\xff\xff" + struct.pack("<II", 0, 0)   # an empty stored block, CRC and size
assert len(footer) == 51
put("estargz", "blob", payload + toc_member + footer)
put("estargz", "footer-only", footer)

# zstd:chunked: "offset:length:uncompressed:type" line, then the blob.
blob = b"\x28\xb5\x2f\xfd" + b"\x00" * 40
put("zstd-chunked", "position", b"8:20:100:1\n" + blob)
put("zstd-chunked", "overflow", b"9223372036854775807:1:1:1\n" + blob)

# ELF-64: a header and one PT_INTERP program header.
interp = b"/lib64/ld-linux-x86-64.so.2\x00"
ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\x00" * 8
ehdr += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, 1, 64, 0, 0)
phdr = struct.pack("<IIQQQQQQ", 3, 4, 120, 120, 120, len(interp), len(interp), 1)
put("elf", "interp", ehdr + phdr + interp)
put("elf", "phoff-overflow", ehdr[:32] + struct.pack("<Q", 2**63 - 8) + ehdr[40:] + phdr)
