package kube

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/engines"
)

func connect(t *testing.T, kubeconfig []byte) *Cluster {
	t.Helper()
	c, err := Connect(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// jobFor builds run id's objects for namespace.
func jobFor(t *testing.T, id, namespace string, deadline int64) *JobObjects {
	t.Helper()
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: id, ModelName: "m", BaseURL: "http://model:8000/v1",
		Datasets: []evalflow.DatasetSpec{{Name: "gsm8k"}}}, time.Now())
	spec := evalflow.NewJobSpec(r, evalflow.JobDefaults{CallbackURL: "http://broker", DeadlineSeconds: deadline, TTLSecondsAfterFinished: 600})
	e, _ := engines.Default().Get(r.Engine)
	objs, err := Build(spec, e, namespace, evalflow.JobSecrets{APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// TestAgainstARealAPIServer runs against etcd, kube-apiserver (RBAC) and
// kube-controller-manager (the Job controller and the garbage collector).
func TestAgainstARealAPIServer(t *testing.T) {
	alice := localserver.KubeUser{Name: "alice", Token: "alice-token-1"} // no rights at all
	bob := localserver.KubeUser{Name: "bob", Token: "bob-token-1"}       // all but delete jobs
	k := testserver.Kube(t, localserver.KubeOptions{Users: []localserver.KubeUser{alice, bob}, Controllers: true})
	ctx := context.Background()
	admin := testserver.KubeAdmin(t, k)
	testserver.Namespace(t, admin, "evals")
	testserver.Grant(t, admin, "evals", bob.Name, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps", "secrets"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}},
		{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"create", "get"}},
	})

	t.Run("verify allows the admin and names what others may not do", func(t *testing.T) {
		if err := connect(t, k.Kubeconfig(k.Admin.Token, "evals")).Verify(ctx); err != nil {
			t.Fatalf("admin: %v", err)
		}
		err := connect(t, k.Kubeconfig(alice.Token, "evals")).Verify(ctx)
		if !errors.Is(err, ErrForbidden) {
			t.Fatalf("alice: %v, want ErrForbidden", err)
		}
		for _, p := range Needed {
			if !strings.Contains(err.Error(), p.String()) {
				t.Errorf("alice's error does not name %q: %v", p, err)
			}
		}
		err = connect(t, k.Kubeconfig(bob.Token, "evals")).Verify(ctx)
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "may not delete jobs.batch, list pods in namespace \"evals\"") {
			t.Fatalf("bob: %v, want only delete jobs.batch and list pods missing", err)
		}
		// bob's role is namespaced: elsewhere he may do nothing.
		if err := connect(t, k.Kubeconfig(bob.Token, "other")).Verify(ctx); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "create configmaps") {
			t.Fatalf("bob in another namespace: %v", err)
		}
	})

	t.Run("verify tells a wrong token from an unreachable cluster", func(t *testing.T) {
		err := connect(t, k.Kubeconfig("not-a-token", "evals")).Verify(ctx)
		if err == nil || !strings.Contains(err.Error(), "refused the kubeconfig's credentials") {
			t.Fatalf("wrong token: %v", err)
		}
		gone := *k
		gone.URL = "https://127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
		err = connect(t, gone.Kubeconfig(k.Admin.Token, "evals")).Verify(ctx)
		if err == nil || !strings.Contains(err.Error(), "is not reachable") {
			t.Fatalf("closed port: %v", err)
		}
	})

	t.Run("create under concurrent redelivery makes one job", func(t *testing.T) {
		c := connect(t, k.Kubeconfig(bob.Token, "evals"))
		objs := jobFor(t, "11111111-2222-4333-8444-555555555555", c.Namespace, 3600)
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := 0
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := c.CreateObjects(ctx, objs)
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				defer mu.Unlock()
				if ok {
					created++
				}
			}()
		}
		wg.Wait()
		if created != 1 {
			t.Fatalf("%d calls say they created the job, want 1", created)
		}
		jobs, _ := admin.BatchV1().Jobs("evals").List(ctx, metav1.ListOptions{LabelSelector: LabelRun + "=" + objs.Job.Labels[LabelRun]})
		if len(jobs.Items) != 1 {
			t.Fatalf("%d jobs for the run", len(jobs.Items))
		}
		job := jobs.Items[0]
		cm, err := admin.CoreV1().ConfigMaps("evals").Get(ctx, objs.ConfigMap.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sec, err := admin.CoreV1().Secrets("evals").Get(ctx, objs.Secret.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for name, refs := range map[string][]metav1.OwnerReference{"configmap": cm.OwnerReferences, "secret": sec.OwnerReferences} {
			if len(refs) != 1 || refs[0].UID != job.UID || refs[0].Controller == nil || !*refs[0].Controller {
				t.Errorf("%s owner references %+v, want the job %s as controller", name, refs, job.UID)
			}
		}
		if string(sec.Data["api_key"]) != key || !strings.Contains(cm.Data["job.json"], `"api_key_file": "/meta/secret/api_key"`) {
			t.Fatal("the secret or the job spec is not what Build made")
		}
		if job.Spec.Template.Spec.Containers[0].Image != "ghcr.io/evalflow/evalflow-runner:v0.1.0" {
			t.Fatalf("image %s", job.Spec.Template.Spec.Containers[0].Image)
		}
	})

	t.Run("a release's Jobs pull the runner and the sandbox by the digests the release pinned", func(t *testing.T) {
		testserver.Namespace(t, admin, "pinned")
		runner, sandbox := "sha256:"+strings.Repeat("1a", 32), "sha256:"+strings.Repeat("2b", 32)
		digests, err := engines.ParseDigests("evalflow-runner@" + runner + ", evalflow-sandbox@" + sandbox)
		if err != nil {
			t.Fatal(err)
		}
		pool := &Pool{Options: Options{Images: "registry.evalflow.svc:5000/evalflow", Digests: digests}}
		c, err := pool.Connect(k.Kubeconfig(k.Admin.Token, "pinned"))
		if err != nil {
			t.Fatal(err)
		}
		r := evalflow.NewRun(evalflow.Request{EvalRequestID: "11111111-2222-4333-8444-777777777777", ModelName: "m", BaseURL: "http://model:8000/v1",
			Datasets: []evalflow.DatasetSpec{{Name: "humaneval"}}}, time.Now())
		r.Target = evalflow.TargetKubernetes
		if err := c.Create(ctx, evalflow.NewJobSpec(r, evalflow.JobDefaults{CallbackURL: "http://broker", DeadlineSeconds: 3600}), evalflow.JobSecrets{APIKey: key}); err != nil {
			t.Fatal(err)
		}
		jobs, err := admin.BatchV1().Jobs("pinned").List(ctx, metav1.ListOptions{})
		if err != nil || len(jobs.Items) != 1 {
			t.Fatalf("jobs %v: %v", jobs, err)
		}
		if got, want := jobs.Items[0].Spec.Template.Spec.Containers[0].Image, "registry.evalflow.svc:5000/evalflow/evalflow-runner@"+runner; got != want {
			t.Errorf("the runner's image %q; want %q", got, want)
		}
		pod, err := admin.CoreV1().Pods("pinned").Get(ctx, evalflow.SandboxName(r.ID), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := pod.Spec.Containers[0].Image, "registry.evalflow.svc:5000/evalflow/evalflow-sandbox@"+sandbox; got != want {
			t.Errorf("the sandbox's image %q; want %q", got, want)
		}
		for _, bad := range []string{"evalflow-runner", "evalflow-runner@sha256:12", "a/b@" + runner, "evalflow-runner@md5:" + strings.Repeat("1a", 32)} {
			if _, err := engines.ParseDigests(bad); err == nil || !strings.Contains(err.Error(), bad) {
				t.Errorf("ParseDigests(%q): %v; want an error quoting it", bad, err)
			}
		}
	})

	t.Run("a run that runs code: its sandbox objects, once under redelivery, go with the job", func(t *testing.T) {
		testserver.Namespace(t, admin, "code")
		c := connect(t, k.Kubeconfig(k.Admin.Token, "code"))
		r := evalflow.NewRun(evalflow.Request{EvalRequestID: "11111111-2222-4333-8444-666666666666", ModelName: "m", BaseURL: "http://model:8000/v1",
			Datasets: []evalflow.DatasetSpec{{Name: "humaneval"}}}, time.Now())
		r.Target = evalflow.TargetKubernetes
		spec := evalflow.NewJobSpec(r, evalflow.JobDefaults{CallbackURL: "http://broker", DeadlineSeconds: 3600, TTLSecondsAfterFinished: 600})
		spec.Sandbox.Image = SandboxImage
		e, _ := engines.Default().Get(r.Engine)
		objs, err := Build(spec, e, "code", evalflow.JobSecrets{APIKey: key})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if _, err := c.CreateObjects(ctx, objs); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		job, err := admin.BatchV1().Jobs("code").Get(ctx, objs.Job.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pod, err1 := admin.CoreV1().Pods("code").Get(ctx, evalflow.SandboxName(r.ID), metav1.GetOptions{})
		sa, err2 := admin.CoreV1().ServiceAccounts("code").Get(ctx, objs.Sandbox.ServiceAccount.Name, metav1.GetOptions{})
		role, err3 := admin.RbacV1().Roles("code").Get(ctx, objs.Sandbox.Role.Name, metav1.GetOptions{})
		rb, err4 := admin.RbacV1().RoleBindings("code").Get(ctx, objs.Sandbox.RoleBinding.Name, metav1.GetOptions{})
		_, err5 := admin.NetworkingV1().NetworkPolicies("code").Get(ctx, "evalflow-sandbox", metav1.GetOptions{})
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			t.Fatal(err)
		}
		for name, refs := range map[string][]metav1.OwnerReference{"pod": pod.OwnerReferences, "serviceaccount": sa.OwnerReferences,
			"role": role.OwnerReferences, "rolebinding": rb.OwnerReferences} {
			if len(refs) != 1 || refs[0].UID != job.UID {
				t.Errorf("%s owner references %+v, want the job %s", name, refs, job.UID)
			}
		}
		if job.Spec.Template.Spec.ServiceAccountName != sa.Name {
			t.Errorf("the runner's pod runs as %q", job.Spec.Template.Spec.ServiceAccountName)
		}
		// A run's cancel deletes its Job: the garbage collector takes the rest.
		if err := c.Delete(ctx, job.Name); err != nil {
			t.Fatal(err)
		}
		testserver.Eventually(t, 30*time.Second, "the sandbox pod and the runner's account gone with the job", func() bool {
			_, e1 := admin.CoreV1().Pods("code").Get(ctx, pod.Name, metav1.GetOptions{})
			_, e2 := admin.CoreV1().ServiceAccounts("code").Get(ctx, sa.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(e1) && apierrors.IsNotFound(e2)
		})
	})

	t.Run("a namespace that enforces the restricted Pod Security Standard admits the job's pod", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "restricted",
			Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
		if _, err := admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c := connect(t, k.Kubeconfig(k.Admin.Token, "restricted"))
		objs := jobFor(t, "61111111-2222-4333-8444-555555555555", c.Namespace, 3600)
		if _, err := c.CreateObjects(ctx, objs); err != nil {
			t.Fatal(err)
		}
		// The Job controller creates the pod; admission refuses one that breaks the
		// standard (then the Job only records FailedCreate events).
		var pods *corev1.PodList
		testserver.Eventually(t, 30*time.Second, "the job's pod admitted", func() bool {
			pods, _ = admin.CoreV1().Pods("restricted").List(ctx, metav1.ListOptions{LabelSelector: LabelRun + "=" + objs.Job.Labels[LabelRun]})
			return pods != nil && len(pods.Items) == 1
		})
		pod := pods.Items[0].Spec
		sc := pod.SecurityContext
		if sc == nil || sc.FSGroup == nil || *sc.FSGroup != RunnerUID || *sc.RunAsUser != RunnerUID {
			t.Fatalf("pod security context %+v: the Secret must be readable to the runner's user", sc)
		}
		for _, v := range pod.Volumes {
			if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o040 == 0) {
				t.Errorf("secret volume mode %o: not readable to the fsGroup", *v.Secret.DefaultMode)
			}
		}
	})

	t.Run("an object of the run's name that is not ours is never taken as ours", func(t *testing.T) {
		c := connect(t, k.Kubeconfig(k.Admin.Token, "evals"))
		objs := jobFor(t, "71111111-2222-4333-8444-555555555555", c.Namespace, 3600)
		foreign := objs.Job.DeepCopy()
		foreign.Labels = map[string]string{"app": "someone-else"}
		foreign.Spec.Template.Labels = map[string]string{"app": "someone-else"}
		if _, err := admin.BatchV1().Jobs("evals").Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateObjects(ctx, objs); !errors.Is(err, evalflow.ErrPermanent) || !strings.Contains(err.Error(), "is not this run's") {
			t.Fatalf("a foreign job of the name: %v, want a permanent refusal", err)
		}
		if j, err := admin.BatchV1().Jobs("evals").Get(ctx, foreign.Name, metav1.GetOptions{}); err != nil || j.Labels["app"] != "someone-else" {
			t.Fatalf("the foreign job after the refusal: %v; want it left as it was", err)
		}
		objs = jobFor(t, "81111111-2222-4333-8444-555555555555", c.Namespace, 3600)
		if _, err := admin.CoreV1().ConfigMaps("evals").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: objs.ConfigMap.Name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateObjects(ctx, objs); !errors.Is(err, evalflow.ErrPermanent) || !strings.Contains(err.Error(), "not owned by this run's Job") {
			t.Fatalf("a foreign configmap of the name: %v, want a permanent refusal", err)
		}
		if _, err := admin.BatchV1().Jobs("evals").Get(ctx, objs.Job.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the run's own Job, whose spec is someone else's: %v; want it deleted", err)
		}
	})

	t.Run("a Job whose pod will not progress is stuck, saying why", func(t *testing.T) {
		c := connect(t, k.Kubeconfig(k.Admin.Token, "evals"))
		cases := []struct {
			id     string
			status func(*corev1.Pod)
			want   string
		}{
			{"91111111-2222-4333-8444-555555555551", func(p *corev1.Pod) {
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "runner", Image: "nosuch.invalid/runner:v0",
					State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "InvalidImageName", Message: "couldn't parse image name"}}}}
			}, "cannot pull image nosuch.invalid/runner:v0 (InvalidImageName)"},
			{"91111111-2222-4333-8444-555555555552", func(p *corev1.Pod) {
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "runner", Image: "runner",
					State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled", FinishedAt: metav1.Now()}}}}
			}, "killed for exceeding its memory limit"},
		}
		for _, tc := range cases {
			objs := jobFor(t, tc.id, c.Namespace, 3600)
			if _, err := c.CreateObjects(ctx, objs); err != nil {
				t.Fatal(err)
			}
			var pod *corev1.Pod
			testserver.Eventually(t, 30*time.Second, "the job controller's pod", func() bool {
				pods, _ := admin.CoreV1().Pods("evals").List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + objs.Job.Name})
				if pods != nil && len(pods.Items) == 1 {
					pod = &pods.Items[0]
				}
				return pod != nil
			})
			if st, err := c.State(ctx, objs.Job.Name); err != nil || st.Finished || st.Stuck {
				t.Fatalf("a pod waiting for its node: %+v, %v; want a Job still running", st, err)
			}
			tc.status(pod) // as the kubelet writes it
			if _, err := admin.CoreV1().Pods("evals").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}

			st, err := c.State(ctx, objs.Job.Name)

			if err != nil || !st.Stuck || !st.Finished || st.Succeeded || !strings.Contains(st.Message, tc.want) {
				t.Errorf("state %+v, %v; want stuck saying %q", st, err, tc.want)
			}
		}
	})

	t.Run("a create the cluster refuses is permanent", func(t *testing.T) {
		c := connect(t, k.Kubeconfig(alice.Token, "evals"))
		_, err := c.CreateObjects(ctx, jobFor(t, "21111111-2222-4333-8444-555555555555", c.Namespace, 3600))
		if err == nil || !errors.Is(err, evalflow.ErrPermanent) {
			t.Fatalf("alice's create: %v, want a permanent error", err)
		}
		c = connect(t, k.Kubeconfig(k.Admin.Token, "no-such-namespace"))
		_, err = c.CreateObjects(ctx, jobFor(t, "31111111-2222-4333-8444-555555555555", c.Namespace, 3600))
		if err == nil || !errors.Is(err, evalflow.ErrPermanent) {
			t.Fatalf("create in a missing namespace: %v, want a permanent error", err)
		}
	})

	t.Run("delete takes the configmap and secret with the job", func(t *testing.T) {
		c := connect(t, k.Kubeconfig(k.Admin.Token, "evals"))
		objs := jobFor(t, "41111111-2222-4333-8444-555555555555", c.Namespace, 3600)
		if _, err := c.CreateObjects(ctx, objs); err != nil {
			t.Fatal(err)
		}
		for range 2 { // a redelivered cancel
			if err := c.Delete(ctx, objs.Job.Name); err != nil {
				t.Fatal(err)
			}
		}
		testserver.Eventually(t, 30*time.Second, "the garbage collector deletes the job's configmap and secret", func() bool {
			_, e1 := admin.CoreV1().ConfigMaps("evals").Get(ctx, objs.ConfigMap.Name, metav1.GetOptions{})
			_, e2 := admin.CoreV1().Secrets("evals").Get(ctx, objs.Secret.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(e1) && apierrors.IsNotFound(e2)
		})
		if s, err := c.State(ctx, objs.Job.Name); err != nil || s.Found {
			t.Fatalf("state of a deleted job: %+v %v", s, err)
		}
	})

	t.Run("the job controller fails a job past its deadline", func(t *testing.T) {
		c := connect(t, k.Kubeconfig(k.Admin.Token, "evals"))
		objs := jobFor(t, "51111111-2222-4333-8444-555555555555", c.Namespace, 1) // no node runs its pod
		if _, err := c.CreateObjects(ctx, objs); err != nil {
			t.Fatal(err)
		}
		if s, err := c.State(ctx, objs.Job.Name); err != nil || !s.Found || s.Finished {
			t.Fatalf("a new job's state: %+v %v", s, err)
		}
		var s JobState
		testserver.Eventually(t, 60*time.Second, "the job controller marks the job failed", func() bool {
			var err error
			s, err = c.State(ctx, objs.Job.Name)
			return err == nil && s.Finished
		})
		if s.Succeeded || !strings.Contains(s.Message, "DeadlineExceeded") {
			t.Fatalf("state %+v, want failed with DeadlineExceeded", s)
		}
	})

	// No kubelet runs here: the admin writes a pod's status as a kubelet would, and the
	// cluster's own label for the Job's pods finds it.
	t.Run("the last words of a Job's pods are read where the credentials may list pods", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "evalflow-words-abcde", Namespace: "evals",
			Labels: map[string]string{batchv1.JobNameLabel: "evalflow-words"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "runner", Image: "runner"}}, RestartPolicy: corev1.RestartPolicyNever}}
		pod, err := admin.CoreV1().Pods("evals").Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "runner", Image: "runner",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Reason: "Error",
				Message: "lm-eval adapter: ValueError: Tasks not found: nosuch\n", FinishedAt: metav1.Now()}}}}
		if _, err := admin.CoreV1().Pods("evals").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := connect(t, k.Kubeconfig(k.Admin.Token, "evals")).lastWords(ctx, "evalflow-words"); got != "lm-eval adapter: ValueError: Tasks not found: nosuch" {
			t.Fatalf("last words %q", got)
		}
		if got := connect(t, k.Kubeconfig(bob.Token, "evals")).lastWords(ctx, "evalflow-words"); got != "" {
			t.Fatalf("bob, who may not list pods, read %q", got)
		}
	})
}

