// Package deploy puts evalflow on a Kubernetes cluster that runs Knative Serving and
// Eventing, from the checkout's manifests and each function's func.yaml: the one
// deploy path for any cluster (make deploy).
//
// In order: the namespaces, feature flags and RBAC (eventing/); the Secrets,
// generated where absent; Redis and the results registry on persistent volumes; the
// broker and the SinkBinding that gives functions K_SINK; each function, built from
// its own directory and deployed by the func CLI (func deploy); the Triggers and the
// ApiServerSource on the Jobs. Each waits for what it made to be Ready before the
// next. Deploying again updates in place and keeps the Secrets. job-watch's tick, the
// PingSource of eventing/pingsource.yaml, is not applied: start makes it with a run
// and job-watch removes it when no run is in flight.
package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/evalflow/evalflow/devkit/images"
	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/node"
)

// Namespace is where evalflow's functions, Redis, registry and broker run;
// JobNamespace where the Jobs of runs without a kubeconfig run (eventing/namespace.yaml).
const (
	Namespace    = "evalflow"
	JobNamespace = "evalflow-jobs"
)

// Config says where and what to deploy.
type Config struct {
	// Kubeconfig is the cluster's (its current context).
	Kubeconfig []byte
	// Root is the checkout: eventing/, broker/, triggers/, functions/.
	Root string
	// Func is the func CLI (hack/install-func.sh).
	Func string
	// Registry is HOST[:PORT]/PREFIX the functions' images go under: this machine
	// pushes there and the cluster's nodes pull from there. PlainHTTP: it speaks HTTP.
	Registry  string
	PlainHTTP bool
	// RedisImage and RegistryImage replace the images eventing/redis.yaml and
	// eventing/registry.yaml name, when set.
	RedisImage, RegistryImage string
	// Env adds settings to functions: function name (start, deploy, ...) → NAME=VALUE.
	Env map[string][]string
	// IngressPort is the port the cluster's public ingress answers this machine on,
	// when not the URL's own (a port-forward, a node's entrypoint); "" keeps the URL.
	IngressPort string
	// Log receives what deploying does; nil: nothing.
	Log io.Writer
}

// Deployment is what a deploy made.
type Deployment struct {
	// StartURL is start's URL as this machine reaches it.
	StartURL string
	// Revisions maps each function (start, verify, ...) to its Ready revision, and
	// Images to the image it runs.
	Revisions, Images map[string]string
	// OperatorToken is an operator's token of the tokens Secret ("" where the
	// Secret, the operator's own, holds none).
	OperatorToken string
}

// Deploy puts evalflow on the cluster, or brings it up to date there.
func Deploy(ctx context.Context, cfg Config) (*Deployment, error) {
	c, err := knative.Connect(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	d := &deployer{cfg: cfg, cluster: c, log: cfg.Log}
	if d.log == nil {
		d.log = io.Discard
	}
	for _, stage := range []struct {
		what string
		run  func(context.Context) error
	}{
		{"namespaces, feature flags and RBAC", d.base},
		{"secrets", d.secrets},
		{"Redis and the results registry", d.stores},
		{"the broker", d.broker},
		{"the functions", d.functions},
		{"the triggers and the sources", d.triggers},
	} {
		fmt.Fprintf(d.log, "deploy: %s\n", stage.what)
		if err := stage.run(ctx); err != nil {
			return nil, fmt.Errorf("deploy: %s: %w", stage.what, err)
		}
	}
	return d.result(ctx)
}

type deployer struct {
	cfg           Config
	cluster       *knative.Cluster
	log           io.Writer
	revisions     map[string]string
	images        map[string]string
	operatorToken string
	platform      string // the one os/arch every node runs, or "" for func's default set
}

// manifests reads the checkout's files matching pattern as objects.
func (d *deployer) manifests(pattern string) ([]*unstructured.Unstructured, error) {
	files, err := filepath.Glob(filepath.Join(d.cfg.Root, pattern))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no manifest %s under %s", pattern, d.cfg.Root)
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		o, err := knative.Objects(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		objs = append(objs, o...)
	}
	return objs, nil
}

// applyReady applies the manifests and waits until those of a kind with a Ready
// condition (or Available, for Deployments) have it.
func (d *deployer) applyReady(ctx context.Context, within time.Duration, patterns ...string) error {
	var all []*unstructured.Unstructured
	for _, p := range patterns {
		objs, err := d.manifests(p)
		if err != nil {
			return err
		}
		all = append(all, objs...)
	}
	return d.put(ctx, within, all...)
}

func (d *deployer) put(ctx context.Context, within time.Duration, objs ...*unstructured.Unstructured) error {
	if err := d.cluster.Apply(ctx, objs...); err != nil {
		return err
	}
	var wait []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment", "Broker", "Trigger", "PingSource", "ApiServerSource", "SinkBinding":
			wait = append(wait, o)
		}
	}
	return d.cluster.Ready(ctx, within, wait...)
}

