// Package knative brings Knative, built from source by hack/install-knative.sh, up
// on a node of devkit/node: it pushes the cached images to the node's registry,
// applies the manifests and waits until every Deployment is Available.
package knative

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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

// EventingVersion is the Knative Eventing hack/install-knative.sh builds.
const EventingVersion = "0.50.0"

// EventingDir is where hack/install-knative.sh caches Eventing, or $EVALFLOW_KNATIVE.
func EventingDir() string {
	if p := os.Getenv("EVALFLOW_KNATIVE"); p != "" {
		return p
	}
	return filepath.Join(localserver.CacheDir(), "knative-eventing-v"+EventingVersion+"-ko-v0.18.1")
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

// apply creates each object of the multi-document manifests, in order; one that
// exists is left as it is. A kind the API server does not know yet (a CRD created a
// moment before) is asked again until it does.
func (c *cluster) apply(ctx context.Context, manifests string) error {
	for _, doc := range strings.Split(manifests, "\n---") {
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
			return fmt.Errorf("knative: manifest: %w", err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if err := c.create(ctx, &obj); err != nil {
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
