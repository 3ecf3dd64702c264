package testserver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/evalflow/evalflow/devkit/images"
	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/node"
)

// NodeConfig is the configuration of a node for the test, in a fresh directory
// (short, for containerd's socket path), removed with the test; or skips (fails with
// EVALFLOW_REQUIRE_SERVERS=1) where the node cannot run: not root, or its parts not
// installed (make test-deps installs them).
func NodeConfig(t testing.TB) node.Config {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "a Kubernetes node needs root (an address, a bridge, iptables rules, mounts)")
	}
	for _, p := range []string{"containerd", "runc", "iptables", "docker-registry"} {
		if _, err := exec.LookPath(p); err != nil {
			missing(t, p+" is not installed (make test-deps installs the node's Debian packages)")
		}
	}
	bin := localserver.KubeBinDir()
	if _, err := os.Stat(bin + "/kubelet"); err != nil {
		missing(t, "the kubelet is not built at "+bin+" (make test-deps runs hack/install-kube.sh)")
	}
	// One node at a time on a machine (its address, bridge and iptables chains are
	// the machine's): tests of several packages, run at once, take turns.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "evalflow-node.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // closing releases the lock, after Down
	dir, err := os.MkdirTemp("", "evalflow-node")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	coredns := localserver.CoreDNSBinary()
	if _, err := os.Stat(coredns); err != nil {
		missing(t, "CoreDNS is not built at "+coredns+" (make test-deps runs hack/install-coredns.sh)")
	}
	netpol := localserver.NetworkPolicyBinary()
	if _, err := os.Stat(netpol); netpol == "" || err != nil {
		missing(t, "the NetworkPolicy enforcer is not built: EVALFLOW_NETPOL=$(hack/install-netpol.sh), as make test does")
	}
	return node.Config{Dir: dir, Bin: bin, CoreDNS: coredns, NetworkPolicy: netpol, Pause: BuildStatic(t, "github.com/evalflow/evalflow/devkit/cmd/evalflow-pause")}
}

// Node brings a single-node Kubernetes up on this machine for the test, and takes all
// of it down when the test ends.
func Node(t testing.TB) *node.Node {
	t.Helper()
	cfg := NodeConfig(t)
	n, err := node.Up(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := node.Down(cfg.Dir); err != nil {
			t.Error(err)
		}
	})
	return n
}

// KnativeEventing brings Knative Eventing (hack/install-knative.sh builds it) up on n
// for the test, or skips where it is not built.
func KnativeEventing(t testing.TB, n *node.Node) {
	t.Helper()
	dir := knative.EventingDir()
	if _, err := os.Stat(filepath.Join(dir, "eventing.yaml")); err != nil {
		missing(t, "Knative Eventing is not built at "+dir+" (make test-deps runs hack/install-knative.sh)")
	}
	if err := knative.UpEventing(context.Background(), n, dir); err != nil {
		t.Fatal(err)
	}
}

// KnativeServing brings Knative Serving (hack/install-knative.sh serving) with Traefik
// (hack/install-traefik.sh) up on n for the test, or skips where they are not built.
func KnativeServing(t testing.TB, n *node.Node) *knative.Ingress {
	t.Helper()
	dir := knative.ServingDir()
	if _, err := os.Stat(filepath.Join(dir, "serving.yaml")); err != nil {
		missing(t, "Knative Serving is not built at "+dir+" (make test-deps runs hack/install-knative.sh serving)")
	}
	traefik := localserver.TraefikBinary()
	if _, err := os.Stat(traefik); err != nil {
		missing(t, "Traefik is not built at "+traefik+" (make test-deps runs hack/install-traefik.sh)")
	}
	in, err := knative.UpServing(context.Background(), n, dir, traefik)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// FuncVersion is the func CLI hack/install-func.sh builds, and FuncBuild the name of
// its cache directory (the version and the one change it makes).
const (
	FuncVersion = "0.44.0"
	FuncBuild   = "func-" + FuncVersion + "-hostplatform"
)

// FuncCLI is the func CLI (hack/install-func.sh caches it), or skips.
func FuncCLI(t testing.TB) string {
	t.Helper()
	fn := filepath.Join(localserver.CacheDir(), FuncBuild, "func")
	if _, err := os.Stat(fn); err != nil {
		missing(t, "the func CLI is not built at "+fn+" (make test-deps runs hack/install-func.sh)")
	}
	return fn
}

// SandboxPython is Debian's python3 unpacked for the sandbox image
// (hack/install-sandbox-python.sh, named by $EVALFLOW_SANDBOX_PYTHON as make test
// does), or skips.
func SandboxPython(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("EVALFLOW_SANDBOX_PYTHON")
	if dir == "" {
		missing(t, "EVALFLOW_SANDBOX_PYTHON is not set: EVALFLOW_SANDBOX_PYTHON=$(hack/install-sandbox-python.sh), as make test does")
	}
	if _, err := os.Stat(filepath.Join(dir, "usr", "bin", "python3")); err != nil {
		missing(t, "the sandbox's python3 is not unpacked at "+dir+" (hack/install-sandbox-python.sh)")
	}
	return dir
}

// SandboxImage builds the sandbox pod's image (evalflow-sandbox, at path, on
// Debian's python3 and evalflow's base) and pushes it to ref, returning its digest.
func SandboxImage(t testing.TB, ref, path string) string {
	t.Helper()
	python := SandboxPython(t)
	img, err := images.Build(images.Spec{Binary: BuildStatic(t, "github.com/evalflow/evalflow/runner/cmd/evalflow-sandbox"),
		Path: path, Root: python, OS: "linux", Architecture: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	digest, err := images.Push(img, ref)
	if err != nil {
		t.Fatal(err)
	}
	return digest.String()
}

// RunPod creates pod in namespace and waits until it runs.
func RunPod(t testing.TB, admin kubernetes.Interface, namespace string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	if _, err := admin.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", namespace, pod.Name, err)
	}
	var p *corev1.Pod
	var err error
	Eventually(t, 2*time.Minute, "pod "+namespace+"/"+pod.Name+" running", func() bool {
		p, err = admin.CoreV1().Pods(namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning
	})
	return p
}
