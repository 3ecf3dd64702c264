package opencompass_test

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/runner/opencompass"
	"github.com/evalflow/evalflow/runner/results"
	evalflow "github.com/evalflow/evalflow/shared"
)

func spec() evalflow.JobSpec {
	return evalflow.JobSpec{ID: "evalflow-r1", RunID: "r1", Engine: opencompass.Engine,
		Model: evalflow.ModelSpec{Name: `llama3"); import os; ("`, URL: "http://127.0.0.1:8000"}, OutputDir: "/out", Concurrency: 4}
}

func TestModelConfigQuotesWhatTheRequestGave(t *testing.T) {
	c, err := opencompass.ParseConfig(json.RawMessage(`{"datasets":["gsm8k_gen"],"max_out_len":512}`))
	if err != nil {
		t.Fatal(err)
	}
	py := string(opencompass.ModelConfig(spec(), c))
	for _, want := range []string{
		"from opencompass.models import OpenAISDK",
		`path="llama3\"); import os; (\"",`, // the name stays one string literal
		`key="ENV",`,
		`openai_api_base="http://127.0.0.1:8000/v1",`,
		"max_out_len=512,",
		"batch_size=4,",
		`abbr="evalflow-endpoint",`,
	} {
		if !strings.Contains(py, want) {
			t.Errorf("model config lacks %q:\n%s", want, py)
		}
	}
}

func TestArgs(t *testing.T) {
	c, _ := opencompass.ParseConfig(json.RawMessage(`{"datasets":["gsm8k_gen","mmlu_gen"]}`))
	args := opencompass.Args(spec(), c)
	want := []string{"--models", "evalflow_endpoint", "--datasets", "gsm8k_gen", "mmlu_gen",
		"--config-dir", "/out/opencompass-configs", "--work-dir", "/out/opencompass", "--reuse", "latest", "--dump-eval-details"}
	if !slices.Equal(args, want) {
		t.Errorf("args = %q\nwant %q", args, want)
	}
}

func TestParseConfigNamesWhatIsWrong(t *testing.T) {
	for raw, want := range map[string]string{
		``:                                  "engine_config is required",
		`{"datasets":[]}`:                   "engine_config.datasets",
		`{"datasets":["../../etc/passwd"]}`: "not a dataset config name",
		`{"datasets":["x"],"model":"y"}`:    "unknown field",
	} {
		_, err := opencompass.ParseConfig(json.RawMessage(raw))
		if !errors.Is(err, evalflow.ErrPermanent) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConfig(%q) = %v, want a permanent error with %q", raw, err, want)
		}
	}
}

// TestRead reads a work directory in OpenCompass 0.4's layout (testdata, written after
// its OpenICLEvalTask: predictions keyed by index, one dataset's written in two parts,
// details as a list for one evaluator and keyed by index for another, accuracy in
// percent) and an older run that must be ignored.
func TestRead(t *testing.T) {
	c, _ := opencompass.ParseConfig(json.RawMessage(`{"datasets":["gsm8k_gen","mmlu_gen"]}`))
	res, samples, err := opencompass.Read("testdata/work", spec(), c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.Scores["gsm8k"] != 0.5 || math.Abs(res.Summary.Scores["lukaemon_mmlu_anatomy"]-2.0/3) > 1e-12 ||
		res.Summary.Metric != "accuracy" || res.Summary.Samples != 7 {
		t.Errorf("summary = %+v", res.Summary)
	}
	if res.Results["gsm8k"]["accuracy,none"] != 0.5 || res.NSamples["lukaemon_mmlu_anatomy"].Effective != 3 || res.Config["engine"] != opencompass.Engine {
		t.Errorf("results %v, n-samples %v, config %v", res.Results, res.NSamples, res.Config)
	}
	if len(samples) != 7 {
		t.Fatalf("%d samples, want 7", len(samples))
	}
	g := samples[1]
	if g.Task != "gsm8k" || g.DocID != 1 || g.Correct || g.Extracted != "10" || g.Target != "30" || g.Response != "He reads 10 pages." ||
		!strings.HasPrefix(g.Prompt, "Question: Tom reads") {
		t.Errorf("gsm8k sample 1 = %+v", g)
	}
	m := samples[6] // the last of the second part
	if m.Task != "lukaemon_mmlu_anatomy" || m.DocID != 2 || m.Correct || m.Extracted != "A" || m.Target != "B" || !strings.Contains(m.Prompt, "filters blood") {
		t.Errorf("mmlu sample 2 = %+v", m)
	}
	// The details are OpenCompass's per-sample verdicts: aggregated as evalflow's own
	// engine does, they give back OpenCompass's accuracy.
	agg := results.Aggregate(results.Run{Spec: spec()}, samples)
	for name, want := range res.Summary.Scores {
		if got := agg.Summary.Scores[name]; math.Abs(got-want) > 1e-12 {
			t.Errorf("%s: samples aggregate to %v, OpenCompass says %v", name, got, want)
		}
	}
	if predicted, scored := opencompass.Count("testdata/work"); predicted != 2 || scored != 2 {
		t.Errorf("Count = %d predicted, %d scored; want 2, 2 (parts count once)", predicted, scored)
	}
}

func TestReadReportsAFailedDataset(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "20261124_100000", "results", opencompass.ModelAbbr)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gsm8k.json"), []byte(`{"error": "No predictions found."}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := opencompass.Read(filepath.Dir(filepath.Dir(filepath.Dir(dir))), spec(), opencompass.Config{Datasets: []string{"gsm8k_gen"}})
	if err == nil || !strings.Contains(err.Error(), "dataset gsm8k failed: No predictions found.") {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := opencompass.Read(t.TempDir(), spec(), opencompass.Config{}); !errors.Is(err, opencompass.ErrNoResults) {
		t.Fatalf("an empty work directory: %v, want ErrNoResults", err)
	}
}
