// Package engine is evalflow's built-in evaluation engine: it asks the endpoint every
// sample concurrently, checkpoints each finished sample so a restarted runner asks none
// again, reports progress at a bounded rate, and writes results.json and samples.jsonl.
package engine

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/custom"
	"github.com/evalflow/evalflow/runner/gsm8k"
	"github.com/evalflow/evalflow/runner/mmlu"
	"github.com/evalflow/evalflow/runner/openai"
	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/truthfulqa"
	evalflow "github.com/evalflow/evalflow/shared"
)

// CheckpointFile holds finished samples in completion order while a job runs.
const CheckpointFile = "checkpoint.jsonl"

// Sample is one scored sample, a line of samples.jsonl. Extracted and Correct are the
// primary filter's; Filters holds every filter's.
type Sample struct {
	Task      string          `json:"task"`
	Group     string          `json:"group,omitempty"`
	DocID     int             `json:"doc_id"`
	Prompt    string          `json:"prompt"`
	Response  string          `json:"response"`
	Extracted string          `json:"extracted"`
	Target    string          `json:"target"`
	Correct   bool            `json:"correct"`
	Metric    string          `json:"metric"`
	Filters   []task.Filtered `json:"filters"`
	// Logprobs are the choices' log-probabilities (null: not among the top tokens).
	Logprobs []*float64   `json:"logprobs,omitempty"`
	Usage    openai.Usage `json:"usage"`
}

func (s Sample) key() string { return fmt.Sprintf("%s/%d", s.Task, s.DocID) }

// Progress is reported to the pipeline as the run goes.
type Progress = evalflow.Progress

// Engine runs one job.
type Engine struct {
	Client *openai.Client
	Spec   evalflow.JobSpec
	// Report receives progress at most every ReportEvery (default 1 s), and once at the end.
	Report      func(context.Context, Progress)
	ReportEvery time.Duration
	// MaxTokens bounds each answer (default 32).
	MaxTokens int
	Seed      int
	// Tokens, when set, caps tokens per minute (see NewTokenLimiter).
	Tokens *rate.Limiter

	chosen int // the concurrency used (sized when the spec's is 0)
}

// MaxAutoConcurrency bounds the concurrency sized to the endpoint.
const MaxAutoConcurrency = 64

// gate lets at most limit requests be in flight; its limit can change. A nil gate
// lets everything through.
type gate struct {
	mu       sync.Mutex
	cond     *sync.Cond
	limit    int
	inFlight int
}

func newGate(limit int) *gate {
	g := &gate{limit: limit}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gate) acquire() {
	if g == nil {
		return
	}
	g.mu.Lock()
	for g.inFlight >= g.limit {
		g.cond.Wait()
	}
	g.inFlight++
	g.mu.Unlock()
}

func (g *gate) release() {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *gate) set(limit int) {
	g.mu.Lock()
	g.limit = limit
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *gate) current() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limit
}

// sizer sizes a gate to the endpoint: from evalflow.DefaultConcurrency (a good level
// for most servers, and no loss on a one-slot server, which queues), it doubles the
// limit while a window's throughput beats the best so far by more than 10 %, then
// settles on the best limit. A window lasts at least 2 × limit completions and a second.
type sizer struct {
	g         *gate
	start     time.Time
	n         int
	best      float64
	bestLimit int
	done      bool
}

func newSizer(g *gate) *sizer {
	s := &sizer{g: g, start: time.Now(), done: g == nil}
	if g != nil {
		s.bestLimit = g.current()
	}
	return s
}

func (z *sizer) completed() {
	if z.done {
		return
	}
	z.n++
	limit := z.g.current()
	elapsed := time.Since(z.start)
	if z.n < 2*limit || elapsed < time.Second {
		return
	}
	rate := float64(z.n) / elapsed.Seconds()
	switch {
	case rate > 1.1*z.best && limit < MaxAutoConcurrency:
		z.best, z.bestLimit = rate, limit
		z.g.set(limit * 2)
	case rate > 1.1*z.best:
		z.best, z.bestLimit, z.done = rate, limit, true
	default:
		z.g.set(z.bestLimit)
		z.done = true
	}
	z.start, z.n = time.Now(), 0
}

// NewTokenLimiter caps tokens per minute; nil for no cap.
func NewTokenLimiter(perMinute int) *rate.Limiter {
	if perMinute <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(float64(perMinute)/60), perMinute)
}

