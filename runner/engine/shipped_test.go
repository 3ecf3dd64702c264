package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/runner/results"
	"github.com/evalflow/evalflow/runner/sandbox"
	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/task/source"
	"github.com/evalflow/evalflow/runner/task/tasks"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/openai"
)

// A run naming lm-eval's bbh_zeroshot asks each of its 27 tasks through a real model
// server (as chat: the description a system turn, then the question) and writes
// results.json as lm-eval's: each task by both of its filters, the group by the
// filter its file aggregates, its tasks' sizes summed.
func TestARunOfAnLMEvalGroupWritesItsResultsAsLMEval(t *testing.T) {
	model := testserver.Ollama(t, 4)
	p := newProxy(t, model, 0)
	s := spec(t, p.URL, 4)
	s.Datasets = []evalflow.DatasetSpec{{Name: "bbh_zeroshot", Limit: 2}}

	if _, err := run(t, context.Background(), s, nil); err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(filepath.Join(s.OutputDir, evalflow.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Results  map[string]map[string]any                    `json:"results"`
		Groups   map[string]map[string]any                    `json:"groups"`
		NSamples map[string]struct{ Original, Effective int } `json:"n-samples"`
		Configs  map[string]struct {
			NumFewshot int                     `json:"num_fewshot"`
			Filters    []struct{ Name string } `json:"filter_list"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	g := res.Groups["bbh_zeroshot"]
	if _, ok := g["exact_match,flexible-extract"]; !ok || g["sample_len"] != float64(54) {
		t.Errorf("group %v; want exact_match,flexible-extract over 54 samples", g)
	}
	if _, ok := g["exact_match,strict-match"]; ok {
		t.Errorf("group %v aggregates strict-match, which bbh_zeroshot does not", g)
	}
	snarks := res.Results["bbh_zeroshot_snarks"]
	for _, k := range []string{"exact_match,strict-match", "exact_match,flexible-extract", "exact_match_stderr,flexible-extract"} {
		if _, ok := snarks[k]; !ok {
			t.Errorf("bbh_zeroshot_snarks has no %s: %v", k, snarks)
		}
	}
	if n := res.NSamples["bbh_zeroshot_snarks"]; n.Original != 178 || n.Effective != 2 {
		t.Errorf("n-samples %+v; want 178 original, 2 effective", n)
	}
	if c := res.Configs["bbh_zeroshot_snarks"]; len(c.Filters) != 2 || c.Filters[1].Name != "flexible-extract" {
		t.Errorf("config %+v", c)
	}
	c, err := tasks.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	members, _ := c.Resolve("bbh_zeroshot")
	want := map[string]int{}
	for _, m := range members {
		want[m.Task.Description] += 2 // each task's two questions begin with its description
	}
	if asked := p.openings(); !maps.Equal(asked, want) {
		t.Errorf("first messages asked: %d distinct; want each task's description as the system turn (%d)", len(asked), len(want))
	}
}

// lm-eval's truthfulqa_mc1 and _mc2, from their task files, ask each choice's
// log-likelihood of a real server (llama.cpp) and score as lm-eval: mc2's acc a
// question's probability mass on the true answers, between 0 and 1, not only 0 or 1.
func TestTruthfulQATaskFilesScoreByLoglikelihood(t *testing.T) {
	s := spec(t, testserver.LlamaEcho(t), 2)
	s.Datasets = []evalflow.DatasetSpec{{Name: "truthfulqa_mc1", Limit: 4}, {Name: "truthfulqa_mc2", Limit: 4}}

	res, err := run(t, context.Background(), s, nil)

	if err != nil {
		t.Fatal(err)
	}
	fractional := false
	for _, x := range readSamples(t, s) {
		if len(x.Logprobs) < 2 || len(x.Filters) != 1 || x.Filters[0].Metric != "acc" {
			t.Fatalf("%s/%d: %d log-likelihoods, filters %+v", x.Task, x.DocID, len(x.Logprobs), x.Filters)
		}
		distinct := map[float64]bool{}
		for i, lp := range x.Logprobs {
			if lp == nil || *lp >= 0 {
				t.Fatalf("%s/%d: choice %d log-likelihood %v", x.Task, x.DocID, i, lp)
			}
			distinct[*lp] = true
		}
		if len(distinct) < 2 {
			t.Errorf("%s/%d: every choice has the same log-likelihood: the continuations were not scored", x.Task, x.DocID)
		}
		if x.Task == "truthfulqa_mc1" && x.Correct != (x.Extracted == x.Target) {
			t.Errorf("%s/%d: correct=%v, picked %q, best answer %q", x.Task, x.DocID, x.Correct, x.Extracted, x.Target)
		}
		if v := x.Filters[0].Value; x.Task == "truthfulqa_mc2" && v != nil && *v > 0 && *v < 1 {
			fractional = true
		}
	}
	if !fractional {
		t.Error("no mc2 score between 0 and 1: its probability mass is not what is scored")
	}
	for _, task := range []string{"truthfulqa_mc1", "truthfulqa_mc2"} {
		if acc, ok := res.Results[task]["acc,none"].(float64); !ok || acc < 0 || acc > 1 || res.NSamples[task].Original != 817 {
			t.Errorf("%s: %v, n-samples %+v", task, res.Results[task], res.NSamples[task])
		}
	}
}

// lm-eval's winogrande asks the same continuation after each option's context of a
// real server (llama.cpp), so the two log-likelihoods differ by the context alone.
func TestWinograndeScoresEachContextsContinuation(t *testing.T) {
	s := spec(t, testserver.LlamaEcho(t), 2)
	s.Datasets = []evalflow.DatasetSpec{{Name: "winogrande", Limit: 4}}

	res, err := run(t, context.Background(), s, nil)

	if err != nil {
		t.Fatal(err)
	}
	differ := 0
	for _, x := range readSamples(t, s) {
		if len(x.Logprobs) != 2 || x.Logprobs[0] == nil || x.Logprobs[1] == nil {
			t.Fatalf("%s/%d: log-likelihoods %v", x.Task, x.DocID, x.Logprobs)
		}
		if *x.Logprobs[0] != *x.Logprobs[1] {
			differ++
		}
	}
	if differ == 0 {
		t.Error("every document's two log-likelihoods are equal: the contexts are not what is asked")
	}
	if acc, ok := res.Results["winogrande"]["acc,none"].(float64); !ok || acc < 0 || acc > 1 || res.NSamples["winogrande"].Original != 1267 {
		t.Errorf("winogrande: %v, n-samples %+v", res.Results["winogrande"], res.NSamples["winogrande"])
	}
}

// lm-eval's lambada_openai through a real server (llama.cpp): a continuation is
// greedy exactly when it is what the server generates greedily; the results give acc
// and perplexity with their standard errors.
func TestLambadaScoresGreedyContinuationsAndPerplexity(t *testing.T) {
	url := testserver.LlamaEcho(t)
	s := spec(t, url, 2)
	e := &Engine{Client: &openai.Client{BaseURL: evalflow.APIBase(url), MaxTries: 3}, Spec: s}
	const prompt = "Once upon a time, there was a little girl named"
	gen, err := e.Client.Complete(context.Background(), openai.CompletionRequest{Model: testserver.Model, Prompt: prompt, MaxTokens: 3, Temperature: 0})
	if err != nil {
		t.Fatal(err)
	}
	for cont, want := range map[string]bool{gen.Text(): true, " Zebrafish": false} {
		_, greedy, _, err := e.continuation(context.Background(), task.Doc{Prompt: prompt, Choices: []string{cont}})
		if err != nil || greedy != want {
			t.Errorf("%q after %q: greedy %v, %v; want %v", cont, prompt, greedy, err, want)
		}
	}

	s.Datasets = []evalflow.DatasetSpec{{Name: "lambada_openai", Limit: 6}}
	res, err := run(t, context.Background(), s, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Results["lambada_openai"]
	ppl, _ := r["perplexity,none"].(float64)
	se, _ := r["perplexity_stderr,none"].(float64)
	acc, ok := r["acc,none"].(float64)
	if ppl <= 1 || se <= 0 || !ok || acc < 0 || acc > 1 || res.Summary.Metrics["lambada_openai"] != "acc" {
		t.Errorf("lambada_openai: %v, summary %v", r, res.Summary)
	}
}

// lm-eval's truthfulqa_gen through a real model server (ollama): each answer, cut at a
// blank line, scored by its twelve BLEU and ROUGE metrics; the summary's is bleu_max.
func TestTruthfulQAGenerationTaskFileScoresByBLEUAndROUGE(t *testing.T) {
	s := spec(t, testserver.Ollama(t, 2), 2)
	s.Datasets = []evalflow.DatasetSpec{{Name: "truthfulqa_gen", Limit: 3, MaxTokens: 16}}

	res, err := run(t, context.Background(), s, nil)

	if err != nil {
		t.Fatal(err)
	}
	r := res.Results["truthfulqa_gen"]
	for _, m := range []string{"bleu", "rouge1", "rouge2", "rougeL"} {
		for _, k := range []string{"_max", "_acc", "_diff"} {
			if _, ok := r[m+k+",none"].(float64); !ok {
				t.Errorf("results lack %s%s,none: %v", m, k, r)
			}
		}
	}
	if res.Summary.Metrics["truthfulqa_gen"] != "bleu_max" || res.NSamples["truthfulqa_gen"].Original != 817 {
		t.Errorf("summary %v, n-samples %+v", res.Summary, res.NSamples["truthfulqa_gen"])
	}
	for _, x := range readSamples(t, s) {
		if strings.Contains(x.Response, "\n\n") {
			t.Errorf("%s/%d: the answer runs past a blank line: %q", x.Task, x.DocID, x.Response)
		}
	}
}

// lm-eval's ifeval against a real server (ollama): each prompt asked as it is, the
// response scored by its instructions; results.json reports the four metrics, the
// instruction-level ones over every instruction with no stderr ("N/A"), as lm-eval's.
func TestIFEvalScoresEachInstruction(t *testing.T) {
	s := spec(t, testserver.Ollama(t, 2), 2)
	s.Datasets = []evalflow.DatasetSpec{{Name: "ifeval", Limit: 3, MaxTokens: 24}}

	if _, err := run(t, context.Background(), s, nil); err != nil {
		t.Fatal(err)
	}

	instructions := 0
	for _, x := range readSamples(t, s) {
		if len(x.Filters) != 4 || x.Filters[1].Metric != "inst_level_strict_acc" || x.Response == "" {
			t.Fatalf("%s/%d: filters %+v, response %q", x.Task, x.DocID, x.Filters, x.Response)
		}
		instructions += len(x.Filters[1].Values)
	}
	b, err := os.ReadFile(filepath.Join(s.OutputDir, evalflow.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Results map[string]map[string]any `json:"results"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	r := res.Results["ifeval"]
	for _, level := range []string{"prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc"} {
		if v, ok := r[level+",none"].(float64); !ok || v < 0 || v > 1 {
			t.Errorf("results.ifeval[%s,none] = %v", level, r[level+",none"])
		}
	}
	if r["inst_level_loose_acc_stderr,none"] != "N/A" || instructions < 3 {
		t.Errorf("instruction-level stderr %v over %d instructions; want N/A", r["inst_level_loose_acc_stderr,none"], instructions)
	}
}

// userData is a data directory holding a task's own files under custom/: five
// questions as JSON Lines (numbers as numbers), two worked ones as a JSON array and
// as CSV.
func userData(t *testing.T) string {
	dir := t.TempDir()
	files := map[string]string{
		"custom/arith/test.jsonl": `{"question": "2+2", "answer": 4}
{"question": "3+4", "answer": 7}
{"question": 10, "answer": 10}
{"question": "1+0", "answer": 1}
{"question": "5+5", "answer": 10}
`,
		"custom/arith/train.csv":  "question,answer\n1+1,2\n2+3,5\n",
		"custom/arith/train.json": `[{"question": "1+1", "answer": 2}, {"question": "2+3", "answer": 5}]`,
		"custom/tasks/_base.yaml": "dataset_path: json\noutput_type: generate_until\ntest_split: test\n" +
			"doc_to_target: '{{answer}}'\nmetric_list:\n  - metric: exact_match\n",
		"custom/tasks/arith.yaml": "include: _base.yaml\ntask: my_sums\ndataset_path: csv\n" +
			"dataset_kwargs:\n  data_files:\n    test: arith/train.csv\ndoc_to_text: \"Q: {{question}}\\nA:\"\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A task a run brings in its own task file (inline) asks and scores as the file
// says, its documents from its own data files (JSON Lines scored, a JSON array its
// examples; CSV another's): the
// results name it; a task file under custom/ reads with what it includes.
func TestATaskARunBringsIsAskedAsItsFileSays(t *testing.T) {
	s := spec(t, testserver.Ollama(t, 2), 2)
	s.DataDir = userData(t)
	s.Datasets = []evalflow.DatasetSpec{{Name: "custom", TaskYAML: `task: my_arithmetic
dataset_path: json
dataset_kwargs:
  data_files:
    test: arith/test.jsonl
    train: arith/train.json
output_type: generate_until
test_split: test
fewshot_split: train
fewshot_config:
  sampler: first_n
num_fewshot: 2
doc_to_text: "Q: {{question}}\nA:"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\n"]
  max_gen_toks: 8
metric_list:
  - metric: exact_match
`}, {Name: "custom", TaskFile: "tasks/arith.yaml"}}

	res, err := run(t, context.Background(), s, nil)

	if err != nil {
		t.Fatal(err)
	}
	all := readSamples(t, s)
	first := all[results.Key("my_arithmetic", 0)]
	if want := "Q: 1+1\nA: 2\n\nQ: 2+3\nA: 5\n\nQ: 2+2\nA:"; first.Prompt != want || first.Target != "4" {
		t.Errorf("document 0: prompt %q, target %q; want %q, 4", first.Prompt, first.Target, want)
	}
	if n := res.NSamples["my_arithmetic"]; n.Original != 5 || n.Effective != 5 {
		t.Errorf("n-samples %+v; want the five", n)
	}
	if _, ok := res.Results["my_arithmetic"]["exact_match,none"]; !ok || res.Summary.Samples != 7 {
		t.Errorf("results %v, %d samples; want exact_match of 5 + 2", res.Results["my_arithmetic"], res.Summary.Samples)
	}
	if sums := all[results.Key("my_sums", 1)]; sums.Prompt != "Q: 2+3\nA:" || sums.Target != "5" {
		t.Errorf("the task file's document 1: prompt %q, target %q", sums.Prompt, sums.Target)
	}
}

// A template that fails on one document fails the run for good, naming the task and
// the document; a task file that does not read fails it naming the field.
func TestAUserTaskThatFailsOnADocumentFailsTheRunNamingIt(t *testing.T) {
	s := spec(t, testserver.Ollama(t, 0), 2)
	s.DataDir = userData(t)
	s.Datasets = []evalflow.DatasetSpec{{Name: "custom", TaskYAML: "task: shouting\ndataset_path: json\n" +
		"dataset_kwargs:\n  data_files:\n    test: arith/test.jsonl\noutput_type: generate_until\ntest_split: test\n" +
		"doc_to_text: '{{question.upper()}}'\ndoc_to_target: '{{answer}}'\n"}}
	_, err := Docs(s)
	if err == nil || !strings.Contains(err.Error(), "task shouting: document 2") || !errors.Is(err, evalflow.ErrPermanent) {
		t.Errorf("err = %v; want document 2 named, for good", err)
	}
	s.Datasets[0].TaskYAML = strings.Replace(s.Datasets[0].TaskYAML, "test: arith/test.jsonl", "test: arith/missing.jsonl", 1)
	if _, err := Docs(s); err == nil || !strings.Contains(err.Error(), "missing.jsonl") {
		t.Errorf("a missing data file: err = %v", err)
	}
}

// HumanEval scored by running each program in the sandbox (EndpointAnsweringFixedCompletions):
// the canonical solutions of the first problems score pass@1 = 1.0; hostile
// completions score 0, each sample saying why, and the run succeeds.
func TestHumanEvalScoresByRunningTheCode_EndpointAnsweringFixedCompletions(t *testing.T) {
	s := spec(t, "http://unused", 2)
	s.Datasets = []evalflow.DatasetSpec{{Name: "humaneval", Limit: 4}}
	canonical, hostile := map[string]string{}, map[string]string{}
	attacks := []string{"    while True:\n        pass\n", "    import os\n    while True:\n        os.fork()\n",
		"    x = []\n    while True:\n        x.append(' ' * 10**7)\n", "    import os\n    return os.environ['EVALFLOW_API_KEY']\n"}
	for i, r := range humanEval(t, 4) {
		canonical[r["prompt"].(string)] = r["canonical_solution"].(string)
		hostile[r["prompt"].(string)] = attacks[i]
	}
	for name, c := range map[string]struct {
		answers map[string]string
		pass    float64
	}{"canonical": {canonical, 1}, "hostile": {hostile, 0}} {
		t.Run(name, func(t *testing.T) {
			s := spec(t, testserver.AnsweringEndpoint(t, "", c.answers), 2)
			s.Datasets = []evalflow.DatasetSpec{{Name: "humaneval", Limit: 4}}
			res, err := run(t, context.Background(), s, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Results["humaneval"]["pass@1,create_test"]; got != c.pass {
				t.Errorf("pass@1 %v; want %v", got, c.pass)
			}
			for k, x := range readSamples(t, s) {
				if o := x.Filters[0].Outcome; (c.pass == 1) != (o == "passed") || o == "" {
					t.Errorf("%s: outcome %q", k, o)
				}
			}
		})
	}
	docs, err := Docs(s)
	if err != nil {
		t.Fatal(err)
	}
	bare := &Engine{Client: &openai.Client{BaseURL: "http://127.0.0.1:1/v1"}, Spec: s}
	if _, err := bare.Run(context.Background(), docs); err == nil || !errors.Is(err, evalflow.ErrPermanent) || !strings.Contains(err.Error(), "no sandbox") {
		t.Errorf("a runner without a sandbox: %v", err)
	}
}

// The sandbox runs a program while the workers ask for the next answers, so a sandbox
// that runs programs in batches (a pod's) gets them together: with one worker, the
// real sandbox below (held until four programs wait) is handed all four at once.
func TestTheSandboxGetsProgramsTogetherWhileWorkersGoOn(t *testing.T) {
	answers := map[string]string{}
	for _, r := range humanEval(t, 4) {
		answers[r["prompt"].(string)] = r["canonical_solution"].(string)
	}
	s := spec(t, testserver.AnsweringEndpoint(t, "", answers), 1)
	s.Datasets = []evalflow.DatasetSpec{{Name: "humaneval", Limit: 4}}
	docs, err := Docs(s)
	if err != nil {
		t.Fatal(err)
	}
	local, err := sandbox.NewLocal(sandbox.DefaultLimits, 4)
	if err != nil {
		t.Fatal(err)
	}
	held := &holding{Local: local, want: 4, all: make(chan struct{})}
	e := &Engine{Client: &openai.Client{BaseURL: evalflow.APIBase(s.Model.URL)}, Spec: s, Sandbox: held}
	res, err := e.Run(context.Background(), docs)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Results["humaneval"]["pass@1,create_test"]; got != 1.0 || !held.together.Load() {
		t.Errorf("pass@1 %v, the four programs together: %v", got, held.together.Load())
	}
}

// holding is the local sandbox holding each program until want are waiting at once
// (or 5 s).
type holding struct {
	*sandbox.Local
	want     int64
	waiting  atomic.Int64
	together atomic.Bool
	all      chan struct{}
}

func (h *holding) Run(ctx context.Context, program string) (sandbox.Result, error) {
	if h.waiting.Add(1) == h.want {
		h.together.Store(true)
		close(h.all)
	}
	select {
	case <-h.all:
	case <-time.After(5 * time.Second):
		h.waiting.Add(-1)
	}
	return h.Local.Run(ctx, program)
}

// humanEval is HumanEval's first n problems.
func humanEval(t *testing.T, n int) []map[string]any {
	t.Helper()
	c, _ := tasks.Shipped()
	rows, err := source.Read(spec(t, "http://unused", 1).DataDir, c.Task("humaneval"))
	if err != nil {
		t.Fatal(err)
	}
	return rows.Scored[:n]
}

// humaneval_64 (EndpointAnsweringInTurn): each problem asked 64 times with lm-eval's
// sampling (temperature 0.2, top_p 0.95, the seed), each completion's program run,
// and pass@k estimated as HF's code_eval does, 1 - C(n-c, k)/C(n, k): a problem whose
// every fourth completion is right, and one always right.
func TestHumanEval64EstimatesPassAtKFromItsRepeats_EndpointAnsweringInTurn(t *testing.T) {
	problems := humanEval(t, 2)
	answers := map[string][]string{
		problems[0]["prompt"].(string): {problems[0]["canonical_solution"].(string), "    return None\n", "    pass\n", "    return 0\n"},
		problems[1]["prompt"].(string): {problems[1]["canonical_solution"].(string)},
	}
	var mu sync.Mutex
	var requests []map[string]any
	s := spec(t, testserver.AnsweringInTurn(t, "", answers, func(b map[string]any) { mu.Lock(); requests = append(requests, b); mu.Unlock() }), 1)
	s.Datasets = []evalflow.DatasetSpec{{Name: "humaneval_64", Limit: 2}}
	res, err := run(t, context.Background(), s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(requests) != 128 {
		t.Errorf("%d requests; want 64 a problem", len(requests))
	}
	for _, r := range requests {
		if r["temperature"] != 0.2 || r["top_p"] != 0.95 || r["seed"] == nil {
			t.Fatalf("a request %v; want temperature 0.2, top_p 0.95 and the seed", r)
		}
	}
	for _, k := range []int64{2, 8, 16, 32, 64} {
		want := (1 - binomialRatio(64-16, 64, k) + 1) / 2 // 16 of 64 right, and 64 of 64
		if got := res.Results["humaneval_64"][fmt.Sprintf("pass@%d,create_test", k)]; math.Abs(got.(float64)-want) > 1e-12 {
			t.Errorf("pass@%d %v; want %v", k, got, want)
		}
	}
	outcomes := map[string]bool{}
	for _, x := range readSamples(t, s) {
		outcomes[x.Filters[0].Outcome] = len(x.Responses) == 64 && len(x.Filters[0].Outcomes) == 64
	}
	if !outcomes["16 of 64 passed"] || !outcomes["64 of 64 passed"] {
		t.Errorf("samples' outcomes %v", outcomes)
	}
}

// binomialRatio is C(a, k) / C(n, k), computed exactly.
func binomialRatio(a, n, k int64) float64 {
	r, _ := new(big.Rat).SetFrac(new(big.Int).Binomial(a, k), new(big.Int).Binomial(n, k)).Float64()
	return r
}
