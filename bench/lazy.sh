#!/usr/bin/env bash
# bench/lazy.sh — cold start over an emulated slow link: `lazypull mount` + chroot python3
# against containerd's eager pull + `ctr run`, same image (python, as eStargz for lazypull),
# same registry, same link (bench/delay-proxy.py: 100 Mbit/s, 20 ms RTT by default).
# Also: lazypull as containerd's snapshotter (`ctr-remote images rpull` + `ctr run`, lazypull
# serve and containerd running before the clock), stargz-snapshotter the same way (built from
# Debian's Go packages by bench/stargz/build.sh), peak RSS of the layer host, time until the
# background fetch is complete, and the full-tree read afterwards (page cache dropped) against
# the same tree on overlayfs.
#
# Environment: RUNS (default 3), MBIT (100), RTT_MS (20), LAZYPULL_BIN, BENCH_CACHE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fixtures=$here/../Tests/Fixtures/bin
lazypull=${LAZYPULL_BIN:-$here/../.build/release/lazypull}
runs=${RUNS:-3} mbit=${MBIT:-100} rtt=${RTT_MS:-20}
cache=${BENCH_CACHE:-/var/tmp/lazypull-bench-cache}
results=$here/results/$(date -u +%Y%m%dT%H%M%SZ)-lazy
work=$(mktemp -d /var/tmp/lazypull-lazybench-XXXXXX)
regport=${BENCH_PORT:-5091} proxyport=$((regport + 1))
direct=127.0.0.1:$regport slow=127.0.0.1:$proxyport
proxy_pid=

cleanup() {
    for m in "$work"/mnt-*; do "$lazypull" umount --root "$work/lazypull" "$m" >/dev/null 2>&1 || true; done
    "$lazypull" umount --root "$work/ref" "$work/ref-mnt" >/dev/null 2>&1 || true
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
    "$fixtures/containerd.sh" stop "$work/containerd" >/dev/null 2>&1 || true
    snapshotter_stop "$work/snap-lazypull"
    snapshotter_stop "$work/snap-stargz"
    "$fixtures/registry.sh" stop "$work/registry" >/dev/null 2>&1 || true
    pkill -f -- "--root $work/" 2>/dev/null || true
    grep -F " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$results" "$cache"
[ -f "$cache/python/index.json" ] || "$fixtures/make-python-image.sh" "$cache/python" bookworm
stargz=$cache/stargz-bench
[ -x "$stargz" ] || "$here/stargz/build.sh" "$stargz"

"$fixtures/registry.sh" start "$work/registry" "$regport" plain >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$cache/python:bookworm" "docker://$direct/bench/python:gzip"
"$lazypull" convert --root "$work/convert" --estargz "$direct/bench/python:gzip" "$direct/bench/python:esgz" >/dev/null
python3 "$here/delay-proxy.py" --listen "$proxyport" --upstream "$direct" --rtt-ms "$rtt" --mbit "$mbit" \
    --ready-file "$work/proxy.ready" & proxy_pid=$!
for _ in $(seq 100); do [ -f "$work/proxy.ready" ] && break; sleep 0.1; done

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

containerd_run() { # run number
    "$fixtures/containerd.sh" stop "$work/containerd" >/dev/null 2>&1 || true
    rm -rf "$work/containerd"
    "$fixtures/containerd.sh" start "$work/containerd" >/dev/null
    local ctr="ctr --address $work/containerd/containerd.sock"
    drop_caches
    local t0; t0=$(now)
    $ctr images pull --plain-http "$slow/bench/python:gzip" >/dev/null
    $ctr run --rm "$slow/bench/python:gzip" "lazypull-bench-$$-$1" python3 -c 'print("hello")' >/dev/null
    since "$t0"
}

# Waits until the previous run's control plane and layer host have ended (after its umount).
# Ends the previous run's control plane and layer host (its mount is gone by then).
stop_lazypull() {
    pkill -f -- "--root $work/lazypull" 2>/dev/null || true
    for _ in $(seq 200); do pgrep -f -- "--root $work/lazypull" >/dev/null || return 0; sleep 0.05; done
}

lazypull_run() { # run number; prints: start_seconds host_rss_kib background_seconds control_rss_kib
    stop_lazypull
    rm -rf "$work/lazypull"
    local mnt=$work/mnt-$1
    mkdir -p "$mnt"
    # Like containerd's daemon in containerd_run, lazypull's runs before the clock starts
    # (as under systemd); `lazypull mount` would otherwise start it on demand.
    "$lazypull" serve --root "$work/lazypull" >>"$work/serve.log" 2>&1 &
    for _ in $(seq 200); do [ -S "$work/lazypull/run/fuse-host.sock" ] && break; sleep 0.05; done
    drop_caches
    local t0; t0=$(now)
    "$lazypull" mount --quiet --root "$work/lazypull" "$slow/bench/python:esgz" "$mnt"
    chroot "$mnt" /usr/bin/python3 -c 'print("hello")' >/dev/null
    local start; start=$(since "$t0")
    local pid; pid=$(pgrep -f "fuse-host --root $work/lazypull" | head -1)
    local cpid; cpid=$(pgrep -f "serve --root $work/lazypull" | head -1)
    for _ in $(seq 1200); do
        "$lazypull" status --json --root "$work/lazypull" "$mnt" | grep -q '"background" : "\(running\|paused\|prefetching\)"' || break
        sleep 0.1
    done
    local background; background=$(since "$t0")
    local rss; rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    local crss; crss=$(awk '/VmHWM/ {print $2}' "/proc/$cpid/status")
    echo "$start $rss $background $crss"
}

# containerd with a proxy snapshotter (lazypull, or stargz-snapshotter 0.12 built from Debian's
# library by bench/stargz): both started, state wiped, before the clock, as under systemd.
snapshotter_start() { # name state-dir socket
    case $1 in
        lazypull) "$lazypull" serve --root "$2" --address "$3" >>"$work/serve-ctd.log" 2>&1 &
                  for _ in $(seq 200); do [ -S "$3" ] && [ -S "$2/run/fuse-host.sock" ] && break; sleep 0.05; done ;;
        stargz)   "$stargz" -address "$3" -root "$2" >>"$work/stargz.log" 2>&1 &
                  for _ in $(seq 200); do [ -S "$3" ] && break; sleep 0.05; done ;;
    esac
}