// NewRequestLimiter caps requests per second; nil for no cap.
func NewRequestLimiter(perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(perSecond), 1) // a burst of one: a cap, not an average
}

// Docs renders every sample the spec asks for.
func Docs(spec evalflow.JobSpec) ([]task.Doc, error) {
	var docs []task.Doc
	for _, b := range spec.Benchmarks {
		d, err := benchmarkDocs(spec.DataDir, b)
		if err != nil {
			return nil, err
		}
		docs = append(docs, withMaxTokens(d, b.MaxTokens)...)
	}
	return docs, nil
}

// benchmarkDocs renders one benchmark's samples, as its limit and seed select them.
func benchmarkDocs(dataDir string, b evalflow.DatasetSpec) ([]task.Doc, error) {
	pick := task.Picker(func(n int) []int { return task.Select(n, b.Limit, b.Seed) })
	switch b.Name {
	case "mmlu":
		subjects := b.Subjects
		if len(subjects) == 0 {
			subjects = evalflow.MMLUSubjects
		}
		var docs []task.Doc
		for _, s := range subjects {
			d, err := mmlu.Docs(dataDir, s, b.Method, fewshot(b, 5), pick)
			if err != nil {
				return nil, err
			}
			docs = append(docs, d...)
		}
		return docs, nil
	case "gsm8k":
		shots := gsm8k.MaxFewshot
		if b.Variant == gsm8k.ZeroShot {
			shots = 0
		}
		return gsm8k.Docs(dataDir, b.Variant, fewshot(b, shots), pick)
	case "truthfulqa":
		return truthfulqa.Docs(dataDir, b.Variant, pick, truthfulqaSeed)
	case "custom":
		return custom.Docs(dataDir, b, pick)
	}
	return nil, fmt.Errorf("engine: benchmark %q is not supported", b.Name)
}

// fewshot is the benchmark's num_fewshot, or the task's default.
func fewshot(b evalflow.DatasetSpec, def int) int {
	if b.NumFewshot != nil {
		return *b.NumFewshot
	}
	return def
}

// truthfulqaSeed orders TruthfulQA MC1's answers: fixed, so every run asks the same prompts.
const truthfulqaSeed uint64 = 1234

// withMaxTokens applies a dataset's max_tokens (0: keep the task's).
func withMaxTokens(docs []task.Doc, n int) []task.Doc {
	if n > 0 {
		for i := range docs {
			docs[i].MaxTokens = n
		}
	}
	return docs
}

// Request is the chat request the engine sends for a generated sample: the
// benchmark's load generator sends exactly these bodies.
func (e *Engine) Request(d task.Doc) openai.ChatRequest {
	seed := e.Seed
	return openai.ChatRequest{
		Model:     e.Spec.Model.Name,
		Messages:  []openai.Message{{Role: "user", Content: d.Prompt}},
		MaxTokens: cmp.Or(e.MaxTokens, d.MaxTokens, 32), Temperature: 0, Seed: &seed,
		Stop: d.Stop,
	}
}

