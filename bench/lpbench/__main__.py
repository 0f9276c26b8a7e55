"""lazypull's benchmark driver (`make bench`, `make bench-full`).

HelloBench-style cold starts (Harter et al., "Slacker: Fast Distribution with Lazy Docker
Containers", FAST '16): time from nothing local to the workload's first useful output, for each
image, system and link, several cold runs each, interleaved so that drift on the machine hits
every system alike. Writes bench/results/<timestamp>/results.json, summary.md and charts.

    python3 -m lpbench [--profile quick|full] [--runs N] [--images a,b] [--systems a,b] [--links a,b]
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import traceback

from . import images as imagelib
from .images import IMAGES
from .linkemu import DelayProxy, LinkSpec
from .scenarios import raw_transfer, tree_reads
from .scratch import HostScratch, ScratchFS
from .systems import SYSTEMS, Runner, stop_lazypull, stop_snapshotter
from .tools import BENCH, FIXTURES, REPO, kill_matching, run, unmount_below
from . import report

LINKS = {
    "loopback": LinkSpec("loopback", None, 0),
    "100mbit": LinkSpec("100mbit", 100, 20),
    "20mbit": LinkSpec("20mbit", 20, 80),
}

EAGER = ("lazypull-eager", "containerd", "podman")


def quick_plan(image, link):
    """The quick profile: every system on the python image over 100 Mbit/s; the eager pullers
    (and lazypull) on loopback; the 100,000-file image's mount over 100 Mbit/s."""
    if image == "python" and link == "100mbit":
        return [(s, f) for s in SYSTEMS for f in SYSTEMS[s].formats]
    if image == "python" and link == "loopback":
        return [(s, "gzip") for s in EAGER] + [("lazypull", "estargz")]
    if image == "files100k" and link == "100mbit":
        return [("lazypull", "estargz"), ("containerd+lazypull", "estargz"), ("containerd", "gzip")]
    return []


def full_plan(image, link):
    return [(s, f) for s in SYSTEMS for f in SYSTEMS[s].formats]


PROFILES = {
    "quick": {"images": ["python", "files100k"], "links": ["loopback", "100mbit"], "runs": 3, "plan": quick_plan,
              "tree_reads": ["python"]},
    "full": {"images": list(IMAGES), "links": list(LINKS), "runs": 3, "plan": full_plan,
             "tree_reads": ["python", "nodejs", "jre", "files100k"]},
}


class Bench:
    def __init__(self, args):
        self.args = args
        self.cache = os.environ.get("BENCH_CACHE", "/var/tmp/lazypull-bench-cache")
        self.lazypull = os.environ.get("LAZYPULL_BIN", os.path.join(REPO, ".build/release/lazypull"))
        self.scratch = ScratchFS() if args.scratch == "ext4" else HostScratch()
        try:
            self.state_filesystem = self.scratch.describe()
            self.work = self.scratch.work
        except BaseException:
            self.scratch.close()
            raise
        self.port = int(os.environ.get("BENCH_PORT", "5091"))
        self.registry = f"127.0.0.1:{self.port}"
        self.proxies = {}
        self.stargz = os.path.join(self.cache, "stargz-bench")
        self.runner = Runner(self)

    def reference(self, image, fmt, link):
        proxy = self.proxies.get(link)
        host = f"127.0.0.1:{proxy.port}" if proxy else self.registry
        return imagelib.reference(host, image, fmt)

    def counter(self, link):
        proxy = self.proxies.get(link)
        return (lambda: proxy.downloaded) if proxy else (lambda: None)

    def start(self, links):
        env = dict(os.environ, REGISTRY_STORAGE=os.path.join(self.cache, "registry", "storage"))
        os.makedirs(env["REGISTRY_STORAGE"], exist_ok=True)
        run([f"{FIXTURES}/registry.sh", "start", f"{self.work}/registry", str(self.port), "plain"], env=env)
        for offset, name in enumerate(links, start=1):
            spec = LINKS[name]
            if spec.shaped:
                self.proxies[name] = DelayProxy(spec, self.port + offset, "127.0.0.1", self.port).start()

    def stop(self):
        for proxy in self.proxies.values():
            proxy.stop()
        for name in ("lp", "tr-lazy", "snap-lazypull", "snap-stargz"):
            stop_lazypull(f"{self.work}/{name}")
        stop_snapshotter(f"{self.work}/snap-stargz", f"{self.work}/snap-stargz-containerd")
        for state in ("ctd", "convert", "snap-lazypull-containerd"):
            subprocess.run([f"{FIXTURES}/containerd.sh", "stop", f"{self.work}/{state}"], capture_output=True)
        subprocess.run([f"{FIXTURES}/registry.sh", "stop", f"{self.work}/registry"], capture_output=True)
        kill_matching(self.work)
        unmount_below(self.work)
        shutil.rmtree(self.work, ignore_errors=True)
        self.scratch.close()


