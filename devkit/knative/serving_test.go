package knative_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/evalflow/evalflow/devkit/images"
	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/testserver"
)

// Knative Serving built from source runs on the node with Traefik as its networking
// layer: a Knative Service goes Ready, answers through Traefik's public entrypoint,
// scales to zero when idle, and the next request wakes it.
func TestServingScalesAServiceToZeroAndWakesIt(t *testing.T) {
	n := testserver.Node(t)
	in := testserver.KnativeServing(t, n)
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kube := testserver.KubeClient(t, kc)
	// Scale to zero soon: the shortest window and grace period Knative accepts.
	cm, err := kube.CoreV1().ConfigMaps(knative.ServingNamespace).Get(ctx, "config-autoscaler", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data = map[string]string{"scale-to-zero-grace-period": "6s", "stable-window": "6s"}
	if _, err := kube.CoreV1().ConfigMaps(knative.ServingNamespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	img, err := images.Build(images.Spec{Binary: testserver.BuildStatic(t, "github.com/evalflow/evalflow/devkit/knative/internal/hello"),
		Path: "/hello", OS: "linux", Architecture: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	digest, err := images.Push(img, n.Registry+"/evalflow/hello:test")
	if err != nil {
		t.Fatal(err)
	}
	service := func(name, labels string) string {
		return fmt.Sprintf(`apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: %s, namespace: web, labels: {%s}}
spec:
  template:
    metadata:
      annotations: {autoscaling.knative.dev/window: "6s"}
    spec:
      containers:
      - image: %s/evalflow/hello@%s
        securityContext:
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
          seccompProfile: {type: RuntimeDefault}
`, name, labels, n.Registry, digest)
	}
	if err := knative.Apply(ctx, kc, "apiVersion: v1\nkind: Namespace\nmetadata: {name: web}\n---\n"+
		service("hello", "")+"---\n"+service("internal", "networking.knative.dev/visibility: cluster-local")); err != nil {
		t.Fatal(err)
	}
	cfg, _ := clientcmd.RESTConfigFromKubeConfig(kc)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	services := schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"}
	ready(t, dyn, services, "web", "hello")
	ready(t, dyn, services, "web", "internal")

	ask := func(entrypoint, host string) (int, string, time.Duration) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+entrypoint+"/", nil)
		req.Host = host
		start := time.Now()
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start)
	}
	get := func() (string, time.Duration) {
		t.Helper()
		code, body, took := ask(in.Public, "hello.web."+in.Domain)
		if code != http.StatusOK {
			t.Fatalf("GET through Traefik: %d: %s", code, body)
		}
		return body, took
	}
	// Traefik takes up a Ready Service's ingress within a moment.
	routed := func(entrypoint, host string) {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if code, _, _ := ask(entrypoint, host); code != http.StatusNotFound {
				return
			}
		}
	}
	routed(in.Public, "hello.web."+in.Domain)
	routed(in.Private, "internal.web.svc.cluster.local")
	if body, _ := get(); !strings.HasPrefix(body, "hello from hello-") {
		t.Fatalf("the Service answered %q", body)
	}
	// A cluster-local Service answers on the cluster-local entrypoint only.
	if code, body, _ := ask(in.Private, "internal.web.svc.cluster.local"); code != http.StatusOK || !strings.HasPrefix(body, "hello from internal-") {
		t.Fatalf("the cluster-local Service inside the cluster: %d %q", code, body)
	}
	if code, _, _ := ask(in.Public, "internal.web."+in.Domain); code == http.StatusOK {
		t.Fatal("the cluster-local Service answers from outside the cluster")
	}

	// pods counts the Service's pods; live only those not terminating.
	pods := func(live bool) int {
		l, err := kube.CoreV1().Pods("web").List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/service=hello"})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range l.Items {
			if !live || p.DeletionTimestamp == nil {
				n++
			}
		}
		return n
	}
	// Scaled to zero means gone, not terminating: a terminating pod still drains requests.
	deadline := time.Now().Add(3 * time.Minute)
	for pods(false) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Second)
	}
	if k := pods(false); k != 0 {
		t.Fatalf("the idle Service still has %d pods", k)
	}
	body, took := get()
	if !strings.HasPrefix(body, "hello from hello-") || pods(true) == 0 {
		t.Fatalf("the request did not wake the Service: %q", body)
	}
	t.Logf("woken from zero in %s", took)
}
