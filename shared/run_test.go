package evalflow

import (
	"encoding/json"
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
