package pipelinetest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
)

// Ticks is a real API server where job-watch's tick is made on demand: Knative's
// PingSource kind (its CustomResourceDefinition, schema left open), the namespace
// "evalflow", and an identity granted there what eventing/rbac.yaml grants start and
// job-watch (Role evalflow-ticker) and nothing else.
type Ticks struct {
	// Config is what a step needs to make and remove the tick there.
	Config map[string]string
	admin  dynamic.ResourceInterface
}

// NewTicks starts the API server for the test.
func NewTicks(t testing.TB) *Ticks {
	t.Helper()
	user := localserver.KubeUser{Name: "evalflow-ticker", Token: "ticker-token"}
	k := testserver.Kube(t, localserver.KubeOptions{Users: []localserver.KubeUser{user}})
	admin := testserver.KubeAdmin(t, k)
	dyn := testserver.KubeDynamic(t, k.Kubeconfig(k.Admin.Token, "evalflow"))
	ctx := context.Background()
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "pingsources.sources.knative.dev"},
		"spec": map[string]any{"group": "sources.knative.dev", "scope": "Namespaced",
			"names": map[string]any{"plural": "pingsources", "singular": "pingsource", "kind": "PingSource", "listKind": "PingSourceList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}},
	}}
	if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testserver.Namespace(t, admin, "evalflow")
	testserver.Grant(t, admin, "evalflow", user.Name, []rbacv1.PolicyRule{
		{APIGroups: []string{"sources.knative.dev"}, Resources: []string{"pingsources"}, Verbs: []string{"create"}},
		{APIGroups: []string{"sources.knative.dev"}, Resources: []string{"pingsources"}, ResourceNames: []string{evalflow.Tick.Name}, Verbs: []string{"delete"}},
	})
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, k.Kubeconfig(user.Token, "evalflow"), 0o600); err != nil {
		t.Fatal(err)
	}
	ticks := &Ticks{Config: map[string]string{"EVALFLOW_OWN_CLUSTER": path, "EVALFLOW_TICK_ON_DEMAND": "true"},
		admin: dyn.Resource(schema.GroupVersionResource{Group: "sources.knative.dev", Version: "v1", Resource: "pingsources"}).Namespace("evalflow")}
	// The kind is served a moment after its definition is made.
	testserver.Eventually(t, 10*time.Second, "the PingSource kind served", func() bool {
		_, err := ticks.admin.List(ctx, metav1.ListOptions{})
		return err == nil
	})
	return ticks
}

// Ticking is whether the tick is there, as the API server has it.
func (k *Ticks) Ticking(t testing.TB) bool {
	t.Helper()
	_, err := k.admin.Get(context.Background(), evalflow.Tick.Name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}
