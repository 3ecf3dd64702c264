package function

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/kube"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
	"github.com/evalflow/evalflow/shared/runstore"
)

// TestATickReportsKubernetesJobsThatEnded runs against a real kube-apiserver whose Job
// controller (kube-controller-manager) fails a Job past its deadline: no node runs it.
func TestATickReportsKubernetesJobsThatEnded(t *testing.T) {
	k := testserver.Kube(t, localserver.KubeOptions{Controllers: true})
	admin := testserver.KubeAdmin(t, k)
	testserver.Namespace(t, admin, "evals")
	fx := setup(t)
	kubeconfig := string(k.Kubeconfig(k.Admin.Token, "evals"))

	// A Kubernetes run, running, whose Job has a 1 s deadline; and one whose Job is gone.
	fx.kubernetesRunning(t, kubeconfig, 1, runID)
	fx.kubernetesRunning(t, kubeconfig, 0, otherID)
	tick := pingTick()

	fx.handle(t, tick) // the Job runs: only the gone one is reported
	ended := fx.ended
	if got := ended(); len(got) != 1 {
		t.Fatalf("job.finished events %v, want one for the gone job", got)
	}
	testserver.Eventually(t, 60*time.Second, "a tick reports the job the Job controller failed", func() bool {
		fx.handle(t, tick)
		return len(ended()) == 2
	})
	fx.handle(t, tick) // ticks that find the same ends send the same events (same ids)
	got := ended()
	if len(got) != 2 {
		t.Fatalf("job.finished events %v, want 2 distinct", got)
	}
	for _, fin := range got {
		switch fin.RunID {
		case runID:
			if fin.Succeeded || !strings.Contains(fin.Message, "DeadlineExceeded") {
				t.Fatalf("the failed job reported as %+v", fin)
			}
		case otherID:
			if fin.Succeeded || !strings.Contains(fin.Message, "is gone") {
				t.Fatalf("the gone job reported as %+v", fin)
			}
		}
	}
	// The report, delivered (twice) to job-watch, fails the run saying why.
	for _, e := range fx.p.Sink.OfType("/", evalflow.TypeJobFinished) {
		if e.Subject() == runID {
			fx.handle(t, e)
		}
	}
	if r := fx.run(t); r.Status != evalflow.StatusFailed || !strings.Contains(r.Message, "DeadlineExceeded") {
		t.Fatalf("run %s %q", r.Status, r.Message)
	}
}

// kubernetesRunning records run id as a running Kubernetes run of the cluster
// kubeconfig reaches, with its Job created there (deadline in seconds; none for 0).
func (fx *fixture) kubernetesRunning(t *testing.T, kubeconfig string, deadline int64, id string) *kube.Cluster {
	t.Helper()
	ctx := context.Background()
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: id, ModelName: "m", BaseURL: "http://model", Kubeconfig: kubeconfig,
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu", Limit: 1}}}, time.Now())
	fx.p.Redis.Del(ctx, "evalflow:run:"+id)
	fx.p.Store.Create(ctx, r, map[string]string{runstore.SecretKubeconfig: kubeconfig})
	run, err := pipelinetest.Update(ctx, fx.p.Store, id, func(r *evalflow.Run) error {
		r.Job = evalflow.JobName(id)
		return pipelinetest.Walk(evalflow.StatusRunning)(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := kube.Connect([]byte(kubeconfig))
	if err != nil {
		t.Fatal(err)
	}
	if deadline > 0 {
		if err := cluster.Create(ctx, evalflow.NewJobSpec(run, evalflow.JobDefaults{DeadlineSeconds: deadline, TTLSecondsAfterFinished: 600}), evalflow.JobSecrets{}); err != nil {
			t.Fatal(err)
		}
	}
	return cluster
}

// pingTick is a tick of the PingSource that drives job-watch's sweep.
func pingTick() event.Event {
	tick := event.New()
	tick.SetID("tick-1")
	tick.SetType(string(evalflow.TypePing))
	tick.SetSource("/apis/v1/namespaces/evalflow/pingsources/evalflow-job-watch-tick")
	return tick
}

// ended are the job.finished events sent so far, by id.
func (fx *fixture) ended() map[string]evalflow.JobFinished {
	out := map[string]evalflow.JobFinished{}
	for _, e := range fx.p.Sink.OfType("/", evalflow.TypeJobFinished) {
		var fin evalflow.JobFinished
		json.Unmarshal(e.Data(), &fin)
		out[e.ID()] = fin
	}
	return out
}

// A Job whose image cannot be pulled would hold its run "running" until the deadline:
// the next tick ends the run saying why, and deletes the Job.
func TestATickStopsAJobWhoseImageCannotBePulled(t *testing.T) {
	k := testserver.Kube(t, localserver.KubeOptions{Controllers: true})
	admin := testserver.KubeAdmin(t, k)
	testserver.Namespace(t, admin, "evals")
	fx := setup(t)
	ctx := context.Background()
	fx.kubernetesRunning(t, string(k.Kubeconfig(k.Admin.Token, "evals")), 3600, runID)
	job := evalflow.JobName(runID)
	var pod *corev1.Pod
	testserver.Eventually(t, 30*time.Second, "the job controller's pod", func() bool {
		pods, _ := admin.CoreV1().Pods("evals").List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + job})
		if pods != nil && len(pods.Items) == 1 {
			pod = &pods.Items[0]
		}
		return pod != nil
	})
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "runner", Image: "nosuch.invalid/Runner:v0", // as the kubelet writes it
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "InvalidImageName", Message: "invalid reference format"}}}}
	if _, err := admin.CoreV1().Pods("evals").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	fx.handle(t, pingTick())
	for _, e := range fx.p.Sink.OfType("/", evalflow.TypeJobFinished) {
		fx.handle(t, e)
	}

	if r := fx.run(t); r.Status != evalflow.StatusFailed || !strings.Contains(r.Message, "cannot pull image nosuch.invalid/Runner:v0") {
		t.Fatalf("run %s %q; want it failed saying the image cannot be pulled", r.Status, r.Message)
	}
	if _, err := admin.BatchV1().Jobs("evals").Get(ctx, job, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the stuck Job after the tick: %v; want it deleted", err)
	}
}

// Idle, the functions stay at zero: a tick that finds no run in flight removes the
// tick (made on demand, on a real API server with the rights eventing/rbac.yaml
// grants job-watch); one that finds a run keeps it. Ticks delivered twice change
// nothing twice.
func TestATickThatFindsNoRunInFlightStopsTheTicks(t *testing.T) {
	ticks := pipelinetest.NewTicks(t)
	fx := setup(t, func(cfg map[string]string) { maps.Copy(cfg, ticks.Config) })
	ctx := context.Background()
	if err := fx.f.KeepTicking(ctx); err != nil { // as start does with the fixture's run
		t.Fatal(err)
	}
	fx.handle(t, pingTick())
	if !ticks.Ticking(t) {
		t.Fatal("a tick with a run deploying removed the tick")
	}
	if _, err := pipelinetest.Update(ctx, fx.p.Store, runID, func(r *evalflow.Run) error { return r.Fail("given up", time.Now()) }); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		fx.handle(t, pingTick())
		if ticks.Ticking(t) {
			t.Fatal("a tick with no run in flight left the tick")
		}
	}
}
