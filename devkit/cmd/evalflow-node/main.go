// Command evalflow-node brings a single-node Kubernetes up on this machine, or down
// (devkit/node; make node-up and make node-down run it), and Knative on it (devkit/knative;
// make knative-up):
//
//	evalflow-node up -dir .state/node -pause bin/image/evalflow-pause
//	evalflow-node knative -dir .state/node
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
	"strings"
	"syscall"

	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/node"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "up" && os.Args[1] != "down" && os.Args[1] != "knative") {
		fmt.Fprintln(os.Stderr, "usage: evalflow-node up|knative|down -dir DIR [-pause BINARY]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", ".state/node", "the node's state directory")
	pause := fs.String("pause", "bin/image/evalflow-pause", "the pod sandbox program (static)")
	bin := fs.String("bin", localserver.KubeBinDir(), "etcd and the Kubernetes binaries (hack/install-kube.sh)")
	coredns := fs.String("coredns", localserver.CoreDNSBinary(), "CoreDNS, the cluster DNS (hack/install-coredns.sh); empty: none")
	netpol := fs.String("network-policy", localserver.NetworkPolicyBinary(), "the NetworkPolicy enforcer (hack/install-netpol.sh); empty: none")
	eventing := fs.String("eventing", knative.EventingDir(), "Knative Eventing built by hack/install-knative.sh")
	serving := fs.String("serving", knative.ServingDir(), "Knative Serving built by hack/install-knative.sh serving")
	traefik := fs.String("traefik", localserver.TraefikBinary(), "Traefik, Serving's networking layer (hack/install-traefik.sh)")
	_ = fs.Parse(os.Args[2:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch os.Args[1] {
	case "down":
		if err := node.Down(*dir); err != nil {
			fmt.Fprintln(os.Stderr, "evalflow-node:", err)
			os.Exit(1)
		}
		return
	case "knative":
		n, err := node.Load(*dir)
		var in *knative.Ingress
		if err == nil {
			err = knative.UpEventing(ctx, n, *eventing)
		}
		if err == nil {
			in, err = knative.UpServing(ctx, n, *serving, *traefik)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "evalflow-node: knative (make node-up first):", err)
			os.Exit(1)
		}
		fmt.Printf("Knative Eventing and Serving are up. Knative Services answer at http://%s (public) and http://%s (cluster-local), "+
			"by Host NAME.NAMESPACE.%s; on this machine at http://NAME.NAMESPACE.%s:%s\n", in.Public, in.Private, in.Domain, in.Domain,
			strings.TrimPrefix(in.Loopback, "127.0.0.1:"))
		return
	}
	n, err := node.Up(ctx, node.Config{Dir: *dir, Bin: *bin, Pause: *pause, CoreDNS: *coredns, NetworkPolicy: *netpol})
	if err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-node:", err)
		os.Exit(1)
	}
	fmt.Printf("NODE_KUBECONFIG=%s\nNODE_REGISTRY=%s\nNODE_ADDRESS=%s\nNODE_DNS=%s\n", n.Kubeconfig, n.Registry, n.Address, n.DNS)
}
