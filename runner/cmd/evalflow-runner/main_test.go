package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/engine"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/openai"
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

// A pod stopped mid-run (drained, evicted, deleted: SIGTERM) saves its checkpoint to
// the results repository; the pod that replaces it, with an empty results directory,
// asks the endpoint no sample the first one finished, and the run completes.
func TestAReplacedPodAsksNoFinishedSampleAgain(t *testing.T) {
	shared := testserver.SharedDir(t)
	model := testserver.Ollama(t, 2)
	addr := testserver.Registry(t, "", "")
	var mu sync.Mutex
	asked := map[string]int{}
	target, _ := url.Parse(model)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		var req openai.ChatRequest
		if json.Unmarshal(b, &req) == nil && len(req.Messages) > 0 {
			mu.Lock()
			asked[req.Messages[0].Content]++
			mu.Unlock()
		}
		time.Sleep(50 * time.Millisecond) // an endpoint slow enough to stop mid-run
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	bin := filepath.Join(t.TempDir(), "evalflow-runner")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	zero := 0
	spec := evalflow.JobSpec{ID: "job", RunID: "run", Engine: evalflow.DefaultEngine, Concurrency: 2,
		Model:    evalflow.ModelSpec{Name: testserver.Model, URL: proxy.URL},
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu", Subjects: []string{"anatomy"}, Limit: 60, NumFewshot: &zero, MaxTokens: 4}},
		DataDir:  filepath.Join(shared, "datasets"),
		Results:  &evalflow.ResultsTarget{Repository: addr + "/evalflow/results", Tag: evalflow.StagingTag("run"), RegistryAccess: evalflow.RegistryAccess{PlainHTTP: true}}}
	pod := func(n int) (*exec.Cmd, string) { // a pod: its own empty results directory
		s := spec
		s.OutputDir = filepath.Join(t.TempDir(), "results")
		b, _ := json.Marshal(s)
		job := filepath.Join(t.TempDir(), "job.json")
		os.WriteFile(job, b, 0o600)
		return exec.Command(bin, "--job", job), s.OutputDir
	}
	first, out1 := pod(1)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 60*time.Second, "the first pod finishing 10 samples", func() bool {
		b, _ := os.ReadFile(filepath.Join(out1, engine.CheckpointFile))
		return bytes.Count(b, []byte("\n")) >= 10
	})
	first.Process.Signal(syscall.SIGTERM) // the pod is deleted
	first.Wait()
	finished, _ := os.ReadFile(filepath.Join(out1, engine.CheckpointFile))

	second, out2 := pod(2)
	if out, err := second.CombinedOutput(); err != nil {
		t.Fatalf("the second pod: %v\n%s", err, out)
	}

	var res evalflow.Results
	b, _ := os.ReadFile(filepath.Join(out2, evalflow.ResultsFile))
	if json.Unmarshal(b, &res) != nil || res.NSamples["mmlu_anatomy"].Effective != 60 {
		t.Fatalf("the second pod's results: %s", b)
	}
	done := 0
	for _, line := range bytes.Split(bytes.TrimSpace(finished), []byte("\n")) {
		var s struct{ Prompt string }
		json.Unmarshal(line, &s)
		if n := asked[s.Prompt]; n != 1 {
			t.Errorf("a sample the first pod finished was asked %d times", n)
		}
		done++
	}
	if done < 10 || done >= 60 {
		t.Fatalf("the first pod finished %d of 60: the test proves little", done)
	}
}
