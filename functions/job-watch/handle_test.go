package function

import (
	"context"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
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
		pipelinetest.Update(ctx, p.Store, runID, func(r *evalflow.Run) error { return r.Advance(s, time.Now()) })
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
	if _, err := pipelinetest.Update(context.Background(), fx.p.Store, runID, func(r *evalflow.Run) error {
		r.Target = evalflow.TargetKubernetes
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
