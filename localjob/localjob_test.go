package localjob_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/localjob"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

// server runs the real runner against a closed port (it retries for minutes), with its
// job.finished events recorded.
func server(t *testing.T) (*localjob.Server, *localjob.Client, *testserver.Sink, evalflow.JobSpec) {
	sink := testserver.NewSink(t)
	sender, _ := cloudevent.NewSender(sink.URL, nil)
	outputs := t.TempDir()
	s := &localjob.Server{RunnerPath: testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/evalflow-runner"),
		WorkDir: t.TempDir(), Events: sender, Token: "jobs-token-0123456789", OutputRoot: outputs}
	srv := httptest.NewServer(s)
	t.Cleanup(func() { s.Shutdown(); srv.Close() })
	spec := evalflow.JobSpec{ID: "evalflow-run-1", RunID: "run-1", Engine: "evalflow", Concurrency: 1,
		Model:    evalflow.ModelSpec{Name: "m", URL: "http://127.0.0.1:1"},
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"anatomy"}, Limit: 2}},
		DataDir:  filepath.Join(testserver.SharedDir(t), "datasets"), OutputDir: filepath.Join(outputs, "run-1")}
	return s, &localjob.Client{URL: srv.URL, Token: "jobs-token-0123456789"}, sink, spec
}

// Only evalflow's own deploy, with the server's token, creates or stops a job, and a job
// writes only under the output root.
func TestOnlyEvalflowCreatesJobsAndOnlyWhereItSays(t *testing.T) {
	s, c, _, spec := server(t)
	ctx := context.Background()
	for name, client := range map[string]*localjob.Client{"no token": {URL: c.URL}, "a wrong token": {URL: c.URL, Token: "jobs-token-0123456780"}} {
		if err := client.Create(ctx, spec, evalflow.JobSecrets{}); err == nil {
			t.Errorf("create with %s: no error", name)
		}
		if err := client.Delete(ctx, spec.ID); err == nil {
			t.Errorf("delete with %s: no error", name)
		}
	}
	for _, dir := range []string{"/etc/evil", filepath.Join(s.OutputRoot, "..", "elsewhere")} {
		bad := spec
		bad.OutputDir = dir
		if err := c.Create(ctx, bad, evalflow.JobSecrets{}); err == nil {
			t.Errorf("a job writing to %s was created", dir)
		}
	}
	if s.Created() != 0 {
		t.Fatalf("%d jobs created", s.Created())
	}
	if err := c.Create(ctx, spec, evalflow.JobSecrets{}); err != nil {
		t.Fatalf("deploy's own create: %v", err)
	}
}

func finished(t *testing.T, sink *testserver.Sink) evalflow.JobFinished {
	t.Helper()
	testserver.Eventually(t, 2*time.Minute, "job.finished", func() bool { return len(sink.OfType("/", evalflow.TypeJobFinished)) > 0 })
	var fin evalflow.JobFinished
	json.Unmarshal(sink.OfType("/", evalflow.TypeJobFinished)[0].Data(), &fin)
	return fin
}

func TestAJobPastItsDeadlineIsStoppedAndReportedSo(t *testing.T) {
	_, client, sink, spec := server(t)
	spec.DeadlineSeconds = 1

	if err := client.Create(t.Context(), spec, evalflow.JobSecrets{APIKey: "key"}); err != nil {
		t.Fatal(err)
	}

	if fin := finished(t, sink); fin.Succeeded || !strings.Contains(fin.Message, "deadline of 1s") {
		t.Fatalf("job.finished %+v", fin)
	}
}

func TestAStoppedJobIsReportedStoppedAndCreateIsOnce(t *testing.T) {
	s, client, sink, spec := server(t)
	if err := client.Create(t.Context(), spec, evalflow.JobSecrets{}); err != nil {
		t.Fatal(err)
	}
	if err := client.Create(t.Context(), spec, evalflow.JobSecrets{}); !errors.Is(err, evalflow.ErrJobExists) {
		t.Fatalf("second create: %v; want ErrJobExists", err)
	}

	if err := client.Delete(t.Context(), spec.ID); err != nil {
		t.Fatal(err)
	}

	if fin := finished(t, sink); fin.Succeeded || fin.Message != "job stopped" || s.Created() != 1 {
		t.Fatalf("job.finished %+v, %d created", fin, s.Created())
	}
}