// Run scores docs and writes the results into the spec's output directory.
func (e *Engine) Run(ctx context.Context, docs []task.Doc) (*evalflow.Results, error) {
	if err := os.MkdirAll(e.Spec.OutputDir, 0o755); err != nil {
		return nil, fmt.Errorf("engine: output dir: %w", err)
	}
	cpPath := filepath.Join(e.Spec.OutputDir, CheckpointFile)
	done, good, err := readCheckpoint(cpPath)
	if err != nil {
		return nil, err
	}
	// A line cut short by a crash is dropped, so that what is appended starts clean.
	if err := os.Truncate(cpPath, good); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("engine: checkpoint: %w", err)
	}
	var todo []task.Doc
	for _, d := range docs {
		if _, ok := done[Sample{Task: d.Task, DocID: d.Index}.key()]; !ok {
			todo = append(todo, d)
		}
	}
	if err := e.Probe(ctx, todo); err != nil {
		return nil, err
	}
	cp, err := os.OpenFile(cpPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("engine: checkpoint: %w", err)
	}
	defer cp.Close()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	results := make(chan Sample)
	jobs := make(chan task.Doc)
	failures := &failures{tolerated: int(e.Spec.Options.MaxErrorRate * float64(len(docs)))}
	workers, g := e.Spec.Concurrency, (*gate)(nil)
	if workers <= 0 { // auto: size to the endpoint
		workers, g = MaxAutoConcurrency, newGate(evalflow.DefaultConcurrency)
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range jobs {
				g.acquire()
				s, err := e.score(ctx, d)
				g.release()
				if err != nil {
					if ctx.Err() == nil && failures.add(d, err) {
						cancel(failures)
					}
					continue
				}
				select {
				case results <- s:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for _, d := range todo {
			select {
			case jobs <- d:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()

	w := bufio.NewWriter(cp)
	tracker := adapter.NewTracker(len(done), len(docs))
	every := cmp.Or(e.ReportEvery, time.Second)
	lastReport := time.Time{}
	sizer := newSizer(g)
	for s := range results {
		sizer.completed()
		done[s.key()] = s
		line, _ := json.Marshal(s)
		w.Write(append(line, '\n'))
		tracker.Add()
		if time.Since(lastReport) >= every {
			// Flush before reporting: what is reported done is on disk.
			if err := w.Flush(); err != nil {
				return nil, fmt.Errorf("engine: checkpoint: %w", err)
			}
			e.report(ctx, tracker.Progress("scoring"))
			lastReport = time.Now()
		}
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("engine: checkpoint: %w", err)
	}
	if err := context.Cause(ctx); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	samples := make([]Sample, 0, len(docs))
	for _, d := range docs {
		if s, ok := done[Sample{Task: d.Task, DocID: d.Index}.key()]; ok {
			samples = append(samples, s)
		}
	}
	e.chosen = e.Spec.Concurrency
	if g != nil {
		e.chosen = g.current()
	}
	res, err := e.write(samples)
	if err == nil {
		res.Summary.Errors = failures.count()
	}
	if err != nil {
		return nil, err
	}
	e.report(context.WithoutCancel(ctx), tracker.Progress("done"))
	return res, nil
}

func (e *Engine) score(ctx context.Context, d task.Doc) (Sample, error) {
	if e.Tokens != nil {
		// A request's tokens, estimated before it is sent: prompt bytes / 4 plus the
		// answer's bound.
		n := min(len(d.Prompt)/4+cmp.Or(e.MaxTokens, d.MaxTokens, 1)*max(1, len(d.Choices)), e.Tokens.Burst())
		if err := e.Tokens.WaitN(ctx, n); err != nil {
			return Sample{}, err
		}
	}
	s := Sample{Task: d.Task, Group: d.Group, DocID: d.Index, Prompt: d.Prompt, Target: d.Target, Metric: d.Metric}
	switch d.Method {
	case task.Logprobs, task.Loglikelihood:
		lp, usage, err := e.choiceLogprobs(ctx, d)
		if err != nil {
			return s, err
		}
		s.Filters, s.Usage = d.ScoreChoices(lp), usage
		s.Logprobs = make([]*float64, len(lp))
		for i := range lp {
			if !math.IsInf(lp[i], -1) {
				s.Logprobs[i] = &lp[i]
			}
		}
	default:
		resp, err := e.Client.Chat(ctx, e.Request(d))
		if err != nil {
			return s, err
		}
		s.Response = task.Until(resp.Text(), d.Stop)
		s.Filters, s.Usage = d.Score(s.Response), resp.Usage
	}
	s.Extracted, s.Correct = s.Filters[0].Extracted, s.Filters[0].Correct
	return s, nil
}

// choiceLogprobs scores each of d's choices: from the next token's top_logprobs
// (Logprobs; a choice not among them is -Inf), or as the log-likelihood of the prompt
// followed by the choice (Loglikelihood, one echo request per choice).
func (e *Engine) choiceLogprobs(ctx context.Context, d task.Doc) ([]float64, openai.Usage, error) {
	lp := make([]float64, len(d.Choices))
	var usage openai.Usage
	if d.Method == task.Logprobs {
		seed := e.Seed
		resp, err := e.Client.Chat(ctx, openai.ChatRequest{Model: e.Spec.Model.Name,
			Messages:  []openai.Message{{Role: "user", Content: d.Prompt}},
			MaxTokens: 2, Temperature: 0, Seed: &seed, Logprobs: true, TopLogprobs: 20})
		if err != nil {
			return nil, usage, err
		}
		steps := resp.Steps()
		if len(steps) == 0 || steps[0].TopLogprobs == nil {
			return nil, usage, errNoTopLogprobs
		}
		for i, c := range d.Choices {
			lp[i] = nextTokenLogprob(steps, strings.TrimSpace(c))
		}
		return lp, resp.Usage, nil
	}
	for i, c := range d.Choices {
		resp, err := e.Client.Complete(ctx, openai.CompletionRequest{Model: e.Spec.Model.Name,
			Prompt: d.Prompt + c, MaxTokens: 1, Echo: true, Logprobs: 1})
		if err != nil {
			return nil, usage, err
		}
		if lp[i], err = resp.ContinuationLogprob(len(d.Prompt), len(d.Prompt)+len(c)); err != nil {
			return nil, usage, err
		}
		usage.PromptTokens += resp.Usage.PromptTokens
	}
	return lp, usage, nil
}

// nextTokenLogprob is the log-probability that the answer comes next: as the first
// token (" A" or "A"), or, where the model first generates whitespace, as the token
// after it (" " then "A", as tokenizers that split a space from a letter write " A").
// The two are different ways to write the answer, so their probabilities add up.
// -Inf: the answer is not among the top tokens.
func nextTokenLogprob(steps []openai.Step, answer string) float64 {
	best := func(top []openai.TokenLogprob) float64 {
		lp := math.Inf(-1)
		for _, t := range top {
			if strings.TrimSpace(t.Token) == answer && t.Logprob > lp {
				lp = t.Logprob
			}
		}
		return lp
	}
	lp := best(steps[0].TopLogprobs)
	if len(steps) > 1 && steps[0].Token != "" && strings.TrimSpace(steps[0].Token) == "" {
		if after := best(steps[1].TopLogprobs); !math.IsInf(after, -1) {
			lp = logAddExp(lp, steps[0].Logprob+after)
		}
	}
	return lp
}

// logAddExp is log(exp(a) + exp(b)), without overflow.
func logAddExp(a, b float64) float64 {
	if math.IsInf(a, -1) {
		return b
	}
	if math.IsInf(b, -1) {
		return a
	}
	hi, lo := max(a, b), min(a, b)
	return hi + math.Log1p(math.Exp(lo-hi))
}

var errNoTopLogprobs = errors.New("the endpoint returned no top_logprobs on chat completions")

// ErrUnsupported says the endpoint cannot do what the job asks (a scoring method):
// running the job again cannot help.
var ErrUnsupported = errors.New("unsupported by the endpoint")

// failures counts samples that failed after retries; past the tolerated count they
// fail the run.
type failures struct {
	mu        sync.Mutex
	n         int
	tolerated int
	last      []string
}

// add records a failure and reports whether the run must stop.
func (f *failures) add(d task.Doc, err error) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.last = append(f.last, fmt.Sprintf("%s/%d: %v", d.Task, d.Index, err))
	if len(f.last) > 3 {
		f.last = f.last[1:]
	}
	return f.n > f.tolerated
}

func (f *failures) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *failures) Error() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("%d samples failed after retries (%d tolerated by max_error_rate); last errors: %s",
		f.n, f.tolerated, strings.Join(f.last, "; "))
}

// Probe asks the endpoint once for each method docs need, so that an endpoint that
// cannot do one is refused with a clear error before any sample is spent.
func (e *Engine) Probe(ctx context.Context, docs []task.Doc) error {
	probed := map[string]bool{}
	for _, d := range docs {
		if probed[d.Method] {
			continue
		}
		probed[d.Method] = true
		probe := d
		probe.Prompt = "Answer:"
		var err error
		switch d.Method {
		case task.Logprobs, task.Loglikelihood:
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			_, _, err = e.choiceLogprobs(pctx, probe)
			cancel()
		default:
			continue // every OpenAI-compatible endpoint generates
		}
		if err != nil {
			return fmt.Errorf("engine: %s cannot be scored with method %q: %w; choose another method: %w", d.Task, d.Method, err, ErrUnsupported)
		}
	}
	return nil
}

func (e *Engine) report(ctx context.Context, p Progress) {
	if e.Report != nil {
		e.Report(ctx, p)
	}
}

// readCheckpoint reads the finished samples, and the length of the file up to the end
// of its last whole line.
func readCheckpoint(path string) (map[string]Sample, int64, error) {
	done := map[string]Sample{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return done, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("engine: checkpoint: %w", err)
	}
	var good int64
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break // no newline: cut short by a crash; that sample is asked again
		}
		var s Sample
		if err := json.Unmarshal(b[:i], &s); err != nil {
			break
		}
		done[s.key()] = s
		good += int64(i + 1)
		b = b[i+1:]
	}
	return done, good, nil
}

