#!/usr/bin/env bash
# containerd.sh - run a private instance of Debian's containerd (1.6) for
# lazypull's reference tests.
#
# Usage:
#   containerd.sh start WORKDIR
#   containerd.sh stop WORKDIR
#
# start writes WORKDIR/config.toml (root WORKDIR/root, state WORKDIR/state,
# gRPC socket WORKDIR/containerd.sock, CRI plugin disabled), starts
# `containerd --config WORKDIR/config.toml` in its own session (log
# WORKDIR/containerd.log, pid WORKDIR/containerd.pid), waits at most
# CONTAINERD_START_TIMEOUT seconds (default 20) until
# `ctr --address WORKDIR/containerd.sock version` succeeds and prints the
# socket path.  On failure it kills what it started, prints the log tail and
# exits 1.  With CONTAINERD_PROXY_SNAPSHOTTER=NAME=SOCKET, the config also
# declares that proxy snapshotter ([proxy_plugins.NAME], type "snapshot").
#
# stop unmounts everything still mounted at or below WORKDIR (deepest
# first, from /proc/mounts), stops any containerd-shim serving this
# instance's socket, then sends containerd SIGTERM, waits up to 10 s, then
# SIGKILL.  It is a no-op when nothing runs (safe to call twice).  WORKDIR
# itself is left in place; remove it afterwards if wanted.
set -euo pipefail

die() { echo "containerd.sh: $*" >&2; exit 1; }
usage() {
    sed -n 's/^#   \(containerd.sh .*\)/usage: \1/p' "$0" >&2
    exit 2
}

is_running() { # pid
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null
}

read_pid() { # workdir
    if [ -f "$1/containerd.pid" ]; then cat "$1/containerd.pid" 2>/dev/null || true; fi
}

toml_quote() { # basic TOML string
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

wait_gone() { # pid tenths
    local i
    for ((i = 0; i < $2; i++)); do
        is_running "$1" || return 0
        sleep 0.1
    done
    ! is_running "$1"
}

stop_pid() { # pid
    local pid=$1
    is_running "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 100 && return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 50 || echo "containerd.sh: pid $pid did not exit" >&2
}

# Mount points at or below $1, deepest first (octal escapes of /proc/mounts
# decoded).
mounts_below() { # dir
    python3 - "$1" <<'EOF'
import re, sys
base = sys.argv[1].rstrip("/") or "/"
def unescape(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)
found = []
with open("/proc/mounts", encoding="utf-8", errors="surrogateescape") as f:
    for line in f:
        mp = unescape(line.split(" ")[1])
        if mp == base or mp.startswith(base + "/"):
            found.append(mp)
for mp in sorted(found, key=lambda p: (-p.count("/"), p)):
    # a path mounted several times is listed once per mount: unmount each
    sys.stdout.buffer.write(mp.encode("utf-8", "surrogateescape") + b"\0")
EOF
}

unmount_below() { # dir
    local dir=$1 mp
    for _ in 1 2 3 4 5; do
        local -a mps=()
        while IFS= read -r -d '' mp; do mps+=("$mp"); done < <(mounts_below "$dir")
        [ ${#mps[@]} -gt 0 ] || return 0
        for mp in "${mps[@]}"; do
            umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
        done
    done
    if [ -n "$(mounts_below "$dir" | tr '\0' '\n')" ]; then
        echo "containerd.sh: still mounted below $dir:" >&2
        mounts_below "$dir" | tr '\0' '\n' >&2
        return 1
    fi
}

# Shims started by this instance carry "-address WORKDIR/containerd.sock".
shim_pids() { # socket
    local p cmd
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' '\n' 2>/dev/null < "$p/cmdline") || continue
        case "$cmd" in
            containerd-shim*|*/containerd-shim*) ;;
            *) continue ;;
        esac
        if printf '%s\n' "$cmd" | grep -qxF -- "$1"; then echo "${p#/proc/}"; fi
    done
}

do_stop() {
    local dir=$1
    [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd -P)
    local rc=0 pid
    unmount_below "$dir" || rc=1
    for pid in $(shim_pids "$dir/containerd.sock"); do stop_pid "$pid"; done
    pid=$(read_pid "$dir")
    if [ -n "$pid" ]; then
        stop_pid "$pid"
        is_running "$pid" || rm -f "$dir/containerd.pid"
    fi
    # containerd may have mounted something while shutting down
    unmount_below "$dir" || rc=1
    return $rc
}

do_start() {
    # start_dir / start_ok are global: the EXIT trap reads them.
    start_dir=$1
    local dir=$1
    command -v containerd >/dev/null || die "containerd not installed"
    command -v ctr >/dev/null || die "ctr not installed"
    [ "$(id -u)" = 0 ] || die "must run as root"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    local sock="$dir/containerd.sock"
    [ ${#sock} -lt 100 ] || die "socket path too long for AF_UNIX (${#sock} bytes): $sock"

    local old
    old=$(read_pid "$dir")
    if is_running "$old"; then die "a containerd already runs from $dir (pid $old)"; fi
    rm -f "$dir/containerd.pid" "$sock" "$sock.ttrpc"
    mkdir -p "$dir/root" "$dir/state" "$dir/opt"

    cat > "$dir/config.toml" <<EOF
version = 2
root = $(toml_quote "$dir/root")
state = $(toml_quote "$dir/state")
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = $(toml_quote "$sock")

[ttrpc]
  address = $(toml_quote "$sock.ttrpc")

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = $(toml_quote "$dir/opt")
EOF
    if [ -n "${CONTAINERD_PROXY_SNAPSHOTTER:-}" ]; then
        local name=${CONTAINERD_PROXY_SNAPSHOTTER%%=*} address=${CONTAINERD_PROXY_SNAPSHOTTER#*=}
        cat >> "$dir/config.toml" <<EOF

[proxy_plugins]
  [proxy_plugins.$name]
    type = "snapshot"
    address = $(toml_quote "$address")
EOF
    fi

    : > "$dir/containerd.log"
    setsid containerd --config "$dir/config.toml" </dev/null >>"$dir/containerd.log" 2>&1 &
    local pid=$!
    echo "$pid" > "$dir/containerd.pid"

    start_dir=$dir
    start_ok=0
    fail_start() {
        [ "$start_ok" = 1 ] && return 0
        echo "containerd.sh: containerd did not start; log tail:" >&2
        tail -n 30 "$start_dir/containerd.log" >&2 || true
        do_stop "$start_dir" || true
    }
    trap fail_start EXIT
    trap 'exit 130' INT TERM

    local timeout=${CONTAINERD_START_TIMEOUT:-20}
    local deadline=$(( $(date +%s) + timeout ))
    while :; do
        is_running "$pid" || die "containerd exited during start"
        if [ -S "$sock" ] && timeout 5 ctr --address "$sock" version >/dev/null 2>&1; then
            break
        fi
        [ "$(date +%s)" -lt "$deadline" ] || die "containerd not ready after ${timeout}s"
        sleep 0.2
    done
    start_ok=1
    trap - EXIT INT TERM
    echo "$sock"
}

[ $# -eq 2 ] || usage
case "$1" in
    start) do_start "$2" ;;
    stop) do_stop "$2" ;;
    *) usage ;;
esac
