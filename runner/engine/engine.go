// Package engine is evalflow's built-in evaluation engine: it asks the endpoint every
// sample concurrently, checkpoints each finished sample so a restarted runner asks none
// again, reports progress at a bounded rate, and writes results.json and samples.jsonl.
package engine

import (
	"bufio"
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

	"github.com/evalflow/evalflow/runner/mmlu"
	"github.com/evalflow/evalflow/runner/openai"
	evalflow "github.com/evalflow/evalflow/shared"
)

// CheckpointFile holds finished samples in completion order while a job runs.
const CheckpointFile = "checkpoint.jsonl"

// Sample is one scored sample, a line of samples.jsonl.
type Sample struct {
	Task      string       `json:"task"`
	DocID     int          `json:"doc_id"`
	Prompt    string       `json:"prompt"`
	Response  string       `json:"response"`
	Extracted string       `json:"extracted"`
	Target    string       `json:"target"`
	Correct   bool         `json:"correct"`
	Usage     openai.Usage `json:"usage"`
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
}

// Docs renders every sample the spec asks for.
func Docs(spec evalflow.JobSpec) ([]mmlu.Doc, error) {
	var docs []mmlu.Doc
	for _, b := range spec.Benchmarks {
		switch b.Name {
		case "mmlu":
			subjects := b.Subjects
			if len(subjects) == 0 {
				subjects = evalflow.MMLUSubjects
			}
			shots := 5
			if b.NumFewshot != nil {
				shots = *b.NumFewshot
			}
			for _, s := range subjects {
				d, err := mmlu.Docs(spec.DataDir, s, shots, b.Limit)
				if err != nil {
					return nil, err
				}
				docs = append(docs, d...)
			}
		default:
			return nil, fmt.Errorf("engine: benchmark %q is not supported", b.Name)
		}
	}
	return docs, nil
}