// A runner killed mid-run (SIGKILL, as an OOM kill or a node loss would) is started
// again and resumes from its checkpoint: the job succeeds and no sample is asked twice.
func TestAKilledRunnerIsStartedAgainAndResumes(t *testing.T) {
	s, client, sink, spec := server(t)
	spec.Model.URL = testserver.Ollama(t, 0)
	spec.Model.Name = testserver.Model
	spec.Options.RequestsPerSecond = 4 // 12 samples: about 3 s
	spec.Datasets = []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"anatomy"}, Limit: 12, NumFewshot: new(int)}}
	checkpoint := filepath.Join(spec.OutputDir, "checkpoint.jsonl")
	lines := func() int {
		b, _ := os.ReadFile(checkpoint)
		return strings.Count(string(b), "\n")
	}
	if err := client.Create(t.Context(), spec, evalflow.JobSecrets{}); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 2*time.Minute, "some samples checkpointed", func() bool { return lines() >= 2 })
	st, _ := s.Get(spec.ID)

	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	fin := finished(t, sink)
	st, _ = s.Get(spec.ID)
	if !fin.Succeeded || st.Restarts != 1 || s.Created() != 1 {
		t.Fatalf("job.finished %+v, status %+v, %d jobs", fin, st, s.Created())
	}
	if n := lines(); n != 12 {
		t.Fatalf("the checkpoint has %d samples; want each of the 12 once", n)
	}
	b, _ := os.ReadFile(filepath.Join(spec.OutputDir, evalflow.SamplesFile))
	if strings.Count(string(b), "\n") != 12 {
		t.Fatal("samples.jsonl is not complete")
	}
}

// A runner that reported its own end (job.finished, with its summary) has it
// reported once: the runtime does not report the same end again. A job that fails is
// reported by the runtime.
func TestAnEndTheRunnerReportedIsNotReportedAgain(t *testing.T) {
	s, client, sink, spec := server(t)
	spec.Model.URL = testserver.Ollama(t, 0)
	spec.Model.Name = testserver.Model
	spec.CallbackURL = sink.URL
	spec.Datasets = []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"anatomy"}, Limit: 2, NumFewshot: new(int)}}
	if err := client.Create(t.Context(), spec, evalflow.JobSecrets{ReportKey: []byte("report-key-0123456789")}); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 2*time.Minute, "the job's end", func() bool { st, _ := s.Get(spec.ID); return st.Phase == "Succeeded" })
	s.Shutdown() // every end reported that will be

	var from []string
	ends := sink.OfType("/", evalflow.TypeJobFinished)
	for _, e := range ends {
		from = append(from, e.Source())
	}
	if len(ends) != 1 || from[0] != "/evalflow/runner" {
		t.Fatalf("job.finished from %v; want the runner's alone", from)
	}
	var fin evalflow.JobFinished
	if err := json.Unmarshal(ends[0].Data(), &fin); err != nil || !fin.Succeeded || fin.Summary == nil {
		t.Fatalf("job.finished %+v (%v); want succeeded with its summary", fin, err)
	}
}

func TestARunnerThatCannotRunItsJobIsNotStartedAgain(t *testing.T) {
	s, client, sink, spec := server(t)
	s.Commands = map[string]string{"opencompass": s.RunnerPath} // a program that refuses the engine's job
	spec.Engine = "opencompass"

	if err := client.Create(t.Context(), spec, evalflow.JobSecrets{}); err != nil {
		t.Fatal(err)
	}

	fin := finished(t, sink)
	st, _ := s.Get(spec.ID)
	if fin.Succeeded || fin.ExitCode != evalflow.ExitPermanent || st.Restarts != 0 || !strings.Contains(fin.Message, `engine "opencompass"`) {
		t.Fatalf("job.finished %+v, restarts %d", fin, st.Restarts)
	}
}

func TestAnEngineWithoutAProgramIsRefused(t *testing.T) {
	s, client, _, spec := server(t)
	spec.Engine = "lm-evaluation-harness"

	err := client.Create(t.Context(), spec, evalflow.JobSecrets{})

	if !errors.Is(err, localjob.ErrNoProgram) || !strings.Contains(err.Error(), `"lm-evaluation-harness"`) || s.Created() != 0 {
		t.Fatalf("err = %v, %d jobs; want ErrNoProgram naming the engine, no job", err, s.Created())
	}
}

