package external_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/external"
	"github.com/evalflow/evalflow/runner/lmeval"
	"github.com/evalflow/evalflow/runner/opencompass"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/testserver"
)

// Neither lm_eval nor opencompass can be installed here (PyPI is unreachable), so
// these tests run the adapters against fakes of them: this test binary, re-executed
// with FAKE_ENGINE set. A fake records how it was called, prints the program's log
// (lm_eval's progress bars among it), and writes the program's output files as
// lm_eval 0.4 and OpenCompass 0.4 lay them out (the packages' testdata).
func TestMain(m *testing.M) {
	if engine := os.Getenv("FAKE_ENGINE"); engine != "" {
		os.Exit(fake(engine, os.Getenv("FAKE_MODE"), os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fake(engine, mode string, args []string) int {
	call, _ := json.Marshal(map[string]any{"args": args, "key": os.Getenv("OPENAI_API_KEY")})
	if err := os.WriteFile(os.Getenv("FAKE_CALL"), call, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	flagValue := func(name string) string { return args[slices.Index(args, name)+1] }
	var err error
	switch engine {
	case "lm_eval":
		fmt.Fprintln(os.Stderr, "2026-11-24:10:00:00 INFO [__main__.py:446] Selected Tasks: ['gsm8k', 'mmlu']")
		if mode == "fail" {
			fmt.Fprintln(os.Stderr, "Traceback (most recent call last):\nValueError: Tasks not found: nosuch. Try `lm-eval --tasks {list_groups,list_subtasks,list_tags,list}`")
			return 1
		}
		fmt.Fprint(os.Stderr, "Requesting API:   0%|          | 0/8 [00:00<?, ?it/s]\rRequesting API: 100%|██████████| 8/8 [00:02<00:00,  4.00it/s]\n")
		fmt.Fprint(os.Stderr, "Requesting API:   0%|          | 0/3 [00:00<?, ?it/s]\rRequesting API: 100%|██████████| 3/3 [00:03<00:00,  1.00s/it]\n")
		fmt.Println("|Tasks|Version|Filter|n-shot|Metric|Value|")
		err = copyTree("../lmeval/testdata/output", flagValue("--output_path"), "")
	case "opencompass":
		fmt.Fprintln(os.Stderr, "11/24 10:00:00 - OpenCompass - INFO - Loading gsm8k_gen")
		if mode == "fail" {
			fmt.Fprintln(os.Stderr, "ValueError: +-----------------------+\n| Not matched patterns  |\n| nosuch_gen            |")
			return 1
		}
		py, rerr := os.ReadFile(filepath.Join(flagValue("--config-dir"), "models", flagValue("--models")+".py"))
		if rerr != nil || !bytes.Contains(py, []byte(`key="ENV"`)) {
			fmt.Fprintln(os.Stderr, "no model config with the key from the environment:", rerr)
			return 3
		}
		work := flagValue("--work-dir")
		if err = copyTree("../opencompass/testdata/work", work, "predictions"); err == nil {
			time.Sleep(300 * time.Millisecond) // inference done; evaluation next
			err = copyTree("../opencompass/testdata/work", work, "results")
		}
		fmt.Println("dataset    version    metric    mode    evalflow-endpoint")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	return 0
}

// copyTree copies the files under src into dst, only those in a folder named only
// when only is not "".
func copyTree(src, dst, only string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if only != "" && !slices.Contains(strings.Split(rel, string(filepath.Separator)), only) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
}

type setup struct {
	spec     evalflow.JobSpec
	jobPath  string
	callPath string
	sink     *testserver.Sink
}

func newSetup(t *testing.T, engine, mode, config string) setup {
	t.Helper()
	dir := t.TempDir()
	s := setup{jobPath: filepath.Join(dir, "job.json"), callPath: filepath.Join(dir, "call.json"), sink: testserver.NewSink(t)}
	keyPath := filepath.Join(dir, "api-key")
	if err := os.WriteFile(keyPath, []byte("sk-secret-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.spec = evalflow.JobSpec{ID: "evalflow-r1", RunID: "r1", Engine: engine, EngineConfig: json.RawMessage(config),
		Model:      evalflow.ModelSpec{Name: "llama3", URL: "http://127.0.0.1:9/v1"},
		APIKeyFile: keyPath, CallbackURL: s.sink.URL + "/", OutputDir: filepath.Join(dir, "out")}
	s.writeSpec(t)
	program := map[string]string{lmeval.Engine: "lm_eval", opencompass.Engine: "opencompass"}[engine]
	t.Setenv("LM_EVAL", os.Args[0])
	t.Setenv("OPENCOMPASS", os.Args[0])
	t.Setenv("FAKE_ENGINE", program)
	t.Setenv("FAKE_MODE", mode)
	t.Setenv("FAKE_CALL", s.callPath)
	return s
}

func (s setup) writeSpec(t *testing.T) {
	b, _ := json.Marshal(s.spec)
	if err := os.WriteFile(s.jobPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// call is how the fake was run.
func (s setup) call(t *testing.T) (args []string, key string) {
	var c struct {
		Args []string `json:"args"`
		Key  string   `json:"key"`
	}
	b, err := os.ReadFile(s.callPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.Args, c.Key
}

func (s setup) results(t *testing.T) (evalflow.Results, int) {
	var res evalflow.Results
	b, err := os.ReadFile(filepath.Join(s.spec.OutputDir, evalflow.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	samples, err := os.ReadFile(filepath.Join(s.spec.OutputDir, evalflow.SamplesFile))
	if err != nil {
		t.Fatal(err)
	}
	return res, bytes.Count(samples, []byte("\n"))
}

func (s setup) progress(t *testing.T) []evalflow.JobProgress {
	var out []evalflow.JobProgress
	for _, ev := range s.sink.OfType("/", evalflow.TypeJobProgress) {
		var p evalflow.JobProgress
		if err := ev.DataAs(&p); err != nil {
			t.Fatal(err)
		}
		if p.RunID != "r1" {
			t.Errorf("progress for run %q", p.RunID)
		}
		out = append(out, p)
	}
	if bytes.Contains(s.sink.Raw(), []byte("sk-secret")) {
		t.Error("the key is in a progress event")
	}
	return out
}

func quiet() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

func TestFakeLMEvalRunBecomesEvalflowResults(t *testing.T) {
	s := newSetup(t, lmeval.Engine, "ok", `{"tasks":["gsm8k","mmlu"],"limit":3}`)
	var programLog bytes.Buffer
	if err := lmeval.External().Run(context.Background(), s.jobPath, &programLog, quiet()); err != nil {
		t.Fatal(err)
	}
	args, key := s.call(t)
	if key != "sk-secret-1" {
		t.Errorf("lm_eval's OPENAI_API_KEY = %q, want the key from the key file", key)
	}
	if strings.Contains(strings.Join(args, " "), "sk-secret") {
		t.Errorf("the key is on lm_eval's command line: %q", args)
	}
	if i := slices.Index(args, "--tasks"); i < 0 || args[i+1] != "gsm8k,mmlu" {
		t.Errorf("args = %q", args)
	}
	res, lines := s.results(t)
	if math.Abs(res.Summary.Scores["gsm8k"]-1.0/3) > 1e-12 || res.Summary.Scores["mmlu"] != 0.75 || res.Summary.Samples != 7 || lines != 7 {
		t.Errorf("summary = %+v, %d sample lines", res.Summary, lines)
	}
	progress := s.progress(t)
	sawBars := slices.ContainsFunc(progress, func(p evalflow.JobProgress) bool {
		return p.Phase == "requesting" && p.Done == 11 && p.Total == 11
	})
	if last := progress[len(progress)-1]; !sawBars || last.Phase != "done" || last.Done != 7 {
		t.Errorf("progress = %+v; want the bars' 11/11, then done at 7 samples", progress)
	}
	if log := programLog.String(); !strings.Contains(log, "Selected Tasks") || !strings.Contains(log, "|Tasks|Version|") || strings.Contains(log, "Requesting API") {
		t.Errorf("lm_eval's log = %q: want its lines and table without the bars", log)
	}
}

func TestFakeOpenCompassRunBecomesEvalflowResults(t *testing.T) {
	s := newSetup(t, opencompass.Engine, "ok", `{"datasets":["gsm8k_gen","mmlu_gen"]}`)
	x := opencompass.External()
	x.PollEvery, x.ReportEvery = 20*time.Millisecond, time.Millisecond
	var programLog bytes.Buffer
	if err := x.Run(context.Background(), s.jobPath, &programLog, quiet()); err != nil {
		t.Fatalf("%v\n%s", err, programLog.String())
	}
	args, key := s.call(t)
	if key != "sk-secret-1" || strings.Contains(strings.Join(args, " "), "sk-secret") {
		t.Errorf("key %q, args %q: want the key in the environment only", key, args)
	}
	py, err := os.ReadFile(filepath.Join(s.spec.OutputDir, opencompass.ConfigDir, "models", "evalflow_endpoint.py"))
	if err != nil || bytes.Contains(py, []byte("sk-secret")) {
		t.Errorf("model config (%v) holds the key:\n%s", err, py)
	}
	res, lines := s.results(t)
	if res.Summary.Scores["gsm8k"] != 0.5 || res.Summary.Samples != 7 || lines != 7 {
		t.Errorf("summary = %+v, %d sample lines", res.Summary, lines)
	}
	progress := s.progress(t)
	sawInference := slices.ContainsFunc(progress, func(p evalflow.JobProgress) bool {
		return p.Phase == "inferring" && p.Done == 2 && p.Total == 2
	})
	if last := progress[len(progress)-1]; !sawInference || last.Phase != "done" || last.Done != 7 {
		t.Errorf("progress = %+v; want inference of 2 datasets seen, then done at 7 samples", progress)
	}
	if !strings.Contains(programLog.String(), "Loading gsm8k_gen") {
		t.Errorf("opencompass's log = %q", programLog.String())
	}
}

func TestAFailureTheProgramNamesIsPermanent(t *testing.T) {
	for engine, c := range map[string]struct {
		x      external.Engine
		config string
		quote  string
	}{
		lmeval.Engine:      {lmeval.External(), `{"tasks":["nosuch"]}`, "Tasks not found: nosuch"},
		opencompass.Engine: {opencompass.External(), `{"datasets":["nosuch_gen"]}`, "Not matched patterns"},
	} {
		s := newSetup(t, engine, "fail", c.config)
		err := c.x.Run(context.Background(), s.jobPath, io.Discard, quiet())
		if !errors.Is(err, adapter.ErrPermanent) || adapter.ExitCode(err) != evalflow.ExitPermanent || !strings.Contains(err.Error(), c.quote) {
			t.Errorf("%s: %v, want a permanent failure quoting the program", engine, err)
		}
		if _, err := os.Stat(filepath.Join(s.spec.OutputDir, evalflow.ResultsFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: results.json after a failure: %v", engine, err)
		}
	}
}

func TestWithoutTheProgramTheJobFailsForGood(t *testing.T) {
	s := newSetup(t, lmeval.Engine, "ok", `{"tasks":["gsm8k"]}`)
	t.Setenv("LM_EVAL", filepath.Join(t.TempDir(), "lm_eval"))
	err := lmeval.External().Run(context.Background(), s.jobPath, io.Discard, quiet())
	if adapter.ExitCode(err) != evalflow.ExitPermanent || !strings.Contains(err.Error(), "not installed") {
		t.Fatalf("err = %v, want a permanent failure saying lm_eval is not installed", err)
	}
}

func TestASpecForAnotherEngineIsRefused(t *testing.T) {
	s := newSetup(t, lmeval.Engine, "ok", `{"tasks":["gsm8k"]}`)
	s.spec.Engine = opencompass.Engine
	s.writeSpec(t)
	err := lmeval.External().Run(context.Background(), s.jobPath, io.Discard, quiet())
	if adapter.ExitCode(err) != evalflow.ExitPermanent || !strings.Contains(err.Error(), `engine "opencompass"`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(s.callPath); !errors.Is(err, os.ErrNotExist) {
		t.Error("lm_eval ran for another engine's spec")
	}
}
