// Command evalflow-deploy puts evalflow on a Kubernetes cluster with Knative Serving
// and Eventing (local/deploy; make deploy runs it), and prints start's URL:
//
//	evalflow-deploy -registry HOST[:PORT]/PREFIX [-kubeconfig FILE] [-data DIR]
//	evalflow-deploy -node .state/node -data ../shared/datasets
//
// The cluster is the kubeconfig's current context. -registry is where the functions'
// images go (this machine pushes, the cluster's nodes pull). -data publishes the
// benchmark data there, for the evaluation Jobs. With -node, the cluster is the node
// of make node-up and make knative-up: its kubeconfig, its registry, Traefik's port on
// this machine, and Redis and the results registry as images of Debian's programs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/node"
	"github.com/evalflow/evalflow/local/deploy"
	"github.com/evalflow/evalflow/shared/oci"
)

func main() {
	var cfg deploy.Config
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "the cluster's kubeconfig (default $KUBECONFIG, then ~/.kube/config)")
	nodeDir := flag.String("node", "", "deploy on the node of make node-up in this directory")
	data := flag.String("data", "", "publish this benchmark data directory for the evaluation Jobs")
	podRegistry := flag.String("pod-registry", "", "-registry as pods reach it, if not by the same name (kind's local registry: kind-registry:5000/PREFIX)")
	flag.StringVar(&cfg.Registry, "registry", "", "HOST[:PORT]/PREFIX for the functions' images")
	flag.BoolVar(&cfg.PlainHTTP, "plain-http", false, "the registry speaks plain HTTP")
	flag.StringVar(&cfg.Func, "func", "", "the func CLI (hack/install-func.sh)")
	flag.StringVar(&cfg.Root, "root", ".", "the checkout")
	flag.StringVar(&cfg.RedisImage, "redis-image", "", "Redis's image (default: eventing/redis.yaml's)")
	flag.StringVar(&cfg.RegistryImage, "registry-image", "", "the results registry's image (default: eventing/registry.yaml's)")
	flag.StringVar(&cfg.IngressPort, "ingress-port", "", "the port the cluster's ingress answers this machine on, if not the URL's")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, &cfg, *kubeconfig, *nodeDir, *data, *podRegistry); err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-deploy:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *deploy.Config, kubeconfig, nodeDir, data, podRegistry string) error {
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
	if cfg.Registry == "" || cfg.Func == "" {
		return fmt.Errorf("-registry and -func are required")
	}
	if kubeconfig == "" {
		home, _ := os.UserHomeDir()
		kubeconfig = filepath.Join(home, ".kube", "config")
	}
	var err error
	if cfg.Kubeconfig, err = os.ReadFile(kubeconfig); err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	if podRegistry == "" {
		podRegistry = cfg.Registry
	}
	cfg.Env = map[string][]string{"deploy": {"EVALFLOW_JOB_IMAGES=" + podRegistry}}
	if data != "" {
		dest, err := oci.Open(oci.Config{Registry: cfg.Registry + "/datasets", PlainHTTP: cfg.PlainHTTP})
		if err != nil {
			return err
		}
		a, err := dest.PushDir(ctx, strings.TrimRight(data, "/"), "datasets")
		if err != nil {
			return fmt.Errorf("publish the data: %w", err)
		}
		cfg.Env["deploy"] = append(cfg.Env["deploy"], "EVALFLOW_DATA_ARTIFACT="+podRegistry+"/datasets@"+a.Digest)
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
