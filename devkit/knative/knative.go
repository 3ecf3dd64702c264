// Package knative brings Knative, built from source by hack/install-knative.sh, up
// on a node of devkit/node: it pushes the cached images to the node's registry,
// applies the manifests and waits until every Deployment is Available.
package knative

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/node"
)

// EventingVersion is the Knative (Eventing and Serving) hack/install-knative.sh builds.
const EventingVersion = "0.50.0"

// EventingDir and ServingDir are where hack/install-knative.sh caches Eventing and
// Serving.
func EventingDir() string { return built("eventing") }
func ServingDir() string  { return built("serving") }

// TraefikBinary is where hack/install-traefik.sh caches Traefik.
func TraefikBinary() string {
	return filepath.Join(localserver.CacheDir(), "traefik-"+TraefikVersion, "traefik")
}

// TraefikVersion is the Traefik hack/install-traefik.sh builds.
const TraefikVersion = "3.6.12"

func built(component string) string {
	return filepath.Join(localserver.CacheDir(), "knative-"+component+"-v"+EventingVersion+"-ko-v0.18.1")
}

// Namespace is where Knative Eventing runs.
const Namespace = "knative-eventing"

// UpEventing brings Knative Eventing up on n from the build cached in dir: core, the
// in-memory channel and the MT channel broker. Applying it again changes nothing.
func UpEventing(ctx context.Context, n *node.Node, dir string) error {
	manifests, err := os.ReadFile(filepath.Join(dir, "eventing.yaml"))
	if err != nil {
		return fmt.Errorf("knative: eventing not built (hack/install-knative.sh builds it): %w", err)
	}
	if err := pushImages(ctx, string(manifests), filepath.Join(dir, "registry"), n.Registry); err != nil {
		return err
	}
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		return err
	}
	c, err := connect(kc)
	if err != nil {
		return err
	}
	if err := c.apply(ctx, strings.ReplaceAll(string(manifests), placeholder, n.Registry+"/")); err != nil {
		return err
	}
	return c.available(ctx, Namespace, 5*time.Minute)
}

// ServingNamespace is where Knative Serving runs.
const ServingNamespace = "knative-serving"

// Ingress is how requests reach Knative Services on the node: Traefik's entrypoints.
type Ingress struct {
	// Public and Private are HOST:PORT of the public entrypoint (every Service) and the
	// cluster-local one, on the node address; a request names its Service by Host.
	Public, Private string
	// Domain is the Services' domain: NAME.NAMESPACE.Domain.
	Domain string
}

// Domain is the domain of Knative Services on the node.
const Domain = "evalflow.local"

// UpServing brings Knative Serving up on n from the build cached in dir, with Traefik
// (the binary traefik, hack/install-traefik.sh) as its networking layer: a host
// process of the node on its address, reading Knative's ingresses from the API server.
func UpServing(ctx context.Context, n *node.Node, dir, traefik string) (*Ingress, error) {
	manifests, err := os.ReadFile(filepath.Join(dir, "serving.yaml"))
	if err != nil {
		return nil, fmt.Errorf("knative: serving not built (hack/install-knative.sh serving builds it): %w", err)
	}
	if err := pushImages(ctx, string(manifests), filepath.Join(dir, "registry"), n.Registry); err != nil {
		return nil, err
	}
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		return nil, err
	}
	c, err := connect(kc)
	if err != nil {
		return nil, err
	}
	if err := c.apply(ctx, strings.ReplaceAll(string(manifests), placeholder, n.Registry+"/")); err != nil {
		return nil, err
	}
	if err := c.available(ctx, ServingNamespace, 5*time.Minute); err != nil {
		return nil, err
	}
	host := strings.Split(n.Registry, ":")[0]
	for name, data := range map[string]map[string]string{
		"config-network": {"ingress-class": "traefik.ingress.networking.knative.dev"},
		"config-domain":  {Domain: ""},
		// The controller resolves tags to digests from its pod, which reaches the
		// node's registry by address; its images are named by digest already.
		"config-deployment": {"registries-skipping-tag-resolving": "kind.local,ko.local,dev.local," + n.Registry},
	} {
		if err := c.setConfig(ctx, ServingNamespace, name, data); err != nil {
			return nil, err
		}
	}
	return c.startTraefik(ctx, n, host, traefik)
}

// setConfig adds data to the ConfigMap (Knative's webhook validates it).
func (c *cluster) setConfig(ctx context.Context, namespace, name string, data map[string]string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		cm, err := c.kube.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			for k, v := range data {
				cm.Data[k] = v
			}
			if _, err = c.kube.CoreV1().ConfigMaps(namespace).Update(ctx, cm, metav1.UpdateOptions{}); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("knative: configure %s/%s: %w", namespace, name, err)
		}
		time.Sleep(time.Second)
	}
}

