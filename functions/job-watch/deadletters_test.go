package function

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

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