snapshotter_stop() { # state-dir (every snapshotter process names it)
    "$fixtures/containerd.sh" stop "$1-containerd" >/dev/null 2>&1 || true
    pkill -KILL -f -- "$1" 2>/dev/null || true
    for _ in $(seq 200); do pgrep -f -- "$1" >/dev/null || break; sleep 0.05; done
    grep -F " $1" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

proxy_snapshotter_run() { # name run-number
    local state=$work/snap-$1 socket=$work/snap-$1.sock
    snapshotter_stop "$state"
    rm -rf "$state" "$state-containerd" "$socket"
    snapshotter_start "$1" "$state" "$socket"
    CONTAINERD_PROXY_SNAPSHOTTER="$1=$socket" "$fixtures/containerd.sh" start "$state-containerd" >/dev/null
    local address="--address $state-containerd/containerd.sock"
    drop_caches
    local t0; t0=$(now)
    ctr-remote $address images rpull --plain-http --snapshotter "$1" "$slow/bench/python:esgz" >/dev/null
    ctr $address run --rm --snapshotter "$1" "$slow/bench/python:esgz" "lazypull-bench-$1-$$-$2" \
        python3 -c 'print("hello")' >/dev/null
    local elapsed; elapsed=$(since "$t0")
    # Stopped at once, so its background fetch does not compete with the next measurement.
    snapshotter_stop "$state"
    echo "$elapsed"
}

declare -a ctd lzp rss bg crss lpc sgz
for i in $(seq 1 "$runs"); do
    ctd+=("$(containerd_run "$i")")
    lpc+=("$(proxy_snapshotter_run lazypull "$i")")
    sgz+=("$(proxy_snapshotter_run stargz "$i")")
    read -r s r b c < <(lazypull_run "$i")
    lzp+=("$s"); rss+=("$r"); bg+=("$b"); crss+=("$c")
    printf 'run %d: containerd %.2fs  lazypull %.2fs  containerd+lazypull %.2fs  containerd+stargz %.2fs (peak RSS: layer host %d MiB, control plane %d MiB; background complete after %.1fs)\n' \
        "$i" "${ctd[-1]}" "$s" "${lpc[-1]}" "${sgz[-1]}" "$((r / 1024))" "$((c / 1024))" "$b"
    [ "$i" -lt "$runs" ] && "$lazypull" umount --root "$work/lazypull" "$work/mnt-$i"
done

# Full-tree read after the background fetch, against the same tree on overlayfs.
"$lazypull" mount --eager --read-only --quiet --root "$work/ref" "$direct/bench/python:gzip" "$work/ref-mnt"
read_tree() { drop_caches; local t0; t0=$(now); tar cf - -C "$1" . | wc -c >/dev/null; since "$t0"; }
declare -a lazy_read ovl_read
for i in 1 2 3 4 5; do
    ovl_read+=("$(read_tree "$work/ref-mnt")")
    lazy_read+=("$(read_tree "$work/mnt-$runs")")
done

python3 - "$results" "$mbit" "$rtt" "${ctd[*]}" "${lzp[*]}" "${rss[*]}" "${bg[*]}" "${ovl_read[*]}" "${lazy_read[*]}" "${crss[*]}" "${lpc[*]}" "${sgz[*]}" <<'PY'
import json, statistics as st, sys
out, mbit, rtt = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
ctd, lzp, rss, bg, ovl, lzr, crss, lpc, sgz = ([float(x) for x in a.split()] for a in sys.argv[4:13])
def s(v): return {"median": st.median(v), "min": min(v), "max": max(v), "runs": v}
data = {"link": {"mbit": mbit, "rtt_ms": rtt}, "cold_start": {"containerd": s(ctd), "lazypull": s(lzp)},
        "cold_start_ratio": st.median(ctd) / st.median(lzp),
        "containerd_with_lazypull": s(lpc), "containerd_with_lazypull_ratio": st.median(ctd) / st.median(lpc),
        "containerd_with_stargz": s(sgz), "lazypull_vs_stargz_ratio": st.median(sgz) / st.median(lpc),
        "host_peak_rss_mib": s([r / 1024 for r in rss]),
        "control_plane_peak_rss_mib": s([r / 1024 for r in crss]),
        "background_complete_seconds": s(bg), "full_read": {"overlayfs": s(ovl), "lazypull": s(lzr)},
        "full_read_ratio": st.median(ovl) / st.median(lzr)}
json.dump(data, open(f"{out}/results.json", "w"), indent=2)
md = f"""# lazypull bench — lazy cold start ({mbit:.0f} Mbit/s, {rtt:.0f} ms RTT)

**Cold start {data['cold_start_ratio']:.1f}x faster than containerd** (target ≥ 10x; both daemons
running before the clock starts, state wiped and page cache dropped before every run);
**through containerd (`ctr-remote images rpull` + `ctr run`, lazypull as its snapshotter)
{data['containerd_with_lazypull_ratio']:.1f}x faster than containerd's own pull** (target ≥ 8x) and
{data['lazypull_vs_stargz_ratio']:.2f}x faster than stargz-snapshotter 0.12 through containerd on the same eStargz image;
layer host peak RSS {st.median(data['host_peak_rss_mib']['runs']):.0f} MiB (target ≤ 64; the control plane's:
{st.median(data['control_plane_peak_rss_mib']['runs']):.0f} MiB);
full-tree read after background fetch {data['full_read_ratio']:.2f} of overlayfs (target ≥ 0.8).

| measure | median | min | max |
|---|---|---|---|
| containerd: `ctr images pull` + `ctr run` python3 | {st.median(ctd):.2f} s | {min(ctd):.2f} s | {max(ctd):.2f} s |
| lazypull: `mount` + `chroot` python3 | {st.median(lzp):.2f} s | {min(lzp):.2f} s | {max(lzp):.2f} s |
| containerd + lazypull: `ctr-remote images rpull` + `ctr run` python3 | {st.median(lpc):.2f} s | {min(lpc):.2f} s | {max(lpc):.2f} s |
| containerd + stargz-snapshotter: `ctr-remote images rpull` + `ctr run` python3 | {st.median(sgz):.2f} s | {min(sgz):.2f} s | {max(sgz):.2f} s |
| background fetch complete (from mount) | {st.median(bg):.1f} s | {min(bg):.1f} s | {max(bg):.1f} s |
| full read, overlayfs (eager tree) | {st.median(ovl):.2f} s | {min(ovl):.2f} s | {max(ovl):.2f} s |
| full read, lazypull after background fetch | {st.median(lzr):.2f} s | {min(lzr):.2f} s | {max(lzr):.2f} s |
"""
open(f"{out}/summary.md", "w").write(md)
print(md)
PY
echo "results: $results"
