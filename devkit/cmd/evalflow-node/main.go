// Command evalflow-node brings a single-node Kubernetes up on this machine, or down
// (devkit/node; make node-up and make node-down run it):
//
//	evalflow-node up -dir .state/node -pause bin/image/evalflow-pause
//	evalflow-node down -dir .state/node
//
// up is idempotent: a node running in -dir is left as it is. It prints the node's
// kubeconfig path and registry as shell variables.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/node"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "up" && os.Args[1] != "down") {
		fmt.Fprintln(os.Stderr, "usage: evalflow-node up|down -dir DIR [-pause BINARY]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", ".state/node", "the node's state directory")
	pause := fs.String("pause", "bin/image/evalflow-pause", "the pod sandbox program (static)")
	bin := fs.String("bin", localserver.KubeBinDir(), "etcd and the Kubernetes binaries (hack/install-kube.sh)")
	coredns := fs.String("coredns", localserver.CoreDNSBinary(), "CoreDNS, the cluster DNS (hack/install-coredns.sh); empty: none")
	_ = fs.Parse(os.Args[2:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Args[1] == "down" {
		if err := node.Down(*dir); err != nil {
			fmt.Fprintln(os.Stderr, "evalflow-node:", err)
			os.Exit(1)
		}
		return
	}
	n, err := node.Up(ctx, node.Config{Dir: *dir, Bin: *bin, Pause: *pause, CoreDNS: *coredns})
	if err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-node:", err)
		os.Exit(1)
	}
	fmt.Printf("NODE_KUBECONFIG=%s\nNODE_REGISTRY=%s\nNODE_ADDRESS=%s\nNODE_DNS=%s\n", n.Kubeconfig, n.Registry, n.Address, n.DNS)
}
