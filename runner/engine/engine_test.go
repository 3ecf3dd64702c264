package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evalflow/evalflow/runner/openai"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/testserver"
)

// proxy is a real reverse proxy in front of the model server that counts the samples
// asked (by prompt) and can refuse some requests: every failEvery-th request is
// answered 500 or 429, as a flaky endpoint would.
type proxy struct {
	*httptest.Server
	requests  atomic.Int64
	failed    atomic.Int64
	failEvery int64
	// failIf refuses (500) every request whose prompt it matches.
	failIf func(prompt string) bool
	mu     sync.Mutex
	asked  map[string]int
	times  []time.Time
}

func newProxy(t *testing.T, target string, failEvery int64) *proxy {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // requests cut by an interruption are expected
	p := &proxy{failEvery: failEvery, asked: map[string]int{}}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := p.requests.Add(1)
		if p.failEvery > 0 && n%p.failEvery == 0 {
			p.failed.Add(1)
			if n%(2*p.failEvery) == 0 {
				http.Error(w, "slow down", http.StatusTooManyRequests)
			} else {
				http.Error(w, "upstream hiccup", http.StatusInternalServerError)
			}
			return
		}
		var body struct {
			Messages []openai.Message `json:"messages"`
		}
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		if len(body.Messages) > 0 {
			if p.failIf != nil && p.failIf(body.Messages[0].Content) {
				p.failed.Add(1)
				http.Error(w, "this one always fails", http.StatusInternalServerError)
				return
			}
			p.mu.Lock()
			p.asked[body.Messages[0].Content]++
			p.times = append(p.times, time.Now())
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// reset forgets what was asked.
func (p *proxy) reset() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.asked
	p.asked = map[string]int{}
	return old
}

func spec(t *testing.T, model string, concurrency int) evalflow.JobSpec {
	zero := 0
	return evalflow.JobSpec{ID: "job", RunID: "run", Engine: "evalflow", Concurrency: concurrency,
		Model:     evalflow.ModelSpec{Name: testserver.Model, URL: model},
		DataDir:   filepath.Join(testserver.SharedDir(t), "datasets"),
		OutputDir: t.TempDir(),
		Benchmarks: []evalflow.DatasetSpec{
			{Name: "mmlu", Subjects: []string{"anatomy", "marketing"}, Limit: 4, NumFewshot: &zero},
			{Name: "gsm8k", Limit: 3, NumFewshot: &[]int{2}[0]},
		}}
}

func run(t *testing.T, ctx context.Context, s evalflow.JobSpec, report func(context.Context, Progress)) (*evalflow.Results, error) {
	t.Helper()
	docs, err := Docs(s)
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{Client: &openai.Client{BaseURL: evalflow.APIBase(s.Model.URL), MaxTries: 3,
		Limiter: NewRequestLimiter(s.Options.RequestsPerSecond)},
		Spec: s, Report: report, MaxTokens: 24, ReportEvery: time.Nanosecond,
		Tokens: NewTokenLimiter(s.Options.TokensPerMinute)}
	return e.Run(ctx, docs)
}

func samples(t *testing.T, s evalflow.JobSpec) []byte {
	b, err := os.ReadFile(filepath.Join(s.OutputDir, evalflow.SamplesFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRunnerScoresMMLUAndGSM8KAsLMEvalReportsThem(t *testing.T) {
	model := testserver.Ollama(t, 4)
	s := spec(t, model, 4)

	res, err := run(t, context.Background(), s, nil)

	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.Samples != 11 {
		t.Fatalf("%d samples; want 8 MMLU + 3 GSM8K", res.Summary.Samples)
	}
	for task, keys := range map[string][]string{
		"mmlu_anatomy": {"exact_match,none", "exact_match_stderr,none"},
		"mmlu":         {"exact_match,none"},
		"gsm8k_cot":    {"exact_match,strict-match", "exact_match,flexible-extract", "exact_match_stderr,strict-match"},
	} {
		for _, k := range keys {
			if _, ok := res.Results[task][k]; !ok {
				t.Errorf("results[%s] lacks %s: %v", task, k, res.Results[task])
			}
		}
	}
	if _, ok := res.Groups["mmlu"]["exact_match,none"]; !ok || res.NSamples["gsm8k_cot"].Effective != 3 {
		t.Errorf("groups %v, n-samples %v", res.Groups, res.NSamples)
	}
	var written evalflow.Results
	b, _ := os.ReadFile(filepath.Join(s.OutputDir, evalflow.ResultsFile))
	if err := json.Unmarshal(b, &written); err != nil || written.Summary.Samples != 11 {
		t.Fatalf("results.json: %v %+v", err, written.Summary)
	}
	lines := strings.Split(strings.TrimSpace(string(samples(t, s))), "\n")
	var last Sample
	json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	if len(lines) != 11 || last.Task != "gsm8k_cot" || len(last.Filters) != 2 || last.Usage.CompletionTokens == 0 {
		t.Fatalf("samples.jsonl: %d lines, last %+v", len(lines), last)
	}
}

func TestTwoRunsGiveIdenticalSamplesWhateverTheConcurrency(t *testing.T) {
	model := testserver.Ollama(t, 4)
	a, b := spec(t, model, 1), spec(t, model, 8)

	if _, err := run(t, context.Background(), a, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}

	if string(samples(t, a)) != string(samples(t, b)) {
		t.Fatal("samples.jsonl differs between two runs at temperature 0")
	}
}

func TestAResumedRunAsksNoSampleTwiceAndMatchesAnUninterruptedOne(t *testing.T) {
	model := testserver.Ollama(t, 4)
	clean := spec(t, model, 2)
	if _, err := run(t, context.Background(), clean, nil); err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, model, 0)
	s := spec(t, p.URL, 2)

	// Interrupt the first attempt once some samples are done, as a killed pod would be.
	ctx, cancel := context.WithCancel(context.Background())
	_, err := run(t, ctx, s, func(_ context.Context, pr Progress) {
		if pr.Done >= 4 {
			cancel()
		}
	})
	if err == nil {
		t.Fatal("the interrupted run did not stop")
	}
	p.reset()
	checkpointed, _, _ := readCheckpoint(filepath.Join(s.OutputDir, CheckpointFile))
	_, err = run(t, context.Background(), s, nil)

	if err != nil {
		t.Fatal(err)
	}
	if len(checkpointed) == 0 || len(checkpointed) >= 11 {
		t.Fatalf("%d samples checkpointed by the interrupted run; want some, not all", len(checkpointed))
	}
	second := p.reset()
	for _, done := range checkpointed {
		if second[done.Prompt] > 0 {
			t.Fatalf("a sample finished before the interruption was asked again: %.60q", done.Prompt)
		}
	}
	if len(second) != 11-len(checkpointed) {
		t.Fatalf("the resumed run asked %d samples; want the %d not yet done", len(second), 11-len(checkpointed))
	}
	if string(samples(t, s)) != string(samples(t, clean)) {
		t.Fatal("the resumed run's samples differ from an uninterrupted run's")
	}
}

func TestAFlakyEndpointYieldsTheSameScoresAsACleanOne(t *testing.T) {
	model := testserver.Ollama(t, 4)
	clean := spec(t, model, 4)
	if _, err := run(t, context.Background(), clean, nil); err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, model, 5) // every 5th request fails: 20 %, half 500, half 429
	flaky := spec(t, p.URL, 4)

	res, err := run(t, context.Background(), flaky, nil)

	if err != nil {
		t.Fatal(err)
	}
	if p.failed.Load() == 0 {
		t.Fatal("the proxy failed nothing: the test proves nothing")
	}
	if string(samples(t, flaky)) != string(samples(t, clean)) {
		t.Fatalf("scores differ under faults (%d refused of %d)", p.failed.Load(), p.requests.Load())
	}
	if res.Summary.Samples != 11 {
		t.Fatalf("%d samples", res.Summary.Samples)
	}
}

func mmluOnly(t *testing.T, model, method string) evalflow.JobSpec {
	s := spec(t, model, 2)
	zero := 0
	s.Benchmarks = []evalflow.DatasetSpec{{Name: "mmlu", Subjects: []string{"anatomy"}, Limit: 4, NumFewshot: &zero, Method: method}}
	return s
}

func TestMMLUByNextTokenLogprobs(t *testing.T) {
	model := testserver.Ollama(t, 4)
	s := mmluOnly(t, model, "logprobs")

	res, err := run(t, context.Background(), s, nil)

	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Results["mmlu_anatomy"]["acc,none"]; !ok || res.Summary.Metric != "acc" {
		t.Fatalf("results %v, metric %q; want acc,none", res.Results["mmlu_anatomy"], res.Summary.Metric)
	}
	var first Sample
	json.Unmarshal([]byte(strings.SplitN(string(samples(t, s)), "\n", 2)[0]), &first)
	if len(first.Logprobs) != 4 || first.Metric != "acc" {
		t.Fatalf("sample %+v", first)
	}
	// The tiny model writes " A" as " " then "A": the letters are scored after the
	// space it generates, so most choices get a log-probability, not just the few
	// among the first token's alternatives.
	scored := 0
	for _, line := range strings.Split(strings.TrimSpace(string(samples(t, s))), "\n") {
		var x Sample
		if err := json.Unmarshal([]byte(line), &x); err != nil {
			t.Fatal(err)
		}
		for _, lp := range x.Logprobs {
			if lp != nil {
				scored++
			}
		}
	}
	if scored < 12 {
		t.Errorf("%d of 16 choices have a log-probability; want most", scored)
	}
}

func TestAMethodTheEndpointCannotDoFailsBeforeAnySampleIsSpent(t *testing.T) {
	model := testserver.Ollama(t, 0)
	p := newProxy(t, model, 0)
	s := mmluOnly(t, p.URL, "loglikelihood") // ollama ignores echo on /v1/completions

	_, err := run(t, context.Background(), s, nil)

	if err == nil || !strings.Contains(err.Error(), `method "loglikelihood"`) || !strings.Contains(err.Error(), "echo") {
		t.Fatalf("err = %v; want a clear refusal of the method", err)
	}
	if n := p.requests.Load(); n != 1 {
		t.Fatalf("%d requests; want only the probe", n)
	}
	if _, err := os.Stat(filepath.Join(s.OutputDir, evalflow.SamplesFile)); !os.IsNotExist(err) {
		t.Fatal("samples were written: a run of zeros")
	}
}

func TestFailuresPastTheToleratedRateFailTheRunSayingHowMany(t *testing.T) {
	model := testserver.Ollama(t, 4)
	p := newProxy(t, model, 0)
	p.failIf = func(prompt string) bool { return strings.Contains(prompt, "Janet") } // GSM8K's first question

	strict := spec(t, p.URL, 2)
	_, errStrict := run(t, context.Background(), strict, nil)
	tolerant := spec(t, p.URL, 2)
	tolerant.Options.MaxErrorRate = 0.1
	res, errTolerant := run(t, context.Background(), tolerant, nil)

	if errStrict == nil || !strings.Contains(errStrict.Error(), "1 samples failed after retries") || !strings.Contains(errStrict.Error(), "gsm8k_cot/0") {
		t.Fatalf("with no tolerance: err = %v; want the count and the failing sample", errStrict)
	}
	if errTolerant != nil {
		t.Fatal(errTolerant)
	}
	if res.Summary.Errors != 1 || res.Summary.Samples != 10 || res.NSamples["gsm8k_cot"].Effective != 2 {
		t.Fatalf("within tolerance: errors %d, samples %d, n-samples %v", res.Summary.Errors, res.Summary.Samples, res.NSamples["gsm8k_cot"])
	}
}

func TestTheRequestRateCapHolds(t *testing.T) {
	model := testserver.Ollama(t, 4)
	p := newProxy(t, model, 0)
	s := spec(t, p.URL, 8)
	s.Options.RequestsPerSecond = 4

	if _, err := run(t, context.Background(), s, nil); err != nil {
		t.Fatal(err)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.times {
		n := 0
		for _, at := range p.times[i:] {
			if at.Sub(p.times[i]) < time.Second {
				n++
			}
		}
		if n > 4+1 { // the rate plus the limiter's burst of one
			t.Fatalf("%d requests within one second; the cap is 4/s", n)
		}
	}
}

func TestTokensAreCountedAndPriced(t *testing.T) {
	model := testserver.Ollama(t, 4)
	s := spec(t, model, 4)
	s.Options.CostPer1KPromptTokens, s.Options.CostPer1KCompletionTokens = 0.5, 2

	res, err := run(t, context.Background(), s, nil)

	if err != nil {
		t.Fatal(err)
	}
	u := res.Summary.Usage
	want := float64(u.PromptTokens)/1000*0.5 + float64(u.CompletionTokens)/1000*2
	if u.PromptTokens == 0 || u.CompletionTokens == 0 || math.Abs(res.Summary.Cost-want) > 1e-9 {
		t.Fatalf("usage %+v cost %v; want tokens counted and cost %v", u, res.Summary.Cost, want)
	}
}

func TestACustomDatasetRunsEndToEnd(t *testing.T) {
	model := testserver.Ollama(t, 4)
	s := spec(t, model, 2)
	s.Benchmarks = []evalflow.DatasetSpec{{Name: "custom", Task: "stories", Samples: []evalflow.CustomSample{
		{Prompt: "Once upon a time", Target: "there", Metric: "includes"},
		{Prompt: "The cat sat on the", Target: "mat"},
	}}}

	res, err := run(t, context.Background(), s, nil)

	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Results["stories"]["includes,none"]; !ok || res.NSamples["stories"].Effective != 2 {
		t.Fatalf("results %v, n-samples %v", res.Results, res.NSamples)
	}
	if _, ok := res.Results["stories"]["exact_match,none"]; !ok || res.Summary.Samples != 2 {
		t.Fatalf("results %v, %d samples", res.Results, res.Summary.Samples)
	}
}

func TestTruthfulQAIsRefusedByAnEndpointWithoutEcho(t *testing.T) {
	model := testserver.Ollama(t, 0)
	p := newProxy(t, model, 0)
	s := spec(t, p.URL, 2)
	s.Benchmarks = []evalflow.DatasetSpec{{Name: "truthfulqa", Limit: 3}}

	_, err := run(t, context.Background(), s, nil)

	if err == nil || !strings.Contains(err.Error(), "truthfulqa_mc1") || !strings.Contains(err.Error(), `"loglikelihood"`) {
		t.Fatalf("err = %v; want the method refused before any sample", err)
	}
}

func TestTruthfulQAGenerationIsScoredByBLEUAndROUGE(t *testing.T) {
	model := testserver.Ollama(t, 4)
	s := spec(t, model, 4)
	s.Benchmarks = []evalflow.DatasetSpec{{Name: "truthfulqa", Variant: "gen", Limit: 3, MaxTokens: 24}}

	res, err := run(t, context.Background(), s, nil)

	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"bleu", "rouge1", "rouge2", "rougeL"} {
		for _, k := range []string{"_max", "_acc", "_diff"} {
			if _, ok := res.Results["truthfulqa_gen"][m+k+",none"]; !ok {
				t.Errorf("results lack %s%s,none: %v", m, k, res.Results["truthfulqa_gen"])
			}
		}
	}
	if res.Summary.Metrics["truthfulqa_gen"] != "bleu_max" || res.NSamples["truthfulqa_gen"].Effective != 3 {
		t.Fatalf("summary %+v, n-samples %v", res.Summary, res.NSamples)
	}
}

func TestConcurrencyIsSizedToTheEndpointWhenNotGiven(t *testing.T) {
	model := testserver.Ollama(t, 4)
	fixed := spec(t, model, 4)
	if _, err := run(t, context.Background(), fixed, nil); err != nil {
		t.Fatal(err)
	}
	auto := spec(t, model, 0)

	res, err := run(t, context.Background(), auto, nil)

	if err != nil {
		t.Fatal(err)
	}
	chosen, _ := res.Config["concurrency"].(int)
	if chosen < 1 || chosen > MaxAutoConcurrency {
		t.Fatalf("chosen concurrency %v", res.Config["concurrency"])
	}
	if string(samples(t, auto)) != string(samples(t, fixed)) {
		t.Fatal("a sized run's samples differ from a fixed one's")
	}
	t.Logf("sized to %d in flight", chosen)
}

func TestACheckpointLineCutShortIsDroppedOnResume(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, CheckpointFile)
	whole := `{"task":"mmlu_anatomy","doc_id":0}` + "\n"
	os.WriteFile(path, []byte(whole+`{"task":"mmlu_anat`), 0o644)

	done, good, err := readCheckpoint(path)

	if err != nil || len(done) != 1 || good != int64(len(whole)) {
		t.Fatalf("done %d, good %d, %v; want 1 sample and the offset after it", len(done), good, err)
	}
}

// readSamples parses samples.jsonl by task/doc.
func readSamples(t *testing.T, s evalflow.JobSpec) map[string]Sample {
	t.Helper()
	out := map[string]Sample{}
	for _, line := range strings.Split(strings.TrimSpace(string(samples(t, s))), "\n") {
		var x Sample
		if err := json.Unmarshal([]byte(line), &x); err != nil {
			t.Fatal(err)
		}
		out[x.key()] = x
	}
	return out
}

// The loglikelihood of " A" after an MMLU prompt, scored from the echoed prompt by one
// server (llama-echo: llama.cpp on the GGUF), must be what another server (ollama, its
// own engine on the same GGUF) gives token by token when it generates: the tiny model's
// tokenizer splits " A" into " " and "A", so log p(" ") + log p("A" | " ").
func TestMMLULoglikelihoodMatchesAnotherServerTokenByToken(t *testing.T) {
	echo, ollama := testserver.LlamaEcho(t), testserver.Ollama(t, 0)
	s := mmluOnly(t, echo, "loglikelihood")
	s.Benchmarks[0].Limit = 8

	res, err := run(t, context.Background(), s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.Metric != "acc" || res.Summary.Samples != 8 {
		t.Fatalf("metric %q, %d samples", res.Summary.Metric, res.Summary.Samples)
	}
	other := &openai.Client{BaseURL: evalflow.APIBase(ollama), MaxTries: 3}
	compared := 0
	for k, x := range readSamples(t, s) {
		if len(x.Logprobs) != 4 {
			t.Fatalf("%s: %d choice log-likelihoods, want 4", k, len(x.Logprobs))
		}
		resp, err := other.Chat(context.Background(), openai.ChatRequest{Model: testserver.Model,
			Messages: []openai.Message{{Role: "user", Content: x.Prompt}}, MaxTokens: 2, Logprobs: true, TopLogprobs: 20})
		if err != nil {
			t.Fatal(err)
		}
		steps := resp.Choices[0].Logprobs.Content
		if len(steps) < 2 || steps[0].Token != " " {
			continue // the greedy path does not go through " ": nothing to compare
		}
		for i, letter := range []string{"A", "B", "C", "D"} {
			for _, alt := range steps[1].TopLogprobs {
				if alt.Token != letter {
					continue
				}
				want := steps[0].Logprob + alt.Logprob
				if x.Logprobs[i] == nil {
					t.Fatalf("%s: no loglikelihood for %q", k, " "+letter)
				}
				if got := *x.Logprobs[i]; math.Abs(got-want) > 0.02 {
					t.Errorf("%s: loglikelihood of %q is %.4f; ollama gives %.4f (%.4f + %.4f)", k, " "+letter, got, want, steps[0].Logprob, alt.Logprob)
				}
				compared++
			}
		}
	}
	if compared < 8 {
		t.Fatalf("only %d log-likelihoods could be compared: the test proves little", compared)
	}
	t.Logf("%d log-likelihoods agree with ollama's to 0.02", compared)
}

func TestTruthfulQAMultipleChoiceByLoglikelihood(t *testing.T) {
	s := spec(t, testserver.LlamaEcho(t), 2)
	s.Benchmarks = []evalflow.DatasetSpec{{Name: "truthfulqa", Limit: 5}}

	res, err := run(t, context.Background(), s, nil)

	if err != nil {
		t.Fatal(err)
	}
	for _, task := range []string{"truthfulqa_mc1", "truthfulqa_mc2"} {
		acc, ok := res.Results[task]["acc,none"].(float64)
		if !ok || acc < 0 || acc > 1 {
			t.Fatalf("%s: acc %v in %v", task, res.Results[task]["acc,none"], res.Results[task])
		}
	}
	all := readSamples(t, s)
	if len(all) != 10 {
		t.Fatalf("%d samples, want 5 per task", len(all))
	}
	for k, x := range all {
		if len(x.Logprobs) < 2 {
			t.Fatalf("%s: %d choices scored", k, len(x.Logprobs))
		}
		distinct := map[float64]bool{}
		for i, lp := range x.Logprobs {
			if lp == nil || *lp >= 0 {
				t.Fatalf("%s: choice %d log-likelihood %v", k, i, lp)
			}
			distinct[*lp] = true
		}
		if len(distinct) < 2 {
			t.Errorf("%s: every choice has the same log-likelihood: the continuations were not scored", k)
		}
		if x.Task == "truthfulqa_mc1" && x.Correct != (x.Extracted == x.Target) {
			t.Errorf("%s: correct=%v, picked %q, best answer %q", k, x.Correct, x.Extracted, x.Target)
		}
	}
}

func TestNextTokenLogprobAddsTheAnswerAfterAGeneratedSpace(t *testing.T) {
	tok := func(s string, lp float64) openai.TokenLogprob { return openai.TokenLogprob{Token: s, Logprob: lp} }
	space := []openai.Step{
		{TokenLogprob: tok(" ", -0.1), TopLogprobs: []openai.TokenLogprob{tok(" ", -0.1), tok(" B", -3), tok("A", -4)}},
		{TokenLogprob: tok("A", -0.5), TopLogprobs: []openai.TokenLogprob{tok("A", -0.5), tok("B", -1.5)}},
	}
	both := func(a, b float64) float64 { return math.Log(math.Exp(a) + math.Exp(b)) }
	for answer, want := range map[string]float64{"A": both(-4, -0.6), "B": both(-3, -1.6), "C": math.Inf(-1)} {
		if got := nextTokenLogprob(space, answer); math.Abs(got-want) > 1e-12 && !(math.IsInf(want, -1) && math.IsInf(got, -1)) {
			t.Errorf("%s after a space: %v, want %v", answer, got, want)
		}
	}
	letter := []openai.Step{ // the first token is the answer: the next one is not an answer
		{TokenLogprob: tok(" A", -0.2), TopLogprobs: []openai.TokenLogprob{tok(" A", -0.2), tok(" B", -2)}},
		{TokenLogprob: tok(".", -0.1), TopLogprobs: []openai.TokenLogprob{tok("B", -0.3)}},
	}
	if got := nextTokenLogprob(letter, "B"); got != -2 {
		t.Errorf("B after a letter: %v, want -2 (the second step does not count)", got)
	}
}
