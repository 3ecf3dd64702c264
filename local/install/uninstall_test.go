package install_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/local/install"
	"github.com/evalflow/evalflow/local/release"
)

// Uninstalled from a real API server (with its namespace and claim controllers), the
// release manifest's objects go, the later first; the runs' data stays unless told:
// namespace evalflow, Redis's and the registry's claims and the Secrets. With
// -delete-data they go too. Knative's feature flags, a setting on Knative's own
// object, stay either way. (Knative's kinds are not served here: the Knative test
// uninstalls those.)
func TestUninstallKeepsTheRunsDataUnlessTold(t *testing.T) {
	k := testserver.Kube(t, localserver.KubeOptions{Controllers: true})
	admin := testserver.KubeAdmin(t, k)
	kubeconfig := k.Kubeconfig(k.Admin.Token, "default")
	ctx := context.Background()
	images := map[string]string{}
	for _, n := range []string{"redis", "registry"} {
		images[n] = "127.0.0.1:5000/evalflow/" + n + "@sha256:" + strings.Repeat("0", 64)
	}
	manifest, err := release.Render(release.Config{Root: testserver.RepoRoot(), Registry: "127.0.0.1:5000/evalflow"}, &release.Release{Images: images})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := knative.Objects(string(manifest))
	if err != nil {
		t.Fatal(err)
	}
	c, err := knative.Connect(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	testserver.Namespace(t, admin, "knative-eventing")
	var core []*unstructured.Unstructured
	for _, o := range objs {
		if !strings.Contains(o.GetAPIVersion(), "knative.dev") {
			core = append(core, o)
		}
	}
	apply := func() {
		t.Helper()
		if err := c.Apply(ctx, core...); err != nil {
			t.Fatal(err)
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: install.RedisSecret, Namespace: install.Namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "evalflow"}}, StringData: map[string]string{"password": "p"}}
		if _, err := admin.CoreV1().Secrets(install.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	exists := func(o *unstructured.Unstructured) bool {
		got, err := c.Get(ctx, o.GetAPIVersion(), o.GetKind(), o.GetNamespace(), o.GetName())
		return err == nil && got.GetDeletionTimestamp() == nil
	}
	apply()
	if err := install.Uninstall(ctx, install.UninstallConfig{Kubeconfig: kubeconfig, Manifest: manifest}); err != nil {
		t.Fatal(err)
	}
	for _, o := range core {
		keep := o.GetKind() == "PersistentVolumeClaim" || (o.GetKind() == "Namespace" && o.GetName() == install.Namespace) ||
			o.GetNamespace() == "knative-eventing"
		if exists(o) != keep {
			t.Errorf("uninstalled: %s %s/%s there %v; want %v", o.GetKind(), o.GetNamespace(), o.GetName(), !keep, keep)
		}
	}
	if _, err := admin.CoreV1().Secrets(install.Namespace).Get(ctx, install.RedisSecret, metav1.GetOptions{}); err != nil {
		t.Errorf("uninstalled, the Secret %s went with it: %v", install.RedisSecret, err)
	}

	apply() // again on the kept data, then everything
	started := time.Now()
	if err := install.Uninstall(ctx, install.UninstallConfig{Kubeconfig: kubeconfig, Manifest: manifest, DeleteData: true}); err != nil {
		t.Fatal(err)
	}
	t.Logf("uninstalled with the data in %s", time.Since(started).Round(time.Second))
	for _, o := range core {
		if keep := o.GetNamespace() == "knative-eventing"; exists(o) != keep {
			t.Errorf("uninstalled with the data: %s %s/%s there %v; want %v", o.GetKind(), o.GetNamespace(), o.GetName(), !keep, keep)
		}
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, install.Namespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s: %v; want it gone", install.Namespace, err)
	}
}
