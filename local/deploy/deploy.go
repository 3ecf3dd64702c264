// Package deploy is the developer's shortcut to evalflow on a cluster (make deploy): a
// release built from the checkout (local/release) and installed at once
// (local/install), the same path a user's evalflow install takes with a release
// manifest. On the node of make knative-up, OnNode fills in the node's registry and
// ingress.
package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/node"
	"github.com/evalflow/evalflow/local/install"
	"github.com/evalflow/evalflow/local/release"
)

// Namespace is where evalflow's functions, Redis, registry and broker run;
// JobNamespace where the Jobs of runs without a kubeconfig run.
const (
	Namespace    = install.Namespace
	JobNamespace = install.JobNamespace
)

// Config says where and what to deploy.
type Config struct {
	// Kubeconfig is the cluster's (its current context).
	Kubeconfig []byte
	// Release says what to build: the checkout, the registry the images go to (and
	// how pods reach it), the sandbox's python3, the data, extra settings. Its
	// Platform, when empty, is the one every node of the cluster runs.
	Release release.Config
	// IngressPort is the port the cluster's public ingress answers this machine on,
	// when not the URL's own; "" keeps the URL.
	IngressPort string
	// Log receives what deploying does; nil: nothing.
	Log io.Writer
}

// Deployment is what a deploy made: the installation, and the release's manifest.
type Deployment struct {
	*install.Installation
	Manifest []byte
}

// Deploy builds a release from the checkout and installs it on the cluster, or
// brings it up to date there.
func Deploy(ctx context.Context, cfg Config) (*Deployment, error) {
	rc := cfg.Release
	rc.Log = cfg.Log
	if rc.Platform == "" {
		var err error
		if rc.Platform, err = nodePlatform(ctx, cfg.Kubeconfig); err != nil {
			return nil, fmt.Errorf("deploy: %w", err)
		}
	}
	rel, err := release.Build(ctx, rc)
	if err != nil {
		return nil, err
	}
	in, err := install.Install(ctx, install.Config{Kubeconfig: cfg.Kubeconfig, Manifest: rel.Manifest, IngressPort: cfg.IngressPort, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	return &Deployment{Installation: in, Manifest: rel.Manifest}, nil
}

// nodePlatform is the os/arch every node of the cluster runs.
func nodePlatform(ctx context.Context, kubeconfig []byte) (string, error) {
	c, err := knative.Connect(kubeconfig)
	if err != nil {
		return "", err
	}
	nodes, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("the nodes' platform (give one to build for): %w", err)
	}
	platform := ""
	for _, n := range nodes.Items {
		p := n.Status.NodeInfo.OperatingSystem + "/" + n.Status.NodeInfo.Architecture
		if platform != "" && p != platform {
			return "", fmt.Errorf("the nodes run %s and %s: give the platform to build for", platform, p)
		}
		platform = p
	}
	return platform, nil
}

// OnNode sets cfg for the node of devkit/node with Knative on it (devkit/knative):
// the node's kubeconfig and registry, and Traefik's loopback port.
func OnNode(cfg *Config, n *node.Node, in *knative.Ingress) error {
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.Kubeconfig = kc
	cfg.Release.Registry, cfg.Release.PlainHTTP = n.Registry+"/evalflow", true
	_, cfg.IngressPort, _ = net.SplitHostPort(in.Loopback)
	return nil
}
