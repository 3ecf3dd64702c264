package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
		"a task file's unknown metric": {evalflow.DatasetSpec{Name: "custom", TaskYAML: "task: t\ndataset_path: json\n" +
			"dataset_kwargs:\n  data_files: q.jsonl\noutput_type: generate_until\ntest_split: train\ndoc_to_text: '{{q}}'\n" +
			"doc_to_target: '{{a}}'\nmetric_list:\n  - metric: f1\n"}, "datasets[0].task_yaml.metric_list[0].metric"},
		"a task file not in the data": {evalflow.DatasetSpec{Name: "custom", TaskFile: "mine.yaml"}, "datasets[0].task_file"},
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
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"anatomy"}, Limit: 2, NumFewshot: &zero, MaxTokens: 4}},
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
		if err != nil || json.Unmarshal(b, &res) != nil || res.NSamples["mmlu_anatomy_generative"].Effective != 2 {
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

// slowEndpoint is a reverse proxy in front of the model server that answers each
// request 50 ms late (slow enough to stop a runner mid-run) and counts the prompts asked.
type slowEndpoint struct {
	*httptest.Server
	mu    sync.Mutex
	asked map[string]int
}

func newSlowEndpoint(t *testing.T, model string) *slowEndpoint {
	target, _ := url.Parse(model)
	rp := httputil.NewSingleHostReverseProxy(target)
	e := &slowEndpoint{asked: map[string]int{}}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		var req openai.ChatRequest
		if json.Unmarshal(b, &req) == nil && len(req.Messages) > 0 {
			e.mu.Lock()
			e.asked[req.Messages[len(req.Messages)-1].Content]++ // the question, after the description
			e.mu.Unlock()
		}
		time.Sleep(50 * time.Millisecond)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(e.Close)
	return e
}

// askedOnce reports, for each sample of a checkpoint, that the endpoint was asked it
// exactly once; it returns how many samples the checkpoint holds.
func (e *slowEndpoint) askedOnce(t *testing.T, checkpoint []byte) int {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	lines := bytes.Split(bytes.TrimSpace(checkpoint), []byte("\n"))
	for _, line := range lines {
		var s struct{ Prompt string }
		json.Unmarshal(line, &s)
		n := 0
		for question, times := range e.asked {
			if strings.HasSuffix(s.Prompt, question) {
				n += times
			}
		}
		if n != 1 {
			t.Errorf("a sample the checkpoint holds was asked %d times", n)
		}
	}
	return len(lines)
}

// pods run one evaluation of 60 samples, each pod a runner in a fresh results
// directory, saving its checkpoint to a real registry.
type pods struct {
	bin      string
	spec     evalflow.JobSpec
	endpoint *slowEndpoint
	registry *oci.Destination
}

func newPods(t *testing.T) *pods {
	shared := testserver.SharedDir(t)
	endpoint := newSlowEndpoint(t, testserver.Ollama(t, 2))
	addr := testserver.Registry(t, "", "")
	bin := filepath.Join(t.TempDir(), "evalflow-runner")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	registry, err := oci.Open(oci.Config{Registry: addr + "/evalflow/results", PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	return &pods{bin: bin, endpoint: endpoint, registry: registry, spec: evalflow.JobSpec{ID: "job", RunID: "run", Engine: evalflow.DefaultEngine, Concurrency: 2,
		Model:    evalflow.ModelSpec{Name: testserver.Model, URL: endpoint.URL},
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"anatomy"}, Limit: 60, NumFewshot: &zero, MaxTokens: 4}},
		DataDir:  filepath.Join(shared, "datasets"),
		Results:  &evalflow.ResultsTarget{Repository: addr + "/evalflow/results", Tag: evalflow.StagingTag("run"), RegistryAccess: evalflow.RegistryAccess{PlainHTTP: true}}}}
}

// pod is a new pod's runner: the spec in a fresh results directory, which it returns.
func (p *pods) pod(t *testing.T, env ...string) (*exec.Cmd, string) {
	s := p.spec
	s.OutputDir = filepath.Join(t.TempDir(), "results")
	b, _ := json.Marshal(s)
	job := filepath.Join(t.TempDir(), "job.json")
	os.WriteFile(job, b, 0o600)
	cmd := exec.Command(p.bin, "--job", job)
	cmd.Env = append(os.Environ(), env...)
	return cmd, s.OutputDir
}

// saved is the checkpoint saved in the registry ("" for none).
func (p *pods) saved() []byte {
	b, _ := p.registry.FetchLayer(context.Background(), evalflow.CheckpointTag("run"), oci.MediaTypeCheckpoint)
	return b
}

// A pod stopped mid-run (drained, evicted, deleted: SIGTERM) saves its checkpoint to
// the results repository; the pod that replaces it, with an empty results directory,
// asks the endpoint no sample the first one finished, and the run completes.
func TestAReplacedPodAsksNoFinishedSampleAgain(t *testing.T) {
	p := newPods(t)
	first, out1 := p.pod(t)
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

	second, out2 := p.pod(t)
	if out, err := second.CombinedOutput(); err != nil {
		t.Fatalf("the second pod: %v\n%s", err, out)
	}

	var res evalflow.Results
	b, _ := os.ReadFile(filepath.Join(out2, evalflow.ResultsFile))
	if json.Unmarshal(b, &res) != nil || res.NSamples["mmlu_anatomy_generative"].Effective != 60 {
		t.Fatalf("the second pod's results: %s", b)
	}
	if done := p.endpoint.askedOnce(t, finished); done < 10 || done >= 60 {
		t.Fatalf("the first pod finished %d of 60: the test proves little", done)
	}
}

