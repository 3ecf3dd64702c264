package function

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
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

// A dead letter posted by anyone but a step (any type, naming another caller's run,
// with Knative's error extensions) is never shown as that run's, fails nothing, and
// adds no metric series of its own type.
func TestAForgedDeadLetterIsNotTheRunsAndAddsNoSeries(t *testing.T) {
	fx := setup(t)
	for i, typ := range []evalflow.EventType{evalflow.TypeNotification, evalflow.TypeRequested, evalflow.TypeFailed, "com.example.made-up"} {
		ev := cloudevent.New(evalflow.StepVerify, typ, runID, evalflow.RunRef{RunID: runID})
		ev.SetID(fmt.Sprintf("forged-%d", i))
		ev.SetExtension("knativeerrordest", "http://evalflow-deploy.evalflow.svc.cluster.local")
		ev.SetExtension("knativeerrorcode", "500")
		ev.SetExtension("knativeerrordata", base64.StdEncoding.EncodeToString([]byte("your run is compromised, visit http://evil")))
		fx.handle(t, ev)
	}
	if r := fx.run(t); r.Status.Terminal() {
		t.Fatalf("forged dead letters ended the run: %s %q", r.Status, r.Message)
	}
	if kept, err := fx.p.Store.DeadLetters(context.Background(), runID); err != nil || len(kept) != 0 {
		t.Fatalf("the run's dead letters: %v (%v); want none of the forged", kept, err)
	}
	rec := httptest.NewRecorder()
	fx.f.Metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if body := rec.Body.String(); strings.Contains(body, "made-up") || !strings.Contains(body, `evalflow_dead_letters_total{step="job-watch",type="other"} 1`) {
		t.Errorf("metrics:\n%s\nwant the made-up type counted as other", grepLines(body, "dead_letters"))
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Where the broker delivers with a token, job-watch takes nothing without it: a dead
// letter posted to its port by anyone else is answered 401 and kept nowhere. Local
// mode's broker has one token; Knative's OIDC a token of the Trigger's account for
// job-watch's audience, which a real API server reviews.
func TestOnlyTheBrokerDeliversWhereItHasAToken(t *testing.T) {
	t.Run("local mode's shared token", func(t *testing.T) {
		const token = "delivery-token-0123456789"
		onlyTheBrokerDelivers(t, map[string]string{"EVALFLOW_DELIVERY_TOKEN": token}, token, "", "wrong-token")
	})
	t.Run("Knative's OIDC tokens", func(t *testing.T) {
		const audience = "serving.knative.dev/service/evalflow/evalflow-job-watch"
		k := pipelinetest.NewDeliveries(t, audience)
		onlyTheBrokerDelivers(t, k.Config, k.Trigger(t, "evalflow-verify"), "", "wrong-token",
			k.Token(t, "intruder", "default", audience),                                                    // another namespace's account
			k.Token(t, "evalflow", "evalflow-start", audience),                                             // a step's own account
			k.Token(t, "evalflow", "evalflow-verify-oidc-eventing.knative.dev-trigger", "evalflow-verify")) // another audience
	})
}

// onlyTheBrokerDelivers posts a dead letter with each of refused, then with delivery.
func onlyTheBrokerDelivers(t *testing.T, cfg map[string]string, delivery string, refused ...string) {
	fx := setup(t, func(c map[string]string) { maps.Copy(c, cfg) })
	srv := httptest.NewServer(http.HandlerFunc(fx.f.Handle))
	defer srv.Close()
	post := func(bearer string) int {
		ev := cloudevent.New(evalflow.StepVerify, evalflow.TypeRequested, runID, evalflow.RunRef{RunID: runID})
		ev.SetExtension("knativeerrordest", "http://evalflow-start")
		body, _ := ev.MarshalJSON()
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, bearer := range refused {
		if code := post(bearer); code != http.StatusUnauthorized {
			t.Errorf("a dead letter posted with refused token %d: %d; want 401", i, code)
		}
	}
	if kept, _ := fx.p.Store.DeadLetters(context.Background(), ""); len(kept) != 0 {
		t.Fatalf("%d dead letters kept from requests without the broker's token", len(kept))
	}
	if code := post(delivery); code != http.StatusOK {
		t.Fatalf("the broker's delivery: %d; want 200", code)
	}
	if kept, _ := fx.p.Store.DeadLetters(context.Background(), ""); len(kept) != 1 {
		t.Fatalf("%d dead letters kept from the broker's delivery; want 1", len(kept))
	}
}
