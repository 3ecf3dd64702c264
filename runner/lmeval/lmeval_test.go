package lmeval_test

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/evalflow/evalflow/runner/lmeval"
	"github.com/evalflow/evalflow/runner/results"
	evalflow "github.com/evalflow/evalflow/shared"
)

func spec() evalflow.JobSpec {
	return evalflow.JobSpec{ID: "evalflow-r1", RunID: "r1", Engine: lmeval.Engine,
		Model: evalflow.ModelSpec{Name: "llama3", URL: "http://127.0.0.1:8000"}, OutputDir: "/out", Concurrency: 4}
}

func flag(args []string, name string) (string, bool) {
	i := slices.Index(args, name)
	if i < 0 {
		return "", false
	}
	if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
		return args[i+1], true
	}
	return "", true
}

func TestArgsCompletions(t *testing.T) {
	c, err := lmeval.ParseConfig(json.RawMessage(`{"tasks":["mmlu","gsm8k"],"num_fewshot":5,"limit":0.1,"batch_size":"auto","tokenizer":"meta-llama/Llama-3.2-1B","tokenizer_backend":"huggingface"}`))
	if err != nil {
		t.Fatal(err)
	}
	s := spec()
	s.Options.RequestTimeoutSeconds = 30
	args, err := lmeval.Args(s, c)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"--model":       "local-completions",
		"--model_args":  "model=llama3,base_url=http://127.0.0.1:8000/v1/completions,num_concurrent=4,tokenized_requests=False,timeout=30,tokenizer=meta-llama/Llama-3.2-1B,tokenizer_backend=huggingface",
		"--tasks":       "mmlu,gsm8k",
		"--output_path": "/out/lm-eval",
		"--use_cache":   "/out/lm-eval-cache",
		"--num_fewshot": "5",
		"--limit":       "0.1",
		"--batch_size":  "auto",
	}
	for name, v := range want {
		if got, ok := flag(args, name); !ok || got != v {
			t.Errorf("%s = %q, want %q (args %q)", name, got, v, args)
		}
	}
	if _, ok := flag(args, "--log_samples"); !ok {
		t.Errorf("no --log_samples: %q", args)
	}
	if _, ok := flag(args, "--apply_chat_template"); ok {
		t.Errorf("completions with --apply_chat_template: %q", args)
	}
}

func TestArgsChatAppliesTheChatTemplate(t *testing.T) {
	c, err := lmeval.ParseConfig(json.RawMessage(`{"tasks":["gsm8k"],"model":"local-chat-completions"}`))
	if err != nil {
		t.Fatal(err)
	}
	s := spec()
	s.Model.URL = "https://api.example.com/v1/"
	s.Concurrency = 0
	args, err := lmeval.Args(s, c)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := flag(args, "--model_args"); got != "model=llama3,base_url=https://api.example.com/v1/chat/completions,num_concurrent=8,tokenized_requests=False" {
		t.Errorf("model_args = %q", got)
	}
	if _, ok := flag(args, "--apply_chat_template"); !ok {
		t.Errorf("chat without --apply_chat_template: %q", args)
	}
	for _, name := range []string{"--limit", "--num_fewshot", "--batch_size"} {
		if _, ok := flag(args, name); ok {
			t.Errorf("%s given though the config has none: %q", name, args)
		}
	}
}

func TestArgsRefuseWhatModelArgsCannotCarry(t *testing.T) {
	c, _ := lmeval.ParseConfig(json.RawMessage(`{"tasks":["gsm8k"]}`))
	s := spec()
	s.Model.Name = "llama3,tokenizer=evil"
	_, err := lmeval.Args(s, c)
	if !errors.Is(err, evalflow.ErrPermanent) || !strings.Contains(err.Error(), "model.name") {
		t.Fatalf("a model name with a comma: %v, want a permanent error naming model.name", err)
	}
}

func TestParseConfigNamesWhatIsWrong(t *testing.T) {
	for raw, want := range map[string]string{
		``:                                 "engine_config is required",
		`{"tasks":[]}`:                     "engine_config.tasks",
		`{"tasks":["gsm8k"],"extra":true}`: "unknown field",
	} {
		_, err := lmeval.ParseConfig(json.RawMessage(raw))
		if !errors.Is(err, evalflow.ErrPermanent) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConfig(%q) = %v, want a permanent error with %q", raw, err, want)
		}
	}
}

