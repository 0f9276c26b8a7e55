"""The benchmark images: built from Debian packages with mmdebstrap, pushed to the bench's
registry, and converted there by the reference tools (ctr-remote from stargz-snapshotter).

Every image has two layers, like most application images: Debian bookworm minbase, then the
application's packages. Builds and conversions are cached under the bench cache, keyed by the
image's definition, so a second `make bench` starts measuring at once.
"""
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

from .tools import FIXTURES, run

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Starts the cluster Debian's postgresql package creates at install, answers one query, stops.
PG_HELLO = """#!/bin/sh
set -e
run() { setpriv --reuid=postgres --regid=postgres --clear-groups "$@"; }
run /usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/postgresql/15/main -s -w -l /tmp/postgresql.log \\
    -o "-c config_file=/etc/postgresql/15/main/postgresql.conf -c listen_addresses= -c ssl=off -k /tmp" start
run /usr/bin/psql -h /tmp -d postgres -tAc 'SELECT 1'
run /usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/postgresql/15/main -s -m immediate stop
"""

GCC_HELLO = """#!/bin/sh
set -e
printf '#include <stdio.h>\\nint main(void) { puts("hello"); return 0; }\\n' > /tmp/hello.c
gcc -o /tmp/hello /tmp/hello.c
/tmp/hello
"""


@dataclass(frozen=True)
class BenchImage:
    """An image and its workload: the command whose first useful output ends a cold start."""
    name: str
    packages: tuple = ()
    workload: tuple = ()        # argv, argv[0] absolute
    expect: str = ""            # the workload's output contains this
    files: tuple = ()           # (path in the image, content, mode) added to the app layer
    synthetic_files: int = 0    # instead of packages: this many small files under /data

    def key(self):
        text = json.dumps([self.name, self.packages, self.workload, self.files, self.synthetic_files, 2])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


IMAGES = {
    "python": BenchImage("python", ("python3",), ("/usr/bin/python3", "-c", 'print("hello")'), "hello"),
    "gcc": BenchImage("gcc", ("gcc", "libc6-dev"), ("/usr/local/bin/gcc-hello",), "hello",
                      files=(("usr/local/bin/gcc-hello", GCC_HELLO, 0o755),)),
    "nodejs": BenchImage("nodejs", ("nodejs",), ("/usr/bin/node", "-e", "console.log(1)"), "1"),
    "postgresql": BenchImage("postgresql", ("postgresql",), ("/usr/local/bin/pg-hello",), "1",
                             files=(("usr/local/bin/pg-hello", PG_HELLO, 0o755),)),
    "jre": BenchImage("jre", ("openjdk-17-jre-headless",), ("/usr/bin/java", "-version"), "openjdk"),
    "files100k": BenchImage("files100k", (), ("/bin/cat", "/data/d042/f42042"), "file 42042",
                            synthetic_files=100_000),
}

FORMATS = ("gzip", "estargz", "estargz-opt", "zstdchunked")