func (d *deployer) base(ctx context.Context) error {
	return d.applyReady(ctx, time.Minute, "eventing/namespace.yaml", "eventing/networkpolicies.yaml", "eventing/config-features.yaml", "eventing/rbac.yaml")
}

// broker brings up the broker, the SinkBinding and who may post to the broker
// (eventpolicy.yaml), before the functions: a function created after the SinkBinding
// gets K_SINK (and its token, /oidc/token) as the webhook admits it.
func (d *deployer) broker(ctx context.Context) error {
	if err := d.applyReady(ctx, 2*time.Minute, "broker/*.yaml", "eventing/sinkbinding.yaml", "eventing/eventpolicy.yaml"); err != nil {
		return err
	}
	return d.asyncChannel(ctx)
}

// asyncChannel makes an in-memory channel under the broker answer a sender once it
// has the event, not after every Trigger's delivery of it. By default it answers
// after: each sender (a function's reply, the broker's ingress) then waits for the
// whole chain of deliveries that follows, retries included, and a sender that gives
// up cancels them, dead letters too. A broker on another channel (Kafka) is left as
// it is.
func (d *deployer) asyncChannel(ctx context.Context) error {
	const channel, async = "evalflow-kne-trigger", "messaging.knative.dev/async-handler" // the MT channel broker's: BROKER-kne-trigger
	got, err := d.cluster.Get(ctx, "messaging.knative.dev/v1", "InMemoryChannel", Namespace, channel)
	if err != nil || got.GetAnnotations()[async] == "true" {
		return nil
	}
	imc := &unstructured.Unstructured{}
	imc.SetAPIVersion("messaging.knative.dev/v1")
	imc.SetKind("InMemoryChannel")
	imc.SetNamespace(Namespace)
	imc.SetName(channel)
	imc.SetAnnotations(map[string]string{async: "true"})
	if err := d.cluster.Apply(ctx, imc); err != nil {
		return err
	}
	// The dispatcher reads the annotation when it first sees a channel only: it starts
	// again to read it.
	fmt.Fprintln(d.log, "deploy: restarting the in-memory channel's dispatcher for its async handler")
	return d.restartPods(ctx, "knative-eventing", "messaging.knative.dev/channel=in-memory-channel,messaging.knative.dev/role=dispatcher")
}

// restartPods deletes the pods selector selects, and waits until their Deployment's
// new ones are Ready.
func (d *deployer) restartPods(ctx context.Context, namespace, selector string) error {
	pods := d.cluster.Kube.CoreV1().Pods(namespace)
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: selector}); err != nil {
		return fmt.Errorf("restart %s: %w", selector, err)
	}
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil || len(l.Items) == 0 {
			continue
		}
		ready := true
		for _, p := range l.Items {
			ready = ready && p.DeletionTimestamp == nil && podReady(p)
		}
		if ready {
			return nil
		}
	}
	return fmt.Errorf("restart %s: not ready within 2 minutes", selector)
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (d *deployer) triggers(ctx context.Context) error {
	return d.applyReady(ctx, 2*time.Minute, "triggers/*.yaml", "eventing/jobsource.yaml")
}

// result reads start's URL, as this machine reaches it.
func (d *deployer) result(ctx context.Context) (*Deployment, error) {
	start, err := d.service(ctx, "evalflow-start")
	if err != nil {
		return nil, err
	}
	raw, _, _ := unstructured.NestedString(start.Object, "status", "url")
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return nil, fmt.Errorf("deploy: start has no URL (%q)", raw)
	}
	if d.cfg.IngressPort != "" {
		u.Host = net.JoinHostPort(u.Hostname(), d.cfg.IngressPort)
	}
	return &Deployment{StartURL: u.String(), Revisions: d.revisions, Images: d.images, OperatorToken: d.operatorToken}, nil
}

// OnNode sets cfg for the node of devkit/node with Knative on it (devkit/knative):
// the node's kubeconfig and registry, Traefik's loopback port, and Redis and the
// results registry as images of Debian's redis-server and docker-registry, pushed to
// the node.
func OnNode(cfg *Config, n *node.Node, in *knative.Ingress) error {
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.Kubeconfig = kc
	cfg.Registry, cfg.PlainHTTP = n.Registry+"/evalflow", true
	_, cfg.IngressPort, _ = net.SplitHostPort(in.Loopback)
	for _, p := range []struct {
		program, path, repo string
		image               *string
	}{
		{"/usr/bin/redis-server", "/usr/local/bin/redis-server", "redis", &cfg.RedisImage},
		{"/usr/bin/docker-registry", "/usr/local/bin/registry", "registry", &cfg.RegistryImage},
	} {
		img, err := images.Program(p.program, p.path)
		if err != nil {
			return err
		}
		ref := cfg.Registry + "/" + p.repo
		digest, err := images.Push(img, ref+":debian")
		if err != nil {
			return err
		}
		*p.image = ref + "@" + digest.String()
	}
	return nil
}
