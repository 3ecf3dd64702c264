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
	if err := knative.Apply(ctx, kc, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: web}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello, namespace: web}
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
`, n.Registry, digest)); err != nil {
		t.Fatal(err)
	}
	cfg, _ := clientcmd.RESTConfigFromKubeConfig(kc)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ready(t, dyn, schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"}, "web", "hello")

	get := func() (string, time.Duration) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+in.Public+"/", nil)
		req.Host = "hello.web." + in.Domain
		start := time.Now()
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET through Traefik: %s: %s", resp.Status, b)
		}
		return string(b), time.Since(start)
	}
	if body, _ := get(); !strings.HasPrefix(body, "hello from hello-") {
		t.Fatalf("the Service answered %q", body)
	}

	pods := func() int {
		l, err := kube.CoreV1().Pods("web").List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/service=hello"})
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, p := range l.Items {
			if p.DeletionTimestamp == nil {
				running++
			}
		}
		return running
	}
	deadline := time.Now().Add(3 * time.Minute)
	for pods() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Second)
	}
	if k := pods(); k != 0 {
		t.Fatalf("the idle Service still has %d pods", k)
	}
	body, took := get()
	if !strings.HasPrefix(body, "hello from hello-") || pods() == 0 {
		t.Fatalf("the request did not wake the Service: %q", body)
	}
	t.Logf("woken from zero in %s", took)
}
