package configschema

import (
	"encoding/json"
	"strings"
	"testing"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/engines"
)

// checker is the shipped registry's Checker: its schemas compile.
func checker(t *testing.T) *Checker {
	t.Helper()
	c, err := New(engines.Default())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestABadSchemaIsTold(t *testing.T) {
	r, err := engines.Parse([]byte(`{"x": {"image": "i", "command": ["/x"], "config_schema": {"type": 3}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(r); err == nil || !strings.Contains(err.Error(), "x: schema") {
		t.Fatalf("a schema that does not compile: %v", err)
	}
}

func TestEngineConfigIsValidatedAgainstItsSchema(t *testing.T) {
	r := checker(t)
	cases := []struct {
		engine, config, field, msg string
	}{
		{"", `{"seed": 3}`, "", ""},
		{"lm-evaluation-harness", `{"tasks": ["mmlu", "gsm8k"], "batch_size": "auto", "model": "local-chat-completions"}`, "", ""},
		{"opencompass", `{"datasets": ["ceval"], "max_out_len": 64}`, "", ""},
		{"", `{"seeds": 3}`, "engine_config", "seeds"},
		{"lm-evaluation-harness", `{}`, "engine_config", "tasks"},
		{"lm-evaluation-harness", `{"tasks": ["mmlu"], "model": "hf"}`, "engine_config.model", "local-chat-completions"},
		{"opencompass", `{"datasets": [], "max_out_len": 64}`, "engine_config.datasets", ""},
		{"nope", `{}`, "engine", "unknown engine"},
	}
	for _, c := range cases {
		req := evalflow.Request{Engine: c.engine, EngineConfig: json.RawMessage(c.config)}
		err := r.Validate(&req)
		if c.field == "" {
			if err != nil {
				t.Errorf("%s %s: %v", c.engine, c.config, err)
			}
			continue
		}
		if evalflow.ErrorField(err) != c.field || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s %s: err %v (field %q); want field %q mentioning %q", c.engine, c.config, err, evalflow.ErrorField(err), c.field, c.msg)
		}
	}
}

func TestAnExternalEngineTakesNoDatasets(t *testing.T) {
	r := checker(t)
	req := evalflow.Request{EvalRequestID: "0f0e0d0c-0b0a-4909-8807-060504030201", ModelName: "m", BaseURL: "http://127.0.0.1:8000",
		Engine: "lm-evaluation-harness", EngineConfig: json.RawMessage(`{"tasks": ["gsm8k"]}`)}
	if err := req.Validate(); err != nil {
		t.Fatalf("an lm-eval request without datasets: %v", err)
	}
	if err := r.Validate(&req); err != nil {
		t.Fatalf("an lm-eval request without datasets: %v", err)
	}
	req.Datasets = []evalflow.DatasetSpec{{Name: "gsm8k"}}
	if err := r.Validate(&req); evalflow.ErrorField(err) != "datasets" || !strings.Contains(err.Error(), "engine_config") {
		t.Fatalf("an lm-eval request with datasets: %v, want datasets refused, pointing at engine_config", err)
	}
	req.Engine, req.EngineConfig, req.Datasets = "", nil, nil
	if err := req.Validate(); evalflow.ErrorField(err) != "datasets" {
		t.Fatalf("a built-in request without datasets: %v, want datasets required", err)
	}
}
