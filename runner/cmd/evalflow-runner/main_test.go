package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	evalflow "github.com/evalflow/evalflow/shared"
)

// A job spec the runner cannot run (written by hand, or by another evalflow) fails
// for good, exit 2, naming the field, before any request reaches the endpoint: the
// same rules as start's, so a limit of 1e19 is refused, not overflowed.
func TestABadJobSpecFailsForGoodNamingTheFieldBeforeAnyRequest(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "evalflow-runner")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var requests atomic.Int64
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "no", http.StatusTeapot)
	}))
	defer endpoint.Close()
	cases := map[string]struct {
		dataset evalflow.DatasetSpec
		field   string
	}{
		"absurd limit":     {evalflow.DatasetSpec{Name: "mmlu", Limit: 1e19}, "datasets[0].limit"},
		"negative limit":   {evalflow.DatasetSpec{Name: "gsm8k", Limit: -3}, "datasets[0].limit"},
		"unknown dataset":  {evalflow.DatasetSpec{Name: "hellaswag"}, "datasets[0].name"},
		"unknown variant":  {evalflow.DatasetSpec{Name: "gsm8k", Variant: "five-shot"}, "datasets[0].variant"},
		"unknown subject":  {evalflow.DatasetSpec{Name: "mmlu", Subjects: []string{"astrology"}}, "datasets[0].subjects[0]"},
		"unknown method":   {evalflow.DatasetSpec{Name: "mmlu", Method: "vibes"}, "datasets[0].method"},
		"fewshot too many": {evalflow.DatasetSpec{Name: "mmlu", NumFewshot: new(int(99))}, "datasets[0].num_fewshot"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			spec := evalflow.JobSpec{ID: "job", RunID: "run", Engine: evalflow.DefaultEngine,
				Model:    evalflow.ModelSpec{Name: "m", URL: endpoint.URL},
				Datasets: []evalflow.DatasetSpec{c.dataset}, DataDir: dir, OutputDir: filepath.Join(dir, "out")}
			b, _ := json.Marshal(spec)
			path := filepath.Join(dir, "job.json")
			os.WriteFile(path, b, 0o600)

			out, err := exec.Command(bin, "--job", path).CombinedOutput()

			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != evalflow.ExitPermanent {
				t.Fatalf("err = %v; want exit %d\n%s", err, evalflow.ExitPermanent, out)
			}
			if !strings.Contains(string(out), c.field+":") {
				t.Errorf("the error does not name %s:\n%s", c.field, out)
			}
			if n := requests.Load(); n != 0 {
				t.Errorf("%d requests reached the endpoint", n)
			}
		})
	}
}
