// Command evalflow-runner is the evaluation job: it reads its job spec (/meta/job.json
// in a Job, --job PATH locally), scores the benchmarks against the endpoint, reports
// progress to the callback URL as CloudEvents and writes results.json and samples.jsonl.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/engine"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/openai"
)

func main() {
	jobPath := flag.String("job", "/meta/job.json", "the job spec")
	flag.Parse()
	log := evalflow.NewLogger(os.Getenv("LOG_LEVEL"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *jobPath, log); err != nil {
		log.Error("evaluation failed", "error", err)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(adapter.ExitCode(err)) // a permanent failure is not started again
	}
}

func run(ctx context.Context, jobPath string, log *slog.Logger) error {
	began := time.Now()
	spec, err := adapter.ReadSpec(jobPath, evalflow.DefaultEngine)
	if err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	log = log.With("run_id", spec.RunID, "job", spec.ID)
	apiKey, err := adapter.APIKey(spec)
	if err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	reporter, err := adapter.NewReporter(spec, log)
	if err != nil {
		return err
	}
	if spec.DataDir, err = adapter.FetchData(ctx, spec); err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	specRead := time.Now()
	docs, err := engine.Docs(spec)
	if err != nil {
		return fmt.Errorf("runner: run %s: %w", spec.RunID, err)
	}
	log.Info("job read", "spec_ms", ms(specRead.Sub(began)), "data_ms", ms(time.Since(specRead)))
	e := newEngine(spec, apiKey, reporter, log)
	log.Info("evaluation started", "samples", len(docs), "concurrency", spec.Concurrency)
	reporter(ctx, evalflow.Progress{Phase: "starting", Total: len(docs), UpdatedAt: time.Now().UTC()})
	checkpoint := filepath.Join(spec.OutputDir, engine.CheckpointFile)
	if err := adapter.RestoreCheckpoint(ctx, spec, checkpoint); err != nil {
		log.Warn("no checkpoint restored: starting afresh", "error", err)
	}
	res, err := e.Run(ctx, docs)
	if err != nil {
		if ctx.Err() != nil { // stopped: the pod is going; its successor resumes from here
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
			if serr := adapter.SaveCheckpoint(sctx, spec, checkpoint); serr != nil {
				log.Error("checkpoint not saved", "error", serr)
			}
			cancel()
		}
		return fmt.Errorf("runner: run %s: %w", spec.RunID, err)
	}
	if err := adapter.Publish(ctx, spec); err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	log.Info("evaluation finished", "samples", res.Summary.Samples, "scores", res.Summary.Scores["mmlu"])
	return nil
}

// newEngine is the engine of spec: a client of its endpoint with the spec's limits.
func newEngine(spec evalflow.JobSpec, apiKey string, reporter adapter.Reporter, log *slog.Logger) *engine.Engine {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = max(spec.Concurrency, 2)
	if spec.Concurrency == 0 {
		transport.MaxIdleConnsPerHost = engine.MaxAutoConcurrency
	}
	opts := spec.Options
	return &engine.Engine{
		Client: &openai.Client{BaseURL: evalflow.APIBase(spec.Model.URL), APIKey: apiKey, HTTP: &http.Client{Transport: transport},
			Limiter: engine.NewRequestLimiter(opts.RequestsPerSecond),
			Timeout: time.Duration(opts.RequestTimeoutSeconds) * time.Second},
		Spec:   spec,
		Report: reporter,
		Tokens: engine.NewTokenLimiter(opts.TokensPerMinute),
		Log:    log,
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
