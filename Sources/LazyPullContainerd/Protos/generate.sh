#!/usr/bin/env bash
# Regenerates ../Generated from the .proto files here (`make generate`). The generated code
# is checked in: building the protoc plugins takes minutes, and CI builds from scratch.
#
# Needs protoc (Debian: protobuf-compiler) and the plugins protoc-gen-swift (apple/swift-protobuf)
# and protoc-gen-grpc-swift-2 (grpc/grpc-swift-protobuf), built from the versions Package.swift
# uses: PLUGINS=DIR names the directory that holds both.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
plugins=${PLUGINS:?set PLUGINS to the directory holding protoc-gen-swift and protoc-gen-grpc-swift-2}
out=$here/../Generated
mkdir -p "$out"
protoc --proto_path="$here" --proto_path=/usr/include \
    --plugin=protoc-gen-swift="$plugins/protoc-gen-swift" \
    --plugin=protoc-gen-grpc-swift="$plugins/protoc-gen-grpc-swift-2" \
    --swift_out="$out" --swift_opt=Visibility=Public \
    --grpc-swift_out="$out" --grpc-swift_opt=Visibility=Public,Client=false,Server=true \
    mount.proto snapshots.proto
