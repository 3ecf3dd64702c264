package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/sandbox"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/kube"
)

// The sandbox pod on a real node (containerd, runc, the kubelet), in a namespace
// enforcing the "restricted" Pod Security Standard: its image (Debian's python3 and
// evalflow-sandbox on evalflow's base, built without Docker) runs a batch handed to it
// by an exec, and says what became of each program: the canonical solutions of
// HumanEval's first 80 problems pass; hostile programs fail, each saying why, and the pod
// stays up for the next batch. Its NetworkPolicy, enforced by the node's controller,
// lets no connection out: none reaches a listener on the node's address, nor the API
// server through its Service; the same program connects once the policy is deleted.
func TestTheSandboxPodRunsABatchOnARealNode(t *testing.T) {
	n := testserver.Node(t)
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	admin := testserver.KubeClient(t, kc)
	ref := n.Registry + "/evalflow/evalflow-sandbox"
	digest := testserver.SandboxImage(t, ref, evalflow.SandboxProgram)
	if again := testserver.SandboxImage(t, ref, evalflow.SandboxProgram); again != digest {
		t.Errorf("the sandbox image built twice: %s then %s", digest, again)
	}
	ctx := context.Background()
	ns := "sandbox-test"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.NetworkingV1().NetworkPolicies(ns).Create(ctx, kube.SandboxPolicy(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := testserver.RunPod(t, admin, ns, kube.SandboxPod("run-1", ref+"@"+digest, 10*time.Minute))

	t.Logf("the sandbox pod runs")
	exec, err := kube.PodExec(kc, ns, pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	canonical := humanEvalPrograms(t, 80) // over 64 KB: stdin goes in several messages
	node, connections := testserver.CountConnections(t, n.Address)
	connect := fmt.Sprintf("import socket\nsocket.create_connection((%q, %d), timeout=2).close()\n", node.IP, node.Port)
	hostile := map[string]struct{ program, want string }{
		"loops":                      {"while True:\n    pass\n", "timed out"},
		"forks":                      {"import os\nwhile True:\n    os.fork()\n", "failed: BlockingIOError"},
		"allocates":                  {"x = []\nwhile True:\n    x.append(' ' * 10**7)\n", "failed: MemoryError"},
		"reads env":                  {"import os\nassert 'KUBERNETES_SERVICE_HOST' not in os.environ and 'PATH' not in os.environ, dict(os.environ)\n", "passed"},
		"reads token":                {"open('/var/run/secrets/kubernetes.io/serviceaccount/token').read()\n", "failed: FileNotFoundError"},
		"writes root":                {"open('/etc/pwned', 'w').write('x')\n", "failed: OSError: [Errno 30] Read-only file system"},
		"writes a lot":               {"open('big', 'w').write('x' * (2 << 20))\n", "failed: OSError: [Errno 27] File too large"},
		"connects to the node":       {connect, "failed: TimeoutError"},
		"connects to the API server": {"import socket\nsocket.create_connection(('10.96.0.1', 443), timeout=2).close()\n", "failed: TimeoutError"},
	}
	names := []string{}
	// Ten seconds of wall and CPU, not the default three: on a loaded machine (make test
	// runs Knative beside this, on 2 cores) filling 512 MiB took over 3 s of wall, and the
	// allocation must end in MemoryError, not in the clock.
	limits := sandbox.DefaultLimits
	limits.Wall, limits.CPU = 10*time.Second, 10*time.Second
	batch := sandbox.Batch{Limits: sandbox.Of(limits), Programs: canonical}
	for name, h := range hostile {
		names = append(names, name)
		batch.Programs = append(batch.Programs, h.program)
	}
	for round := range 2 { // the pod serves one batch, then the next
		in, _ := json.Marshal(batch)
		if len(in) < 64<<10 {
			t.Fatalf("a batch of %d bytes", len(in))
		}
		var out bytes.Buffer
		if err := exec.Exec(ctx, []string{evalflow.SandboxProgram, "-batch", "-"}, bytes.NewReader(in), &out); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		got, err := sandbox.ReadLines(&out, len(batch.Programs))
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range got[:len(canonical)] {
			if !r.Passed {
				t.Errorf("round %d: HumanEval/%d's canonical solution: %+v", round, i, r)
			}
		}
		for i, r := range got[len(canonical):] {
			if want := hostile[names[i]].want; !strings.HasPrefix(r.Outcome, want) || r.Passed != (want == "passed") {
				t.Errorf("round %d: %s: %+v; want %s", round, names[i], r, want)
			}
		}
	}
	if c := connections.Load(); c != 0 {
		t.Fatalf("%d connections from the sandbox pod reached the node", c)
	}

	// The policy, not something else, held them: without it the same program connects
	// (once the controller has seen the policy go).
	if err := admin.NetworkingV1().NetworkPolicies(ns).Delete(ctx, kube.SandboxPolicy().Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	open := sandbox.Batch{Limits: sandbox.Of(sandbox.DefaultLimits), Programs: []string{connect}}
	in, _ := json.Marshal(open)
	var last []sandbox.Result
	for deadline := time.Now().Add(30 * time.Second); connections.Load() == 0; time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("without its policy the sandbox pod still connects to nothing: %+v", last)
		}
		var out bytes.Buffer
		if err := exec.Exec(ctx, []string{evalflow.SandboxProgram, "-batch", "-"}, bytes.NewReader(in), &out); err != nil {
			t.Fatal(err)
		}
		if last, err = sandbox.ReadLines(&out, 1); err != nil {
			t.Fatal(err)
		}
	}
}

// humanEvalPrograms are HumanEval's first n problems' programs as lm-eval's
// create_test filter makes them, with the canonical solution as the completion.
func humanEvalPrograms(t *testing.T, n int) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(testserver.SharedDir(t), "datasets", "humaneval", "HumanEval.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var programs []string
	for sc := bufio.NewScanner(f); sc.Scan() && len(programs) < n; {
		var p struct {
			Prompt, Test      string
			CanonicalSolution string `json:"canonical_solution"`
			EntryPoint        string `json:"entry_point"`
		}
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatal(err)
		}
		programs = append(programs, fmt.Sprintf("%s%s\n%s\ncheck(%s)", p.Prompt, p.CanonicalSolution, p.Test, p.EntryPoint))
	}
	return programs
}
