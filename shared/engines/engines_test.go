package engines

import (
	"encoding/json"
	"strings"
	"testing"

	evalflow "github.com/evalflow/evalflow/shared"
)

func TestTheRegistryHasTheBuiltInRunnerAndTwoExternalEngines(t *testing.T) {
	r := Default()

	if got := strings.Join(r.Names(), ","); got != "evalflow,lm-evaluation-harness,opencompass" {
		t.Fatalf("engines %s", got)
	}
	if e, _ := r.Get(""); e.Name != "evalflow" || !e.Local {
		t.Fatalf("the default engine is %+v; want the local built-in runner", e)
	}
	for name, command := range map[string]string{"": "evalflow-runner", "lm-evaluation-harness": "lm-eval-adapter", "opencompass": "opencompass-adapter"} {
		if e, _ := r.Get(name); !e.Local || e.LocalCommand != command || e.Image == "" {
			t.Errorf("%q: %+v; want an image, and %s locally", name, e, command)
		}
	}
}

func TestEngineConfigIsValidatedAgainstItsSchema(t *testing.T) {
	r := Default()
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
	r := Default()
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

func TestALocalEngineNamesItsCommand(t *testing.T) {
	_, err := Parse([]byte(`{"x": {"image": "i", "command": ["/x"], "local": true, "config_schema": {}}}`))
	if err == nil || !strings.Contains(err.Error(), "local_command") {
		t.Fatalf("err = %v", err)
	}
}

// Every event asks the registry; it is parsed and its schemas compiled once.
func TestTheRegistryIsParsedOncePerProcess(t *testing.T) {
	a, b := Default(), Default()
	ea, _ := a.Get("lm-evaluation-harness")
	eb, _ := b.Get("lm-evaluation-harness")
	if a != b || ea != eb {
		t.Fatal("Default parsed the registry again")
	}
	if n := testing.AllocsPerRun(10, func() { Default() }); n != 0 {
		t.Fatalf("Default allocates %v times a call; want none after the first", n)
	}
}
