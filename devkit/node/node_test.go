package node_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/evalflow/evalflow/devkit/node"
	"github.com/evalflow/evalflow/devkit/testserver"
)

// A node comes up, runs a pod as the restricted Pod Security Standard wants it, and
// goes down leaving the machine as it found it: no process, iptables rule or chain,
// mount, network namespace, interface, address, cgroup or kernel setting of its own.
// Up on a running node is that node; Down twice is no error.
func TestTheNodeRunsAPodAndLeavesNothingBehind(t *testing.T) {
	cfg := testserver.NodeConfig(t)
	before := snapshot(cfg.Dir)
	ctx := context.Background()
	n, err := node.Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			_ = node.Down(cfg.Dir)
		}
	})
	again, err := node.Up(ctx, cfg)
	if err != nil || again.Registry != n.Registry || again.API != n.API {
		t.Fatalf("Up on a running node: %+v, %v; want the node at %s", again, err, n.API)
	}

	c := client(t, n)
	runPod(t, c, n)
	resolves(t, n, "kubernetes.default.svc.cluster.local", "10.96.0.1")
	// An address of the Services' range that no Service has is refused on the node: the
	// connection takes no route off the machine.
	if c, err := net.DialTimeout("tcp", "10.96.255.254:80", 5*time.Second); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("a connection to a Service address no Service has: %v; want it refused at once", err)
	}
	// containerd and the kubelet restarted, as a service manager would: the pod goes on
	// in the same sandbox, and a new pod still runs.
	running, err := c.CoreV1().Pods("restricted").Get(ctx, "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"containerd", "kubelet"} {
		if err := n.Restart(ctx, part, nil); err != nil {
			t.Fatal(err)
		}
	}
	runPodNamed(t, c, n, "after-restarts")
	after, err := c.CoreV1().Pods("restricted").Get(ctx, "p", metav1.GetOptions{})
	if err != nil || after.Status.Phase != corev1.PodRunning || after.Status.PodIP != running.Status.PodIP ||
		len(after.Status.ContainerStatuses) != 1 || len(running.Status.ContainerStatuses) != 1 ||
		after.Status.ContainerStatuses[0].RestartCount != running.Status.ContainerStatuses[0].RestartCount {
		t.Fatalf("the pod after containerd and the kubelet restarted: %+v, %v; was %+v", after.Status, err, running.Status)
	}
	during := snapshot(cfg.Dir)
	if during.equal(before) == "" {
		t.Fatal("a running node with a pod changed nothing the snapshot sees: the check below could not fail")
	}

	if err := node.Down(cfg.Dir); err != nil {
		t.Fatal(err)
	}
	downed = true
	if diff := snapshot(cfg.Dir).equal(before); diff != "" {
		t.Fatalf("the node left something behind:\n%s", diff)
	}
	if err := node.Down(cfg.Dir); err != nil {
		t.Fatalf("Down of a node already down: %v", err)
	}
}

func client(t *testing.T, n *node.Node) kubernetes.Interface {
	t.Helper()
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return testserver.KubeClient(t, kc)
}

// runPod runs the sandbox image as a restricted pod in a namespace that enforces the
// restricted standard, and waits until it runs.
func runPod(t *testing.T, c kubernetes.Interface, n *node.Node) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "restricted",
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	if _, err := c.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	runPodNamed(t, c, n, "p")
}

// runPodNamed runs a pod named name in the namespace "restricted", and waits until it
// runs.
func runPodNamed(t *testing.T, c kubernetes.Interface, n *node.Node, name string) {
	t.Helper()
	ctx := context.Background()
	yes, no, uid := true, false, int64(65532)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid,
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Containers: []corev1.Container{{Name: "c", Image: n.Registry + "/" + node.PauseImage,
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}}}}
	var err error
	for i := 0; i < 50; i++ { // the namespace's default ServiceAccount comes a moment later
		if _, err = c.CoreV1().Pods("restricted").Create(ctx, pod, metav1.CreateOptions{}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		p, err := c.CoreV1().Pods("restricted").Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	p, _ := c.CoreV1().Pods("restricted").Get(ctx, name, metav1.GetOptions{})
	t.Fatalf("the pod did not run: %+v", p.Status)
}

// resolves asks the cluster DNS, through its kube-dns Service address (kube-proxy's
// rules, as a pod's resolver would), for name, and wants ip.
func resolves(t *testing.T, n *node.Node, name, ip string) {
	t.Helper()
	if n.DNS == "" {
		t.Fatal("the node has no cluster DNS")
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(n.DNS, "53"))
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := r.LookupHost(ctx, name)
	if err != nil || len(addrs) != 1 || addrs[0] != ip {
		t.Fatalf("cluster DNS answers %s with %v, %v; want %s", name, addrs, err, ip)
	}
}

// machine is what a node may change on the machine, as text per part.
type machine map[string]string

func snapshot(dir string) machine {
	m := machine{}
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			out, _ := exec.Command(tool, "-w", "-t", table, "-S").Output()
			m[tool+" -t "+table] = string(out)
		}
	}
	for _, what := range [][]string{{"-o", "addr"}, {"-o", "link"}, {"route"}, {"-6", "route"}} {
		out, _ := exec.Command("ip", what...).Output()
		m["ip "+strings.Join(what, " ")] = string(out)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var points []string
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			points = append(points, f[4])
		}
	}
	sort.Strings(points)
	m["mounts"] = strings.Join(points, "\n")
	m["processes"] = nodeProcesses(dir)
	for _, p := range []string{"/run/netns", "/run/containerd", "/var/lib/cni", "/sys/fs/cgroup/memory/" + node.Name, "/sys/fs/cgroup/cpu/" + node.Name} {
		_, err := os.Stat(p)
		m["exists "+p] = fmt.Sprint(err == nil)
	}
	for _, k := range []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet"} {
		b, _ := os.ReadFile("/proc/sys/" + k)
		m["sysctl "+k] = string(b)
	}
	return m
}

// nodeProcesses lists the processes of a node in dir: those naming dir (its servers,
// containerd's shims) and those in its cgroups (its pods' containers). Other tests'
// servers, running meanwhile, are neither.
func nodeProcesses(dir string) string {
	var found []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || e.Name() == fmt.Sprint(os.Getpid()) {
			continue
		}
		cgroup, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if strings.Contains(string(cmdline), dir) || strings.Contains(string(cgroup), "/"+node.Name+"/") {
			found = append(found, strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	sort.Strings(found)
	return strings.Join(found, "\n")
}

// equal describes how m differs from was ("" when it does not).
func (m machine) equal(was machine) string {
	var diffs []string
	for k, v := range m {
		if was[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s:\n  before: %q\n  now:    %q", k, was[k], v))
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "\n")
}
