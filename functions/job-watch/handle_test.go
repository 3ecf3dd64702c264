package function

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/kube"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
	"github.com/evalflow/evalflow/shared/runstore"
)

const (
	runID   = "6a7b8c9d-0e1f-4a2b-b3c4-d5e6f7a8b9c0"
	otherID = "7a7b8c9d-0e1f-4a2b-b3c4-d5e6f7a8b9c0"
)

type fixture struct {
	f       *Function
	p       *pipelinetest.Pipeline
	results string
}

func setup(t *testing.T, edits ...func(map[string]string)) *fixture {
	t.Helper()
	p := pipelinetest.New(t)
	results := t.TempDir()
	cfg := p.With(map[string]string{"EVALFLOW_RESULTS_DIR": results})
	for _, edit := range edits {
		edit(cfg)
	}
	f := New()
	if err := f.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Stop(context.Background()) })
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: runID, ModelName: "m", BaseURL: "http://127.0.0.1:1",
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu", Limit: 5, Subjects: []string{"anatomy", "virology"}}}}, time.Now())
	ctx := context.Background()
	p.Store.Create(ctx, r, nil)
	for _, s := range []evalflow.Status{evalflow.StatusVerifying, evalflow.StatusDeploying} {
		p.Store.Update(ctx, runID, func(r *evalflow.Run) error { return r.Advance(s, time.Now()) })
	}
	return &fixture{f: f, p: p, results: results}
}

// progress is the run's job's progress report, signed as its job signs it.
func (fx *fixture) progress(done int, at time.Time) event.Event {
	return fx.signed(cloudevent.New(evalflow.StepWatch, evalflow.TypeJobProgress, runID, evalflow.JobProgress{RunID: runID, Job: "j",
		Progress: evalflow.Progress{Phase: "scoring", Done: done, Total: 10, ETASeconds: float64(10 - done), UpdatedAt: at}}))
}

// finished is the run's job's end, signed as its job signs it.
func (fx *fixture) finished(ok bool, msg string) event.Event {
	return fx.signed(cloudevent.New(evalflow.StepDeploy, evalflow.TypeJobFinished, runID, evalflow.JobFinished{RunID: runID, Job: "j", Succeeded: ok, Message: msg}))
}

// signed is e signed with its run's report key.
func (fx *fixture) signed(e event.Event) event.Event {
	cloudevent.Sign(&e, fx.f.ReportKey(e.Subject()))
	return e
}

func (fx *fixture) handle(t *testing.T, e event.Event) *event.Event {
	t.Helper()
	reply, err := fx.f.HandleEvent(context.Background(), e)
	if err != nil {
		t.Fatalf("handle %s: %v", e.Type(), err)
	}
	return reply
}