// TestReadResults reads an output directory in lm_eval 0.4's layout (testdata, written
// after lm_eval's evaluator and EvaluationTracker: a bare NaN stderr, samples one line
// per document and filter, multiple-choice responses as (log-likelihood, is_greedy)
// strings) and an older results file that must be ignored.
func TestReadResults(t *testing.T) {
	c, _ := lmeval.ParseConfig(json.RawMessage(`{"tasks":["gsm8k","mmlu"]}`))
	res, samples, err := lmeval.Read("testdata/output", spec(), c)
	if err != nil {
		t.Fatal(err)
	}
	wantScores := map[string]float64{"gsm8k": 1.0 / 3, "mmlu": 0.75, "mmlu_abstract_algebra": 0.5, "mmlu_anatomy": 1}
	for task, want := range wantScores {
		if got, ok := res.Summary.Scores[task]; !ok || math.Abs(got-want) > 1e-12 {
			t.Errorf("score of %s = %v (%v), want %v", task, got, ok, want)
		}
	}
	if res.Summary.Metric != "exact_match" || res.Summary.Metrics["mmlu"] != "acc" || res.Summary.Samples != 7 {
		t.Errorf("summary = %+v", res.Summary)
	}
	if res.Config["engine"] != lmeval.Engine || res.Config["model_name"] != "llama3" || res.Config["model"] != "local-completions" {
		t.Errorf("config = %v", res.Config)
	}
	if res.NSamples["gsm8k"] != (evalflow.NSamples{Original: 1319, Effective: 3}) || res.Versions["gsm8k"] != 3.0 || res.NShot["mmlu_anatomy"] != 5.0 {
		t.Errorf("n-samples %v, versions %v, n-shot %v", res.NSamples, res.Versions, res.NShot)
	}
	if res.Results["mmlu_anatomy"]["acc_stderr,none"] != nil {
		t.Errorf("NaN stderr read as %v, want null", res.Results["mmlu_anatomy"]["acc_stderr,none"])
	}
	if len(res.Configs["gsm8k"]) == 0 || res.Groups["mmlu"]["acc,none"] != 0.75 {
		t.Errorf("configs or groups lost: %v", res.Groups)
	}

	if len(samples) != 7 {
		t.Fatalf("%d samples, want 7 (one per document)", len(samples))
	}
	g := samples[1] // gsm8k doc 1: the strict filter finds no "####", the flexible one finds 30
	if g.Task != "gsm8k" || g.DocID != 1 || g.Metric != "exact_match" || g.Correct || g.Extracted != "[invalid]" ||
		!strings.HasPrefix(g.Prompt, "Question: Tom reads") || g.Response != "He reads 10 * 3 = 30 pages in all." || !strings.HasSuffix(g.Target, "#### 30") {
		t.Errorf("gsm8k doc 1 = %+v", g)
	}
	if len(g.Filters) != 2 || g.Filters[0].Filter != "strict-match" || g.Filters[1].Filter != "flexible-extract" ||
		!g.Filters[1].Correct || g.Filters[1].Extracted != "30" {
		t.Errorf("gsm8k doc 1 filters = %+v", g.Filters)
	}
	m := samples[4] // mmlu_abstract_algebra doc 1: B has the highest log-likelihood, A is right
	if m.Task != "mmlu_abstract_algebra" || m.Group != "mmlu" || m.Extracted != "B" || m.Target != "A" || m.Correct || len(m.Logprobs) != 4 ||
		m.Logprobs[1] == nil || *m.Logprobs[1] != -0.7 {
		t.Errorf("mmlu doc = %+v", m)
	}

	// The samples carry lm_eval's per-sample scores: aggregating them as evalflow's own
	// engine does gives back lm_eval's table, task by task and filter by filter.
	agg := results.Aggregate(results.Run{Spec: spec()}, samples)
	for task, row := range res.Results {
		for key, v := range row {
			want, ok := v.(float64)
			if !ok || strings.Contains(key, "_stderr") || res.Groups[task] != nil {
				continue
			}
			if got, _ := agg.Results[task][key].(float64); math.Abs(got-want) > 1e-12 {
				t.Errorf("%s %s: samples aggregate to %v, lm_eval says %v", task, key, got, want)
			}
		}
	}
	if got := agg.Results["mmlu"]["acc,none"]; got != 0.75 {
		t.Errorf("mmlu group from the samples = %v, want 0.75", got)
	}
}

func TestReadWithoutResultsSaysSo(t *testing.T) {
	_, _, err := lmeval.Read(t.TempDir(), spec(), lmeval.Config{Tasks: []string{"gsm8k"}})
	if !errors.Is(err, lmeval.ErrNoResults) {
		t.Fatalf("err = %v, want ErrNoResults", err)
	}
}

func TestReadRefusesAMissingSamplesFile(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/output/llama3/results_2026-11-24T10-00-00.123456.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results_2026-11-24T10-00-00.123456.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = lmeval.Read(dir, spec(), lmeval.Config{Tasks: []string{"gsm8k"}})
	if err == nil || !strings.Contains(err.Error(), "samples of task gsm8k") {
		t.Fatalf("err = %v, want one naming the task without samples", err)
	}
}

func TestScanFollowsTheRequestBars(t *testing.T) {
	// lm_eval's stderr: log lines, then a loglikelihood bar and a generation bar,
	// updated in place with "\r" as tqdm does.
	stderr := "2026-11-24:10:00:00 INFO [evaluator.py:305] Running loglikelihood requests\n" +
		"Requesting API:   0%|          | 0/8 [00:00<?, ?it/s]\r" +
		"Requesting API:  50%|█████     | 4/8 [00:01<00:01,  3.99it/s]\r" +
		"Requesting API: 100%|██████████| 8/8 [00:02<00:00,  4.00it/s]\n" +
		"2026-11-24:10:00:02 INFO [evaluator.py:305] Running generate_until requests\n" +
		"Requesting API:   0%|          | 0/3 [00:00<?, ?it/s]\r" +
		"Requesting API:  33%|███▎      | 1/3 [00:01<00:02,  1.00s/it]\r" +
		"Requesting API: 100%|██████████| 3/3 [00:03<00:00,  1.00s/it]\n"
	var got [][2]int
	var log strings.Builder
	if err := lmeval.Scan(strings.NewReader(stderr), &log, func(done, total int) { got = append(got, [2]int{done, total}) }); err != nil {
		t.Fatal(err)
	}
	want := [][2]int{{0, 8}, {4, 8}, {8, 8}, {8, 11}, {9, 11}, {11, 11}}
	if !slices.Equal(got, want) {
		t.Errorf("progress = %v, want %v", got, want)
	}
	if strings.Contains(log.String(), "Requesting API") || !strings.Contains(log.String(), "Running generate_until requests\n") {
		t.Errorf("log = %q: want the log lines without the bars", log.String())
	}
}
