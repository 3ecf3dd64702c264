// Package deploy puts evalflow on a Kubernetes cluster that runs Knative Serving and
// Eventing, from the checkout's manifests and each function's func.yaml: the one
// deploy path for any cluster (make deploy).
//
// In order: the namespaces, feature flags and RBAC (eventing/); the Secrets,
// generated where absent; Redis and the results registry on persistent volumes; the
// broker and the SinkBinding that gives functions K_SINK; each function, built from
// its own directory and deployed by the func CLI (func deploy); the Triggers and the
// PingSource and the ApiServerSource on the Jobs. Each waits for what it made to be Ready before the next. Deploying
// again updates in place and keeps the Secrets.
package deploy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/evalflow/evalflow/devkit/images"
	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/modproxy"
	"github.com/evalflow/evalflow/devkit/node"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/auth"
)

// Namespace is where evalflow's functions, Redis, registry and broker run.
const Namespace = "evalflow"

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
	return d.applyReady(ctx, time.Minute, "eventing/namespace.yaml", "eventing/config-features.yaml", "eventing/rbac.yaml")
}

// secrets creates what func.yaml refers to, where absent: the seal key
// (evalflow-seal), the registry's credentials and htpasswd (evalflow-registry), and
// the callers' tokens file with an operator's token (evalflow-tokens, start's
// EVALFLOW_TOKENS_FILE). Present ones are kept: runs sealed with a key stay readable,
// and the operator's tokens stay theirs.
func (d *deployer) secrets(ctx context.Context) error {
	key := make([]byte, 32)
	password := make([]byte, 24)
	rand.Read(key)
	rand.Read(password)
	htpasswd, err := htpasswdOf(hex.EncodeToString(password))
	if err != nil {
		return err
	}
	for name, data := range map[string]map[string]string{
		"evalflow-seal": {"key": base64.StdEncoding.EncodeToString(key)},
		registrySecret: {"username": "evalflow", "password": hex.EncodeToString(password),
			"htpasswd": htpasswd},
		TokensSecret: {"tokens": string(auth.NewFile(auth.NewToken()))},
	} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "evalflow"}}, StringData: data}
		_, err := d.cluster.Kube.CoreV1().Secrets(Namespace).Create(ctx, s, metav1.CreateOptions{FieldManager: "evalflow"})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("secret %s: %w", name, err)
		}
	}
	if err := d.cheapHtpasswd(ctx); err != nil {
		return err
	}
	tokens, err := d.cluster.Kube.CoreV1().Secrets(Namespace).Get(ctx, TokensSecret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("secret %s: %w", TokensSecret, err)
	}
	d.operatorToken = auth.OperatorToken(tokens.Data["tokens"])
	return nil
}

// htpasswdOf is the registry's htpasswd for user evalflow with password. The
// registry checks it on every request it is sent (a results push or pull is a dozen),
// so its bcrypt cost is the least: a work factor slows the guessing of a password
// people chose, and this one is 24 random bytes, which no work factor makes safer.
// At bcrypt's default cost each check took some 80 ms on the project's node, and an
// artifact step about 0.7 s.
func htpasswdOf(password string) (string, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return "", err
	}
	return "evalflow:" + string(hash) + "\n", nil
}

// cheapHtpasswd writes again, at htpasswdOf's cost, the htpasswd of a deployment made
// with a costlier one (from its own password: nothing else changes).
func (d *deployer) cheapHtpasswd(ctx context.Context) error {
	secrets := d.cluster.Kube.CoreV1().Secrets(Namespace)
	s, err := secrets.Get(ctx, registrySecret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("secret %s: %w", registrySecret, err)
	}
	_, hash, _ := strings.Cut(strings.TrimSpace(string(s.Data["htpasswd"])), ":")
	if cost, err := bcrypt.Cost([]byte(hash)); err == nil && cost <= bcrypt.MinCost {
		return nil
	}
	htpasswd, err := htpasswdOf(string(s.Data["password"]))
	if err != nil {
		return err
	}
	s.Data["htpasswd"] = []byte(htpasswd)
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{FieldManager: "evalflow"}); err != nil {
		return fmt.Errorf("secret %s: %w", registrySecret, err)
	}
	return nil
}