def versions(bench):
    def first_line(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unavailable"
    return {
        "lazypull": first_line(["git", "-C", REPO, "describe", "--always", "--dirty"]),
        "containerd": first_line(["containerd", "--version"]),
        "podman": first_line(["podman", "--version"]),
        "stargz-snapshotter": first_line(["dpkg-query", "-W", "-f", "${Version}\n",
                                          "golang-github-containerd-stargz-snapshotter-dev"]),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
    }


def main():
    ap = argparse.ArgumentParser(prog="lpbench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=PROFILES, default="quick")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--images", help="comma-separated subset of: " + ", ".join(IMAGES))
    ap.add_argument("--links", help="comma-separated subset of: " + ", ".join(LINKS))
    ap.add_argument("--systems", help="comma-separated subset of: " + ", ".join(SYSTEMS))
    ap.add_argument("--scratch", choices=("ext4", "host"), default="ext4",
                    help="where every system keeps its state: a fresh journaled ext4 on a loop device made "
                         "for this run (default), or the host's /var/tmp")
    ap.add_argument("--out", help="results directory (default: bench/results/<timestamp>)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("lpbench: run as root (mounts, containerd, page-cache drops)")
    profile = PROFILES[args.profile]
    runs = args.runs or profile["runs"]
    image_names = args.images.split(",") if args.images else profile["images"]
    link_names = args.links.split(",") if args.links else profile["links"]
    system_names = args.systems.split(",") if args.systems else list(SYSTEMS)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or os.path.join(BENCH, "results", stamp)
    os.makedirs(out, exist_ok=True)

    bench = Bench(args)
    data = {"profile": args.profile, "started": stamp, "runs_per_cell": runs,
            "machine": dict(versions(bench), state_filesystem=bench.state_filesystem),
            "links": {n: {"label": LINKS[n].label(), "mbit": LINKS[n].mbit, "rtt_ms": LINKS[n].rtt_ms}
                      for n in link_names},
            "images": {}, "systems": {n: SYSTEMS[n].title for n in system_names}, "runs": [], "peers": {},
            "raw_transfer": {}, "tree_reads": {}}
    try:
        bench.start(link_names)
        print(f"lpbench {args.profile}: images {', '.join(image_names)}; links {', '.join(link_names)}; "
              f"{runs} cold runs per cell; work {bench.work}", flush=True)
        if "containerd+stargz" in system_names and not os.access(bench.stargz, os.X_OK):
            try:
                run([os.path.join(BENCH, "stargz", "build.sh"), bench.stargz])
            except Exception as error:  # reported, not fatal: the other systems still run
                data["peers"]["containerd+stargz"] = f"could not build stargz-snapshotter: {error}"
        for name in image_names:
            image = IMAGES[name]
            oci = imagelib.build(image, bench.cache)
            # Only the formats this run reads: converting 100,000 files takes minutes.
            formats = sorted({fmt for link in link_names for system, fmt in profile["plan"](name, link)
                              if system in system_names} - {"gzip"}
                             | ({"estargz"} if name in profile["tree_reads"] else set()))
            converter = f"{bench.work}/convert"
            if not imagelib.published(image, oci, bench.cache, formats) \
                    and not os.path.exists(f"{converter}/containerd.sock"):
                run([f"{FIXTURES}/containerd.sh", "start", converter])
            imagelib.publish(image, oci, bench.registry, bench.cache, f"{converter}/containerd.sock", formats)
            data["images"][name] = {
                "workload": list(image.workload),
                "compressed_bytes": {fmt: sum(s for _, s in imagelib.layer_sizes(bench.registry, image, fmt))
                                     for fmt in ("gzip", *formats)},
            }
        subprocess.run([f"{FIXTURES}/containerd.sh", "stop", f"{bench.work}/convert"], capture_output=True)

        for link in link_names:
            cells = [(image, system, fmt) for image in image_names
                     for system, fmt in profile["plan"](image, link) if system in system_names]
            if LINKS[link].shaped:
                for image in sorted({c[0] for c in cells}):
                    layers = imagelib.layer_sizes(bench.registry, IMAGES[image], "estargz")
                    data["raw_transfer"].setdefault(image, {})[link] = raw_transfer(
                        f"127.0.0.1:{bench.proxies[link].port}", image, layers)
            for index in range(1, runs + 1):
                for image, system, fmt in cells:
                    if system in data["peers"]:
                        continue
                    record = {"image": image, "system": system, "format": fmt, "link": link, "run": index}
                    # The background fetch is timed in the last run of lazypull's plain eStargz.
                    wait_background = system == "lazypull" and fmt == "estargz" and index == runs \
                        and LINKS[link].shaped
                    bench.scratch.trim()
                    try:
                        record.update(bench.runner.run(system, IMAGES[image], fmt, link, index, wait_background))
                    except Exception as error:
                        record["error"] = str(error)
                    data["runs"].append(record)
                    print(report.progress_line(record), flush=True)
        for name in profile["tree_reads"]:
            if name in image_names and "lazypull" in system_names:
                try:
                    data["tree_reads"][name] = tree_reads(bench, IMAGES[name], 5)
                except Exception as error:
                    data["tree_reads"][name] = {"error": str(error)}
    except BaseException:
        traceback.print_exc()
        data["aborted"] = True
        raise
    finally:
        data["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(data, f, indent=2)
        bench.stop()
    report.write(data, out)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
