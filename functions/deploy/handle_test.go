package function

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/localjob"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/pipeline"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
	"github.com/evalflow/evalflow/shared/runstore"
)

const (
	runID  = "4e5f6a7b-8c9d-4e0f-a1b2-c3d4e5f6a7b8"
	apiKey = "sk-deploy-canary-0042"
)

type fixture struct {
	f    *Function
	p    *pipelinetest.Pipeline
	jobs *localjob.Server
	dir  string
}

// setup runs deploy against a real Redis and a real local job runtime running the
// real runner (pointed at a closed port: these tests are about the job, not scores),
// with a verified run to deploy.
func setup(t *testing.T, dataDir string) *fixture {
	fx := newFixture(t, dataDir)
	fx.verifiedRun(t, "")
	return fx
}

// registryPassword is the results registry's password Kubernetes Jobs get.
const registryPassword = "registry-canary-42"

// newFixture starts deploy with a local job runtime and a results registry for
// Kubernetes Jobs (deploy does not reach it); edits change its config.
func newFixture(t *testing.T, dataDir string, edits ...func(map[string]string)) *fixture {
	t.Helper()
	p := pipelinetest.New(t)
	dir := t.TempDir()
	jobs := &localjob.Server{RunnerPath: testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/evalflow-runner"),
		WorkDir: filepath.Join(dir, "jobs")}
	srv := httptest.NewServer(jobs)
	t.Cleanup(func() { jobs.Shutdown(); srv.Close() })
	cfg := p.With(map[string]string{"EVALFLOW_JOBS_URL": srv.URL, "EVALFLOW_DATA_DIR": dataDir, "EVALFLOW_RESULTS_DIR": filepath.Join(dir, "results"),
		"EVALFLOW_REGISTRY": "registry.evalflow.test:5000/evalflow/results", "EVALFLOW_REGISTRY_USERNAME": "jobs",
		"EVALFLOW_REGISTRY_PASSWORD": registryPassword, "EVALFLOW_JOB_REGISTRY": "registry.cluster.test/evalflow/results",
		"EVALFLOW_JOB_CALLBACK_URL": "http://broker.cluster.test/evalflow/default"})
	for _, edit := range edits {
		edit(cfg)
	}
	f := New()
	if err := f.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Stop(context.Background()) })
	return &fixture{f: f, p: p, jobs: jobs, dir: dir}
}

// verifiedRun records the run as verified; with a kubeconfig its target is that cluster.
func (fx *fixture) verifiedRun(t *testing.T, kubeconfig string) {
	t.Helper()
	ctx := context.Background()
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: runID, ModelName: "m", BaseURL: "http://127.0.0.1:1", Kubeconfig: kubeconfig,
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu", Limit: 1, Subjects: []string{"anatomy"}}}}, time.Now())
	secrets := map[string]string{runstore.SecretAPIKey: apiKey, runstore.SecretKubeconfig: kubeconfig}
	if _, _, err := fx.p.Store.Create(ctx, r, secrets); err != nil {
		t.Fatal(err)
	}
	pipelinetest.Update(ctx, fx.p.Store, runID, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusVerifying, time.Now()) })
}

func TestDeployCreatesExactlyOneJobUnderConcurrentDuplicates(t *testing.T) {
	fx := setup(t, t.TempDir())
	// As verify sends it: with the run as verify stored it, which every copy then
	// tries to move in one write.
	stored, ok := fx.p.Store.Stored(runID)
	if !ok {
		t.Fatal("the store has no copy of the run it wrote")
	}
	verified := cloudevent.New(evalflow.StepVerify, evalflow.TypeVerified, runID, evalflow.RunRef{RunID: runID, Stored: stored})
	fx.f.Sign(&verified, runID)

	replies := testserver.DeliverConcurrently(t, 12, fx.f.Handle, verified)

	if n := fx.jobs.Created(); n != 1 {
		t.Fatalf("%d jobs created; want 1", n)
	}
	if len(replies) == 0 || replies[0] != evalflow.TypeJobCreated.String() {
		t.Fatalf("replies = %v; want job.created", replies)
	}
	r, _ := fx.p.Store.Get(context.Background(), runID)
	if r.Status != evalflow.StatusDeploying || r.Job != evalflow.JobName(runID) {
		t.Fatalf("run = %s job %q", r.Status, r.Job)
	}
	// A late copy, once the run has moved on, does nothing either.
	pipelinetest.Update(context.Background(), fx.p.Store, runID, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusRunning, time.Now()) })
	if reply, err := fx.f.HandleEvent(context.Background(), verified); err != nil || reply != nil || fx.jobs.Created() != 1 {
		t.Fatalf("late verified: reply %v, err %v, %d jobs", reply, err, fx.jobs.Created())
	}
}