// Run scores docs and writes the results into the spec's output directory.
func (e *Engine) Run(ctx context.Context, docs []mmlu.Doc) (*evalflow.Results, error) {
	if err := os.MkdirAll(e.Spec.OutputDir, 0o755); err != nil {
		return nil, fmt.Errorf("engine: output dir: %w", err)
	}
	cpPath := filepath.Join(e.Spec.OutputDir, CheckpointFile)
	done, err := readCheckpoint(cpPath)
	if err != nil {
		return nil, err
	}
	var todo []mmlu.Doc
	for _, d := range docs {
		if _, ok := done[Sample{Task: d.Task, DocID: d.Index}.key()]; !ok {
			todo = append(todo, d)
		}
	}
	cp, err := os.OpenFile(cpPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("engine: checkpoint: %w", err)
	}
	defer cp.Close()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	results := make(chan Sample)
	jobs := make(chan mmlu.Doc)
	var wg sync.WaitGroup
	for range max(1, e.Spec.Concurrency) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range jobs {
				s, err := e.score(ctx, d)
				if err != nil {
					cancel(fmt.Errorf("sample %s/%d: %w", d.Task, d.Index, err))
					return
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
	tracker := newTracker(len(done), len(docs))
	every := cmp.Or(e.ReportEvery, time.Second)
	lastReport := time.Time{}
	for s := range results {
		done[s.key()] = s
		line, _ := json.Marshal(s)
		w.Write(append(line, '\n'))
		tracker.add()
		if time.Since(lastReport) >= every {
			// Flush before reporting: what is reported done is on disk.
			if err := w.Flush(); err != nil {
				return nil, fmt.Errorf("engine: checkpoint: %w", err)
			}
			e.report(ctx, tracker.progress("scoring"))
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
		samples = append(samples, done[Sample{Task: d.Task, DocID: d.Index}.key()])
	}
	res, err := e.write(samples)
	if err != nil {
		return nil, err
	}
	e.report(context.WithoutCancel(ctx), tracker.progress("done"))
	return res, nil
}

func (e *Engine) score(ctx context.Context, d mmlu.Doc) (Sample, error) {
	seed := e.Seed
	resp, err := e.Client.Chat(ctx, openai.ChatRequest{
		Model:     e.Spec.Model.Name,
		Messages:  []openai.Message{{Role: "user", Content: d.Prompt}},
		MaxTokens: cmp.Or(e.MaxTokens, 32), Temperature: 0, Seed: &seed,
		Stop: []string{"\n", "</s>"},
	})
	if err != nil {
		return Sample{}, err
	}
	text := resp.Text()
	ext := mmlu.Extract(text)
	return Sample{Task: d.Task, DocID: d.Index, Prompt: d.Prompt, Response: text, Extracted: ext,
		Target: d.Target, Correct: mmlu.Correct(ext, d.Target), Usage: resp.Usage}, nil
}

func (e *Engine) report(ctx context.Context, p Progress) {
	if e.Report != nil {
		e.Report(ctx, p)
	}
}

func readCheckpoint(path string) (map[string]Sample, error) {
	done := map[string]Sample{}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return done, nil
	}
	if err != nil {
		return nil, fmt.Errorf("engine: checkpoint: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var s Sample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			break // a line cut short by a crash: that sample is asked again
		}
		done[s.key()] = s
	}
	return done, nil
}

// write writes samples.jsonl (in document order, so two runs give the same file)
// and results.json.
func (e *Engine) write(samples []Sample) (*evalflow.Results, error) {
	var b strings.Builder
	for _, s := range samples {
		line, _ := json.Marshal(s)
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := writeFile(filepath.Join(e.Spec.OutputDir, evalflow.SamplesFile), []byte(b.String())); err != nil {
		return nil, err
	}
	res := Aggregate(e.Spec, samples)
	body, _ := json.MarshalIndent(res, "", "  ")
	if err := writeFile(filepath.Join(e.Spec.OutputDir, evalflow.ResultsFile), body); err != nil {
		return nil, err
	}
	return res, nil
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

// Aggregate computes lm-eval style results: exact_match per task with its standard
// error, and per group (mmlu) the mean weighted by task size.
func Aggregate(spec evalflow.JobSpec, samples []Sample) *evalflow.Results {
	type acc struct{ n, correct int }
	tasks := map[string]*acc{}
	var order []string
	for _, s := range samples {
		a, ok := tasks[s.Task]
		if !ok {
			a = &acc{}
			tasks[s.Task] = a
			order = append(order, s.Task)
		}
		a.n++
		if s.Correct {
			a.correct++
		}
	}
	res := &evalflow.Results{
		Results:  map[string]map[string]any{},
		Groups:   map[string]map[string]any{},
		NSamples: map[string]evalflow.NSamples{},
		Config: map[string]any{"model": "openai-chat-completions", "model_args": "model=" + spec.Model.Name,
			"benchmarks": spec.Benchmarks, "engine": spec.Engine},
		Summary: evalflow.Summary{Scores: map[string]float64{}, Samples: len(samples), Metric: "exact_match"},
	}
	total := acc{}
	for _, t := range order {
		a := tasks[t]
		p := float64(a.correct) / float64(a.n)
		res.Results[t] = metrics(strings.TrimPrefix(t, "mmlu_"), p, a.n)
		res.NSamples[t] = evalflow.NSamples{Original: a.n, Effective: a.n}
		res.Summary.Scores[t] = p
		total.n += a.n
		total.correct += a.correct
	}
	if total.n > 0 {
		p := float64(total.correct) / float64(total.n)
		res.Results["mmlu"] = metrics("mmlu", p, total.n)
		res.Groups["mmlu"] = metrics("mmlu", p, total.n)
		res.Summary.Scores["mmlu"] = p
	}
	return res
}

func metrics(alias string, p float64, n int) map[string]any {
	stderr := 0.0
	if n > 1 {
		stderr = math.Sqrt(p * (1 - p) / float64(n-1))
	}
	return map[string]any{"alias": alias, "exact_match,none": p, "exact_match_stderr,none": stderr}
}

// tracker turns completions into progress with a rate and an ETA.
type tracker struct {
	start      time.Time
	done, base int
	total      int
}

func newTracker(done, total int) *tracker {
	return &tracker{start: time.Now(), done: done, base: done, total: total}
}

func (t *tracker) add() { t.done++ }

func (t *tracker) progress(phase string) Progress {
	elapsed := time.Since(t.start).Seconds()
	p := Progress{Phase: phase, Done: t.done, Total: t.total, UpdatedAt: time.Now().UTC()}
	if n := t.done - t.base; n > 0 && elapsed > 0 {
		p.Rate = float64(n) / elapsed
		p.ETASeconds = float64(t.total-t.done) / p.Rate
	}
	return p
}
