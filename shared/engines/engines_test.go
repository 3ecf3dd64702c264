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
	if e, _ := r.Get("opencompass"); e.Local || e.Image == "" {
		t.Fatalf("opencompass: %+v", e)
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
