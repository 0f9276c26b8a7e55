#!/usr/bin/env bash
# registry.sh - start/stop a throw-away Debian `docker-registry` (distribution
# 2.8) on loopback for lazypull's integration tests.
#
# Usage:
#   registry.sh start DIR PORT plain
#   registry.sh start DIR PORT htpasswd USER PASS
#   registry.sh start DIR PORT token REALM_URL SERVICE CERTBUNDLE
#   registry.sh stop DIR
#
# start writes DIR/config.yml, starts `docker-registry serve DIR/config.yml`
# in the background (stdout+stderr -> DIR/registry.log, pid -> DIR/registry.pid)
# and waits (at most REGISTRY_START_TIMEOUT seconds, default 15) until
# GET http://127.0.0.1:PORT/v2/ answers 200 or 401.  On success it prints
# "registry ready on 127.0.0.1:PORT (pid N)" and exits 0; on failure it kills
# the registry, prints the log tail to stderr and exits 1.
#
# Storage: DIR/storage, unless the environment variable REGISTRY_STORAGE
# names another directory (lets two registries share one blob store, e.g. an
# authenticated one and a plain one).  REGISTRY_* variables are removed from
# the registry's own environment, because distribution treats them as config
# overrides.  Deletion is enabled (storage.delete.enabled: true).
#
# stop sends SIGTERM, waits up to 10 s, then SIGKILL; it is a no-op when
# nothing runs (safe to call twice).
set -euo pipefail

die() { echo "registry.sh: $*" >&2; exit 1; }
usage() {
    sed -n 's/^#   \(registry.sh .*\)/\1/p' "$0" >&2
    exit 2
}

is_alive() { # pid -> true if the process exists and is not a zombie
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    local stat
    if stat=$(cat "/proc/$1/stat" 2>/dev/null); then
        stat=${stat##*) }
        [ "${stat%% *}" != Z ] || return 1
    fi
    return 0
}

is_running() { # pid -> true if it is a live docker-registry (guards against pid reuse)
    is_alive "$1" || return 1
    if [ -r "/proc/$1/cmdline" ]; then
        tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q docker-registry || return 1
    fi
    return 0
}

read_pid() { # dir
    if [ -f "$1/registry.pid" ]; then cat "$1/registry.pid" 2>/dev/null || true; fi
}

yaml_quote() { # emit a single-quoted YAML scalar
    local s=${1//\'/\'\'}
    printf "'%s'" "$s"
}

do_stop() {
    local dir=$1 pid i
    pid=$(read_pid "$dir")
    if [ -z "$pid" ]; then return 0; fi
    if is_running "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            is_running "$pid" || break
            sleep 0.1
        done
        if is_running "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            for i in $(seq 1 50); do
                is_running "$pid" || break
                sleep 0.1
            done
        fi
    fi
    rm -f "$dir/registry.pid"
    return 0
}

do_start() {
    [ $# -ge 3 ] || usage
    local dir=$1 port=$2 mode=$3
    shift 3
    [[ $port =~ ^[0-9]+$ ]] || die "bad port: $port"
    command -v docker-registry >/dev/null || die "docker-registry not installed"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)

    local old
    old=$(read_pid "$dir")
    if is_running "$old"; then die "a registry already runs from $dir (pid $old)"; fi
    rm -f "$dir/registry.pid"

    local storage=${REGISTRY_STORAGE:-$dir/storage}
    mkdir -p "$storage"
    storage=$(cd "$storage" && pwd)

    local secret
    secret=$(openssl rand -hex 16)

    local auth=""
    case "$mode" in
        plain)
            [ $# -eq 0 ] || usage
            ;;
        htpasswd)
            [ $# -eq 2 ] || usage
            command -v htpasswd >/dev/null || die "htpasswd (apache2-utils) not installed"
            htpasswd -Bbn "$1" "$2" > "$dir/htpasswd"
            auth="auth:
  htpasswd:
    realm: lazypull-basic-realm
    path: $(yaml_quote "$dir/htpasswd")"
            ;;
        token)
            [ $# -eq 3 ] || usage
            local bundle=$3
            [ -f "$bundle" ] || die "cert bundle not found: $bundle"
            bundle=$(cd "$(dirname "$bundle")" && pwd)/$(basename "$bundle")
            auth="auth:
  token:
    realm: $(yaml_quote "$1")
    service: $(yaml_quote "$2")
    issuer: lazypull-test-issuer
    rootcertbundle: $(yaml_quote "$bundle")"
            ;;
        *) usage ;;
    esac

    cat > "$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $(yaml_quote "$storage")
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: $secret
  headers:
    X-Content-Type-Options: [nosniff]
$auth
EOF

    # Strip REGISTRY_* from the child's environment: distribution reads them
    # as configuration overrides (REGISTRY_STORAGE=/path would break it).
    local -a unset_args=()
    local v
    for v in $(compgen -e); do
        case "$v" in REGISTRY_*) unset_args+=("-u" "$v") ;; esac
    done

    : > "$dir/registry.log"
    env "${unset_args[@]}" setsid docker-registry serve "$dir/config.yml" \
        </dev/null >>"$dir/registry.log" 2>&1 &
    local pid=$!
    echo "$pid" > "$dir/registry.pid"
    # Interrupted before ready: don't leave the registry behind.
    trap 'do_stop "'"$dir"'"; exit 130' INT TERM HUP

    local timeout=${REGISTRY_START_TIMEOUT:-15}
    local deadline=$(( $(date +%s) + timeout ))
    local code
    while :; do
        if ! is_alive "$pid"; then
            echo "registry.sh: registry exited during start; log:" >&2
            tail -n 30 "$dir/registry.log" >&2 || true
            rm -f "$dir/registry.pid"
            exit 1
        fi
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
        if [ "$code" = 200 ] || [ "$code" = 401 ]; then
            # Make sure it's our process that answered (port not taken by another).
            sleep 0.1
            if is_alive "$pid"; then
                trap - INT TERM HUP
                echo "registry ready on 127.0.0.1:$port (pid $pid)"
                return 0
            fi
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "registry.sh: registry not ready after ${timeout}s (last status '$code'); log:" >&2
            tail -n 30 "$dir/registry.log" >&2 || true
            do_stop "$dir"
            exit 1
        fi
        sleep 0.2
    done
}

[ $# -ge 1 ] || usage
cmd=$1; shift
case "$cmd" in
    start) do_start "$@" ;;
    stop)  [ $# -eq 1 ] || usage; do_stop "$1" ;;
    *) usage ;;
esac
