package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/pipeline"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
)

const runID = "5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e9f"

// TestAStartedNotificationIsNeverLost: with the broker down, a turn moves the run but
// fails, for the event to be redelivered; the redelivery, with the broker back, finds
// the run moved and sends "started". A duplicate after that sends nothing new.
func TestAStartedNotificationIsNeverLost(t *testing.T) {
	ctx := context.Background()
	p := pipelinetest.New(t)
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: runID, ModelName: "m", BaseURL: "http://127.0.0.1:1",
		Datasets: []evalflow.DatasetSpec{{Name: "gsm8k"}}}, time.Now())
	if _, _, err := p.Store.Create(ctx, r, nil); err != nil {
		t.Fatal(err)
	}
	down := p.With(map[string]string{"K_SINK": fmt.Sprintf("http://127.0.0.1:%d", testserver.FreePort(t))}) // nothing listens
	brokerDown, err := pipeline.Open(ctx, evalflow.StepVerify, down)
	if err != nil {
		t.Fatal(err)
	}
	brokerDown.Events.Retries = 0
	t.Cleanup(func() { brokerDown.Stop(ctx) })

	if _, _, _, err := turn(brokerDown, started(brokerDown, runID), evalflow.StatusVerifying); err == nil {
		t.Fatal("a turn with the broker down: no error, so no redelivery")
	}
	if n := len(p.Sink.OfType("/", evalflow.TypeNotification)); n != 0 {
		t.Fatalf("%d notifications with the broker down", n)
	}

	env, err := pipeline.Open(ctx, evalflow.StepVerify, p.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop(ctx) })
	for range 2 { // the redelivery, then a duplicate
		if _, _, ok, err := turn(env, started(env, runID), evalflow.StatusVerifying); err != nil || !ok {
			t.Fatalf("turn: ok %v, %v", ok, err)
		}
	}
	if got, _ := p.Store.Get(ctx, runID); got.Status != evalflow.StatusVerifying {
		t.Fatalf("run %s; want verifying", got.Status)
	}
	notes := p.Sink.OfType("/", evalflow.TypeNotification)
	if len(notes) != 1 {
		t.Fatalf("%d notifications; want one started", len(notes))
	}
	var n evalflow.Notification
	if err := notes[0].DataAs(&n); err != nil || n.Status != evalflow.NoteStarted || n.RunStatus != evalflow.StatusVerifying {
		t.Fatalf("notification %+v (%v)", n, err)
	}
}

// A failure message quoting what a job or an endpoint said is stored, notified and
// logged with the run's key redacted.
func TestAFailureMessageNeverCarriesTheRunsKey(t *testing.T) {
	ctx := context.Background()
	p := pipelinetest.New(t)
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: runID, ModelName: "m", BaseURL: "http://127.0.0.1:1",
		Datasets: []evalflow.DatasetSpec{{Name: "gsm8k"}}}, time.Now())
	if _, _, err := p.Store.Create(ctx, r, map[string]string{"api_key": "sk-canary-42"}); err != nil {
		t.Fatal(err)
	}
	env, err := pipeline.Open(ctx, evalflow.StepWatch, p.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop(ctx) })
	var log bytes.Buffer
	env.Log = slog.New(slog.NewJSONHandler(&log, nil))

	if _, err := env.Fail(ctx, runID, "job failed; its last words: 401 bad key Bearer sk-canary-42"); err != nil {
		t.Fatal(err)
	}

	got, _ := p.Store.Get(ctx, runID)
	if got.Status != evalflow.StatusFailed || got.Message != "job failed; its last words: 401 bad key Bearer "+evalflow.Redacted {
		t.Fatalf("run %s %q", got.Status, got.Message)
	}
	for name, b := range map[string][]byte{"the notification": p.Sink.Raw(), "the log": log.Bytes()} {
		if bytes.Contains(b, []byte("sk-canary-42")) {
			t.Errorf("%s carries the key", name)
		}
	}
}

