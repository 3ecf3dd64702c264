package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/pipeline"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
)

const runID = "5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e9f"

// TestAStartedNotificationIsNeverLost: with the broker down, Begin fails and leaves
// the run where it was; the redelivery, with the broker back, sends "started" and
// moves the run. A duplicate after that sends nothing new.
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

	if _, _, err := brokerDown.Begin(ctx, runID, evalflow.StatusVerifying); err == nil {
		t.Fatal("Begin with the broker down: no error, so no redelivery")
	}
	if got, _ := p.Store.Get(ctx, runID); got.Status != evalflow.StatusPending {
		t.Fatalf("run %s after a failed notification; want it still pending", got.Status)
	}

	env, err := pipeline.Open(ctx, evalflow.StepVerify, p.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop(ctx) })
	for range 2 { // the redelivery, then a duplicate
		if _, ok, err := env.Begin(ctx, runID, evalflow.StatusVerifying); err != nil || !ok {
			t.Fatalf("Begin: ok %v, %v", ok, err)
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