func TestLastWordsAreTheLastAttempts(t *testing.T) {
	ended := func(at int64, msg string) *corev1.ContainerStateTerminated {
		return &corev1.ContainerStateTerminated{Message: msg, FinishedAt: metav1.Unix(at, 0)}
	}
	pods := []corev1.Pod{
		{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Terminated: ended(100, "first attempt")}}}}},
		{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Terminated: ended(300, "third attempt\n")}}}}},
		{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{LastTerminationState: corev1.ContainerState{Terminated: ended(200, "second")}}}}},
		{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Terminated: ended(400, "  ")}}}}},
	}
	if got := LastWords(pods); got != "third attempt" {
		t.Errorf("LastWords = %q", got)
	}
	if got := LastWords(nil); got != "" {
		t.Errorf("LastWords of no pods = %q", got)
	}
	long := []corev1.Pod{{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Terminated: ended(1, strings.Repeat("x", 5000)+"END")}}}}}}
	if got := LastWords(long); len(got) != maxLastWords+3 || !strings.HasSuffix(got, "END") {
		t.Errorf("a long message is cut to %d bytes, ending %q", len(got), got[len(got)-3:])
	}
}

func TestStateOfAJobReadsItsTerminalConditions(t *testing.T) {
	job := &batchv1.Job{}
	if s := StateOf(job); !s.Found || s.Finished {
		t.Fatalf("a job without conditions: %+v", s)
	}
	job.Status.Conditions = []batchv1.JobCondition{
		{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: "PodFailurePolicy"},
		{Type: batchv1.JobComplete, Status: corev1.ConditionFalse},
	}
	if s := StateOf(job); s.Finished {
		t.Fatalf("a job with only a failure target is not finished yet: %+v", s)
	}
	job.Status.Conditions = append(job.Status.Conditions,
		batchv1.JobCondition{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "PodFailurePolicy", Message: "container runner exited with 2"})
	if s := StateOf(job); !s.Finished || s.Succeeded || s.Message != "PodFailurePolicy: container runner exited with 2" {
		t.Fatalf("failed job: %+v", s)
	}
	job.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
	if s := StateOf(job); !s.Finished || !s.Succeeded {
		t.Fatalf("complete job: %+v", s)
	}
}

