package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
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

// proxy is a real reverse proxy in front of the model server that counts the samples
// asked (by prompt) and can refuse some requests: every failEvery-th request is
// answered 500 or 429, as a flaky endpoint would.
type proxy struct {
	*httptest.Server
	requests  atomic.Int64
	failed    atomic.Int64
	failEvery int64
	// failIf refuses (500) every request whose question (last message) it matches.
	failIf func(question string) bool
	mu     sync.Mutex
	asked  map[string]int // by question: few-shot examples are turns before it
	opened map[string]int // by first message
	times  []time.Time
}

func newProxy(t *testing.T, target string, failEvery int64) *proxy {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // requests cut by an interruption are expected
	p := &proxy{failEvery: failEvery, asked: map[string]int{}, opened: map[string]int{}}
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
			question := body.Messages[len(body.Messages)-1].Content
			if p.failIf != nil && p.failIf(question) {
				p.failed.Add(1)
				http.Error(w, "this one always fails", http.StatusInternalServerError)
				return
			}
			p.mu.Lock()
			p.asked[question]++
			p.opened[body.Messages[0].Content]++
			p.times = append(p.times, time.Now())
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// reset forgets what was asked, giving the questions asked so far.
func (p *proxy) reset() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.asked
	p.asked, p.opened = map[string]int{}, map[string]int{}
	return old
}

// openings are the first messages asked, each with how often.
func (p *proxy) openings() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.opened)
}

