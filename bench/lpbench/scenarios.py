"""Measurements beside the cold-start matrix: raw transfer time of an image over a link, and
the full-tree read and metadata walk of a lazily mounted tree against the same tree on overlayfs."""
import os
import shutil
import subprocess
import threading

from .systems import BACKGROUND_ACTIVE, stop_lazypull
from .tools import drop_caches, now, run, unmount_below, wait_for


def raw_transfer(registry, image_name, layers):
    """Seconds to download every layer blob at once over the link (curl, in parallel)."""
    def fetch(digest):
        subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://{registry}/v2/bench/{image_name}/blobs/{digest}"],
                       check=True)
    drop_caches()
    t0 = now()
    threads = [threading.Thread(target=fetch, args=(digest,)) for digest, _ in layers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return now() - t0


def timed(argv_shell):
    drop_caches()
    t0 = now()
    subprocess.run(["sh", "-c", argv_shell], check=True, capture_output=True)
    return now() - t0


def tree_reads(bench, image, runs):
    """Full-tree read (`tar cf - | wc -c`) and metadata walk (`tar cf /dev/null`), page cache
    dropped, of the lazy eStargz mount after its background fetch against the eager tree on
    overlayfs; both from the loopback registry, alternating."""
    work = bench.work
    lazy_root, lazy_mnt = f"{work}/tr-lazy", f"{work}/tr-lazy-mnt"
    eager_root, eager_mnt = f"{work}/tr-eager", f"{work}/tr-eager-mnt"
    runner = bench.runner
    try:
        run([bench.lazypull, "mount", "--eager", "--read-only", "--quiet", "--root", eager_root,
             bench.reference(image, "gzip", None), eager_mnt])
        runner.start_lazypull(lazy_root, f"{work}/tr.sock")
        run([bench.lazypull, "mount", "--read-only", "--quiet", "--root", lazy_root,
             bench.reference(image, "estargz", None), lazy_mnt])
        wait_for(lambda: BACKGROUND_ACTIVE.search(
            run([bench.lazypull, "status", "--json", "--root", lazy_root, lazy_mnt])) is None, 900, interval=0.2)
        result = {"overlayfs_read": [], "lazypull_read": [], "overlayfs_walk": [], "lazypull_walk": []}
        for _ in range(runs):
            result["overlayfs_read"].append(timed(f"tar cf - -C {eager_mnt} . | wc -c"))
            result["lazypull_read"].append(timed(f"tar cf - -C {lazy_mnt} . | wc -c"))
            result["overlayfs_walk"].append(timed(f"tar cf /dev/null -C {eager_mnt} ."))
            result["lazypull_walk"].append(timed(f"tar cf /dev/null -C {lazy_mnt} ."))
        return result
    finally:
        subprocess.run([bench.lazypull, "umount", "--root", lazy_root, lazy_mnt], capture_output=True)
        subprocess.run([bench.lazypull, "umount", "--root", eager_root, eager_mnt], capture_output=True)
        stop_lazypull(lazy_root)
        for root in (lazy_root, eager_root):
            unmount_below(root)
            shutil.rmtree(root, ignore_errors=True)