func TestTheJobGetsItsSpecAndKeyAsFilesNeverInClearElsewhere(t *testing.T) {
	fx := setup(t, t.TempDir()) // no datasets: the runner fails fast, after reading its spec
	verified := cloudevent.New(evalflow.StepVerify, evalflow.TypeVerified, runID, evalflow.RunRef{RunID: runID})
	fx.f.Sign(&verified, runID)

	if _, err := fx.f.HandleEvent(context.Background(), verified); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 30*time.Second, "job ends", func() bool {
		st, _ := fx.jobs.Get(evalflow.JobName(runID))
		return st.Phase == "Failed" || st.Phase == "Succeeded"
	})

	jobDir := filepath.Join(fx.dir, "jobs", evalflow.JobName(runID))
	spec, err := os.ReadFile(filepath.Join(jobDir, "meta", "job.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"run_id": "` + runID, `"api_key_file"`, `"deadline_seconds": 21600`} {
		if !strings.Contains(string(spec), want) {
			t.Errorf("job.json lacks %s:\n%s", want, spec)
		}
	}
	if strings.Contains(string(spec), apiKey) {
		t.Error("job.json holds the api key")
	}
	if _, err := os.Stat(filepath.Join(jobDir, "secret")); !os.IsNotExist(err) {
		t.Errorf("the job ended but its secret is still on disk (%v)", err)
	}
	log, _ := os.ReadFile(filepath.Join(jobDir, "runner.log"))
	if strings.Contains(string(log), apiKey) || len(log) == 0 {
		t.Errorf("runner log empty or holds the key:\n%s", log)
	}
}

// A run cancelled, or failed by any step, has its job stopped; a run.cancelled for a
// run that has not ended (a forgery, a stale copy) stops nothing.
func TestAnEndedRunHasItsJobStopped(t *testing.T) {
	for _, end := range []struct {
		status evalflow.Status
		event  evalflow.EventType
	}{{evalflow.StatusCancelled, evalflow.TypeCancelled}, {evalflow.StatusFailed, evalflow.TypeFailed}} {
		t.Run(string(end.status), func(t *testing.T) { jobStoppedWhenEnded(t, end.status, end.event) })
	}
}

func jobStoppedWhenEnded(t *testing.T, end evalflow.Status, eventType evalflow.EventType) {
	// A job that runs until stopped: real data, an endpoint that refuses (the runner
	// retries with backoff for minutes).
	fx := setup(t, filepath.Join(testserver.SharedDir(t), "datasets"))
	verified := cloudevent.New(evalflow.StepVerify, evalflow.TypeVerified, runID, evalflow.RunRef{RunID: runID})
	fx.f.Sign(&verified, runID)
	if _, err := fx.f.HandleEvent(context.Background(), verified); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	st, _ := fx.jobs.Get(evalflow.JobName(runID))
	if st.Phase != "Running" {
		t.Fatalf("job phase %q before cancel; want Running", st.Phase)
	}
	// While it runs: the key is in neither the runner's arguments nor its environment.
	for _, f := range []string{"cmdline", "environ"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", st.PID, f))
		if err != nil || len(b) == 0 {
			t.Fatalf("read the runner's %s: %v", f, err)
		}
		if strings.Contains(string(b), apiKey) || strings.Contains(string(b), "EVALFLOW_SEAL_KEY") {
			t.Fatalf("the runner's %s holds a secret: %q", f, b)
		}
	}

	// A run.cancelled, signed as start signs it, for a run that is not cancelled:
	// what counts is the run.
	untrue := cloudevent.New(evalflow.StepStart, evalflow.TypeCancelled, runID, evalflow.RunRef{RunID: runID})
	fx.f.Sign(&untrue, runID)
	if _, err := fx.f.HandleEvent(context.Background(), untrue); err != nil {
		t.Fatal(err)
	}
	if st, _ := fx.jobs.Get(evalflow.JobName(runID)); st.Phase != "Running" {
		t.Fatalf("job phase %q after a run.cancelled of a run that was not cancelled; want it still running", st.Phase)
	}

	if _, err := pipelinetest.Update(context.Background(), fx.p.Store, runID, func(r *evalflow.Run) error { return r.Advance(end, time.Now()) }); err != nil {
		t.Fatal(err)
	}
	ended := cloudevent.New(evalflow.StepStart, eventType, runID, evalflow.RunRef{RunID: runID})
	fx.f.Sign(&ended, runID)
	for range 2 { // and a duplicate
		if _, err := fx.f.HandleEvent(context.Background(), ended); err != nil {
			t.Fatal(err)
		}
	}

	if st, _ := fx.jobs.Get(evalflow.JobName(runID)); st.Phase != "Failed" {
		t.Fatalf("job phase %q after the run %s; want it stopped", st.Phase, end)
	}
}

func TestAnEngineWithoutALocalProgramIsRefusedSayingWhy(t *testing.T) {
	fx := setup(t, t.TempDir()) // its local runtime has the built-in runner only
	pipelinetest.Update(context.Background(), fx.p.Store, runID, func(r *evalflow.Run) error { r.Engine = "opencompass"; return nil })
	verified := cloudevent.New(evalflow.StepVerify, evalflow.TypeVerified, runID, evalflow.RunRef{RunID: runID})
	fx.f.Sign(&verified, runID)

	reply, err := fx.f.HandleEvent(context.Background(), verified)

	r, _ := fx.p.Store.Get(context.Background(), runID)
	if err != nil || reply == nil || cloudevent.TypeOf(*reply) != evalflow.TypeFailed || fx.jobs.Created() != 0 ||
		!strings.Contains(r.Message, `no local program`) || !strings.Contains(r.Message, `"opencompass"`) {
		t.Fatalf("reply %v err %v jobs %d run %s %q", reply, err, fx.jobs.Created(), r.Status, r.Message)
	}
}

// With one job slot, a second run waits in line; the first run's end (written by
// whichever step ends it) hands it the slot and lets it in, without deploy hearing of
// that end, and it gets its job, once however often it is let in.
func TestTheEndOfARunLetsTheNextInLineIn(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t, t.TempDir(), func(c map[string]string) { c["EVALFLOW_MAX_JOBS"] = "1" })
	fx.verifiedRun(t, "")
	const second = "5f6a7b8c-9d0e-4f1a-b2c3-d4e5f6a7b8c9"
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: second, ModelName: "m", BaseURL: "http://127.0.0.1:1",
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu", Limit: 1, Subjects: []string{"anatomy"}}}}, time.Now())
	if _, _, err := fx.p.Store.Create(ctx, r, map[string]string{runstore.SecretAPIKey: apiKey}); err != nil {
		t.Fatal(err)
	}
	pipelinetest.Update(ctx, fx.p.Store, second, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusVerifying, time.Now()) })
	verified := func(id string) *event.Event {
		t.Helper()
		ev := cloudevent.New(evalflow.StepVerify, evalflow.TypeVerified, id, evalflow.RunRef{RunID: id})
		fx.f.Sign(&ev, id)
		reply, err := fx.f.HandleEvent(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		return reply
	}
	if reply := verified(runID); reply == nil || cloudevent.TypeOf(*reply) != evalflow.TypeJobCreated {
		t.Fatalf("the first run: reply %v; want job.created", reply)
	}
	if reply := verified(second); reply != nil {
		t.Fatalf("the second run, no slot free: reply %s", reply.Type())
	}
	if got, _ := fx.p.Store.Get(ctx, second); !got.Queued || got.QueuePosition != 1 || fx.jobs.Created() != 1 {
		t.Fatalf("the second run: queued %v at %d, %d jobs; want it first in line, one job", got.Queued, got.QueuePosition, fx.jobs.Created())
	}

	// The first run fails, as job-watch would fail it.
	watch, err := pipeline.Open(ctx, evalflow.StepWatch, fx.p.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Stop(ctx) })
	if _, err := watch.Fail(ctx, runID, "job failed"); err != nil {
		t.Fatal(err)
	}
	letIn := fx.p.Sink.OfType("/", evalflow.TypeVerified)
	if len(letIn) != 1 || letIn[0].Subject() != second {
		t.Fatalf("let in after the first run's end: %d run.verified; want one, for the second run", len(letIn))
	}
	for range 2 { // and a duplicate
		if reply, err := fx.f.HandleEvent(ctx, letIn[0]); err != nil || reply == nil || cloudevent.TypeOf(*reply) != evalflow.TypeJobCreated {
			t.Fatalf("the second run let in: reply %v, %v; want job.created", reply, err)
		}
	}
	if got, _ := fx.p.Store.Get(ctx, second); got.Queued || got.Job != evalflow.JobName(second) || fx.jobs.Created() != 2 {
		t.Fatalf("the second run: queued %v, job %q, %d jobs; want its job, two in all", got.Queued, got.Job, fx.jobs.Created())
	}
}
