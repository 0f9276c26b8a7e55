"""The systems under comparison, each run cold: state wiped and page cache dropped before the
clock starts, daemons (containerd, lazypull serve, stargz-snapshotter) already running, as they
are on a real host. A run returns what it measured; anything it started is gone afterwards.
"""
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from .tools import FIXTURES, drop_caches, kill_matching, now, pids_matching, process_usage, run, output, \
    unmount_below, wait_for


@dataclass(frozen=True)
class System:
    name: str
    title: str
    formats: tuple      # the image formats it runs
    lazy: bool


SYSTEMS = {
    "lazypull": System("lazypull", "lazypull mount + chroot", ("estargz", "estargz-opt", "zstdchunked"), True),
    "containerd+lazypull": System("containerd+lazypull", "containerd + lazypull (rpull + ctr run)",
                                  ("estargz", "estargz-opt", "zstdchunked"), True),
    "containerd+stargz": System("containerd+stargz", "containerd + stargz-snapshotter 0.12 (rpull + ctr run)",
                                ("estargz", "estargz-opt"), True),
    "lazypull-eager": System("lazypull-eager", "lazypull mount --eager + chroot", ("gzip",), False),
    "containerd": System("containerd", "containerd (ctr images pull + ctr run)", ("gzip",), False),
    "podman": System("podman", "podman 4.3 (pull + run)", ("gzip",), False),
}

BACKGROUND_ACTIVE = re.compile(r'"background"\s*:\s*"(running|paused|prefetching)"')