// TestStoppingAJobStopsWhatItStarted: an adapter's engine is a child process of the
// job; deleting the job must not leave it running (and asking the endpoint).
func TestStoppingAJobStopsWhatItStarted(t *testing.T) {
	s, client, _, spec := server(t)
	hung := filepath.Join(t.TempDir(), "lm_eval") // an engine that never ends, for this fault
	script := "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --output_path ] && out=$2; shift; done\n" +
		"mkdir -p \"$out\"; echo $$ > \"$out/pid\"; sleep 300\n"
	if err := os.WriteFile(hung, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LM_EVAL", hung)
	s.Commands = map[string]string{"lm-evaluation-harness": testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/lm-eval-adapter")}
	spec.Engine, spec.EngineConfig = "lm-evaluation-harness", json.RawMessage(`{"tasks": ["gsm8k"]}`)
	if err := client.Create(t.Context(), spec, evalflow.JobSecrets{}); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(spec.OutputDir, "lm-eval", "pid")
	var pid int
	testserver.Eventually(t, 30*time.Second, "the engine starts and writes its pid", func() bool {
		b, _ := os.ReadFile(pidFile) // the shell creates the file before it writes to it
		var err error
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})

	if err := client.Delete(t.Context(), spec.ID); err != nil {
		t.Fatal(err)
	}

	testserver.Eventually(t, 10*time.Second, "the engine is gone with its job", func() bool {
		return syscall.Kill(pid, 0) != nil
	})
}

// A server stopped (evalflow up's SIGTERM) leaves its running job to the next server
// on the same directory: no end is reported, the job's key stays for it; the next
// server adopts the job, starts its runner again (reporting to the new broker), and
// once that ends, in any way, its key is gone.
func TestAJobLeftByAStoppedServerIsAdoptedByTheNext(t *testing.T) {
	first, client, sink, spec := server(t)
	spec.CallbackURL = "http://127.0.0.1:1/old-broker"
	if err := client.Create(t.Context(), spec, evalflow.JobSecrets{APIKey: "sk-adopted-key", ReportKey: []byte("report-key")}); err != nil {
		t.Fatal(err)
	}
	st, _ := first.Get(spec.ID)
	first.Shutdown()
	if n := len(sink.OfType("/", evalflow.TypeJobFinished)); n != 0 {
		t.Fatalf("a job stopped with its server was reported ended (%d)", n)
	}
	if err := syscall.Kill(st.PID, 0); err == nil {
		t.Fatalf("the runner (pid %d) outlived its server's shutdown", st.PID)
	}
	key := filepath.Join(first.WorkDir, spec.ID, "secret", "api_key")
	if _, err := os.Stat(key); err != nil {
		t.Fatalf("the job's key, needed to resume it, is gone: %v", err)
	}

	sender, _ := cloudevent.NewSender(sink.URL, nil)
	next := &localjob.Server{RunnerPath: first.RunnerPath, WorkDir: first.WorkDir, Events: sender, OutputRoot: first.OutputRoot, CallbackURL: sink.URL + "/new-broker"}
	t.Cleanup(next.Shutdown)
	n, err := next.Adopt()
	if err != nil || n != 1 {
		t.Fatalf("Adopt = %d, %v; want the job started again", n, err)
	}
	if st, ok := next.Get(spec.ID); !ok || st.Phase != "Running" || st.PID == 0 {
		t.Fatalf("the adopted job: %+v", st)
	}
	var adopted evalflow.JobSpec
	b, _ := os.ReadFile(filepath.Join(first.WorkDir, spec.ID, "meta", "job.json"))
	if json.Unmarshal(b, &adopted); adopted.CallbackURL != sink.URL+"/new-broker" {
		t.Errorf("the adopted job reports to %q; want the new broker", adopted.CallbackURL)
	}
	if n, _ := next.Adopt(); n != 0 {
		t.Errorf("adopting again started %d more", n)
	}

	next.Delete(spec.ID) // cancelled
	if fin := finished(t, sink); fin.Succeeded || fin.Message != "job stopped" {
		t.Fatalf("job.finished %+v", fin)
	}
	if _, err := os.Stat(key); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the job's key is still on disk after it ended: %v", err)
	}
}
