package function

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
)

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

	if reply == nil || cloudevent.TypeOf(*reply) != evalflow.TypeResultsReady {
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
	pipelinetest.Update(context.Background(), fx.p.Store, runID, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusStoring, time.Now()) })
	if late := fx.handle(t, fx.finished(true, "")); late != nil {
		t.Fatalf("late job.finished replied %v", late.Type())
	}
}

func TestAFailedJobFailsTheRunSayingWhy(t *testing.T) {
	fx := setup(t)

	reply := fx.handle(t, fx.finished(false, "runner exited with code 1: mmlu: anatomy_test.csv: no such file"))
	fx.handle(t, fx.progress(9, time.Now())) // a report after the end

	r := fx.run(t)
	if reply == nil || cloudevent.TypeOf(*reply) != evalflow.TypeFailed {
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

// TestAKubernetesJobsResultsAreReadFromTheRegistry reads the summary a Job pushed
// under the staging tag, from a real registry with basic auth.
func TestAKubernetesJobsResultsAreReadFromTheRegistry(t *testing.T) {
	addr := testserver.Registry(t, "evalflow", "s3cret")
	fx := setup(t, withRegistry(addr))
	fx.kubernetesRun(t)
	ctx := context.Background()

	reply := fx.handle(t, fx.finished(true, "")) // nothing pushed: the Job left no results
	if r := fx.run(t); reply == nil || cloudevent.TypeOf(*reply) != evalflow.TypeFailed || !strings.Contains(r.Message, "no usable results") {
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

	if reply == nil || cloudevent.TypeOf(*reply) != evalflow.TypeResultsReady || dup == nil || dup.ID() != reply.ID() {
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

// A job that reports its own success carries its summary, signed: the run takes it
// from the report, without reading the results back.
func TestAJobsOwnReportCarriesItsSummary(t *testing.T) {
	fx := setup(t) // no results written: a read would fail the run
	e := cloudevent.New(evalflow.StepWatch, evalflow.TypeJobFinished, runID, evalflow.JobFinished{RunID: runID, Job: "j", Succeeded: true,
		Summary: &evalflow.Summary{Scores: map[string]float64{"mmlu": 0.25}, Samples: 10}}, "runner")
	reply := fx.handle(t, fx.signed(e))
	r := fx.run(t)
	if reply == nil || cloudevent.TypeOf(*reply) != evalflow.TypeResultsReady || r.Summary == nil || r.Summary.Samples != 10 || r.Summary.Scores["mmlu"] != 0.25 {
		t.Fatalf("reply %v, run %s %q summary %+v", reply, r.Status, r.Message, r.Summary)
	}
}
