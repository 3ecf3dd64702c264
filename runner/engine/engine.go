// Package engine is evalflow's built-in evaluation engine: it asks the endpoint every
// sample concurrently, checkpoints each finished sample so a restarted runner asks none
// again, reports progress at a bounded rate, and writes results.json and samples.jsonl.
//
// Its files, by concern: docs.go (what to ask), scoring.go (how a sample is asked and
// scored, and the probe before any is), concurrency.go (in-flight and rate limits,
// sizing to the endpoint), checkpoint.go (resume), failures.go (the tolerated error
// rate); results are aggregated and written by package results.
package engine

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/results"
	"github.com/evalflow/evalflow/runner/sandbox"
	"github.com/evalflow/evalflow/runner/task"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/openai"
)

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
	// Log, when set, receives how long each stage of Run took ("stages").
	Log *slog.Logger
	// Sandbox runs the programs a task scores by running them (HumanEval); a run of
	// such a task without one fails before any sample.
	Sandbox Sandbox
}

// A Sandbox runs a model's program where it can do no harm, and says what became of
// it.
type Sandbox interface {
	// Run's error is the sandbox's (the program did not run), never the program's.
	Run(ctx context.Context, program string) (sandbox.Result, error)
}

// Run scores docs and writes the results into the spec's output directory.
func (e *Engine) Run(ctx context.Context, docs []task.Doc) (*evalflow.Results, error) {
	clock := newStages()
	cp, err := openCheckpoint(e.Spec.OutputDir)
	if err != nil {
		return nil, err
	}
	defer cp.Close()
	todo := cp.todo(docs)
	clock.end("resume")
	if i := slices.IndexFunc(todo, func(d task.Doc) bool { return d.Program != nil }); i >= 0 && e.Sandbox == nil {
		return nil, evalflow.Permanent(fmt.Errorf("engine: task %s runs the model's code, and this runner has no sandbox for it", todo[i].Task))
	}
	st := newStall(e.Spec.Options.NoProgress())
	observe := e.Client.Observe
	e.Client.Observe = st.observe(observe)
	defer func() { e.Client.Observe = observe }()
	if err := e.probeWithin(ctx, todo, st.limit); err != nil {
		return nil, err
	}
	clock.end("probe")
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := e.ask(ctx, cancel, todo, len(docs))
	tracker := adapter.NewTracker(len(docs)-len(todo), len(docs))
	if err := e.collect(ctx, cancel, p, cp, tracker, st); err != nil {
		return nil, err
	}
	if err := context.Cause(ctx); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	clock.end("scoring")
	samples := cp.samples(docs)
	res := results.Aggregate(results.Run{Spec: e.Spec, Tasks: task.Configs(docs), Groups: task.GroupConfigs(docs),
		Concurrency: p.concurrency(e.Spec.Concurrency), Errors: p.failures.count()}, samples)
	if err := results.Write(e.Spec.OutputDir, res, samples, e.Client.APIKey); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	clock.end("results")
	e.report(context.WithoutCancel(ctx), tracker.Progress("done"))
	if e.Log != nil {
		e.Log.Info("stages", clock.attrs()...)
	}
	return res, nil
}

// stages times a run's stages, each from the end of the one before.
type stages struct {
	last  time.Time
	times []any
}

func newStages() *stages { return &stages{last: time.Now()} }

func (s *stages) end(stage string) {
	now := time.Now()
	s.times = append(s.times, slog.Float64(stage+"_ms", float64(now.Sub(s.last).Microseconds())/1000))
	s.last = now
}

func (s *stages) attrs() []any { return s.times }

// pool is the workers asking the endpoint, and what they found.
type pool struct {
	results  chan results.Sample
	gate     *gate // nil: a fixed concurrency
	failures *failures
}

// concurrency is the level the pool ran at: the gate's when it sized one.
func (p *pool) concurrency(fixed int) int {
	if p.gate != nil {
		return p.gate.current()
	}
	return fixed
}

// ask starts the workers on todo: the spec's concurrency, or as many as the endpoint
// takes behind a gate that sizes itself. A failure past the tolerated rate (of total)
// cancels the run. The results channel closes when every worker is done.
func (e *Engine) ask(ctx context.Context, cancel context.CancelCauseFunc, todo []task.Doc, total int) *pool {
	p := &pool{results: make(chan results.Sample),
		failures: &failures{tolerated: int(e.Spec.Options.MaxErrorRate * float64(total))}}
	workers := e.Spec.Concurrency
	if workers <= 0 {
		workers, p.gate = MaxAutoConcurrency, newGate(evalflow.DefaultConcurrency)
	}
	jobs := make(chan task.Doc)
	var wg sync.WaitGroup
	send := func(s results.Sample) bool {
		select {
		case p.results <- s:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for range workers {
		wg.Go(func() {
			for d := range jobs {
				p.gate.acquire()
				s, programs, err := e.score(ctx, d)
				p.gate.release()
				switch {
				case err != nil:
					if ctx.Err() == nil && p.failures.add(d, err) {
						cancel(p.failures)
					}
				case programs != nil:
					// The sandbox runs them while this worker asks for the next: a
					// sandbox that runs programs in batches gets them together.
					wg.Go(func() {
						s, err := e.runPrograms(ctx, d, s, programs)
						if err != nil {
							if ctx.Err() == nil && p.failures.add(d, err) {
								cancel(p.failures)
							}
							return
						}
						send(s)
					})
				case !send(s):
					return
				}
			}
		})
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
	go func() { wg.Wait(); close(p.results) }()
	return p
}

// collect journals each finished sample and reports progress at most every
// ReportEvery. Samples are written to the checkpoint as they come, those that came
// together in one write (a group commit), before they are counted: a runner killed
// at any moment asks again only what was in flight.
//
// While no sample finishes, progress says so (with the failed attempts); a run with
// none for the stall's limit is cancelled with its error.
func (e *Engine) collect(ctx context.Context, cancel context.CancelCauseFunc, p *pool, cp *checkpoint, tracker *adapter.Tracker, st *stall) error {
	every := cmp.Or(e.ReportEvery, time.Second)
	lastReport := time.Now() // the run's start was reported: the next comes a while into it
	sizer := newSizer(p.gate)
	tick := time.NewTicker(max(min(every, st.limit/10), 10*time.Millisecond))
	defer tick.Stop()
	for {
		var s results.Sample
		var open bool
		select {
		case s, open = <-p.results:
		case <-tick.C:
			waiting, err := st.check()
			if err != nil {
				cancel(err)
			}
			if waiting != "" && time.Since(lastReport) >= every {
				pr := tracker.Progress("scoring")
				pr.Message = waiting
				e.report(ctx, pr)
				lastReport = time.Now()
			}
			continue
		}
		if !open {
			return cp.sync()
		}
		n := 0
		for more := true; more; {
			sizer.completed()
			if err := cp.add(s); err != nil {
				return err
			}
			n++
			select { // what else has come meanwhile goes in the same write
			case s, more = <-p.results:
			default:
				more = false
			}
		}
		if err := cp.flush(); err != nil {
			return err
		}
		tracker.Add(n)
		st.progressed()
		if time.Since(lastReport) >= every {
			e.report(ctx, tracker.Progress("scoring"))
			lastReport = time.Now()
		}
	}
}

func (e *Engine) report(ctx context.Context, p Progress) {
	if e.Report != nil {
		e.Report(ctx, p)
	}
}