// write writes the results of the samples (in document order).
func (e *Engine) write(samples []Sample) (*evalflow.Results, error) {
	spec := e.Spec
	spec.Concurrency = e.chosen
	res := Aggregate(spec, samples)
	return res, WriteOutput(e.Spec.OutputDir, res, samples)
}

// WriteOutput writes samples.jsonl, one sample a line in the order given (so two runs
// give the same file), then results.json, each replaced atomically: results.json
// exists only beside a complete samples.jsonl.
func WriteOutput(dir string, res *evalflow.Results, samples []Sample) error {
	var b bytes.Buffer
	for _, s := range samples {
		line, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("engine: sample %s: %w", s.key(), err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := writeFile(filepath.Join(dir, evalflow.SamplesFile), b.Bytes()); err != nil {
		return err
	}
	body, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("engine: results: %w", err)
	}
	return writeFile(filepath.Join(dir, evalflow.ResultsFile), body)
}

// writeFile replaces path atomically.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	return nil
}

// Aggregate computes lm-eval style results: exact_match per task and filter with its
// standard error ("exact_match,<filter>"), and per group (mmlu) the mean weighted by
// task size. The summary's score of a task is its primary filter's.
func Aggregate(spec evalflow.JobSpec, samples []Sample) *evalflow.Results {
	type acc struct {
		n          int
		sum, sumSq float64
	}
	type key struct{ scope, metric, filter string }
	counts := map[key]*acc{}
	var order []key
	add := func(k key, v float64) {
		a, found := counts[k]
		if !found {
			a = &acc{}
			counts[k] = a
			order = append(order, k)
		}
		a.n++
		a.sum += v
		a.sumSq += v * v
	}
	primary := map[string]string{}
	var usage evalflow.Usage
	perTask := map[string]int{}
	for _, s := range samples {
		perTask[s.Task]++
		usage.PromptTokens += s.Usage.PromptTokens
		usage.CompletionTokens += s.Usage.CompletionTokens
		for i, f := range s.Filters {
			metric := cmp.Or(f.Metric, s.Metric)
			add(key{s.Task, metric, f.Filter}, f.Score())
			if s.Group != "" {
				add(key{"group:" + s.Group, metric, f.Filter}, f.Score())
			}
			if i == 0 {
				primary[s.Task] = metric + "," + f.Filter
				if s.Group != "" {
					primary["group:"+s.Group] = metric + "," + f.Filter
				}
			}
		}
	}
	res := &evalflow.Results{
		Results:  map[string]map[string]any{},
		Groups:   map[string]map[string]any{},
		NSamples: map[string]evalflow.NSamples{},
		Config: map[string]any{"model": "openai-chat-completions", "model_args": "model=" + spec.Model.Name,
			"benchmarks": spec.Benchmarks, "engine": spec.Engine, "concurrency": spec.Concurrency},
		Summary: evalflow.Summary{Scores: map[string]float64{}, Metrics: map[string]string{}, Samples: len(samples), Usage: usage,
			Cost: float64(usage.PromptTokens)/1000*spec.Options.CostPer1KPromptTokens +
				float64(usage.CompletionTokens)/1000*spec.Options.CostPer1KCompletionTokens},
	}
	for _, k := range order {
		a := counts[k]
		p := a.sum / float64(a.n)
		stderr := 0.0
		if a.n > 1 { // the sample standard deviation over sqrt(n), as lm-eval's mean_stderr
			stderr = math.Sqrt(max(0, (a.sumSq-float64(a.n)*p*p)/float64(a.n-1)) / float64(a.n))
		}
		name, isGroup := strings.CutPrefix(k.scope, "group:")
		table := res.Results
		if isGroup {
			if res.Groups[name] == nil {
				res.Groups[name] = map[string]any{"alias": name}
			}
			setMetric(res.Groups[name], k.metric, k.filter, p, stderr)
		}
		if table[name] == nil {
			table[name] = map[string]any{"alias": strings.TrimPrefix(name, "mmlu_")}
			if !isGroup {
				res.NSamples[name] = evalflow.NSamples{Original: perTask[name], Effective: perTask[name]}
			}
		}
		setMetric(table[name], k.metric, k.filter, p, stderr)
		if primary[k.scope] == k.metric+","+k.filter {
			res.Summary.Scores[name] = p
			res.Summary.Metrics[name] = k.metric
			res.Summary.Metric = cmp.Or(res.Summary.Metric, k.metric)
		}
	}
	return res
}

func setMetric(m map[string]any, metric, filter string, p, stderr float64) {
	m[metric+","+filter] = p
	m[metric+"_stderr,"+filter] = stderr
}
