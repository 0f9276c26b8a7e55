// stargz-bench: stargz-snapshotter's snapshotter service (Debian's
// golang-github-containerd-stargz-snapshotter-dev 0.12) on a unix socket, so bench/ can run it
// as containerd's proxy snapshotter side by side with lazypull. Debian packages the library
// but not the daemon; this is the smallest program that serves it. Built by build.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/stargz-snapshotter/service"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "/run/stargz-bench/stargz.sock", "unix socket to serve the snapshot API on")
	root := flag.String("root", "/var/lib/stargz-bench", "state directory")
	flag.Parse()

	var config service.Config // zero value: the library's defaults
	snapshotter, err := service.NewStargzSnapshotterService(context.Background(), *root, &config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stargz-bench:", err)
		os.Exit(1)
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, snapshotservice.FromSnapshotter(snapshotter))
	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "stargz-bench:", err)
		os.Exit(1)
	}
	os.Remove(*address)
	listener, err := net.Listen("unix", *address)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stargz-bench:", err)
		os.Exit(1)
	}
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, "stargz-bench:", err)
		os.Exit(1)
	}
}