def build(image, cache):
    """Returns `layout:tag`, an OCI layout holding `image`, building it on the first call."""
    if image.name == "python":
        # The test suite's python image: the same bytes, and the same build cache.
        out = os.path.join(cache, "images", "python-fixture")
        if not os.path.exists(os.path.join(out, "index.json")):
            os.makedirs(os.path.dirname(out), exist_ok=True)
            run([f"{FIXTURES}/make-python-image.sh", out, "bookworm"])
        return f"{out}:bookworm"
    out = os.path.join(cache, "images", f"{image.name}-{image.key()}")
    if os.path.exists(os.path.join(out, "index.json")):
        return f"{out}:bench"
    print(f"building the {image.name} image (mmdebstrap, cached in {out})...", flush=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    work = tempfile.mkdtemp(prefix=f"lazypull-bench-{image.name}-", dir="/var/tmp")
    try:
        base = _minbase(cache)
        layout = os.path.join(work, "layout")
        tagged = f"{layout}:bench"
        bundle = os.path.join(work, "bundle")
        rootfs = os.path.join(bundle, "rootfs")
        run(["umoci", "init", "--layout", layout])
        run(["umoci", "new", "--image", tagged])
        config = ["umoci", "config", "--image", tagged, "--os", "linux", "--architecture", "amd64",
                  "--config.env", PATH_ENV]
        for arg in image.workload[:1]:
            config += ["--config.cmd", arg]
        run(config)
        run(["umoci", "unpack", "--image", tagged, bundle])
        run(["tar", "-xf", base, "-C", rootfs])
        run(["umoci", "repack", "--refresh-bundle", "--image", tagged, bundle])
        if image.synthetic_files:
            _write_synthetic_files(rootfs, image.synthetic_files)
        else:
            app = os.path.join(work, "app.tar")
            run(["mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(image.packages),
                 "--format=tar", "bookworm", app])
            for entry in os.listdir(rootfs):
                path = os.path.join(rootfs, entry)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
            run(["tar", "-xf", app, "-C", rootfs])
        for path, content, mode in image.files:
            target = os.path.join(rootfs, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w") as f:
                f.write(content)
            os.chmod(target, mode)
        run(["umoci", "repack", "--image", tagged, bundle])
        run(["umoci", "gc", "--layout", layout])
        shutil.move(layout, out + ".tmp")
        os.rename(out + ".tmp", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return f"{out}:bench"


def _minbase(cache):
    path = os.path.join(cache, "images", "bookworm-minbase.tar")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run(["mmdebstrap", "--quiet", "--variant=minbase", "--format=tar", "bookworm", path + ".tmp"])
        os.rename(path + ".tmp", path)
    return path


def _write_synthetic_files(rootfs, count):
    """`count` small files of 0–1,023 bytes in directories of 1,000: the metadata-heavy image."""
    rng = random.Random(42)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 \n"
    for i in range(count):
        directory = os.path.join(rootfs, "data", f"d{i // 1000:03d}")
        if i % 1000 == 0:
            os.makedirs(directory, exist_ok=True)
        body = f"file {i}\n".encode() + bytes(rng.choice(alphabet) for _ in range(rng.randrange(1024)))
        with open(os.path.join(directory, f"f{i:05d}"), "wb") as f:
            f.write(body)


def reference(registry, image, fmt):
    return f"{registry}/bench/{image.name}:{fmt}"


def publish(image, oci, registry, cache, converter, formats=FORMATS):
    """Pushes `image` as gzip and the conversions in `formats` (eStargz, eStargz optimized for
    its workload, zstd:chunked) to `registry`, unless the registry's (cached) storage has them
    already. `converter` is a running containerd's socket, where ctr-remote converts."""
    missing = [f for f in ("gzip", *formats) if not published(image, oci, cache, [f])]
    if not missing:
        return
    print(f"converting the {image.name} image ({', '.join(missing)})...", flush=True)
    src = reference(registry, image, "gzip")
    if "gzip" in missing:
        run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{oci}", f"docker://{src}"])
        open(_marker(image, oci, cache, "gzip"), "w").close()
    ctr = ["ctr-remote", "--address", converter]
    conversions = {
        "estargz": ["images", "convert", "--estargz", "--oci", src],
        "zstdchunked": ["images", "convert", "--zstdchunked", "--oci", src],
        "estargz-opt": ["images", "optimize", "--oci", "--entrypoint", json.dumps(list(image.workload[:1])),
                        "--args", json.dumps(list(image.workload[1:])), src],
    }
    pulled = False
    for fmt, args in conversions.items():
        if fmt not in missing:
            continue
        if not pulled:
            run(ctr + ["images", "pull", "--plain-http", src])
            pulled = True
        dst = reference(registry, image, fmt)
        run(ctr + args + [dst])
        run(ctr + ["images", "push", "--plain-http", dst])
        open(_marker(image, oci, cache, fmt), "w").close()


def _marker(image, oci, cache, fmt):
    return os.path.join(cache, "registry", f"published-{image.name}-{_layout_digest(oci)}-{fmt}")


def published(image, oci, cache, formats=FORMATS):
    """Whether the cached registry storage holds `image` in `formats` already."""
    return all(os.path.exists(_marker(image, oci, cache, f)) for f in ("gzip", *formats))


def _layout_digest(oci):
    with open(os.path.join(oci.rsplit(":", 1)[0], "index.json")) as f:
        index = json.load(f)
    return index["manifests"][0]["digest"].split(":")[1][:16]


def layer_sizes(registry, image, fmt):
    """Compressed sizes of the image's layers, from its manifest."""
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                          f"docker://{reference(registry, image, fmt)}"],
                         check=True, capture_output=True, text=True).stdout
    manifest = json.loads(raw)
    return [(layer["digest"], layer["size"]) for layer in manifest["layers"]]
