// Command evalflow-deploy is the developer's shortcut to evalflow on a Kubernetes
// cluster with Knative Serving and Eventing (local/deploy; make deploy runs it): a
// release built from the checkout and installed at once, as make release and evalflow
// install do one after the other. It prints start's URL and an operator's token:
//
//	evalflow-deploy -registry HOST[:PORT]/PREFIX -sandbox-python DIR [-kubeconfig FILE] [-data DIR]
//	evalflow-deploy -node .state/node -sandbox-python DIR -data ../shared/datasets
//
// The cluster is the kubeconfig's current context. -registry is where the images go
// (this machine pushes, the cluster's nodes pull). -data publishes the benchmark data
// there, for the evaluation Jobs. With -node, the cluster is the node of make node-up
// and make knative-up: its kubeconfig, its registry and Traefik's port on this machine.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/node"
	"github.com/evalflow/evalflow/local/deploy"
)

func main() {
	var cfg deploy.Config
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "the cluster's kubeconfig (default $KUBECONFIG, then ~/.kube/config)")
	nodeDir := flag.String("node", "", "deploy on the node of make node-up in this directory")
	cfg.Release.Flags(flag.CommandLine)
	flag.StringVar(&cfg.IngressPort, "ingress-port", "", "the port the cluster's ingress answers this machine on, if not the URL's")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, &cfg, *kubeconfig, *nodeDir); err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-deploy:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *deploy.Config, kubeconfig, nodeDir string) error {
	cfg.Log = os.Stderr
	if nodeDir != "" {
		n, err := node.Load(nodeDir)
		if err != nil {
			return fmt.Errorf("the node (make node-up): %w", err)
		}
		in, err := knative.LoadIngress(nodeDir)
		if err != nil {
			return fmt.Errorf("Knative on the node (make knative-up): %w", err)
		}
		if err := deploy.OnNode(cfg, n, in); err != nil {
			return err
		}
		kubeconfig = n.Kubeconfig
	}
	if cfg.Release.Registry == "" {
		return fmt.Errorf("-registry (or -node) is required")
	}
	if cfg.Kubeconfig == nil {
		if kubeconfig == "" {
			home, _ := os.UserHomeDir()
			kubeconfig = filepath.Join(home, ".kube", "config")
		}
		var err error
		if cfg.Kubeconfig, err = os.ReadFile(kubeconfig); err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
	}
	d, err := deploy.Deploy(ctx, *cfg)
	if err != nil {
		return err
	}
	fmt.Printf("START_URL=%s\n", d.StartURL)
	if d.OperatorToken != "" { // the Secret's, made by this deploy or an earlier one
		fmt.Printf("OPERATOR_TOKEN=%s\n", d.OperatorToken)
		fmt.Fprintf(os.Stderr, "results page: %s/ui/?token=%s\n", d.StartURL, d.OperatorToken)
	}
	return nil
}
