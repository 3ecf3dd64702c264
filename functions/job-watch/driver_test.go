package function

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/runstore"
)

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
		wantResend evalflow.EventType
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

	resent := map[string][]evalflow.EventType{}
	for _, typ := range []evalflow.EventType{evalflow.TypeStarted, evalflow.TypeVerified, evalflow.TypeResultsReady} {
		for _, e := range fx.p.Sink.OfType("/", typ) {
			if want := evalflow.EventID(typ.String(), e.Subject()); e.ID() != want {
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

// With more runs in one status than a page (1,500 running), a tick still looks at
// every one: the oldest, stalled, is failed; none of the rest, whose jobs run, is.
func TestATickVisitsEveryRunOfAStatusOldestFirst(t *testing.T) {
	fx := setup(t, func(cfg map[string]string) {
		cfg["EVALFLOW_DRIVE_AFTER"], cfg["EVALFLOW_FAIL_AFTER"] = "1m", "10m"
	})
	ctx, now := context.Background(), time.Now()
	const n = 1500
	var oldest string
	for i := range n {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i+100)
		created, still, job := now.Add(-time.Duration(n-i)*time.Second), 10*time.Second, "j"
		if i == 0 { // the oldest: no job, and still for 11 minutes
			oldest, created, still, job = id, now.Add(-time.Hour), 11*time.Minute, ""
		}
		run := evalflow.NewRun(evalflow.Request{EvalRequestID: id, ModelName: "m", BaseURL: "http://127.0.0.1:1",
			Datasets: []evalflow.DatasetSpec{{Name: "gsm8k", Limit: 1}}}, created)
		for _, st := range []evalflow.Status{evalflow.StatusVerifying, evalflow.StatusDeploying, evalflow.StatusRunning} {
			run.Advance(st, now.Add(-still))
		}
		run.Job = job
		if _, _, err := fx.p.Store.Create(ctx, run, nil); err != nil {
			t.Fatal(err)
		}
	}

	fx.handle(t, pingTick())

	if got, _ := fx.p.Store.Get(ctx, oldest); got.Status != evalflow.StatusFailed || !strings.Contains(got.Message, "stalled: running") {
		t.Fatalf("the oldest of %d running runs, stalled: %s %q; want failed as stalled", n, got.Status, got.Message)
	}
	running, err := fx.p.Store.List(ctx, runstore.ListOptions{Status: evalflow.StatusRunning, Limit: runstore.MaxList})
	if err != nil {
		t.Fatal(err)
	}
	if len(running) != runstore.MaxList { // the rest still run (as many as one list shows)
		t.Errorf("%d runs listed as running after the tick; want %d", len(running), runstore.MaxList)
	}
}
