package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/lmeval"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/testserver"
)

// The real lm_eval cannot be installed here (PyPI is unreachable), so these tests run
// the adapter against a fake lm_eval: this test binary, re-executed with
// FAKE_LM_EVAL set. It records how it was called, prints lm_eval's log and progress
// bars, and writes lm_eval 0.4's output files (../../lmeval/testdata).
func TestMain(m *testing.M) {
	if mode := os.Getenv("FAKE_LM_EVAL"); mode != "" {
		os.Exit(fakeLMEval(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeLMEval(mode string, args []string) int {
	call, _ := json.Marshal(map[string]any{"args": args, "key": os.Getenv("OPENAI_API_KEY")})
	if err := os.WriteFile(os.Getenv("FAKE_LM_EVAL_CALL"), call, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	fmt.Fprintln(os.Stderr, "2026-11-24:10:00:00 INFO [__main__.py:446] Selected Tasks: ['gsm8k', 'mmlu']")
	if mode == "unknown-task" {
		fmt.Fprintln(os.Stderr, "Traceback (most recent call last):\nValueError: Tasks not found: nosuch. Try `lm-eval --tasks {list_groups,list_subtasks,list_tags,list}`")
		return 1
	}
	fmt.Fprint(os.Stderr, "Requesting API:   0%|          | 0/8 [00:00<?, ?it/s]\rRequesting API: 100%|██████████| 8/8 [00:02<00:00,  4.00it/s]\n")
	fmt.Fprint(os.Stderr, "Requesting API:   0%|          | 0/3 [00:00<?, ?it/s]\rRequesting API: 100%|██████████| 3/3 [00:03<00:00,  1.00s/it]\n")
	fmt.Println("|Tasks|Version|Filter|n-shot|Metric|Value|")
	out := args[slices.Index(args, "--output_path")+1]
	src := "../../lmeval/testdata/output/llama3"
	entries, err := os.ReadDir(src)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	if err := os.MkdirAll(filepath.Join(out, "llama3"), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(out, "llama3", e.Name()), b, 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
	}
	return 0
}

type setup struct {
	spec     evalflow.JobSpec
	jobPath  string
	callPath string
	sink     *testserver.Sink
}

func newSetup(t *testing.T, mode string) setup {
	t.Helper()
	dir := t.TempDir()
	s := setup{jobPath: filepath.Join(dir, "job.json"), callPath: filepath.Join(dir, "call.json"), sink: testserver.NewSink(t)}
	keyPath := filepath.Join(dir, "api-key")
	if err := os.WriteFile(keyPath, []byte("sk-secret-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.spec = evalflow.JobSpec{ID: "evalflow-r1", RunID: "r1", Engine: lmeval.Engine,
		EngineConfig: json.RawMessage(`{"tasks":["gsm8k","mmlu"],"limit":3}`),
		Model:        evalflow.ModelSpec{Name: "llama3", URL: "http://127.0.0.1:9/v1"},
		APIKeyFile:   keyPath, CallbackURL: s.sink.URL + "/", OutputDir: filepath.Join(dir, "out")}
	b, _ := json.Marshal(s.spec)
	if err := os.WriteFile(s.jobPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LM_EVAL", os.Args[0])
	t.Setenv("FAKE_LM_EVAL", mode)
	t.Setenv("FAKE_LM_EVAL_CALL", s.callPath)
	return s
}

func quiet() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

func TestFakeLMEvalRunBecomesEvalflowResults(t *testing.T) {
	s := newSetup(t, "ok")
	var lmevalLog bytes.Buffer
	if err := run(context.Background(), s.jobPath, &lmevalLog, quiet()); err != nil {
		t.Fatal(err)
	}

	var call struct {
		Args []string `json:"args"`
		Key  string   `json:"key"`
	}
	b, err := os.ReadFile(s.callPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &call); err != nil {
		t.Fatal(err)
	}
	if call.Key != "sk-secret-1" {
		t.Errorf("lm_eval's OPENAI_API_KEY = %q, want the key from the key file", call.Key)
	}
	if strings.Contains(strings.Join(call.Args, " "), "sk-secret") {
		t.Errorf("the key is on lm_eval's command line: %q", call.Args)
	}
	if i := slices.Index(call.Args, "--tasks"); i < 0 || call.Args[i+1] != "gsm8k,mmlu" {
		t.Errorf("args = %q", call.Args)
	}

	var res evalflow.Results
	b, err = os.ReadFile(filepath.Join(s.spec.OutputDir, evalflow.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if math.Abs(res.Summary.Scores["gsm8k"]-1.0/3) > 1e-12 || res.Summary.Scores["mmlu"] != 0.75 || res.Summary.Samples != 7 {
		t.Errorf("summary = %+v", res.Summary)
	}
	samples, err := os.ReadFile(filepath.Join(s.spec.OutputDir, evalflow.SamplesFile))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(samples, []byte("\n")); n != 7 {
		t.Errorf("samples.jsonl has %d lines, want 7", n)
	}

	progress := s.sink.OfType("/", evalflow.TypeJobProgress)
	var last evalflow.JobProgress
	sawRequests := false
	for _, ev := range progress {
		var p evalflow.JobProgress
		if err := ev.DataAs(&p); err != nil {
			t.Fatal(err)
		}
		if p.RunID != "r1" {
			t.Errorf("progress for run %q", p.RunID)
		}
		if p.Phase == "requesting" && p.Done == 11 && p.Total == 11 {
			sawRequests = true
		}
		last = p
	}
	if !sawRequests || last.Phase != "done" || last.Done != 7 {
		t.Errorf("progress reports %d, last %+v; want the bars' 11/11 then done at 7 samples", len(progress), last)
	}
	if log := lmevalLog.String(); !strings.Contains(log, "Selected Tasks") || !strings.Contains(log, "|Tasks|Version|") || strings.Contains(log, "Requesting API") {
		t.Errorf("lm_eval's log = %q: want its lines and table without the bars", log)
	}
	if bytes.Contains(s.sink.Raw(), []byte("sk-secret")) {
		t.Error("the key is in a progress event")
	}
}

func TestFakeLMEvalUnknownTaskFailsForGood(t *testing.T) {
	s := newSetup(t, "unknown-task")
	err := run(context.Background(), s.jobPath, io.Discard, quiet())
	if !errors.Is(err, adapter.ErrPermanent) || adapter.ExitCode(err) != evalflow.ExitPermanent || !strings.Contains(err.Error(), "Tasks not found: nosuch") {
		t.Fatalf("err = %v, want a permanent failure quoting lm_eval", err)
	}
	if _, err := os.Stat(filepath.Join(s.spec.OutputDir, evalflow.ResultsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("results.json after a failed lm_eval: %v", err)
	}
}

func TestWithoutLMEvalTheJobFailsForGood(t *testing.T) {
	s := newSetup(t, "ok")
	t.Setenv("LM_EVAL", filepath.Join(t.TempDir(), "lm_eval"))
	err := run(context.Background(), s.jobPath, io.Discard, quiet())
	if adapter.ExitCode(err) != evalflow.ExitPermanent || !strings.Contains(err.Error(), "not installed") {
		t.Fatalf("err = %v, want a permanent failure saying lm_eval is not installed", err)
	}
}

func TestASpecForAnotherEngineIsRefused(t *testing.T) {
	s := newSetup(t, "ok")
	s.spec.Engine = evalflow.DefaultEngine
	b, _ := json.Marshal(s.spec)
	if err := os.WriteFile(s.jobPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), s.jobPath, io.Discard, quiet())
	if adapter.ExitCode(err) != evalflow.ExitPermanent || !strings.Contains(err.Error(), `engine "evalflow"`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(s.callPath); !errors.Is(err, os.ErrNotExist) {
		t.Error("lm_eval ran for another engine's spec")
	}
}