func (fx *fixture) run(t *testing.T) *evalflow.Run {
	r, err := fx.p.Store.Get(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestProgressReportsInAnyOrderNeverGoBackwards(t *testing.T) {
	fx := setup(t)
	t0 := time.Now().UTC()

	fx.handle(t, fx.progress(7, t0.Add(2*time.Second))) // arrives before job.created
	fx.handle(t, fx.progress(3, t0.Add(1*time.Second))) // an older report, late
	fx.handle(t, fx.progress(7, t0.Add(2*time.Second))) // a duplicate
	fx.handle(t, fx.signed(cloudevent.New(evalflow.StepDeploy, evalflow.TypeJobCreated, runID, evalflow.RunRef{RunID: runID})))

	r := fx.run(t)
	if r.Status != evalflow.StatusRunning || r.Progress.Done != 7 || r.Progress.Total != 10 {
		t.Fatalf("run %s progress %+v; want running at 7/10", r.Status, r.Progress)
	}
	if eta := time.Until(r.ETA); eta < 0 || eta > 4*time.Second {
		t.Fatalf("ETA %s from now; want about 3 s", eta)
	}
	notes := 0
	for _, e := range fx.p.Sink.OfType("/", evalflow.TypeNotification) {
		var n evalflow.Notification
		json.Unmarshal(e.Data(), &n)
		if n.Status == evalflow.NoteProgress {
			notes++
		}
	}
	if notes != 1 {
		t.Fatalf("%d progress notifications; want 1 (stale and duplicate reports say nothing)", notes)
	}
}

func TestAJobsReportsAtOnceTakeARoundTripEach(t *testing.T) {
	fx := setup(t)
	t0 := time.Now().UTC()
	fx.handle(t, fx.progress(1, t0)) // the first: the run read, moved to running
	before := fx.f.Store.RoundTrips()
	var wg sync.WaitGroup
	for i := range 8 { // sent at once, as a job's reports come
		wg.Go(func() { fx.handle(t, fx.progress(2+i, t0.Add(time.Duration(1+i)*time.Second))) })
	}
	wg.Wait()
	// One at most each: a report older than the one before it writes nothing, and
	// none conflicts with another (each writes the run as the one before left it).
	if n := fx.f.Store.RoundTrips() - before; n > 8 {
		t.Errorf("8 reports at once took %d round trips; want at most 8", n)
	}
	if r := fx.run(t); r.Progress.Done != 9 {
		t.Errorf("progress %+v; want the newest report's 9", r.Progress)
	}
}

func TestAFinishedJobHandsItsResultsOnOnce(t *testing.T) {
	fx := setup(t)
	dir := filepath.Join(fx.results, runID)
	os.MkdirAll(dir, 0o755)
	res := evalflow.Results{Summary: evalflow.Summary{Scores: map[string]float64{"mmlu": 0.3}, Samples: 10, Metric: "exact_match"}}
	b, _ := json.Marshal(res)
	os.WriteFile(filepath.Join(dir, evalflow.ResultsFile), b, 0o644)

	reply := fx.handle(t, fx.finished(true, "")) // before job.created: reordered
	dup := fx.handle(t, fx.finished(true, ""))

	if reply == nil || reply.Type() != evalflow.TypeResultsReady {
		t.Fatalf("reply %v; want results.ready", reply)
	}
	if dup == nil || dup.ID() != reply.ID() {
		t.Fatalf("a redelivered job.finished must re-reply the same event (same id) in case the first reply was lost: %v", dup)
	}
	r := fx.run(t)
	if r.Summary == nil || r.Summary.Scores["mmlu"] != 0.3 || r.Progress.Done != r.Progress.Total {
		t.Fatalf("run summary %+v progress %+v", r.Summary, r.Progress)
	}
	// Once the artifact step has taken over, a late job.finished does nothing.
	fx.p.Store.Update(context.Background(), runID, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusStoring, time.Now()) })
	if late := fx.handle(t, fx.finished(true, "")); late != nil {
		t.Fatalf("late job.finished replied %v", late.Type())
	}
}

func TestAFailedJobFailsTheRunSayingWhy(t *testing.T) {
	fx := setup(t)

	reply := fx.handle(t, fx.finished(false, "runner exited with code 1: mmlu: anatomy_test.csv: no such file"))
	fx.handle(t, fx.progress(9, time.Now())) // a report after the end

	r := fx.run(t)
	if reply == nil || reply.Type() != evalflow.TypeFailed {
		t.Fatalf("reply %v; want run.failed", reply)
	}
	if r.Status != evalflow.StatusFailed || !strings.Contains(r.Message, "anatomy_test.csv") || r.Progress.Done == 9 {
		t.Fatalf("run %s %q progress %+v", r.Status, r.Message, r.Progress)
	}
}