// The event a step replies with carries the run as the step stored it: the next step
// moves the run over that copy, and reads its secrets, in one round trip. A copy that
// is not the run as stored — forged, or behind it — writes nothing of itself: the run
// as stored decides, and is never moved back.
func TestATurnMovesTheRunOverTheEventsCopy(t *testing.T) {
	ctx := context.Background()
	p := pipelinetest.New(t)
	start, verify := open(t, p, evalflow.StepStart), open(t, p, evalflow.StepVerify)
	create := func(id string) {
		r := evalflow.NewRun(evalflow.Request{EvalRequestID: id, ModelName: "m", BaseURL: "http://127.0.0.1:1",
			Datasets: []evalflow.DatasetSpec{{Name: "gsm8k"}}}, time.Now())
		if _, _, err := start.Store.Create(ctx, r, map[string]string{"api_key": "sk-" + id[:4]}); err != nil {
			t.Fatal(err)
		}
	}
	begin := func(ev event.Event) (*evalflow.Run, map[string]string, bool, int64) {
		t.Helper()
		before := verify.Store.RoundTrips()
		r, secrets, ok, err := turn(verify, ev, evalflow.StatusVerifying, pipeline.WithSecrets())
		if err != nil {
			t.Fatal(err)
		}
		return r, secrets, ok, verify.Store.RoundTrips() - before
	}

	// A forged copy (another model) is not the run: the run as stored moves.
	forgedID := "6e7f8091-ab2c-4d3e-9f40-5b6c7d8e9fa0"
	create(forgedID)
	stored, _ := start.Store.Stored(forgedID)
	forged := bytes.Replace(stored, []byte(`"model_name":"m"`), []byte(`"model_name":"forged"`), 1)
	if bytes.Equal(forged, stored) {
		t.Fatalf("the copy %s has no model_name to forge", stored)
	}
	ev := cloudevent.New(evalflow.StepStart, evalflow.TypeStarted, forgedID, evalflow.RunRef{RunID: forgedID, Stored: forged})
	start.Sign(&ev, forgedID)
	if r, _, ok, _ := begin(ev); !ok || r.ModelName != "m" {
		t.Fatalf("over a forged copy: ok %v, model %q", ok, r.ModelName)
	}
	if got, _ := p.Store.Get(ctx, forgedID); got.Status != evalflow.StatusVerifying || got.ModelName != "m" {
		t.Fatalf("stored run %s, model %q; want verifying, m", got.Status, got.ModelName)
	}

	create(runID)
	pending, _ := start.Store.Stored(runID)
	r, secrets, ok, trips := begin(*start.Next(evalflow.TypeStarted, runID))
	if !ok || r.Status != evalflow.StatusVerifying || secrets["api_key"] != "sk-"+runID[:4] || trips != 1 {
		t.Fatalf("over the event's copy: ok %v, run %s, secrets %v, %d round trips; want verifying with its key in 1", ok, r.Status, secrets, trips)
	}
	if got, _ := p.Store.Get(ctx, runID); got.Status != evalflow.StatusVerifying {
		t.Fatalf("stored run %s; want verifying", got.Status)
	}

	// A copy behind the run (it is deploying): nothing moves back.
	if _, err := pipelinetest.Update(ctx, p.Store, runID, func(r *evalflow.Run) error { return r.Advance(evalflow.StatusDeploying, time.Now()) }); err != nil {
		t.Fatal(err)
	}
	ev = cloudevent.New(evalflow.StepStart, evalflow.TypeStarted, runID, evalflow.RunRef{RunID: runID, Stored: pending})
	start.Sign(&ev, runID)
	if _, _, ok, _ := begin(ev); ok {
		t.Fatal("a late run.started with an old copy: ok")
	}
	if got, _ := p.Store.Get(ctx, runID); got.Status != evalflow.StatusDeploying {
		t.Fatalf("stored run %s; want deploying still", got.Status)
	}
}

// TestAForgedEventCannotSkipAStep: a run.verified for a run still pending would have
// deploy skip verify, and its checks of the endpoint. Even signed as verify signs
// it, it changes nothing, with or without a copy of the run that says it is verifying.
func TestAForgedEventCannotSkipAStep(t *testing.T) {
	ctx := context.Background()
	p := pipelinetest.New(t)
	deploy := open(t, p, evalflow.StepDeploy)
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: runID, ModelName: "m", BaseURL: "http://127.0.0.1:1",
		Datasets: []evalflow.DatasetSpec{{Name: "gsm8k"}}}, time.Now())
	if _, _, err := p.Store.Create(ctx, r, nil); err != nil {
		t.Fatal(err)
	}
	pending, _ := p.Store.Stored(runID)
	claimsVerifying := bytes.Replace(pending, []byte(`"status":"pending"`), []byte(`"status":"verifying"`), 1)
	if bytes.Equal(claimsVerifying, pending) {
		t.Fatalf("the copy %s has no status to forge", pending)
	}
	before, _ := p.Store.History(ctx, runID)

	for name, ref := range map[string]evalflow.RunRef{
		"no copy": {RunID: runID}, "the pending copy": {RunID: runID, Stored: pending}, "a copy that says verifying": {RunID: runID, Stored: claimsVerifying},
	} {
		for range 2 { // and its duplicate
			ev := cloudevent.New(evalflow.StepVerify, evalflow.TypeVerified, runID, ref)
			deploy.Sign(&ev, runID) // even as verify would sign it
			if _, _, ok, err := turn(deploy, ev, evalflow.StatusDeploying); err != nil || ok {
				t.Fatalf("%s: turn = ok %v, %v; want the event dropped", name, ok, err)
			}
		}
	}
	got, err := p.Store.Get(ctx, runID)
	if err != nil || got.Status != evalflow.StatusPending || got.Step != evalflow.StepStart {
		t.Fatalf("stored run %s at step %s (%v); want pending at start, as it was", got.Status, got.Step, err)
	}
	if after, _ := p.Store.History(ctx, runID); len(after) != len(before) {
		t.Errorf("the run's timeline grew from %d to %d entries", len(before), len(after))
	}
	if n := len(p.Sink.OfType("/", evalflow.TypeNotification)); n != 0 {
		t.Errorf("%d notifications sent for a dropped event", n)
	}
}

