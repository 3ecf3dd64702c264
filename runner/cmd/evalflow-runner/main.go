// Command evalflow-runner is the evaluation job: it reads its job spec (/meta/job.json
// in a Job, --job PATH locally), scores the benchmarks against the endpoint, reports
// progress to the callback URL as CloudEvents and writes results.json and samples.jsonl.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/evalflow/evalflow/runner/engine"
	"github.com/evalflow/evalflow/runner/openai"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/pipeline"
)

func main() {
	jobPath := flag.String("job", "/meta/job.json", "the job spec")
	flag.Parse()
	log := pipeline.NewLogger(os.Getenv("LOG_LEVEL"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *jobPath, log); err != nil {
		log.Error("evaluation failed", "error", err)
		fmt.Fprintln(os.Stderr, err)
		if errors.Is(err, errPermanent) || errors.Is(err, engine.ErrUnsupported) {
			os.Exit(evalflow.ExitPermanent) // starting again cannot help
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, jobPath string, log *slog.Logger) error {
	spec, err := readSpec(jobPath)
	if err != nil {
		return err
	}
	log = log.With("run_id", spec.RunID, "job", spec.ID)
	apiKey := ""
	if spec.APIKeyFile != "" {
		b, err := os.ReadFile(spec.APIKeyFile)
		if err != nil {
			return fmt.Errorf("runner: api key: %w", err)
		}
		apiKey = strings.TrimSpace(string(b))
	}
	reporter, err := newReporter(spec, log)
	if err != nil {
		return err
	}
	docs, err := engine.Docs(spec)
	if err != nil {
		return fmt.Errorf("runner: run %s: %w", spec.RunID, err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = max(spec.Concurrency, 2)
	if spec.Concurrency == 0 {
		transport.MaxIdleConnsPerHost = engine.MaxAutoConcurrency
	}
	opts := spec.Options
	e := &engine.Engine{
		Client: &openai.Client{BaseURL: evalflow.APIBase(spec.Model.URL), APIKey: apiKey, HTTP: &http.Client{Transport: transport},
			Limiter: engine.NewRequestLimiter(opts.RequestsPerSecond),
			Timeout: time.Duration(opts.RequestTimeoutSeconds) * time.Second},
		Spec:   spec,
		Report: reporter,
		Tokens: engine.NewTokenLimiter(opts.TokensPerMinute),
	}
	log.Info("evaluation started", "samples", len(docs), "concurrency", spec.Concurrency)
	reporter(ctx, evalflow.Progress{Phase: "starting", Total: len(docs), UpdatedAt: time.Now().UTC()})
	res, err := e.Run(ctx, docs)
	if err != nil {
		return fmt.Errorf("runner: run %s: %w", spec.RunID, err)
	}
	log.Info("evaluation finished", "samples", res.Summary.Samples, "scores", res.Summary.Scores["mmlu"])
	return nil
}

// errPermanent marks a job spec no attempt can run.
var errPermanent = errors.New("the job cannot run")

func readSpec(path string) (evalflow.JobSpec, error) {
	var spec evalflow.JobSpec
	b, err := os.ReadFile(path)
	if err != nil {
		return spec, fmt.Errorf("runner: job spec: %w", err)
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return spec, fmt.Errorf("runner: job spec %s: %w: %w", path, errPermanent, err)
	}
	if spec.Engine != "" && spec.Engine != evalflow.DefaultEngine {
		return spec, fmt.Errorf("runner: job spec %s asks for engine %q; this is the %s engine: %w", path, spec.Engine, evalflow.DefaultEngine, errPermanent)
	}
	if spec.RunID == "" || spec.Model.URL == "" || spec.OutputDir == "" {
		return spec, fmt.Errorf("runner: job spec %s: run_id, model.url and output_dir are required: %w", path, errPermanent)
	}
	return spec, nil
}

// newReporter sends progress to the callback URL; a report that cannot be delivered is
// logged, never fatal (the next one supersedes it).
func newReporter(spec evalflow.JobSpec, log *slog.Logger) (func(context.Context, evalflow.Progress), error) {
	if spec.CallbackURL == "" {
		return func(_ context.Context, p evalflow.Progress) {
			log.Info("progress", "phase", p.Phase, "done", p.Done, "total", p.Total)
		}, nil
	}
	sender, err := cloudevent.NewSender(spec.CallbackURL, nil)
	if err != nil {
		return nil, err
	}
	sender.Retries = 2
	return func(ctx context.Context, p evalflow.Progress) {
		ev := cloudevent.New(evalflow.StepWatch, evalflow.TypeJobProgress, spec.RunID,
			evalflow.JobProgress{RunID: spec.RunID, Job: spec.ID, Progress: p}, p.Phase, fmt.Sprint(p.Done), p.UpdatedAt.String())
		ev.SetSource("/evalflow/runner")
		if err := sender.Send(ctx, ev); err != nil {
			log.Warn("progress report not delivered", "done", p.Done, "error", err)
		}
	}, nil
}