func TestSucceededJobWithoutResultsFailsTheRun(t *testing.T) {
	fx := setup(t)

	reply := fx.handle(t, fx.finished(true, ""))

	if r := fx.run(t); reply == nil || r.Status != evalflow.StatusFailed || !strings.Contains(r.Message, "no usable results") {
		t.Fatalf("run %s %q", r.Status, r.Message)
	}
}

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
	run, err := fx.p.Store.Update(ctx, id, func(r *evalflow.Run) error {
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
	tick.SetType(evalflow.TypePing)
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

// withRegistry configures job-watch with a results registry at addr.
func withRegistry(addr string) func(map[string]string) {
	return func(cfg map[string]string) {
		cfg["EVALFLOW_REGISTRY"] = addr + "/evalflow/results"
		cfg["EVALFLOW_REGISTRY_PLAIN_HTTP"] = "true"
		cfg["EVALFLOW_REGISTRY_USERNAME"] = "evalflow"
		cfg["EVALFLOW_REGISTRY_PASSWORD"] = "s3cret"
	}
}

// kubernetesRun makes the fixture's run a Kubernetes target's.
func (fx *fixture) kubernetesRun(t *testing.T) {
	t.Helper()
	if _, err := fx.p.Store.Update(context.Background(), runID, func(r *evalflow.Run) error {
		r.Target = evalflow.TargetKubernetes
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAKubernetesJobsResultsAreReadFromTheRegistry reads the summary a Job pushed
// under the staging tag, from a real registry with basic auth.
func TestAKubernetesJobsResultsAreReadFromTheRegistry(t *testing.T) {
	addr := testserver.Registry(t, "evalflow", "s3cret")
	fx := setup(t, withRegistry(addr))
	fx.kubernetesRun(t)
	ctx := context.Background()

	reply := fx.handle(t, fx.finished(true, "")) // nothing pushed: the Job left no results
	if r := fx.run(t); reply == nil || reply.Type() != evalflow.TypeFailed || !strings.Contains(r.Message, "no usable results") {
		t.Fatalf("reply %v, run %s %q: want the run failed for want of results", reply, r.Status, r.Message)
	}

	fx = setup(t, withRegistry(addr))
	fx.kubernetesRun(t)
	dir := t.TempDir()
	b, _ := json.Marshal(evalflow.Results{Summary: evalflow.Summary{Scores: map[string]float64{"gsm8k": 0.25}, Samples: 4, Metric: "exact_match"}})
	os.WriteFile(filepath.Join(dir, evalflow.ResultsFile), b, 0o644)
	os.WriteFile(filepath.Join(dir, evalflow.SamplesFile), []byte("{}\n"), 0o644)
	dest, err := oci.Open(oci.Config{Registry: addr + "/evalflow/results", PlainHTTP: true, Username: "evalflow", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dest.Push(ctx, oci.Artifact{Tag: evalflow.StagingTag(runID), Created: time.Now(), Files: []oci.File{
		{Path: filepath.Join(dir, evalflow.ResultsFile), MediaType: oci.MediaTypeSummary},
		{Path: filepath.Join(dir, evalflow.SamplesFile), MediaType: oci.MediaTypeSamples}}}); err != nil {
		t.Fatal(err)
	}

	reply = fx.handle(t, fx.finished(true, ""))
	dup := fx.handle(t, fx.finished(true, ""))

	if reply == nil || reply.Type() != evalflow.TypeResultsReady || dup == nil || dup.ID() != reply.ID() {
		t.Fatalf("replies %v, %v; want results.ready, twice the same", reply, dup)
	}
	if r := fx.run(t); r.Summary == nil || r.Summary.Scores["gsm8k"] != 0.25 {
		t.Fatalf("run summary %+v", r.Summary)
	}
}

func TestARegistryThatDoesNotAnswerIsRetriedNotFailed(t *testing.T) {
	fx := setup(t, withRegistry(fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t)))) // nothing listens there
	fx.kubernetesRun(t)

	_, err := fx.f.HandleEvent(context.Background(), fx.finished(true, ""))

	if err == nil {
		t.Fatal("no error: the broker would not redeliver")
	}
	if r := fx.run(t); r.Status != evalflow.StatusRunning {
		t.Fatalf("run %s %q, want it still running", r.Status, r.Message)
	}
}

// Every trigger's dead letters come to job-watch: one about a run's step fails the run,
// naming where it could not go; a lost notification or progress report fails nothing.
func TestADeadLetterFailsTheRunItWasAbout(t *testing.T) {
	fx := setup(t)
	lost := fx.progress(3, time.Now())
	lost.SetExtension("knativeerrordest", "http://evalflow-job-watch.evalflow.svc.cluster.local")
	lost.SetExtension("knativeerrorcode", "503")
	fx.handle(t, lost)
	if r := fx.run(t); r.Status.Terminal() {
		t.Fatalf("a lost progress report ended the run: %s %q", r.Status, r.Message)
	}
	ev := cloudevent.New(evalflow.StepVerify, evalflow.TypeVerified, runID, evalflow.RunRef{RunID: runID})
	forged := ev.Clone() // unsigned: not evalflow's
	fx.f.Sign(&ev, runID)
	for _, e := range []*event.Event{&ev, &forged} {
		e.SetExtension("knativeerrordest", "http://evalflow-deploy.evalflow.svc.cluster.local")
		e.SetExtension("knativeerrorcode", "500")
	}
	forged.SetID("forged")
	fx.handle(t, forged)
	if r := fx.run(t); r.Status.Terminal() {
		t.Fatalf("a forged dead letter ended the run: %s %q", r.Status, r.Message)
	}
	for range 2 { // at least once
		fx.handle(t, ev)
	}
	r := fx.run(t)
	if r.Status != evalflow.StatusFailed || !strings.Contains(r.Message, "evalflow-deploy") || !strings.Contains(r.Message, "500") {
		t.Fatalf("run after a dead letter: %s %q", r.Status, r.Message)
	}
	kept, err := fx.p.Store.DeadLetters(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range kept {
		ids = append(ids, d.ID)
	}
	slices.Sort(ids)
	want := []string{ev.ID(), lost.ID()}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("dead letters kept %v; want the lost report's and run.verified's once, %v, not the forged one", ids, want)
	}
}

// A job report its run's key did not sign — unsigned, signed with another run's key,
// or altered after signing — changes nothing: only the run's own job can report it.
func TestForgedJobReportsChangeNothing(t *testing.T) {
	fx := setup(t)
	before := fx.run(t)
	unsigned := cloudevent.New(evalflow.StepDeploy, evalflow.TypeJobFinished, runID, evalflow.JobFinished{RunID: runID, Job: "j", Message: "forged"})
	otherKey := unsigned.Clone()
	cloudevent.Sign(&otherKey, fx.f.ReportKey(otherID))
	altered := fx.finished(true, "")
	_ = altered.SetData("application/json", evalflow.JobFinished{RunID: runID, Job: "j", Message: "forged"})
	deadLetter := unsigned.Clone()
	deadLetter.SetExtension("knativeerrordest", "http://evalflow-job-watch.evalflow.svc.cluster.local")
	hoisted := fx.progress(999999, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	hoisted.SetExtension(evalflow.ExtSignature, "")
	for name, e := range map[string]event.Event{
		"unsigned job.finished":                  unsigned,
		"job.finished of another run's key":      otherKey,
		"altered job.finished":                   altered,
		"job.progress with no signature":         hoisted,
		"unsigned job.finished as a dead letter": deadLetter,
		"unsigned job.created":                   cloudevent.New(evalflow.StepDeploy, evalflow.TypeJobCreated, runID, evalflow.RunRef{RunID: runID}),
	} {
		if reply := fx.handle(t, e); reply != nil {
			t.Errorf("%s: replied %s", name, reply.Type())
		}
		if r := fx.run(t); r.Status != before.Status || r.Progress != before.Progress || r.Message != before.Message || !r.UpdatedAt.Equal(before.UpdatedAt) {
			t.Errorf("%s moved the run: %s %q %+v", name, r.Status, r.Message, r.Progress)
		}
	}
	if n := len(fx.p.Sink.OfType("/", evalflow.TypeNotification)); n != 0 {
		t.Errorf("forged reports notified the caller %d times", n)
	}
}

// A run that stands still in a step longer than the drive bound gets the event its
// step waits for again, with the id it first had; one stalled past the fail bound is
// failed saying what it waited for; a fresh one, or one whose job is under way, is
// left alone.
func TestATickDrivesStalledRunsAndFailsThoseStalledTooLong(t *testing.T) {
	fx := setup(t, func(cfg map[string]string) {
		cfg["EVALFLOW_DRIVE_AFTER"], cfg["EVALFLOW_FAIL_AFTER"] = "1m", "10m"
	})
	ctx, now := context.Background(), time.Now()
	runs := map[string]struct {
		status     evalflow.Status
		still      time.Duration
		summary    bool
		job        string
		wantResend string
		wantFailed bool
	}{
		"00000000-0000-4000-8000-000000000001": {evalflow.StatusPending, 2 * time.Minute, false, "", evalflow.TypeStarted, false},
		"00000000-0000-4000-8000-000000000002": {evalflow.StatusVerifying, 2 * time.Minute, false, "", evalflow.TypeStarted, false},
		"00000000-0000-4000-8000-000000000003": {evalflow.StatusDeploying, 2 * time.Minute, false, "", evalflow.TypeVerified, false},
		"00000000-0000-4000-8000-000000000004": {evalflow.StatusRunning, 2 * time.Minute, true, "j", evalflow.TypeResultsReady, false},
		"00000000-0000-4000-8000-000000000005": {evalflow.StatusStoring, 2 * time.Minute, false, "j", evalflow.TypeResultsReady, false},
		"00000000-0000-4000-8000-000000000006": {evalflow.StatusRunning, 2 * time.Minute, false, "j", "", false},   // its job runs
		"00000000-0000-4000-8000-000000000007": {evalflow.StatusDeploying, 10 * time.Second, false, "", "", false}, // fresh
		"00000000-0000-4000-8000-000000000008": {evalflow.StatusDeploying, 11 * time.Minute, false, "", "", true},  // too long
		"00000000-0000-4000-8000-000000000009": {evalflow.StatusRunning, 11 * time.Minute, false, "", "", true},    // no job
		"00000000-0000-4000-8000-000000000010": {evalflow.StatusRunning, 11 * time.Minute, false, "j", "", false},  // its job runs
	}
	for id, r := range runs {
		run := evalflow.NewRun(evalflow.Request{EvalRequestID: id, ModelName: "m", BaseURL: "http://127.0.0.1:1",
			Datasets: []evalflow.DatasetSpec{{Name: "gsm8k", Limit: 1}}}, now.Add(-r.still))
		for _, st := range []evalflow.Status{evalflow.StatusVerifying, evalflow.StatusDeploying, evalflow.StatusRunning, evalflow.StatusStoring} {
			if run.Status != r.status {
				run.Advance(st, now.Add(-r.still))
			}
		}
		run.Job = r.job
		if r.summary {
			run.Summary = &evalflow.Summary{Samples: 1}
		}
		if _, _, err := fx.p.Store.Create(ctx, run, nil); err != nil {
			t.Fatal(err)
		}
	}

	for range 2 { // a second tick sends the same events again: receivers drop the copies
		fx.handle(t, pingTick())
	}

	resent := map[string][]string{}
	for _, typ := range []string{evalflow.TypeStarted, evalflow.TypeVerified, evalflow.TypeResultsReady} {
		for _, e := range fx.p.Sink.OfType("/", typ) {
			if want := evalflow.EventID(typ, e.Subject()); e.ID() != want {
				t.Errorf("%s of %s resent with id %s; want the first's, %s", typ, e.Subject(), e.ID(), want)
			}
			resent[e.Subject()] = append(resent[e.Subject()], typ)
		}
	}
	for id, r := range runs {
		got, _ := fx.p.Store.Get(ctx, id)
		switch {
		case r.wantResend != "" && (len(resent[id]) != 2 || resent[id][0] != r.wantResend):
			t.Errorf("%s run stalled %s: resent %v; want %s on each tick", r.status, r.still, resent[id], r.wantResend)
		case r.wantResend == "" && len(resent[id]) != 0:
			t.Errorf("%s run stalled %s: resent %v; want nothing", r.status, r.still, resent[id])
		case r.wantFailed != (got.Status == evalflow.StatusFailed):
			t.Errorf("%s run stalled %s: now %s %q", r.status, r.still, got.Status, got.Message)
		case r.wantFailed && !strings.Contains(got.Message, "stalled: "+string(r.status)):
			t.Errorf("the failed stalled run says %q", got.Message)
		}
	}
}

// A job that reports its own success carries its summary, signed: the run takes it
// from the report, without reading the results back.
func TestAJobsOwnReportCarriesItsSummary(t *testing.T) {
	fx := setup(t) // no results written: a read would fail the run
	e := cloudevent.New(evalflow.StepWatch, evalflow.TypeJobFinished, runID, evalflow.JobFinished{RunID: runID, Job: "j", Succeeded: true,
		Summary: &evalflow.Summary{Scores: map[string]float64{"mmlu": 0.25}, Samples: 10}}, "runner")
	reply := fx.handle(t, fx.signed(e))
	r := fx.run(t)
	if reply == nil || reply.Type() != evalflow.TypeResultsReady || r.Summary == nil || r.Summary.Samples != 10 || r.Summary.Scores["mmlu"] != 0.25 {
		t.Fatalf("reply %v, run %s %q summary %+v", reply, r.Status, r.Message, r.Summary)
	}
}
