#!/usr/bin/env bash
# build.sh OUT: builds bench/stargz/main.go against Debian's Go packages (GOPATH mode). The
# one library file that needs k8s.io/cri-api (not packaged) is left out with `go build -overlay`;
# main.go does not use the CRI keychain or resolver it provides.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT}
for p in golang-go golang-github-containerd-stargz-snapshotter-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/stargz-bench"
cp "$here/main.go" "$work/src/stargz-bench/"
gocode=/usr/share/gocode/src/github.com/containerd/stargz-snapshotter
overlay="$work/overlay.json"
first=1
printf '{"Replace": {' > "$overlay"
for f in $(grep -rl '"k8s.io/cri-api' "$gocode" --include=*.go); do
    [ $first = 1 ] || printf ',' >> "$overlay"
    first=0
    printf '"%s": ""' "$f" >> "$overlay"
done
printf '}}\n' >> "$overlay"
cd "$work/src/stargz-bench"
GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOCACHE="${GOCACHE:-/var/tmp/lazypull-go-cache}" \
    go build -overlay "$overlay" -o "$out" .
