package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/evalflow/evalflow/devkit/images"
	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/node"
	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/local/broker"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/engines"
	"github.com/evalflow/evalflow/shared/kube"
	"github.com/evalflow/evalflow/shared/oci"
)

// onNode is a real single-node Kubernetes on this machine with evalflow's runner
// image and the benchmark data in its registry.
type onNode struct {
	node  *node.Node
	admin kubernetes.Interface
	// env is what every function is given for Jobs on the node.
	env []string
}

func setUpNode(t *testing.T) *onNode {
	t.Helper()
	n := testserver.Node(t)
	o := &onNode{node: n}
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	o.admin = testserver.KubeClient(t, kc)

	// The runner's image, as make images builds it without a Docker engine.
	e, _ := engines.Default().Get(evalflow.DefaultEngine)
	img, err := images.Build(images.Spec{Binary: testserver.BuildStatic(t, "github.com/evalflow/evalflow/runner/cmd/evalflow-runner"),
		Path: e.Command[0], OS: "linux", Architecture: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := images.Push(img, n.Registry+"/evalflow/"+path.Base(e.Image)); err != nil {
		t.Fatal(err)
	}
	// The data, as evalflow publish-data publishes it.
	dest, err := oci.Open(oci.Config{Registry: n.Registry + "/evalflow/datasets", PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	data, err := dest.PushDir(context.Background(), filepath.Join(testserver.SharedDir(t), "datasets"), "datasets")
	if err != nil {
		t.Fatal(err)
	}
	o.env = []string{"EVALFLOW_JOB_IMAGES=" + n.Registry + "/evalflow", "EVALFLOW_STUCK_AFTER=10s",
		"EVALFLOW_DATA_ARTIFACT=" + n.Registry + "/evalflow/datasets@" + data.Digest}

	return o
}

// up brings evalflow up for Jobs on the node, with extra configuration. Its
// PingSources (eventing/) also tick every 2 s, not only once a minute, so that
// job-watch looks at the Jobs that often.
func (o *onNode) up(t *testing.T, extra ...string) *env {
	t.Helper()
	e := upWith(t, options{host: o.node.Address, jobAddress: o.node.Address,
		extraEnv: append(append([]string(nil), o.env...), extra...)})
	dir := filepath.Join(testserver.RepoRoot(), "eventing")
	fctx, err := broker.FeatureContext(context.Background(), os.DirFS(dir), "config-features.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pings, err := broker.LoadPingSources(fctx, os.DirFS(dir))
	if err != nil || len(pings) == 0 {
		t.Fatalf("eventing/ PingSources: %d, %v", len(pings), err)
	}
	sender, err := cloudevent.NewSender(e.stack.Broker, cloudevent.Bearer(e.stack.BrokerToken))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go func() {
		for tick := time.NewTicker(2 * time.Second); ; {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				for _, p := range pings {
					_ = sender.Send(ctx, p.Event(now))
				}
			}
		}
	}()
	return e
}

// namespace makes a namespace that enforces the "restricted" Pod Security Standard,
// and returns a kubeconfig for it with a ServiceAccount's token that holds only the
// rights a run needs (kube.Needed).
// namespace makes a namespace enforcing the "restricted" Pod Security Standard, and
// a kubeconfig for it whose credentials have what a run needs (and extra rules).
func (o *onNode) namespace(t *testing.T, name string, extra ...rbacv1.PolicyRule) string {
	t.Helper()
	ctx := context.Background()
	c := o.admin
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "evalflow"}}
	if _, err := c.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "evalflow-runs"}, Rules: append(slices.Clone(testserver.EvalRules), extra...)}
	if _, err := c.RbacV1().Roles(name).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "evalflow-runs"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "evalflow-runs"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "evalflow", Namespace: name}}}
	if _, err := c.RbacV1().RoleBindings(name).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expiry := int64(3600)
	tok, err := c.CoreV1().ServiceAccounts(name).CreateToken(ctx, "evalflow",
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(localserver.Kubeconfig(o.node.API, o.node.CA, tok.Status.Token, name))
}

// pods lists the pods of run id's Job.
func (o *onNode) pods(t *testing.T, ns, id string) []corev1.Pod {
	t.Helper()
	l, err := o.admin.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + evalflow.JobName(id)})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// Evaluation Jobs run as real pods on a real node: the same run as in local mode