// startTraefik runs Traefik's Knative provider on the node address, with a public
// and a cluster-local entrypoint, each also a Service (with an endpoint on the node
// address) that Knative names in its ingresses' status.
func (c *cluster) startTraefik(ctx context.Context, n *node.Node, host, traefik string) (*Ingress, error) {
	free, err := localserver.FreePortsOn(host, 3)
	if err != nil {
		return nil, err
	}
	ports := []string{strconv.Itoa(free[0]), strconv.Itoa(free[1]), strconv.Itoa(free[2])}
	in := &Ingress{Public: net.JoinHostPort(host, ports[0]), Private: net.JoinHostPort(host, ports[1]), Domain: Domain}
	for name, port := range map[string]string{"traefik-public": ports[0], "traefik-private": ports[1]} {
		if err := c.apply(ctx, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  ports: [{name: http, port: 80, targetPort: %[3]s}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: %[1]s, namespace: %[2]s}
subsets: [{addresses: [{ip: %[4]s}], ports: [{name: http, port: %[3]s}]}]
`, name, ServingNamespace, port, host)); err != nil {
			return nil, err
		}
	}
	// The static configuration holds the API server's token: a file only root reads,
	// not the command line.
	conf := fmt.Sprintf(`log: {level: INFO}
ping: {entryPoint: ping}
experimental: {knative: true}
entryPoints:
  ping: {address: %q}
  web: {address: %q}
  web-internal: {address: %q}
providers:
  knative:
    endpoint: %q
    token: %q
    certAuthFilePath: %q
    publicEntrypoints: [web]
    privateEntrypoints: [web-internal]
    publicService: {name: traefik-public, namespace: %s}
    privateService: {name: traefik-private, namespace: %s}
`, net.JoinHostPort(host, ports[2]), in.Public, in.Private, n.API, n.AdminToken, filepath.Join(n.Dir, "certs", "apiserver.crt"),
		ServingNamespace, ServingNamespace)
	path := filepath.Join(n.Dir, "traefik.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	err = n.Spawn(ctx, "traefik", localserver.HTTPOK("http://"+net.JoinHostPort(host, ports[2])+"/ping"), 60*time.Second, traefik,
		"--configFile="+path)
	if err != nil {
		return nil, err
	}
	return in, nil
}

// placeholder is the cached manifests' registry.
const placeholder = "REGISTRY/"

var imageRef = regexp.MustCompile(`REGISTRY/[^\s"']+@sha256:[0-9a-f]{64}`)

// pushImages copies every image the manifests name from the cached registry storage
// to the node's registry, under the same repository and digest.
func pushImages(ctx context.Context, manifests, storage, registry string) error {
	serve, err := os.MkdirTemp("", "evalflow-knative-registry")
	if err != nil {
		return err
	}
	defer os.RemoveAll(serve)
	if err := os.Symlink(storage, filepath.Join(serve, "data")); err != nil {
		return err
	}
	cached, err := localserver.Registry(ctx, serve, "", "")
	if err != nil {
		return err
	}
	defer cached.Stop()
	seen := map[string]bool{}
	for _, ref := range imageRef.FindAllString(manifests, -1) {
		if seen[ref] {
			continue
		}
		seen[ref] = true
		path := strings.TrimPrefix(ref, placeholder)
		if err := crane.Copy(cached.Addr+"/"+path, registry+"/"+path, crane.Insecure, crane.WithContext(ctx)); err != nil {
			return fmt.Errorf("knative: push %s to the node: %w", path, err)
		}
	}
	if len(seen) == 0 {
		return errors.New("knative: the manifests name no image")
	}
	return nil
}

// Apply creates each object of the multi-document manifests on the cluster of
// kubeconfig, in order; one that exists is left as it is.
func Apply(ctx context.Context, kubeconfig []byte, manifests string) error {
	c, err := connect(kubeconfig)
	if err != nil {
		return err
	}
	return c.apply(ctx, manifests)
}

// cluster applies manifests to a cluster.
type cluster struct {
	kube    kubernetes.Interface
	dynamic dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper
}

func connect(kubeconfig []byte) (*cluster, error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	c := &cluster{}
	if c.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	return c, nil
}

// apply creates each object of the multi-document manifests: Namespaces and CRDs
// first, then the rest in order; one that exists is left as it is. A kind the API
// server does not serve yet (a CRD created a moment before) is asked again until it is.
func (c *cluster) apply(ctx context.Context, manifests string) error {
	var first, rest []*unstructured.Unstructured
	for _, doc := range strings.Split(manifests, "\n---") {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
			return fmt.Errorf("knative: manifest: %w", err)
		}
		switch {
		case len(obj.Object) == 0:
		case obj.GetKind() == "Namespace" || obj.GetKind() == "CustomResourceDefinition":
			first = append(first, obj)
		default:
			rest = append(rest, obj)
		}
	}
	for _, obj := range append(first, rest...) {
		if err := c.create(ctx, obj); err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) create(ctx context.Context, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	deadline := time.Now().Add(60 * time.Second)
	for {
		m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err == nil {
			r := c.dynamic.Resource(m.Resource)
			var ri dynamic.ResourceInterface = r
			if m.Scope.Name() == meta.RESTScopeNameNamespace {
				ri = r.Namespace(obj.GetNamespace())
			}
			_, err = ri.Create(ctx, obj, metav1.CreateOptions{FieldManager: "evalflow"})
			if err == nil || apierrors.IsAlreadyExists(err) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("knative: create %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		c.mapper.Reset()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// available waits until every Deployment of namespace is Available.
func (c *cluster) available(ctx context.Context, namespace string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ds, err := c.kube.AppsV1().Deployments(namespace).List(ctx, metav1.ListOptions{})
		var waiting []string
		if err == nil {
			for _, d := range ds.Items {
				if !isAvailable(d) {
					waiting = append(waiting, d.Name)
				}
			}
			if len(ds.Items) > 0 && len(waiting) == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("knative: deployments of %s not available within %s: %v %v", namespace, within, waiting, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func isAvailable(d appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == "True" {
			return true
		}
	}
	return false
}
