package knative

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// Apply creates each object of the multi-document manifests on the cluster of
// kubeconfig, in order; one that exists is left as it is.
func Apply(ctx context.Context, kubeconfig []byte, manifests string) error {
	c, err := Connect(kubeconfig)
	if err != nil {
		return err
	}
	return c.Create(ctx, manifests)
}

// Cluster puts manifests on a cluster and waits for what they make.
type Cluster struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper
}

// Connect speaks to the cluster of kubeconfig.
func Connect(kubeconfig []byte) (*Cluster, error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("knative: kubeconfig: %w", err)
	}
	c := &Cluster{}
	if c.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	return c, nil
}

// Objects parses multi-document manifests: Namespaces and CRDs first, then the rest
// in order.
func Objects(manifests string) ([]*unstructured.Unstructured, error) {
	var first, rest []*unstructured.Unstructured
	for _, doc := range strings.Split(manifests, "\n---") {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
			return nil, fmt.Errorf("knative: manifest: %w", err)
		}
		switch {
		case len(obj.Object) == 0:
		case obj.GetKind() == "Namespace" || obj.GetKind() == "CustomResourceDefinition":
			first = append(first, obj)
		default:
			rest = append(rest, obj)
		}
	}
	return append(first, rest...), nil
}

// Create creates each object of the manifests (Objects' order); one that exists is
// left as it is.
func (c *Cluster) Create(ctx context.Context, manifests string) error {
	objs, err := Objects(manifests)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		if err := c.put(ctx, obj, false); err != nil {
			return err
		}
	}
	return nil
}

// Apply makes each object as obj says, by server-side apply as evalflow: created if
// absent, the fields it names set again if present.
func (c *Cluster) Apply(ctx context.Context, objs ...*unstructured.Unstructured) error {
	for _, obj := range objs {
		if err := c.put(ctx, obj, true); err != nil {
			return err
		}
	}
	return nil
}

// put creates or applies obj. A kind the API server does not serve yet (a CRD
// created a moment before), or one its webhook does not admit yet (the webhook is
// starting: on a node started again on its state, every pod of Knative's starts again
// at once, and the webhooks it registered before are called meanwhile), is asked
// again for up to putWithin.
func (c *Cluster) put(ctx context.Context, obj *unstructured.Unstructured, apply bool) error {
	gvk := obj.GroupVersionKind()
	deadline := time.Now().Add(putWithin)
	for {
		ri, err := c.resource(gvk.GroupKind(), gvk.Version, obj.GetNamespace())
		if err == nil {
			if apply {
				var body []byte
				if body, err = obj.MarshalJSON(); err == nil {
					force := true
					_, err = ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "evalflow", Force: &force})
				}
			} else if _, err = ri.Create(ctx, obj, metav1.CreateOptions{FieldManager: "evalflow"}); apierrors.IsAlreadyExists(err) {
				err = nil
			}
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) || apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
			return fmt.Errorf("knative: put %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		c.mapper.Reset()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// putWithin is how long put asks again.
const putWithin = 5 * time.Minute

func (c *Cluster) resource(gk schema.GroupKind, version, namespace string) (dynamic.ResourceInterface, error) {
	m, err := c.mapper.RESTMapping(gk, version)
	if err != nil {
		return nil, err
	}
	r := c.Dynamic.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return r.Namespace(namespace), nil
	}
	return r, nil
}

// Get reads an object.
func (c *Cluster) Get(ctx context.Context, apiVersion, kind, namespace, name string) (*unstructured.Unstructured, error) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, err
	}
	ri, err := c.resource(gv.WithKind(kind).GroupKind(), gv.Version, namespace)
	if err != nil {
		return nil, err
	}
	return ri.Get(ctx, name, metav1.GetOptions{})
}

// Delete deletes each object, in order, its dependents after it (background
// propagation); one that is absent, or whose kind the cluster does not serve, is gone
// already.
func (c *Cluster) Delete(ctx context.Context, objs ...*unstructured.Unstructured) error {
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		ri, err := c.resource(gvk.GroupKind(), gvk.Version, obj.GetNamespace())
		if meta.IsNoMatchError(err) {
			continue
		}
		if err == nil {
			err = ri.Delete(ctx, obj.GetName(), metav1.DeleteOptions{})
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("knative: delete %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
	}
	return nil
}

// Gone waits until none of objs exists, naming those that still do when within runs
// out.
func (c *Cluster) Gone(ctx context.Context, within time.Duration, objs ...*unstructured.Unstructured) error {
	return c.until(ctx, within, "gone", objs, func(obj *unstructured.Unstructured) string {
		gvk := obj.GroupVersionKind()
		ri, err := c.resource(gvk.GroupKind(), gvk.Version, obj.GetNamespace())
		if meta.IsNoMatchError(err) {
			return ""
		}
		if err == nil {
			_, err = ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
		}
		if apierrors.IsNotFound(err) {
			return ""
		}
		if err != nil {
			return err.Error()
		}
		return "still there"
	})
}

// Ready waits until each object is Ready as Knative and Kubernetes say it: its
// Ready condition True (Knative's kinds) or, for a Deployment, Available, for the
// generation it has now. It names those that are not when within runs out, with why.
func (c *Cluster) Ready(ctx context.Context, within time.Duration, objs ...*unstructured.Unstructured) error {
	return c.until(ctx, within, "ready", objs, func(obj *unstructured.Unstructured) string { return c.notReady(ctx, obj) })
}

// until asks not of each object every second until it says "" for all, and names
// those it says why of when within runs out.
func (c *Cluster) until(ctx context.Context, within time.Duration, what string, objs []*unstructured.Unstructured, not func(*unstructured.Unstructured) string) error {
	deadline := time.Now().Add(within)
	for {
		var waiting []string
		for _, obj := range objs {
			if why := not(obj); why != "" {
				waiting = append(waiting, fmt.Sprintf("%s %s/%s (%s)", obj.GetKind(), obj.GetNamespace(), obj.GetName(), why))
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("knative: not %s within %s: %s", what, within, strings.Join(waiting, "; "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// notReady says why obj is not Ready yet; "" when it is.
func (c *Cluster) notReady(ctx context.Context, obj *unstructured.Unstructured) string {
	gvk := obj.GroupVersionKind()
	ri, err := c.resource(gvk.GroupKind(), gvk.Version, obj.GetNamespace())
	if err != nil {
		return err.Error()
	}
	got, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	want := "Ready"
	if gvk.Kind == "Deployment" {
		want = string(appsv1.DeploymentAvailable)
	}
	if seen, ok, _ := unstructured.NestedInt64(got.Object, "status", "observedGeneration"); ok && seen < got.GetGeneration() {
		return "not yet observed"
	}
	conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == want {
			if m["status"] == "True" {
				return ""
			}
			return fmt.Sprintf("%v: %v", m["reason"], m["message"])
		}
	}
	return "no " + want + " condition yet"
}

// Available waits until every Deployment of namespace is Available.
func (c *Cluster) Available(ctx context.Context, namespace string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ds, err := c.Kube.AppsV1().Deployments(namespace).List(ctx, metav1.ListOptions{})
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
