package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/pipeline"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
)

// job-watch's tick, made on demand, is there while a run is in flight and gone when
// none is, on a real API server with the rights eventing/rbac.yaml grants: made twice
// or removed twice is no error; a run recorded while it is removed gets it back.
func TestTheTickIsThereWhileARunIsInFlight(t *testing.T) {
	ctx := context.Background()
	p := pipelinetest.New(t)
	ticks := pipelinetest.NewTicks(t)
	env, err := pipeline.Open(ctx, evalflow.StepWatch, p.With(ticks.Config))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop(ctx) })
	record := func(id string) *evalflow.Run {
		r := evalflow.NewRun(evalflow.Request{EvalRequestID: id, ModelName: "m", BaseURL: "http://127.0.0.1:1",
			Datasets: []evalflow.DatasetSpec{{Name: "gsm8k"}}}, time.Now())
		if _, _, err := p.Store.Create(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
		return r
	}
	want := func(ticking bool, when string) {
		t.Helper()
		if got := ticks.Ticking(t); got != ticking {
			t.Fatalf("%s: ticking %v; want %v", when, got, ticking)
		}
	}
	if err := env.StopTickingIfIdle(ctx); err != nil {
		t.Fatal(err)
	}
	want(false, "idle, never made")

	r := record("run-1")
	for range 2 {
		if err := env.KeepTicking(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want(true, "a run recorded")
	if err := env.StopTickingIfIdle(ctx); err != nil {
		t.Fatal(err)
	}
	want(true, "a tick with the run pending")

	if _, err := pipelinetest.Update(ctx, p.Store, r.ID, func(r *evalflow.Run) error { return r.Fail("gone", time.Now()) }); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := env.StopTickingIfIdle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want(false, "a tick with the only run failed")

	// A run recorded after the tick found none in flight, whose start made the tick
	// before the removal: the second look makes it again.
	if err := env.KeepTicking(ctx); err != nil {
		t.Fatal(err)
	}
	env.OnTickRemoved(func() { record("run-2") })
	if err := env.StopTickingIfIdle(ctx); err != nil {
		t.Fatal(err)
	}
	want(true, "a run recorded while the tick was removed")
}

// A tick made on demand needs evalflow's own cluster to be made in.
func TestATickOnDemandWithoutAClusterIsRefusedNamingTheSetting(t *testing.T) {
	p := pipelinetest.New(t)
	_, err := pipeline.Open(context.Background(), evalflow.StepStart, p.With(map[string]string{"EVALFLOW_TICK_ON_DEMAND": "true"}))
	if err == nil || !strings.Contains(err.Error(), "EVALFLOW_TICK_ON_DEMAND") || !strings.Contains(err.Error(), "EVALFLOW_OWN_CLUSTER") {
		t.Fatalf("Open: %v; want an error naming EVALFLOW_TICK_ON_DEMAND and EVALFLOW_OWN_CLUSTER", err)
	}
}
