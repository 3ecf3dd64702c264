package external_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/external"
	"github.com/evalflow/evalflow/runner/lmeval"
	"github.com/evalflow/evalflow/runner/opencompass"
	evalflow "github.com/evalflow/evalflow/shared"
)

// Neither lm_eval nor opencompass can be installed here (PyPI is unreachable), so
// these tests run the adapters against fakes of them (the packages' testdata): shell
// scripts that record how they were called, print the program's log (lm_eval's
// progress bars among it), and write the program's output as lm_eval 0.4 and
// OpenCompass 0.4 lay it out.
var fakes = map[string]string{lmeval.Engine: "../lmeval/testdata/fake-lm_eval", opencompass.Engine: "../opencompass/testdata/fake-opencompass"}

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
	for name, env := range map[string]string{lmeval.Engine: "LM_EVAL", opencompass.Engine: "OPENCOMPASS"} {
		fake, err := filepath.Abs(fakes[name])
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(env, fake)
	}
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

// call is how the fake was run: its arguments, and whether it got the key.
func (s setup) call(t *testing.T) (args []string, gotKey bool) {
	b, err := os.ReadFile(s.callPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	return lines[1:], lines[0] == keyHash("sk-secret-1")
}

// keyHash is how the fakes record the key they got (never in clear).
func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "key_sha256=" + hex.EncodeToString(sum[:])
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
	args, gotKey := s.call(t)
	if !gotKey {
		t.Error("lm_eval's OPENAI_API_KEY is not the key from the key file")
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
	if last := progress[len(progress)-1]; !sawBars || last.Phase != "done" || last.Done != 11 || last.Total != 11 {
		t.Errorf("progress = %+v; want the bars' 11/11, then done at 11/11 (never counting backwards)", progress)
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
	args, gotKey := s.call(t)
	if !gotKey || strings.Contains(strings.Join(args, " "), "sk-secret") {
		t.Errorf("got the key: %v, args %q: want the key in the environment only", gotKey, args)
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
		return p.Phase == "inferring" && p.Done == 2 && p.Total == 4
	})
	if last := progress[len(progress)-1]; !sawInference || last.Phase != "done" || last.Done != 4 || last.Total != 4 {
		t.Errorf("progress = %+v; want inference of 2 datasets seen (2/4), then done at 4/4", progress)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i].Done < progress[i-1].Done {
			t.Errorf("progress counts backwards: %+v then %+v", progress[i-1], progress[i])
		}
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
		if !errors.Is(err, evalflow.ErrPermanent) || adapter.ExitCode(err) != evalflow.ExitPermanent || !strings.Contains(err.Error(), c.quote) {
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

func TestALogLineTooLongToScanLosesProgressNotTheRun(t *testing.T) {
	s := newSetup(t, lmeval.Engine, "longline", `{"tasks":["gsm8k","mmlu"]}`)
	var programLog bytes.Buffer

	err := lmeval.External().Run(context.Background(), s.jobPath, &programLog, quiet())

	if err != nil {
		t.Fatalf("the run failed: %v", err)
	}
	if res, lines := s.results(t); res.Summary.Samples != 7 || lines != 7 {
		t.Errorf("summary %+v, %d sample lines", res.Summary, lines)
	}
	// Without the drain lm_eval would block on its full stderr pipe and never end.
	if log := programLog.String(); !strings.Contains(log, "progress is no longer followed") || !strings.Contains(log, "Requesting API") {
		t.Errorf("lm_eval's log does not say progress was lost, or lacks the rest of its stderr")
	}
}

// lm_eval logging the key, and writing it into a sample, as an endpoint that echoes the
// Authorization header makes it do: neither the log nor the results keep it.
func TestFakeLMEvalEchoingTheKeyLeavesItNowhere(t *testing.T) {
	s := newSetup(t, lmeval.Engine, "echo", `{"tasks":["gsm8k","mmlu"],"limit":3}`)
	var programLog bytes.Buffer
	if err := lmeval.External().Run(context.Background(), s.jobPath, &programLog, quiet()); err != nil {
		t.Fatal(err)
	}
	samples, err := os.ReadFile(filepath.Join(s.spec.OutputDir, evalflow.SamplesFile))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"the program's log": programLog.Bytes(), "samples.jsonl": samples} {
		if bytes.Contains(b, []byte("sk-secret-1")) {
			t.Errorf("%s holds the key", name)
		}
		if !bytes.Contains(b, []byte(evalflow.Redacted)) {
			t.Errorf("%s does not show the echo redacted: the test proves nothing", name)
		}
	}
}
