package deploy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/modproxy"
	evalflow "github.com/evalflow/evalflow/shared"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The functions as Knative Services, built by func from their own directories.

// functions builds and deploys each function with the func CLI, from a copy of its
// directory alone (func deploy writes what it did into func.yaml), evalflow's own
// modules coming from a file-based module proxy.
func (d *deployer) functions(ctx context.Context) error {
	work, err := os.MkdirTemp("", "evalflow-deploy")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	proxy, modules := filepath.Join(work, "modproxy"), []string{"shared", "localjob", "devkit", "runner"}
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
