package main

import (
	"context"
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

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/oci"
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

// A Kubernetes Job has no volume holding the data: its spec names the data as an OCI
// artifact, which the runner pulls (by digest, with the job's registry password) into
// its data directory and evaluates from; started again there, it pulls nothing.
func TestTheRunnerPullsItsDataFromAnArtifact(t *testing.T) {
	shared := testserver.SharedDir(t)
	model := testserver.Ollama(t, 2)
	addr := testserver.Registry(t, "job", "s3cret")
	dest, err := oci.Open(oci.Config{Registry: addr + "/evalflow/data", PlainHTTP: true, Username: "job", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	published, err := dest.PushDir(context.Background(), filepath.Join(shared, "datasets"), "v1")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "evalflow-runner")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	password := filepath.Join(dir, "registry_password")
	os.WriteFile(password, []byte("s3cret\n"), 0o600)
	zero := 0
	spec := evalflow.JobSpec{ID: "job", RunID: "run", Engine: evalflow.DefaultEngine,
		Model:    evalflow.ModelSpec{Name: testserver.Model, URL: model},
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu", Subjects: []string{"anatomy"}, Limit: 2, NumFewshot: &zero, MaxTokens: 4}},
		DataDir:  filepath.Join(dir, "data"), OutputDir: filepath.Join(dir, "out"),
		Data: &evalflow.DataArtifact{Reference: addr + "/evalflow/data@" + published.Digest,
			RegistryAccess: evalflow.RegistryAccess{PlainHTTP: true, Username: "job", PasswordFile: password}}}
	b, _ := json.Marshal(spec)
	job := filepath.Join(dir, "job.json")
	os.WriteFile(job, b, 0o600)

	for attempt, pw := range []string{"s3cret\n", "wrong\n"} { // the second finds the data pulled
		os.WriteFile(password, []byte(pw), 0o600)
		os.Remove(filepath.Join(spec.OutputDir, evalflow.ResultsFile))
		if out, err := exec.Command(bin, "--job", job).CombinedOutput(); err != nil {
			t.Fatalf("attempt %d: %v\n%s", attempt, err, out)
		}
		var res evalflow.Results
		b, err := os.ReadFile(filepath.Join(spec.OutputDir, evalflow.ResultsFile))
		if err != nil || json.Unmarshal(b, &res) != nil || res.NSamples["mmlu_anatomy"].Effective != 2 {
			t.Fatalf("attempt %d: results %s, %v", attempt, b, err)
		}
	}
	pulled, _ := filepath.Glob(filepath.Join(spec.DataDir, "sha256-*", "datasets", "mmlu", "test", "anatomy_test.csv"))
	want, _ := os.ReadFile(filepath.Join(shared, "datasets", "mmlu", "test", "anatomy_test.csv"))
	if len(pulled) != 1 {
		t.Fatalf("pulled %v", pulled)
	}
	if got, _ := os.ReadFile(pulled[0]); string(got) != string(want) {
		t.Fatal("the pulled data differs from what was published")
	}
}
