package engines

import (
	"strings"
	"testing"
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

func TestALocalEngineNamesItsCommand(t *testing.T) {
	_, err := Parse([]byte(`{"x": {"image": "i", "command": ["/x"], "local": true, "config_schema": {}}}`))
	if err == nil || !strings.Contains(err.Error(), "local_command") {
		t.Fatalf("err = %v", err)
	}
}

// Every event asks the registry; it is parsed once.
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