// registrySecret holds the results registry's credentials and its htpasswd.
const registrySecret = "evalflow-registry"

// TokensSecret holds the callers' tokens file (key "tokens"): add a caller with a line
// "TOKEN CALLER"; start reads it again when it changes.
const TokensSecret = "evalflow-tokens"

// stores brings up Redis and the results registry, with the images the config names.
func (d *deployer) stores(ctx context.Context) error {
	var objs []*unstructured.Unstructured
	for file, image := range map[string]string{"eventing/redis.yaml": d.cfg.RedisImage, "eventing/registry.yaml": d.cfg.RegistryImage} {
		o, err := d.manifests(file)
		if err != nil {
			return err
		}
		for _, obj := range o {
			if obj.GetKind() == "Deployment" && image != "" {
				if err := setImage(obj, image); err != nil {
					return err
				}
			}
			if obj.GetKind() == "Deployment" && obj.GetName() == "registry" {
				// The registry reads its htpasswd when it starts: a new one starts it again.
				s, err := d.cluster.Kube.CoreV1().Secrets(Namespace).Get(ctx, registrySecret, metav1.GetOptions{})
				if err != nil {
					return fmt.Errorf("secret %s: %w", registrySecret, err)
				}
				sum := sha256.Sum256(s.Data["htpasswd"])
				if err := unstructured.SetNestedField(obj.Object, hex.EncodeToString(sum[:8]), "spec", "template", "metadata", "annotations", "evalflow.dev/htpasswd"); err != nil {
					return err
				}
			}
		}
		objs = append(objs, o...)
	}
	return d.put(ctx, 3*time.Minute, objs...)
}

// setImage sets the image of a Deployment's one container.
func setImage(obj *unstructured.Unstructured, image string) error {
	containers, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		return fmt.Errorf("%s: want one container, have %d", obj.GetName(), len(containers))
	}
	containers[0].(map[string]any)["image"] = image
	return unstructured.SetNestedSlice(obj.Object, containers, "spec", "template", "spec", "containers")
}

