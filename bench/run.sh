#!/usr/bin/env bash
# bench/run.sh — `make bench`: eager pull + mount, lazypull against containerd, on one
# loopback registry, cold (state wiped, page cache dropped) before every run.
#
# Environment: RUNS (default 5), LAZYPULL_BIN, BENCH_CACHE (image cache directory).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fixtures=$here/../Tests/Fixtures/bin
lazypull=${LAZYPULL_BIN:-$here/../.build/release/lazypull}
runs=${RUNS:-5}
cache=${BENCH_CACHE:-/var/tmp/lazypull-bench-cache}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$here/results/$stamp
work=$(mktemp -d /var/tmp/lazypull-bench-XXXXXX)
port=${BENCH_PORT:-5077}
ref=127.0.0.1:$port/bench/python:bookworm

cleanup() {
    "$lazypull" umount --root "$work/lazypull" "$work/mnt-lazypull" >/dev/null 2>&1 || true
    ctr --address "$work/containerd/containerd.sock" images unmount "$work/mnt-containerd" >/dev/null 2>&1 || true
    "$fixtures/containerd.sh" stop "$work/containerd" >/dev/null 2>&1 || true
    "$fixtures/registry.sh" stop "$work/registry" >/dev/null 2>&1 || true
    grep -F " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$results" "$cache"
if [ ! -f "$cache/python/index.json" ]; then
    echo "building the python benchmark image with mmdebstrap (cached in $cache)..."
    "$fixtures/make-python-image.sh" "$cache/python" bookworm
fi

"$fixtures/registry.sh" start "$work/registry" "$port" plain >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$cache/python:bookworm" "docker://$ref"
compressed=$(skopeo inspect --tls-verify=false --raw "docker://$ref" | python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))')

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }

run_containerd() {
    "$fixtures/containerd.sh" stop "$work/containerd" >/dev/null 2>&1 || true
    rm -rf "$work/containerd"
    "$fixtures/containerd.sh" start "$work/containerd" >/dev/null
    mkdir -p "$work/mnt-containerd"
    drop_caches
    local t0; t0=$(now)
    ctr --address "$work/containerd/containerd.sock" images pull --plain-http "$ref" >/dev/null
    ctr --address "$work/containerd/containerd.sock" images mount "$ref" "$work/mnt-containerd" >/dev/null
    local t1; t1=$(now)
    test -x "$work/mnt-containerd/usr/bin/python3"
    ctr --address "$work/containerd/containerd.sock" images unmount "$work/mnt-containerd" >/dev/null
    echo "$t1 - $t0" | bc
}

run_lazypull() {
    rm -rf "$work/lazypull"
    mkdir -p "$work/mnt-lazypull"
    drop_caches
    local t0; t0=$(now)
    "$lazypull" pull --eager --quiet --root "$work/lazypull" "$ref"
    "$lazypull" mount --eager --quiet --root "$work/lazypull" "$ref" "$work/mnt-lazypull"
    local t1; t1=$(now)
    test -x "$work/mnt-lazypull/usr/bin/python3"
    "$lazypull" umount --root "$work/lazypull" "$work/mnt-lazypull"
    echo "$t1 - $t0" | bc
}

echo "image: $ref, $(numfmt --to=si "$compressed")B compressed; $runs cold runs each, alternating"
declare -a ctd lzp
for i in $(seq 1 "$runs"); do
    ctd+=("$(run_containerd)")
    lzp+=("$(run_lazypull)")
    printf 'run %d: containerd %.2fs  lazypull %.2fs\n' "$i" "${ctd[-1]}" "${lzp[-1]}"
done

python3 - "$results" "$compressed" "${ctd[*]}" "${lzp[*]}" <<'PY'
import json, statistics, sys, platform, os
out, compressed, ctd, lzp = sys.argv[1], int(sys.argv[2]), [float(x) for x in sys.argv[3].split()], [float(x) for x in sys.argv[4].split()]
def stats(v): return {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
data = {"scenario": "eager pull + mount, loopback registry, python image", "compressed_bytes": compressed,
        "containerd": stats(ctd), "lazypull": stats(lzp),
        "ratio_median": statistics.median(ctd) / statistics.median(lzp),
        "target_ratio": 3.0, "machine": {"cpus": os.cpu_count(), "kernel": platform.release()}}
json.dump(data, open(f"{out}/results.json", "w"), indent=2)
r = data["ratio_median"]
md = f"""# lazypull bench — eager pull

**lazypull is {r:.2f}x faster than containerd** (target ≥ 3x) for `pull --eager` + `mount --eager`
against `ctr images pull` + `ctr images mount`, python image ({compressed/1e6:.0f} MB compressed),
loopback registry, {len(ctd)} cold runs each (state wiped, page cache dropped).

| system | median | min | max |
|---|---|---|---|
| containerd 1.6 (`ctr images pull` + `ctr images mount`) | {statistics.median(ctd):.2f} s | {min(ctd):.2f} s | {max(ctd):.2f} s |
| lazypull (`pull --eager` + `mount --eager`) | {statistics.median(lzp):.2f} s | {min(lzp):.2f} s | {max(lzp):.2f} s |
"""
open(f"{out}/summary.md", "w").write(md)
print(md)
PY
echo "results: $results"