// TestOnlyEventsSignedForTheirRunMoveIt: a pod in the cluster can post to the broker
// and to any function. What it sends (unsigned, signed for another run, or signed with
// the run's report key, which the run's job holds) moves nothing; what a step sends
// does.
func TestOnlyEventsSignedForTheirRunMoveIt(t *testing.T) {
	ctx := context.Background()
	p := pipelinetest.New(t)
	start := open(t, p, evalflow.StepStart)
	const other = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
	for _, id := range []string{runID, other} {
		r := evalflow.NewRun(evalflow.Request{EvalRequestID: id, ModelName: "m", BaseURL: "http://127.0.0.1:1",
			Datasets: []evalflow.DatasetSpec{{Name: "gsm8k"}}}, time.Now())
		if _, _, err := p.Store.Create(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	started := func() event.Event {
		return cloudevent.New(evalflow.StepStart, evalflow.TypeStarted, runID, evalflow.RunRef{RunID: runID})
	}
	unsigned := started()
	ofAnother := started()
	start.Sign(&ofAnother, other)
	byTheJob := started()
	cloudevent.Sign(&byTheJob, start.ReportKey(runID))
	tampered := *start.Next(evalflow.TypeStarted, other) // signed for other, then moved to runID
	tampered.SetSubject(runID)
	if err := tampered.SetData(event.ApplicationJSON, evalflow.RunRef{RunID: runID}); err != nil {
		t.Fatal(err)
	}

	for name, ev := range map[string]event.Event{"unsigned": unsigned, "signed for another run": ofAnother,
		"signed with the job's report key": byTheJob, "signed for another run, then moved": tampered} {
		if start.SignedFor(ev, runID) {
			t.Errorf("%s: signed for run %s; want not", name, runID)
		}
		if _, _, ok, err := turn(start, ev, evalflow.StatusVerifying); ok || err != nil {
			t.Errorf("%s: turn = ok %v, %v; want nothing done", name, ok, err)
		}
	}
	if got, _ := p.Store.Get(ctx, runID); got.Status != evalflow.StatusPending {
		t.Fatalf("after forged events the run is %s; want pending", got.Status)
	}
	if _, _, ok, err := turn(start, *start.Next(evalflow.TypeStarted, runID), evalflow.StatusVerifying); !ok || err != nil {
		t.Fatalf("as a step signs it: turn = ok %v, %v; want the run moved", ok, err)
	}
	if got, _ := p.Store.Get(ctx, runID); got.Status != evalflow.StatusVerifying {
		t.Fatalf("the run is %s; want verifying", got.Status)
	}
}

// open opens step's Env on p, until the test ends.
func open(t *testing.T, p *pipelinetest.Pipeline, step evalflow.StepID) *pipeline.Env {
	t.Helper()
	env, err := pipeline.Open(context.Background(), step, p.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop(context.Background()) })
	return env
}

// turn hands ev to env as a step's turn into status: the run and secrets its work
// was given, and whether it was given one.
func turn(env *pipeline.Env, ev event.Event, status evalflow.Status, opts ...pipeline.TurnOption) (run *evalflow.Run, secrets map[string]string, ok bool, err error) {
	_, err = env.Turn(context.Background(), ev, status, func(_ context.Context, t *pipeline.Turn) (*event.Event, error) {
		run, secrets, ok = t.Run, t.Secrets, true
		return nil, nil
	}, opts...)
	return run, secrets, ok, err
}

// started is run.started for run id, signed as start signs it, with no copy of the run.
func started(env *pipeline.Env, id string) event.Event {
	ev := cloudevent.New(evalflow.StepStart, evalflow.TypeStarted, id, evalflow.RunRef{RunID: id})
	env.Sign(&ev, id)
	return ev
}