// broker brings up the broker and the SinkBinding, before the functions: a function
// created after the SinkBinding gets K_SINK as the webhook admits it.
func (d *deployer) broker(ctx context.Context) error {
	if err := d.applyReady(ctx, 2*time.Minute, "broker/*.yaml", "eventing/sinkbinding.yaml"); err != nil {
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
	return d.applyReady(ctx, 2*time.Minute, "triggers/*.yaml", "eventing/pingsource.yaml", "eventing/jobsource.yaml")
}

// functions builds and deploys each function with the func CLI, from a copy of its
// directory alone (func deploy writes what it did into func.yaml), evalflow's own
// modules coming from a file-based module proxy.
func (d *deployer) functions(ctx context.Context) error {
	work, err := os.MkdirTemp("", "evalflow-deploy")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	proxy, modules := filepath.Join(work, "modproxy"), []string{"shared", "localjob", "devkit"}
	version, err := modproxy.Version(d.cfg.Root, modules...)
	if err != nil {
		return err
	}
	paths, err := modproxy.Write(proxy, d.cfg.Root, version, modules...)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(work, "kubeconfig")
	if err := os.WriteFile(kubeconfig, d.cfg.Kubeconfig, 0o600); err != nil {
		return err
	}
	goproxy, err := exec.CommandContext(ctx, "go", "env", "GOPROXY").Output()
	if err != nil {
		return fmt.Errorf("go env: %w", err)
	}
	d.platform = d.nodePlatform(ctx)
	// Every function is copied now, with the modules: what is deployed is the checkout
	// of one moment, however long the builds take.
	for _, step := range evalflow.Steps { // functions/<step>: a test keeps them in step
		name := string(step.ID)
		dir := filepath.Join(work, name)
		if out, err := exec.CommandContext(ctx, "cp", "-r", filepath.Join(d.cfg.Root, "functions", name), dir).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: copy: %v: %s", name, err, out)
		}
		if err := modproxy.Pin(dir, paths, version); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	d.revisions, d.images = map[string]string{}, map[string]string{}
	for _, step := range evalflow.Steps {
		name := string(step.ID)
		if err := d.function(ctx, filepath.Join(work, name), name, kubeconfig, "file://"+proxy+","+strings.TrimSpace(string(goproxy))); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// function builds and deploys the function name from its copy dir.
func (d *deployer) function(ctx context.Context, dir, name, kubeconfig, goproxy string) error {
	args := []string{"deploy", "--path", dir, "--builder", "host", "--registry", d.cfg.Registry, "--namespace", Namespace}
	if d.platform != "" { // hack/install-func.sh lets --platform through to the host builder
		args = append(args, "--platform", d.platform)
	}
	if d.cfg.PlainHTTP {
		args = append(args, "--registry-insecure")
	}
	for _, e := range d.cfg.Env[name] {
		args = append(args, "--env", e)
	}
	cmd := exec.CommandContext(ctx, d.cfg.Func, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "FUNC_ENABLE_HOST_BUILDER=true",
		"GOPROXY="+goproxy, "GONOSUMDB=github.com/evalflow", "GOWORK=off",
		// Without a symbol table and DWARF (-s implies -w): a third off the image.
		"GOFLAGS=-mod=mod -trimpath -ldflags=-s")
	cmd.Stdout, cmd.Stderr = d.log, d.log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("func deploy: %w", err)
	}
	svc := &unstructured.Unstructured{}
	svc.SetAPIVersion("serving.knative.dev/v1")
	svc.SetKind("Service")
	svc.SetNamespace(Namespace)
	svc.SetName("evalflow-" + name)
	if err := d.cluster.Ready(ctx, 2*time.Minute, svc); err != nil {
		return err
	}
	got, err := d.service(ctx, svc.GetName())
	if err != nil {
		return err
	}
	d.revisions[name], _, _ = unstructured.NestedString(got.Object, "status", "latestReadyRevisionName")
	d.images[name], err = serviceImage(got)
	return err
}

// Image is the image function fn (start, verify, ...) runs on c, as func deploy
// pushed it: an image index, named by digest.
func Image(ctx context.Context, c *knative.Cluster, fn string) (string, error) {
	svc, err := c.Get(ctx, "serving.knative.dev/v1", "Service", Namespace, "evalflow-"+fn)
	if err != nil {
		return "", err
	}
	return serviceImage(svc)
}

func serviceImage(svc *unstructured.Unstructured) (string, error) {
	containers, _, _ := unstructured.NestedSlice(svc.Object, "spec", "template", "spec", "containers")
	if len(containers) > 0 {
		if c, ok := containers[0].(map[string]any); ok {
			if image, ok := c["image"].(string); ok && image != "" {
				return image, nil
			}
		}
	}
	return "", fmt.Errorf("Service %s names no image", svc.GetName())
}

// nodePlatform is the os/arch of the cluster's nodes when they all run the same one:
// func's host builder then builds that alone, not its three default platforms. A
// cluster of mixed nodes, or a user who may not list nodes, gets func's default set.
func (d *deployer) nodePlatform(ctx context.Context) string {
	nodes, err := d.cluster.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(d.log, "deploy: cannot list the nodes, so func builds its default platforms: %v\n", err)
		return ""
	}
	platform := ""
	for _, n := range nodes.Items {
		p := n.Status.NodeInfo.OperatingSystem + "/" + n.Status.NodeInfo.Architecture
		if platform != "" && p != platform {
			return ""
		}
		platform = p
	}
	return platform
}

func (d *deployer) service(ctx context.Context, name string) (*unstructured.Unstructured, error) {
	return d.cluster.Get(ctx, "serving.knative.dev/v1", "Service", Namespace, name)
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