// A pod killed outright (SIGKILL: its node lost) saves nothing as it goes; what it
// saved on its last tick is what the pod that replaces it finds: none of those
// samples is asked again.
func TestAPodKilledOutrightResumesFromItsLastSave(t *testing.T) {
	p := newPods(t)
	first, _ := p.pod(t, "EVALFLOW_CHECKPOINT_EVERY=300ms")
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 60*time.Second, "a save of 10 finished samples", func() bool {
		return bytes.Count(p.saved(), []byte("\n")) >= 10
	})
	first.Process.Kill()
	first.Wait()
	lastSave := p.saved()

	second, _ := p.pod(t, "EVALFLOW_CHECKPOINT_EVERY=300ms")
	if out, err := second.CombinedOutput(); err != nil {
		t.Fatalf("the second pod: %v\n%s", err, out)
	}

	if saved := p.endpoint.askedOnce(t, lastSave); saved >= 60 {
		t.Fatalf("the first pod finished everything before it was killed: the test proves little")
	}
}

// While it runs, the runner serves its Prometheus metrics where its spec says: its
// requests by outcome, retries, tokens and samples a second.
func TestTheRunnerServesItsMetricsWhileItRuns(t *testing.T) {
	shared := testserver.SharedDir(t)
	model := testserver.Ollama(t, 2)
	bin := filepath.Join(t.TempDir(), "evalflow-runner")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	zero := 0
	spec := evalflow.JobSpec{ID: "job", RunID: "run-m", Engine: evalflow.DefaultEngine, Concurrency: 1,
		Model:    evalflow.ModelSpec{Name: testserver.Model, URL: model},
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"anatomy"}, Limit: 8, NumFewshot: &zero, MaxTokens: 4}},
		Options:  evalflow.RunOptions{RequestsPerSecond: 4}, // two seconds of requests: time to scrape
		DataDir:  filepath.Join(shared, "datasets"), OutputDir: filepath.Join(dir, "out"), MetricsAddress: addr}
	b, _ := json.Marshal(spec)
	job := filepath.Join(dir, "job.json")
	os.WriteFile(job, b, 0o600)
	cmd := exec.Command(bin, "--job", job)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var text string
	for text == "" || !strings.Contains(text, `evalflow_runner_requests_total{outcome="ok",run_id="run-m"}`) {
		select {
		case err := <-done:
			t.Fatalf("the runner ended (%v) before its metrics told of a request; last scrape:\n%s\n%s", err, text, log.String())
		case <-time.After(100 * time.Millisecond):
		}
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			text = string(b)
		}
	}
	for _, want := range []string{`evalflow_runner_tokens_total{kind="prompt",run_id="run-m"}`, `evalflow_runner_retries_total{run_id="run-m"}`,
		`evalflow_runner_samples_per_second{run_id="run-m"}`} {
		if !strings.Contains(text, want) {
			t.Errorf("the runner's metrics lack %s:\n%s", want, text)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("runner: %v\n%s", err, log.String())
	}
}

// A runner killed outright (kill -9) at any moment and started again on the same
// results directory (local mode's restart) asks the endpoint again at most what was
// in flight when it was killed: every answer it had is on disk before it is counted.
func TestARunnerKilledAtAnyMomentAsksAgainOnlyWhatWasInFlight(t *testing.T) {
	p := newPods(t)
	p.spec.Results = nil // local mode: the results directory is kept across restarts
	p.spec.OutputDir = filepath.Join(t.TempDir(), "results")
	b, _ := json.Marshal(p.spec)
	job := filepath.Join(t.TempDir(), "job.json")
	os.WriteFile(job, b, 0o600)
	asked := func() int {
		p.endpoint.mu.Lock()
		defer p.endpoint.mu.Unlock()
		n := 0
		for _, c := range p.endpoint.asked {
			n += c
		}
		return n
	}
	kills := 0
	for _, at := range []int{7, 16, 23, 35, 44} { // after so many requests, whatever the runner is doing
		cmd := exec.Command(p.bin, "--job", job)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testserver.Eventually(t, 60*time.Second, fmt.Sprintf("%d requests asked", at), func() bool { return asked() >= at })
		cmd.Process.Kill()
		cmd.Wait()
		kills++
	}
	if out, err := exec.Command(p.bin, "--job", job).CombinedOutput(); err != nil {
		t.Fatalf("the last runner: %v\n%s", err, out)
	}

	var res evalflow.Results
	b, _ = os.ReadFile(filepath.Join(p.spec.OutputDir, evalflow.ResultsFile))
	if json.Unmarshal(b, &res) != nil || res.NSamples["mmlu_anatomy_generative"].Effective != 60 {
		t.Fatalf("results: %s", b)
	}
	// Each kill may lose the requests in flight (concurrency 2), no more.
	samples, _ := os.ReadFile(filepath.Join(p.spec.OutputDir, evalflow.SamplesFile))
	extra := 0
	p.endpoint.mu.Lock()
	for _, line := range bytes.Split(bytes.TrimSpace(samples), []byte("\n")) {
		var s struct{ Prompt string }
		json.Unmarshal(line, &s)
		extra += p.endpoint.asked[s.Prompt] - 1
	}
	p.endpoint.mu.Unlock()
	if most := kills * p.spec.Concurrency; extra > most {
		t.Errorf("after %d kills, samples were asked again %d times; want at most %d (what was in flight)", kills, extra, most)
	}
}
