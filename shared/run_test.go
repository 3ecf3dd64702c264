package evalflow

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestDifferingFieldNamesWhatChangedAndIgnoresJSONSpelling(t *testing.T) {
	req := Request{EvalRequestID: "0f0e0d0c-0b0a-4909-8807-060504030201", ModelName: "m", BaseURL: "http://127.0.0.1:1/v1",
		Engine: "lm-evaluation-harness", EngineConfig: json.RawMessage(`{"tasks":["mmlu"],"num_fewshot":5}`)}
	r := NewRun(req, time.Now())
	same := req
	same.EngineConfig = json.RawMessage(`{ "num_fewshot": 5, "tasks": [ "mmlu" ] }`)
	if f := r.DifferingField(same); f != "" {
		t.Fatalf("the same engine_config spelt otherwise differs in %s", f)
	}
	other := req
	other.EngineConfig = json.RawMessage(`{"tasks":["mmlu"],"num_fewshot":0}`)
	if f := r.DifferingField(other); f != "engine_config" {
		t.Fatalf("another engine_config differs in %q", f)
	}
	other = req
	other.Engine = "opencompass"
	if f := r.DifferingField(other); f != "engine" {
		t.Fatalf("another engine differs in %q", f)
	}
}

func TestARunMovesOneStepAtATimeOrEnds(t *testing.T) {
	now := time.Now()
	at := func(s Status) *Run { return &Run{ID: "r", Status: s} }

	for _, c := range []struct{ from, to Status }{
		{StatusPending, StatusDeploying}, {StatusPending, StatusRunning}, {StatusVerifying, StatusRunning},
		{StatusDeploying, StatusStoring}, {StatusRunning, StatusSucceeded}, {StatusPending, StatusSucceeded},
	} {
		r := at(c.from)
		err := r.Advance(c.to, now)
		if !errors.Is(err, ErrOutOfTurn) || !errors.Is(err, ErrStale) {
			t.Errorf("%s → %s: %v; want ErrOutOfTurn, which is ErrStale too", c.from, c.to, err)
		}
		if r.Status != c.from || !r.UpdatedAt.IsZero() {
			t.Errorf("%s → %s refused, yet the run is now %s (updated %v)", c.from, c.to, r.Status, r.UpdatedAt)
		}
	}
	for _, c := range []struct{ from, to Status }{
		{StatusPending, StatusVerifying}, {StatusVerifying, StatusDeploying}, {StatusDeploying, StatusRunning},
		{StatusRunning, StatusStoring}, {StatusStoring, StatusSucceeded},
		{StatusPending, StatusFailed}, {StatusPending, StatusCancelled}, {StatusRunning, StatusCancelled}, {StatusStoring, StatusFailed},
	} {
		if r := at(c.from); r.Advance(c.to, now) != nil || r.Status != c.to {
			t.Errorf("%s → %s: the run is %s; want the move made", c.from, c.to, r.Status)
		}
	}
	for _, c := range []struct{ from, to Status }{
		{StatusDeploying, StatusVerifying}, {StatusRunning, StatusRunning}, {StatusFailed, StatusCancelled}, {StatusSucceeded, StatusFailed},
	} {
		if err := at(c.from).Advance(c.to, now); !errors.Is(err, ErrStale) || errors.Is(err, ErrOutOfTurn) {
			t.Errorf("%s → %s: %v; want ErrStale (late or duplicate), not out of turn", c.from, c.to, err)
		}
	}
}