// gives the same scores and samples; each way a Job cannot progress ends its run with
// the pod's reason; a pod deleted mid-run is replaced and asks no sample again; and
// no key is in clear anywhere, the pods' specs and logs included.
func TestEvaluationJobsOnARealNode(t *testing.T) {
	o := setUpNode(t)
	e := o.up(t)
	kc := o.namespace(t, "evals")

	t.Run("a whole run on the node equals the same run in local mode", func(t *testing.T) {
		local := e.request(3)
		onNode := e.request(3)
		onNode.Kubeconfig = kc
		// and an lm-eval task evalflow ships as a task file, its data published with the rest
		bbh := evalflow.DatasetSpec{Name: "bbh_zeroshot_snarks", Limit: 2}
		local.Datasets, onNode.Datasets = append(local.Datasets, bbh), append(onNode.Datasets, bbh)
		for _, req := range []evalflow.Request{local, onNode} {
			if code, out := e.post(t, req); code != 202 {
				t.Fatalf("start: %d %v", code, out)
			}
		}
		lr, nr := e.waitEnded(t, local.EvalRequestID, 3*time.Minute), e.waitEnded(t, onNode.EvalRequestID, 3*time.Minute)
		if lr.Status != evalflow.StatusSucceeded || nr.Status != evalflow.StatusSucceeded {
			t.Fatalf("local run %s (%s), run on the node %s (%s)", lr.Status, lr.Message, nr.Status, nr.Message)
		}
		if nr.Target != evalflow.TargetKubernetes || len(o.pods(t, "evals", nr.ID)) == 0 {
			t.Fatalf("the run on the node ran no pod there (target %q)", nr.Target)
		}
		if _, ok := nr.Summary.Scores["bbh_zeroshot_snarks"]; !ok || nr.Summary.Samples != 8 {
			t.Errorf("the run on the node scored %v over %d samples; want bbh_zeroshot_snarks among 8", nr.Summary.Scores, nr.Summary.Samples)
		}
		if !equalJSON(lr.Summary.Scores, nr.Summary.Scores) || lr.Summary.Samples != nr.Summary.Samples {
			t.Errorf("scores differ: local %v, node %v", lr.Summary.Scores, nr.Summary.Scores)
		}
		ls, err1 := os.ReadFile(filepath.Join(orasPull(t, e, lr.ID), evalflow.SamplesFile))
		ns, err2 := os.ReadFile(filepath.Join(orasPull(t, e, nr.ID), evalflow.SamplesFile))
		if err1 != nil || err2 != nil || len(ls) == 0 || !bytes.Equal(ls, ns) {
			t.Errorf("samples differ between local mode and the node (%d vs %d bytes; %v %v)", len(ls), len(ns), err1, err2)
		}
		progress := 0
		for _, ev := range e.sink.Got("/caller") {
			var n evalflow.Notification
			if json.Unmarshal(ev.Data(), &n) == nil && n.RunID == nr.ID && n.Status == evalflow.NoteProgress {
				progress++
			}
		}
		if progress == 0 {
			t.Error("the caller heard no progress from the pod")
		}
	})

	t.Run("in a cluster deployment, a run without a kubeconfig runs in evalflow's own cluster", func(t *testing.T) {
		own := filepath.Join(t.TempDir(), "own.kubeconfig")
		if err := os.WriteFile(own, []byte(o.namespace(t, "evalflow-own")), 0o600); err != nil {
			t.Fatal(err)
		}
		e := o.up(t, "EVALFLOW_OWN_CLUSTER="+own)
		r := e.startAndEnd(t, e.request(2))
		if r.Status != evalflow.StatusSucceeded || r.Target != evalflow.TargetKubernetes || !r.OwnCluster {
			t.Fatalf("run %s (target %q): %s", r.Status, r.Target, r.Message)
		}
		// The runner reports its end itself: its pod's phase follows a moment later.
		testserver.Eventually(t, 30*time.Second, "the run's one pod in evalflow's own namespace succeeded", func() bool {
			pods := o.pods(t, "evalflow-own", r.ID)
			return len(pods) == 1 && pods[0].Status.Phase == corev1.PodSucceeded
		})
	})

	t.Run("evalflow run --kubeconfig runs the Job on the node, the rest local", func(t *testing.T) {
		shared := testserver.SharedDir(t)
		exe := testserver.Build(t, "github.com/evalflow/evalflow/local/cmd/evalflow")
		testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/evalflow-runner") // beside exe
		state := t.TempDir()
		cmd := exec.Command(exe, "run", "--state", state, "--data", filepath.Join(shared, "datasets"),
			"--gguf", filepath.Join(shared, "models", "stories260K.gguf"), "--subjects", "anatomy,virology", "--limit", "2",
			"--kubeconfig", o.node.Kubeconfig, "--registry", o.node.Registry+"/evalflow", "--plain-http")
		cmd.Dir = testserver.RepoRoot()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("evalflow run: %v\n%s", err, out)
		}
		for _, want := range []string{": succeeded", "mmlu_anatomy", "mmlu_virology", "(4 samples)", "results artifact: " + o.node.Registry + "/evalflow:"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		// The runner reports its end itself: the Job controller marks the Job a moment later.
		testserver.Eventually(t, 30*time.Second, "one succeeded Job of the run in the node's default namespace", func() bool {
			jobs, err := o.admin.BatchV1().Jobs("default").List(context.Background(), metav1.ListOptions{})
			return err == nil && len(jobs.Items) == 1 && jobs.Items[0].Status.Succeeded == 1
		})
	})

	t.Run("HumanEval on the node runs the model's code in a sandbox pod of its own", func(t *testing.T) {
		testserver.SandboxImage(t, o.node.Registry+"/evalflow/"+path.Base(kube.SandboxImage), evalflow.SandboxProgram)
		kc := o.namespace(t, "code", testserver.SandboxRules...)
		// Three canonical solutions, then a fork bomb, a reader of a service account
		// token, a loop without end, and a connection to the node's address (where the
		// model endpoint answers too), which the sandbox's NetworkPolicy drops.
		listener, connections := testserver.CountConnections(t, o.node.Address)
		hostile := []string{"    import os\n    while True:\n        os.fork()\n",
			"    return open('/var/run/secrets/kubernetes.io/serviceaccount/token').read()\n", "    while True:\n        pass\n",
			fmt.Sprintf("    import socket\n    socket.create_connection((%q, %d), timeout=2).close()\n", listener.IP, listener.Port)}
		answers := map[string]string{}
		for i, p := range humanEvalProblems(t, 7) {
			answers[p.Prompt] = p.CanonicalSolution
			if i >= 3 {
				answers[p.Prompt] = hostile[i-3]
			}
		}
		req := e.request(7)
		req.BaseURL = testserver.AnsweringEndpoint(t, o.node.Address, answers)
		req.Kubeconfig, req.Datasets = kc, []evalflow.DatasetSpec{{Name: "humaneval", Limit: 7}}
		r := e.startAndEnd(t, req)
		if r.Status != evalflow.StatusSucceeded || r.Summary == nil {
			t.Fatalf("run %s: %s", r.Status, r.Message)
		}
		if got, want := r.Summary.Scores["humaneval"], 3.0/7; math.Abs(got-want) > 1e-9 {
			t.Errorf("pass@1 %v; want 3/7 (three canonical solutions of seven)", got)
		}
		if c := connections.Load(); c != 0 {
			t.Errorf("%d connections from the sandbox reached the node", c)
		}
		samples, err := os.ReadFile(filepath.Join(orasPull(t, e, r.ID), evalflow.SamplesFile))
		if err != nil {
			t.Fatal(err)
		}
		outcomes := map[string]int{}
		for _, line := range bytes.Split(bytes.TrimSpace(samples), []byte("\n")) {
			var s struct {
				Filters []struct{ Outcome string } `json:"filters"`
			}
			if err := json.Unmarshal(line, &s); err != nil || len(s.Filters) == 0 {
				t.Fatalf("a sample: %v %s", err, line)
			}
			o, _, _ := strings.Cut(s.Filters[0].Outcome, ":")
			outcomes[o]++
		}
		if want := map[string]int{"passed": 3, "failed": 3, "timed out after 3s": 1}; !maps.Equal(outcomes, want) {
			t.Errorf("outcomes %v; want %v", outcomes, want)
		}
		pods, err := o.admin.CoreV1().Pods("code").List(context.Background(), metav1.ListOptions{LabelSelector: kube.LabelComponent + "=sandbox"})
		if err != nil || len(pods.Items) != 1 || pods.Items[0].Name != evalflow.SandboxName(r.ID) {
			t.Fatalf("the run's sandbox pods: %v %v", err, pods)
		}
		if refs := pods.Items[0].OwnerReferences; len(refs) != 1 || refs[0].Name != evalflow.JobName(r.ID) {
			t.Errorf("the sandbox pod's owners %+v: want the run's Job, whose deletion takes it", refs)
		}
		// The runner's own account may exec in its sandbox pod, and do nothing else.
		for _, c := range []struct {
			verb, resource, sub, name string
			allowed                   bool
		}{{"create", "pods", "exec", pods.Items[0].Name, true}, {"create", "pods", "exec", "another", false},
			{"create", "pods", "", "", false}, {"get", "secrets", "", "", false}, {"list", "pods", "", "", false}} {
			review, err := o.admin.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
				User:               "system:serviceaccount:code:" + evalflow.JobName(r.ID) + "-runner",
				ResourceAttributes: &authzv1.ResourceAttributes{Namespace: "code", Verb: c.verb, Resource: c.resource, Subresource: c.sub, Name: c.name}}}, metav1.CreateOptions{})
			if err != nil || review.Status.Allowed != c.allowed {
				t.Errorf("the runner's account may %s %s/%s %s: %v (%v); want %v", c.verb, c.resource, c.sub, c.name, review.Status.Allowed, err, c.allowed)
			}
		}
	})

	t.Run("an image that cannot be pulled ends the run with the reason", func(t *testing.T) {
		req := e.request(0)
		req.Datasets, req.Engine, req.EngineConfig, req.Kubeconfig = nil, "lm-evaluation-harness", json.RawMessage(`{"tasks": ["arc_easy"]}`), kc
		r := e.startAndEnd(t, req)
		wantFailed(t, e, r, "cannot pull image")
	})

	t.Run("a resource request no node has ends the run with the reason", func(t *testing.T) {
		e := o.up(t, `EVALFLOW_JOB_RESOURCES={"evalflow": {"cpu": "64"}}`)
		req := e.request(3)
		req.Kubeconfig = kc
		wantFailed(t, e, e.startAndEnd(t, req), "cannot be scheduled")
	})

	t.Run("a memory limit the container exceeds ends the run with the reason", func(t *testing.T) {
		e := o.up(t, `EVALFLOW_JOB_RESOURCES={"evalflow": {"memory": "6Mi", "memory_limit": "6Mi"}}`)
		req := e.request(3)
		req.Kubeconfig = kc
		wantFailed(t, e, e.startAndEnd(t, req), "OOMKilled")
	})

	t.Run("a pod deleted mid-run is replaced and asks no sample again", func(t *testing.T) {
		slow := testserver.CountingEndpoint(t, o.node.Address, e.model, 150*time.Millisecond)
		req := e.request(10)
		req.BaseURL, req.Kubeconfig, req.Concurrency = slow.URL, kc, 1
		req.Datasets[0].Subjects = []string{"abstract_algebra", "anatomy", "astronomy", "marketing"}
		if code, out := e.post(t, req); code != 202 {
			t.Fatalf("start: %d %v", code, out)
		}
		deleted := ""
		deadline := time.Now().Add(2 * time.Minute)
		for deleted == "" && time.Now().Before(deadline) {
			if r := e.run(t, req.EvalRequestID); r.Progress.Done >= 10 {
				for _, p := range o.pods(t, "evals", req.EvalRequestID) {
					if p.Status.Phase == corev1.PodRunning {
						deleted = p.Name
						if err := o.admin.CoreV1().Pods("evals").Delete(context.Background(), p.Name, metav1.DeleteOptions{}); err != nil {
							t.Fatal(err)
						}
					}
				}
			} else if r.Status.Terminal() {
				t.Fatalf("run ended %s before its pod could be deleted: %s", r.Status, r.Message)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if deleted == "" {
			t.Fatal("no running pod to delete mid-run")
		}
		r := e.waitEnded(t, req.EvalRequestID, 4*time.Minute)
		if r.Status != evalflow.StatusSucceeded || r.Summary.Samples != 40 {
			t.Fatalf("run %s with %+v: %s", r.Status, r.Summary, r.Message)
		}
		pods := o.pods(t, "evals", r.ID)
		if len(pods) != 1 || pods[0].Name == deleted {
			t.Fatalf("pods after the deletion of %s: %d", deleted, len(pods))
		}
		// The sample in flight as the pod stopped (concurrency 1) was not finished:
		// it may be asked again; a finished one may not.
		asked, again := slow.Asked(), 0
		if len(asked) != 40 {
			t.Errorf("the endpoint was asked %d distinct samples, want 40", len(asked))
		}
		for prompt, k := range asked {
			if k > 1 {
				again++
			}
			if k > 2 {
				t.Errorf("asked %d times: %.60q", k, prompt)
			}
		}
		if again > req.Concurrency {
			t.Errorf("%d samples asked again after the pod was replaced; at most the %d in flight may be", again, req.Concurrency)
		}
	})

	t.Run("no api_key in clear in logs, Redis, events, pod specs, environments or artifacts", func(t *testing.T) {
		e.settle(t)
		scanDir(t, e.state)
		scanDir(t, filepath.Join(o.node.Dir, "pod-logs"))
		if bytes.Contains(e.sink.Raw(), []byte(apiKeyCanary)) {
			t.Error("an event carries the api_key")
		}
		scanRedis(t, e)
		ctx := context.Background()
		pods, err := o.admin.CoreV1().Pods("evals").List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("no pods to scan: %v", err)
		}
		jobs, _ := o.admin.BatchV1().Jobs("evals").List(ctx, metav1.ListOptions{})
		cms, _ := o.admin.CoreV1().ConfigMaps("evals").List(ctx, metav1.ListOptions{})
		for what, v := range map[string]any{"pods": pods, "jobs": jobs, "configmaps": cms} {
			b, _ := json.Marshal(v)
			if bytes.Contains(b, []byte(apiKeyCanary)) {
				t.Errorf("%s in the namespace hold the api_key in clear", what)
			}
		}
		for _, p := range pods.Items {
			for _, c := range p.Spec.Containers {
				if len(c.Env) > 0 || len(c.EnvFrom) > 0 {
					t.Errorf("pod %s's container %s has an environment: %+v", p.Name, c.Name, c.Env)
				}
			}
		}
	})
}