func TestUnsafeKubeconfigsAreRefusedBeforeDialling(t *testing.T) {
	const head = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n"
	const cluster = "clusters:\n- name: k\n  cluster: {server: 'https://127.0.0.1:1'}\n"
	for name, cfg := range map[string]string{
		"exec":          cluster + "users:\n- name: u\n  user:\n    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, 'id > /tmp/pwned']}\n",
		"auth-provider": cluster + "users:\n- name: u\n  user:\n    auth-provider: {name: oidc, config: {}}\n",
		"token file":    cluster + "users:\n- name: u\n  user: {tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token}\n",
		"client cert":   cluster + "users:\n- name: u\n  user: {client-certificate: /etc/cert.pem, client-key: /etc/key.pem}\n",
		"ca file":       "clusters:\n- name: k\n  cluster: {server: 'https://127.0.0.1:1', certificate-authority: /etc/ssl/ca.pem}\nusers:\n- name: u\n  user: {token: t}\n",
	} {
		_, err := Connect([]byte(head + cfg))
		if !errors.Is(err, ErrUnsafeKubeconfig) {
			t.Errorf("%s: %v, want ErrUnsafeKubeconfig", name, err)
		}
	}
	if _, err := Connect([]byte(head + cluster + "users:\n- name: u\n  user: {token: t}\n")); err != nil {
		t.Errorf("an inline kubeconfig: %v", err)
	}
	if _, err := Connect([]byte("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n")); err == nil || !strings.Contains(err.Error(), "current-context") {
		t.Errorf("a missing context: %v", err)
	}
}

func TestAPoolReusesTheClusterOfAKubeconfig(t *testing.T) {
	kubeconfig := func(token string) []byte {
		return []byte("apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u, namespace: evals}\n" +
			"clusters:\n- name: k\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: " + token + "}\n")
	}
	var p Pool
	a, err := p.Connect(kubeconfig("a"))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := p.Connect(kubeconfig("a"))
	other, _ := p.Connect(kubeconfig("b"))
	if a != again || a == other || a.Namespace != "evals" {
		t.Fatalf("same kubeconfig gave %p then %p; another gave %p", a, again, other)
	}
	if _, err := p.Connect([]byte("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n")); err == nil {
		t.Fatal("a bad kubeconfig was pooled")
	}
	for i := range MaxPooled + 1 {
		if _, err := p.Connect(kubeconfig(fmt.Sprint("t", i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(p.clusters); n > MaxPooled {
		t.Fatalf("the pool holds %d clusters, more than %d", n, MaxPooled)
	}
}