class Runner:
    """Runs one system once. `bench` provides the work directory, binaries and links."""

    def __init__(self, bench):
        self.bench = bench
        self.lazypull = bench.lazypull
        self.work = bench.work

    # MARK: - shared steps

    def workload_ok(self, image, text):
        if image.expect not in text:
            raise RuntimeError(f"{image.name} workload printed {text.strip()[-300:]!r}, expected {image.expect!r}")

    def chroot(self, image, rootfs):
        """The workload in a chroot of `rootfs`, with /proc and /dev in a private mount namespace
        (they vanish with it)."""
        script = 'mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" && exec chroot "$@"'
        text = output(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", script, "sh",
                       rootfs, *image.workload], timeout=300)
        self.workload_ok(image, text)

    def start_lazypull(self, root, socket):
        stop_lazypull(root)
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        log = open(os.path.join(self.work, "lazypull-serve.log"), "a")
        subprocess.Popen([self.lazypull, "serve", "--root", root, "--address", socket], stdout=log, stderr=log,
                         start_new_session=True)
        if not wait_for(lambda: os.path.exists(socket) and os.path.exists(f"{root}/run/fuse-host.sock"), 20):
            raise RuntimeError("lazypull serve did not start (see lazypull-serve.log)")

    def lazypull_usage(self, root):
        """Peak RSS (KiB) of the layer host and the control plane, and their CPU seconds."""
        host = [process_usage(p) for p in pids_matching(f"fuse-host --root {root}")]
        serve = [process_usage(p) for p in pids_matching(f"serve --root {root}")]
        host = [u for u in host if u]
        serve = [u for u in serve if u]
        return {
            "host_rss_kib": max((u[0] for u in host), default=None),
            "control_rss_kib": max((u[0] for u in serve), default=None),
            "cpu_seconds": sum(u[1] for u in host + serve),
        }

    def containerd(self, state, proxy=None):
        env = dict(os.environ)
        if proxy:
            env["CONTAINERD_PROXY_SNAPSHOTTER"] = proxy
        subprocess.run([f"{FIXTURES}/containerd.sh", "stop", state], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)
        run([f"{FIXTURES}/containerd.sh", "start", state], env=env)
        return ["ctr", "--address", f"{state}/containerd.sock"]

    # MARK: - systems

    def run(self, system, image, fmt, link, index, wait_background=False):
        ref = self.bench.reference(image, fmt, link)
        counter = self.bench.counter(link)
        method = {"lazypull": self.lazypull_mount, "lazypull-eager": self.lazypull_eager,
                  "containerd": self.containerd_eager, "podman": self.podman,
                  "containerd+lazypull": self.proxy_snapshotter, "containerd+stargz": self.proxy_snapshotter}[system]
        return method(system=system, image=image, ref=ref, counter=counter, index=index,
                      wait_background=wait_background)

    def lazypull_mount(self, image, ref, counter, wait_background, **_):
        root, mnt = f"{self.work}/lp", f"{self.work}/lp-mnt"
        self.start_lazypull(root, f"{self.work}/lp.sock")
        try:
            os.makedirs(mnt, exist_ok=True)
            drop_caches()
            before = counter()
            t0 = now()
            run([self.lazypull, "mount", "--quiet", "--root", root, ref, mnt])
            mounted = now()
            self.chroot(image, mnt)
            result = {"seconds": now() - t0, "mount_seconds": mounted - t0, "bytes": _delta(counter(), before)}
            result.update(self.lazypull_usage(root))
            if wait_background:
                active = lambda: BACKGROUND_ACTIVE.search(
                    run([self.lazypull, "status", "--json", "--root", root, mnt])) is not None
                wait_for(lambda: not active(), 600, interval=0.1)
                result["background_seconds"] = now() - t0
                result["background_bytes"] = _delta(counter(), before)
                usage = self.lazypull_usage(root)
                result["host_rss_kib_after_background"] = usage["host_rss_kib"]
                result["cpu_seconds_after_background"] = usage["cpu_seconds"]
            return result
        finally:
            subprocess.run([self.lazypull, "umount", "--root", root, mnt], capture_output=True)
            stop_lazypull(root)
            shutil.rmtree(root, ignore_errors=True)

    def lazypull_eager(self, image, ref, counter, **_):
        root, mnt = f"{self.work}/lpe", f"{self.work}/lpe-mnt"
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(mnt, exist_ok=True)
        try:
            drop_caches()
            before = counter()
            t0 = now()
            run([self.lazypull, "mount", "--eager", "--quiet", "--root", root, ref, mnt])
            self.chroot(image, mnt)
            return {"seconds": now() - t0, "bytes": _delta(counter(), before)}
        finally:
            subprocess.run([self.lazypull, "umount", "--root", root, mnt], capture_output=True)
            unmount_below(root)
            shutil.rmtree(root, ignore_errors=True)

    def containerd_eager(self, image, ref, counter, index, **_):
        state = f"{self.work}/ctd"
        ctr = self.containerd(state)
        try:
            drop_caches()
            before = counter()
            t0 = now()
            run(ctr + ["images", "pull", "--plain-http", ref])
            text = output(ctr + ["run", "--rm", ref, f"lazypull-bench-{os.getpid()}-{index}", *image.workload])
            self.workload_ok(image, text)
            return {"seconds": now() - t0, "bytes": _delta(counter(), before)}
        finally:
            subprocess.run([f"{FIXTURES}/containerd.sh", "stop", state], capture_output=True)
            shutil.rmtree(state, ignore_errors=True)

    def podman(self, image, ref, counter, **_):
        state = f"{self.work}/podman"
        podman = ["podman", "--root", f"{state}/root", "--runroot", f"{state}/run", "--tmpdir", f"{state}/tmp",
                  "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        shutil.rmtree(state, ignore_errors=True)
        try:
            drop_caches()
            before = counter()
            t0 = now()
            run(podman + ["pull", "-q", "--tls-verify=false", ref])
            # runc here may lower rlimits but not raise them: podman's defaults are above ours.
            text = output(podman + ["run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
                                    "--ulimit", "nproc=4096:4096", ref, *image.workload])
            self.workload_ok(image, text)
            return {"seconds": now() - t0, "bytes": _delta(counter(), before)}
        finally:
            subprocess.run(podman + ["rmi", "-a", "-f"], capture_output=True)
            unmount_below(state)
            shutil.rmtree(state, ignore_errors=True)

    def proxy_snapshotter(self, system, image, ref, counter, index, **_):
        name = system.split("+")[1]
        state, socket = f"{self.work}/snap-{name}", f"{self.work}/snap-{name}.sock"
        containerd_state = f"{state}-containerd"
        stop_snapshotter(state, containerd_state)
        shutil.rmtree(state, ignore_errors=True)
        if os.path.exists(socket):
            os.remove(socket)
        try:
            if name == "lazypull":
                self.start_lazypull(state, socket)
            else:
                log = open(os.path.join(self.work, "stargz.log"), "a")
                subprocess.Popen([self.bench.stargz, "-address", socket, "-root", state], stdout=log, stderr=log,
                                 start_new_session=True)
                if not wait_for(lambda: os.path.exists(socket), 20):
                    raise RuntimeError("stargz-snapshotter did not start (see stargz.log)")
            ctr = self.containerd(containerd_state, proxy=f"{name}={socket}")
            address = ctr[1:]
            drop_caches()
            before = counter()
            t0 = now()
            run(["ctr-remote", *address, "images", "rpull", "--plain-http", "--snapshotter", name, ref])
            text = output(ctr + ["run", "--rm", "--snapshotter", name, ref,
                                 f"lazypull-bench-{name}-{os.getpid()}-{index}", *image.workload])
            self.workload_ok(image, text)
            result = {"seconds": now() - t0, "bytes": _delta(counter(), before)}
            if name == "lazypull":
                result.update(self.lazypull_usage(state))
            return result
        finally:
            stop_snapshotter(state, containerd_state)
            shutil.rmtree(state, ignore_errors=True)
            shutil.rmtree(containerd_state, ignore_errors=True)


def stop_lazypull(root):
    """Ends the control plane and layer host of `root` and everything they mounted."""
    kill_matching(f"--root {root}")
    unmount_below(root)


def stop_snapshotter(state, containerd_state):
    subprocess.run([f"{FIXTURES}/containerd.sh", "stop", containerd_state], capture_output=True)
    kill_matching(state)
    unmount_below(state)


def _delta(after, before):
    return None if after is None or before is None else after - before