// startAndEnd starts req and waits until its run ends.
func (e *env) startAndEnd(t *testing.T, req evalflow.Request) *evalflow.Run {
	t.Helper()
	if code, out := e.post(t, req); code != 202 {
		t.Fatalf("start: %d %v", code, out)
	}
	return e.waitEnded(t, req.EvalRequestID, 3*time.Minute)
}

// wantFailed checks that the run failed saying why, and that the caller was told so.
func wantFailed(t *testing.T, e *env, r *evalflow.Run, why string) {
	t.Helper()
	if r.Status != evalflow.StatusFailed || !strings.Contains(r.Message, why) {
		t.Fatalf("run %s: %q; want failed with %q", r.Status, r.Message, why)
	}
	// The notification goes out after the run is stored failed: it may come a moment later.
	testserver.Eventually(t, 10*time.Second, fmt.Sprintf("the caller told the run failed with %q", why), func() bool {
		for _, ev := range e.sink.Got("/caller") {
			var n evalflow.Notification
			if json.Unmarshal(ev.Data(), &n) == nil && n.RunID == r.ID && n.Status == evalflow.NoteFailed && strings.Contains(n.Message, why) {
				return true
			}
		}
		return false
	})
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// humanEvalProblem is a problem of ../shared/datasets/humaneval.
type humanEvalProblem struct {
	Prompt            string `json:"prompt"`
	CanonicalSolution string `json:"canonical_solution"`
}

// humanEvalProblems are HumanEval's first n problems.
func humanEvalProblems(t *testing.T, n int) []humanEvalProblem {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testserver.SharedDir(t), "datasets", "humaneval", "HumanEval.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var out []humanEvalProblem
	for _, line := range bytes.SplitN(b, []byte("\n"), n+1)[:n] {
		var p humanEvalProblem
		if err := json.Unmarshal(line, &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}