func spec(t *testing.T, model string, concurrency int) evalflow.JobSpec {
	zero := 0
	return evalflow.JobSpec{ID: "job", RunID: "run", Engine: "evalflow", Concurrency: concurrency,
		Model:     evalflow.ModelSpec{Name: testserver.Model, URL: model},
		DataDir:   filepath.Join(testserver.SharedDir(t), "datasets"),
		OutputDir: t.TempDir(),
		Datasets: []evalflow.DatasetSpec{
			{Name: "mmlu_generative", Subjects: []string{"anatomy", "marketing"}, Limit: 4, NumFewshot: &zero},
			{Name: "gsm8k_cot", Limit: 3, NumFewshot: &[]int{2}[0]},
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
	if slices.ContainsFunc(docs, func(d task.Doc) bool { return d.Program != nil }) {
		sb, err := sandbox.NewLocal(sandbox.DefaultLimits, 2)
		if err != nil {
			t.Fatal(err)
		}
		e.Sandbox = sb
	}
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
		"mmlu_anatomy_generative": {"exact_match,get_response", "exact_match_stderr,get_response"},
		"mmlu_generative":         {"exact_match,get_response"},
		"stem":                    {"exact_match,get_response"}, // its anatomy
		"other":                   {"exact_match,get_response"}, // its marketing
		"gsm8k_cot":               {"exact_match,strict-match", "exact_match,flexible-extract", "exact_match_stderr,strict-match"},
	} {
		for _, k := range keys {
			if _, ok := res.Results[task][k]; !ok {
				t.Errorf("results[%s] lacks %s: %v", task, k, res.Results[task])
			}
		}
	}
	if g := res.Groups["mmlu_generative"]; g["sample_len"] != 8 || g["alias"] != "mmlu (generative)" || res.Groups["stem"]["sample_len"] != 4 || res.NSamples["gsm8k_cot"].Effective != 3 {
		t.Errorf("groups %v, n-samples %v", res.Groups, res.NSamples)
	}
	var written evalflow.Results
	b, _ := os.ReadFile(filepath.Join(s.OutputDir, evalflow.ResultsFile))
	if err := json.Unmarshal(b, &written); err != nil || written.Summary.Samples != 11 {
		t.Fatalf("results.json: %v %+v", err, written.Summary)
	}
	lines := strings.Split(strings.TrimSpace(string(samples(t, s))), "\n")
	var last results.Sample
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
		for question := range second {
			if strings.HasSuffix(done.Prompt, question) {
				t.Fatalf("a sample finished before the interruption was asked again: %.60q", question)
			}
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

// mmluOnly asks 4 questions of MMLU's anatomy: lm-eval's mmlu_anatomy (each letter's
// log-likelihood) or mmlu_anatomy_generative (the letter generated) by their task
// files; or, by method (logprobs), as a custom dataset of the same prompts and letters.
func mmluOnly(t *testing.T, model, method string) evalflow.JobSpec {
	s := spec(t, model, 2)
	switch method {
	case "loglikelihood":
		s.Datasets = []evalflow.DatasetSpec{{Name: "mmlu_anatomy", Limit: 4}}
	case "generate":
		s.Datasets = []evalflow.DatasetSpec{{Name: "mmlu_anatomy_generative", Limit: 4}}
	default:
		s.Datasets = []evalflow.DatasetSpec{mmluAsCustom(t, s.DataDir, "anatomy", 4, method)}
	}
	return s
}

// mmluAsCustom is a subject's first n questions as a custom dataset scored by method:
// the context lm-eval's mmlu_<subject> asks (0-shot), the letters as choices.
func mmluAsCustom(t *testing.T, dataDir, subject string, n int, method string) evalflow.DatasetSpec {
	t.Helper()
	c, err := tasks.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	tk := c.Task("mmlu_" + subject)
	rows, err := source.Read(dataDir, tk)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := tk.Docs(rows.Scored, nil, false, task.Select(len(rows.Scored), float64(n), nil))
	if err != nil {
		t.Fatal(err)
	}
	d := evalflow.DatasetSpec{Name: "custom", Task: "mmlu_" + subject, Method: method}
	for _, doc := range docs {
		d.Samples = append(d.Samples, evalflow.CustomSample{Prompt: doc.Prompt, Choices: []string{"A", "B", "C", "D"}, Target: doc.Target})
	}
	return d
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
	var first results.Sample
	json.Unmarshal([]byte(strings.SplitN(string(samples(t, s)), "\n", 2)[0]), &first)
	if len(first.Logprobs) != 4 || first.Metric != "acc" {
		t.Fatalf("sample %+v", first)
	}
	// The tiny model writes " A" as " " then "A": the letters are scored after the
	// space it generates, so most choices get a log-probability, not just the few
	// among the first token's alternatives.
	scored := 0
	for _, line := range strings.Split(strings.TrimSpace(string(samples(t, s))), "\n") {
		var x results.Sample
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
	if onDisk := resultsFile(t, tolerant); onDisk.Summary.Errors != 1 {
		t.Fatalf("results.json says %d errors; want the failed sample counted in the file", onDisk.Summary.Errors)
	}
}

// resultsFile reads results.json as a user would.
func resultsFile(t *testing.T, s evalflow.JobSpec) evalflow.Results {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.OutputDir, evalflow.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	var res evalflow.Results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	return res
}

// results.json says what lm-eval's says of each task: its config, version and n-shot,
// and n-samples.original as the split's size before the limit.
func TestResultsJSONDescribesEachTaskAsLMEvalDoes(t *testing.T) {
	model := testserver.Ollama(t, 4)
	s := spec(t, model, 4) // mmlu anatomy and marketing zero-shot limit 4, gsm8k cot 2-shot limit 3
	s.Datasets[0].Limit = 2

	if _, err := run(t, context.Background(), s, nil); err != nil {
		t.Fatal(err)
	}

	res := resultsFile(t, s)
	if got := res.NSamples["mmlu_anatomy_generative"]; got.Original != 135 || got.Effective != 2 {
		t.Errorf("n-samples of mmlu_anatomy_generative %+v; want original 135 (the split), effective 2", got)
	}
	if got := res.NSamples["gsm8k_cot"]; got.Original != 1319 || got.Effective != 3 {
		t.Errorf("n-samples of gsm8k_cot %+v; want original 1319, effective 3", got)
	}
	if res.Versions["gsm8k_cot"] != 3.0 || res.Versions["mmlu_marketing_generative"] != 3.0 || res.NShot["gsm8k_cot"] != 2.0 || res.NShot["mmlu_anatomy_generative"] != 0.0 {
		t.Errorf("versions %v, n-shot %v", res.Versions, res.NShot)
	}
	var gsm task.Config
	if err := json.Unmarshal(res.Configs["gsm8k_cot"], &gsm); err != nil {
		t.Fatal(err)
	}
	if gsm.Task != "gsm8k_cot" || gsm.DatasetPath != "openai/gsm8k" || gsm.TestSplit != "test" || gsm.NumFewshot != 2 ||
		gsm.OutputType != "generate_until" || len(gsm.FilterList) != 2 || gsm.FilterList[1].Name != "flexible-extract" ||
		gsm.FilterList[1].Filter[0].GroupSelect != -1 || gsm.MetricList[0].Metric != "exact_match" ||
		gsm.GenerationKwargs == nil || gsm.GenerationKwargs.Until[0] != "Q:" || gsm.GenerationKwargs.MaxGenToks != 256 {
		t.Errorf("gsm8k_cot's config %s", res.Configs["gsm8k_cot"])
	}
	var anat task.Config
	json.Unmarshal(res.Configs["mmlu_anatomy_generative"], &anat)
	if anat.DatasetName != "anatomy" || anat.FewshotSplit != "dev" || !anat.MetricList[0].IgnoreCase || anat.Tag != "mmlu_stem_generative" || anat.TaskAlias != "anatomy" {
		t.Errorf("mmlu_anatomy_generative's config %s", res.Configs["mmlu_anatomy_generative"])
	}
	if len(res.Configs) != 3 {
		t.Errorf("configs of %d tasks; want 3", len(res.Configs))
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
	s.Datasets = []evalflow.DatasetSpec{{Name: "custom", Task: "stories", Samples: []evalflow.CustomSample{
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
	s.Datasets = []evalflow.DatasetSpec{{Name: "truthfulqa", Limit: 3}}

	_, err := run(t, context.Background(), s, nil)

	if err == nil || !strings.Contains(err.Error(), "truthfulqa_mc1") || !strings.Contains(err.Error(), `"loglikelihood"`) {
		t.Fatalf("err = %v; want the method refused before any sample", err)
	}
}

func TestTruthfulQAGenerationIsScoredByBLEUAndROUGE(t *testing.T) {
	model := testserver.Ollama(t, 4)
	s := spec(t, model, 4)
	s.Datasets = []evalflow.DatasetSpec{{Name: "truthfulqa_gen", Limit: 3, MaxTokens: 24}}

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

// slots is a gateway in front of the model server that serves at most n requests at
// once, each taking 200-400 ms (network and queueing, varied as a real endpoint's
// are), and answers a request it has seen before from its cache: an endpoint of
// capacity n, whose throughput grows with concurrency up to n and no further, however
// busy the machine's two cores are (the model server answers each distinct request
// once; a CPU-bound server's capacity could not be set otherwise).
func slots(t *testing.T, target string, n int) string {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	sem := make(chan struct{}, n)
	var mu sync.Mutex
	rnd := rand.New(rand.NewPCG(1, 2))
	cache := map[string][]byte{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sem <- struct{}{}
		defer func() { <-sem }()
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		latency := 200*time.Millisecond + time.Duration(rnd.Int64N(int64(200*time.Millisecond)))
		cached, ok := cache[string(body)]
		mu.Unlock()
		time.Sleep(latency)
		if ok {
			w.Header().Set("Content-Type", "application/json")
			w.Write(cached)
			return
		}
		rec := httptest.NewRecorder()
		r.Body = io.NopCloser(bytes.NewReader(body))
		rp.ServeHTTP(rec, r)
		if rec.Code == http.StatusOK {
			mu.Lock()
			cache[string(body)] = rec.Body.Bytes()
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// A run that names no concurrency sizes it to the endpoint: from the default (8), up
// while throughput grows, and back to the best level. Recorded in results.json's
// summary, it follows each endpoint's capacity: 8 where the endpoint takes 4 at once
// (more only queue there), 16 where it takes 16.
func TestConcurrencyIsSizedToTheEndpointsCapacity_CachingGateway(t *testing.T) {
	model := testserver.Ollama(t, 4)
	cases := []struct{ capacity, samples, want int }{{4, 160, evalflow.DefaultConcurrency}, {16, 480, 16}}
	for _, c := range cases {
		var prompts []evalflow.CustomSample
		for range c.samples {
			prompts = append(prompts, evalflow.CustomSample{Prompt: "Tell a story", Target: "x", MaxTokens: 1})
		}
		s := spec(t, slots(t, model, c.capacity), 0)
		s.Datasets = []evalflow.DatasetSpec{{Name: "custom", Samples: prompts}}
		docs, err := Docs(s)
		if err != nil {
			t.Fatal(err)
		}
		e := &Engine{Client: &openai.Client{BaseURL: evalflow.APIBase(s.Model.URL)}, Spec: s}

		if _, err := e.Run(context.Background(), docs); err != nil {
			t.Fatal(err)
		}

		if got := resultsFile(t, s).Summary.Concurrency; got != c.want {
			t.Errorf("an endpoint of capacity %d: sized to %d in flight, want %d", c.capacity, got, c.want)
		}
	}
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
func readSamples(t *testing.T, s evalflow.JobSpec) map[string]results.Sample {
	t.Helper()
	out := map[string]results.Sample{}
	for _, line := range strings.Split(strings.TrimSpace(string(samples(t, s))), "\n") {
		var x results.Sample
		if err := json.Unmarshal([]byte(line), &x); err != nil {
			t.Fatal(err)
		}
		out[x.Key()] = x
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
	s.Datasets[0].Limit = 8

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

// echoedLogprob asks the server to score prompt+continuation, and prompt alone, and
// sums the log-probabilities of the echoed tokens the continuation adds: a reckoning
// by token counts (usage.prompt_tokens) that does not read text_offset at all.
func echoedLogprob(t *testing.T, c *openai.Client, prompt, continuation string) float64 {
	t.Helper()
	echo := func(text string) *openai.CompletionResponse {
		resp, err := c.Complete(context.Background(), openai.CompletionRequest{Model: testserver.Model,
			Prompt: text, MaxTokens: 1, Echo: true, Logprobs: 1})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	whole, context := echo(prompt+continuation), echo(prompt)
	n, k := whole.Usage.PromptTokens, whole.Usage.PromptTokens-context.Usage.PromptTokens
	lps := whole.Choices[0].Logprobs.TokenLogprobs
	if k <= 0 || n > len(lps) {
		t.Fatalf("%q: %d prompt tokens, %d of them the continuation's, %d log-probabilities", continuation, n, k, len(lps))
	}
	sum := 0.0
	for _, lp := range lps[n-k : n] {
		sum += *lp
	}
	return sum
}

// Prompts and answers with ’ ° … in them, scored by a server that counts text_offset
// in characters as OpenAI and vLLM do (llama-echo): each choice's log-likelihood must
// be its own tokens', not a neighbour's or the generated token's.
func TestLoglikelihoodOfMultiByteTextIsTheContinuationsOwn(t *testing.T) {
	echo := testserver.LlamaEcho(t)
	seed := 1348 // draws five truthfulqa_mc2 questions, ’ and … among their answers
	s := spec(t, echo, 2)
	s.Datasets = []evalflow.DatasetSpec{
		{Name: "mmlu_conceptual_physics", Limit: 8}, // rows 0, 2, 3 (°), 6 (’)
		{Name: "truthfulqa_mc2", Limit: 5, Seed: &seed},
		{Name: "custom", Task: "cafe", Method: "loglikelihood", Samples: []evalflow.CustomSample{
			{Prompt: "Le café “noir” est", Choices: []string{"très bon", "froid"}, Target: "très bon"}}},
	}
	docs, err := Docs(s)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := run(t, context.Background(), s, nil); err != nil {
		t.Fatal(err)
	}

	client := &openai.Client{BaseURL: evalflow.APIBase(echo), MaxTries: 3}
	got, multiByte := readSamples(t, s), 0
	for _, d := range docs {
		x := got[results.Key(d.Task, d.Index)]
		if len(x.Logprobs) != len(d.Choices) {
			t.Fatalf("%s/%d: %d log-likelihoods for %d choices", d.Task, d.Index, len(x.Logprobs), len(d.Choices))
		}
		for i, c := range d.Choices {
			if !isASCII(d.Prompt + c) {
				multiByte++
			}
			want := echoedLogprob(t, client, d.Prompt, c)
			if x.Logprobs[i] == nil || math.Abs(*x.Logprobs[i]-want) > 1e-6 {
				t.Errorf("%s/%d choice %q: log-likelihood %s, its tokens give %.6f", d.Task, d.Index, c, lpText(x.Logprobs[i]), want)
			}
		}
	}
	if multiByte < 10 {
		t.Fatalf("only %d scored texts have multi-byte characters: the test proves little", multiByte)
	}
}

func lpText(lp *float64) string {
	if lp == nil {
		return "none"
	}
	return fmt.Sprintf("%.6f", *lp)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// recorder is a real reverse proxy in front of the model server that records each
// request's path and body; refuse, when set, answers 404 for that path, as an
// endpoint without it does.
type recorder struct {
	URL    string
	mu     sync.Mutex
	paths  []string
	bodies [][]byte
	times  []time.Time
}

func newRecorder(t *testing.T, target, refuse string) *recorder {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		rec.mu.Lock()
		rec.paths, rec.bodies, rec.times = append(rec.paths, r.URL.Path), append(rec.bodies, b), append(rec.times, time.Now())
		rec.mu.Unlock()
		if r.URL.Path == refuse {
			http.NotFound(w, r)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rec.URL = srv.URL
	return rec
}

// options.generation_api "completions" sends each generated prompt as it is to
// /v1/completions, with the task's stop sequences, as lm-eval's local-completions
// does: no chat template wraps it.
func TestCompletionsDeliverTheRawPrompt(t *testing.T) {
	rec := newRecorder(t, testserver.Ollama(t, 4), "")
	s := spec(t, rec.URL, 2)
	s.Datasets = []evalflow.DatasetSpec{{Name: "gsm8k", NumFewshot: new(0), Limit: 3}}
	s.Options.GenerationAPI = evalflow.GenerationCompletions
	docs, err := Docs(s)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := run(t, context.Background(), s, nil); err != nil {
		t.Fatal(err)
	}

	sent := map[string]bool{}
	for i, path := range rec.paths {
		var body openai.CompletionRequest
		if path != "/v1/completions" || json.Unmarshal(rec.bodies[i], &body) != nil {
			t.Fatalf("request %d went to %s: %s", i, path, rec.bodies[i])
		}
		if body.Temperature != 0 || strings.Join(body.Stop, "|") != "Question:|</s>|<|im_end|>" {
			t.Errorf("request %d: temperature %v, stop %q", i, body.Temperature, body.Stop)
		}
		sent[body.Prompt] = true
	}
	for _, d := range docs {
		if !sent[d.Prompt] {
			t.Errorf("gsm8k/%d's prompt was not sent as it is", d.Index)
		}
	}
	if cfg := resultsFile(t, s).Config; cfg["model"] != "local-completions" || cfg["apply_chat_template"] != false || cfg["fewshot_as_multiturn"] != false {
		t.Errorf("config %v; want local-completions, no chat template, no multi-turn", cfg)
	}
	for k, x := range readSamples(t, s) {
		if x.Response == "" || x.Usage.CompletionTokens == 0 {
			t.Errorf("%s: response %q, usage %+v", k, x.Response, x.Usage)
		}
	}
}

func TestAnEndpointWithoutCompletionsIsRefusedBeforeAnySample(t *testing.T) {
	rec := newRecorder(t, testserver.Ollama(t, 0), "/v1/completions")
	s := spec(t, rec.URL, 2)
	s.Options.GenerationAPI = evalflow.GenerationCompletions

	_, err := run(t, context.Background(), s, nil)

	if !errors.Is(err, evalflow.ErrPermanent) || !strings.Contains(err.Error(), "options.generation_api") {
		t.Fatalf("err = %v; want a permanent refusal naming options.generation_api", err)
	}
	if len(rec.paths) != 1 {
		t.Fatalf("%d requests (%v); want only the probe", len(rec.paths), rec.paths)
	}
}

// options.tokens_per_minute holds against the requests the endpoint sees: over any
// stretch of the run, the tokens sent (as the runner estimates them: prompt bytes / 4
// plus the answer's bound) stay within a minute's budget (the burst) plus the rate
// times the stretch, plus the one request that may start at its edge.
func TestTheTokenRateCapHolds(t *testing.T) {
	rec := newRecorder(t, testserver.Ollama(t, 4), "")
	var prompts []evalflow.CustomSample
	for i := range 34 {
		prompts = append(prompts, evalflow.CustomSample{Prompt: fmt.Sprintf("%-40s", fmt.Sprintf("Tell story %d.", i)), Target: "x", MaxTokens: 1})
	}
	s := spec(t, rec.URL, 8)
	s.Datasets = []evalflow.DatasetSpec{{Name: "custom", Samples: prompts}}
	s.Options.TokensPerMinute = 330 // 30 requests of 11 tokens at once, then one every 2 s
	docs, err := Docs(s)
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{Client: &openai.Client{BaseURL: evalflow.APIBase(s.Model.URL)}, Spec: s, Tokens: NewTokenLimiter(s.Options.TokensPerMinute)}

	if _, err := e.Run(context.Background(), docs); err != nil {
		t.Fatal(err)
	}

	tokens := make([]int, len(rec.bodies))
	for i, b := range rec.bodies {
		var body openai.ChatRequest
		json.Unmarshal(b, &body)
		tokens[i] = len(body.Messages[0].Content)/4 + body.MaxTokens
	}
	burst, perSecond := float64(s.Options.TokensPerMinute), float64(s.Options.TokensPerMinute)/60
	for i := range rec.times {
		sent := 0
		for j := i; j < len(rec.times); j++ {
			sent += tokens[j]
			allowed := burst + perSecond*rec.times[j].Sub(rec.times[i]).Seconds() + float64(tokens[j])
			if float64(sent) > allowed {
				t.Fatalf("requests %d..%d sent %d tokens in %v; the cap allows %.0f", i, j, sent, rec.times[j].Sub(rec.times[i]), allowed)
			}
		}
	}
	if len(rec.times) != len(prompts) {
		t.Fatalf("%d requests for %d samples", len(rec.times), len(prompts))
	}
}

// An endpoint that answers nothing (a hanging one: a fault no real server here shows
// at will) fails the run once no sample has finished for options.no_progress_seconds,
// saying so, and progress shows the failed attempts while they happen; the error is
// permanent (another attempt of the job would wait the same).
func TestANoProgressRunFailsWithinItsBound_HangingEndpoint(t *testing.T) {
	release := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hanging.Close()
	defer close(release)
	s := mmluOnly(t, hanging.URL, "generate")
	s.Options.NoProgressSeconds = 2
	docs, err := Docs(s)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var messages []string
	e := &Engine{Client: &openai.Client{BaseURL: evalflow.APIBase(hanging.URL), Timeout: 300 * time.Millisecond, MaxTries: 1000, MaxElapsed: time.Hour},
		Spec: s, ReportEvery: 100 * time.Millisecond, MaxTokens: 4,
		Report: func(_ context.Context, p Progress) {
			mu.Lock()
			messages = append(messages, p.Message)
			mu.Unlock()
		}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // the per-request retries alone would last an hour
	defer cancel()

	_, err = e.Run(ctx, docs)

	if err == nil || !errors.Is(err, evalflow.ErrPermanent) || !strings.Contains(err.Error(), "answered nothing usable") || !strings.Contains(err.Error(), "no_progress_seconds") {
		t.Fatalf("Run = %v; want a permanent error saying the endpoint answered nothing", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the run outlasted its context, not its no-progress bound")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.ContainsFunc(messages, func(m string) bool { return strings.Contains(m, "attempts got no usable answer") }) {
		t.Errorf("progress while waiting said %q; want the failed attempts", messages)
	}
}

// Through chat, a task's few-shot examples are turns by default (lm-eval's
// --apply_chat_template); options.fewshot_turns "single" sends the text prompt as one
// user message instead (--fewshot_as_multiturn false, for a task without a description).
func TestFewshotExamplesAreChatTurnsUnlessAskedForOne(t *testing.T) {
	d := task.Doc{Prompt: "Question: a\nAnswer: b\n\nQuestion: c\nAnswer:", Messages: []task.Message{
		{Role: "user", Content: "Question: a\nAnswer:"}, {Role: "assistant", Content: "b"}, {Role: "user", Content: "Question: c\nAnswer:"}}}
	e := &Engine{Spec: evalflow.JobSpec{Model: evalflow.ModelSpec{Name: "m"}}}
	req := e.Request(d)
	if len(req.Messages) != 3 || req.Messages[1].Role != "assistant" || req.Messages[1].Content != "b" || req.Messages[2].Content != "Question: c\nAnswer:" {
		t.Errorf("multi-turn request: %+v", req.Messages)
	}
	e.Spec.Options.FewshotTurns = "single"
	if req := e.Request(d); len(req.Messages) != 1 || req.Messages[0].Role != "user" || req.Messages[0].Content != d.Prompt {
		t.Errorf("single-turn request: %+v", req.Messages)
	}
}
