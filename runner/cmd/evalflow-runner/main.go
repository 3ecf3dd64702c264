// Command evalflow-runner is the evaluation job: it reads its job spec (/meta/job.json
// in a Job, --job PATH locally), scores the benchmarks against the endpoint, reports
// progress to the callback URL as CloudEvents and writes results.json and samples.jsonl.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/engine"
	"github.com/evalflow/evalflow/runner/sandbox"
	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/task/usertask"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/metrics"
	"github.com/evalflow/evalflow/shared/netpolicy"
	"github.com/evalflow/evalflow/shared/openai"
	"github.com/evalflow/evalflow/shared/podexec"
	"github.com/evalflow/evalflow/shared/tracing"
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

func run(ctx context.Context, jobPath string, log *slog.Logger) (err error) {
	began := time.Now()
	spec, err := adapter.ReadSpec(jobPath, evalflow.DefaultEngine)
	if err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	// The job goes on in the run's trace; its reports and its requests carry it.
	stopTracing, err := tracing.Setup(ctx, "evalflow-runner", spec.OTLPEndpoint)
	if err != nil {
		return fmt.Errorf("runner: run %s: tracing: %w", spec.RunID, err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = stopTracing(sctx)
	}()
	ctx, span := tracing.Start(tracing.Extract(ctx, spec.TraceParent, ""), "runner "+spec.Engine, spec.RunID)
	defer func() { tracing.End(span, err) }()
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
	if err := usertask.Check(spec.DataDir, spec.Datasets); err != nil { // as start checked the inline ones
		return fmt.Errorf("runner: run %s: %w", spec.RunID, err)
	}
	specRead := time.Now()
	docs, err := engine.Docs(spec)
	if err != nil {
		return fmt.Errorf("runner: run %s: %w", spec.RunID, err)
	}
	log.Info("job read", "spec_ms", ms(specRead.Sub(began)), "data_ms", ms(time.Since(specRead)))
	network, err := netpolicy.Parse(spec.BaseURLAllow, spec.BaseURLDeny)
	if err != nil {
		return evalflow.Permanent(fmt.Errorf("runner: run %s: %w", spec.RunID, err))
	}
	m := metrics.NewRunner(spec.RunID)
	if spec.MetricsAddress != "" {
		stopMetrics, err := m.Serve(spec.MetricsAddress)
		if err != nil {
			return fmt.Errorf("runner: run %s: metrics on %s: %w", spec.RunID, spec.MetricsAddress, err)
		}
		defer stopMetrics()
	}
	e := newEngine(spec, apiKey, network, reporter, m, log)
	if e.Sandbox, err = sandboxFor(ctx, spec, docs); err != nil {
		return fmt.Errorf("runner: run %s: %w", spec.RunID, err)
	}
	log.Info("evaluation started", "samples", len(docs), "concurrency", spec.Concurrency)
	reporter.Progress(ctx, evalflow.Progress{Phase: "starting", Total: len(docs), UpdatedAt: time.Now().UTC()})
	res, err := evaluate(ctx, e, docs, log)
	if err != nil {
		return fmt.Errorf("runner: run %s: %w", spec.RunID, err)
	}
	if err := adapter.Publish(ctx, spec); err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	reporter.Succeeded(ctx, &res.Summary)
	log.Info("evaluation finished", "samples", res.Summary.Samples, "scores", res.Summary.Scores["mmlu"])
	return nil
}

// checkpointEvery is how often a Job's checkpoint is saved while it runs
// (EVALFLOW_CHECKPOINT_EVERY, a Go duration): a pod killed outright loses at most
// that much of its work.
func checkpointEvery() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("EVALFLOW_CHECKPOINT_EVERY")); err == nil && d > 0 {
		return d
	}
	return 30 * time.Second
}

// evaluate runs e with its checkpoint kept outside the pod (where the spec names a
// results repository): restored before, saved every checkpointEvery while it runs,
// and saved when it is stopped (the pod is going), so that the pod that replaces it
// asks no finished sample again.
func evaluate(ctx context.Context, e *engine.Engine, docs []task.Doc, log *slog.Logger) (*evalflow.Results, error) {
	spec, checkpoint := e.Spec, filepath.Join(e.Spec.OutputDir, engine.CheckpointFile)
	if err := adapter.RestoreCheckpoint(ctx, spec, checkpoint); err != nil {
		log.Warn("no checkpoint restored: starting afresh", "error", err)
	}
	save := func(ctx context.Context) {
		if err := adapter.SaveCheckpoint(ctx, spec, checkpoint); err != nil {
			log.Error("checkpoint not saved", "error", err)
		}
	}
	saving, stopSaving := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if spec.Results != nil {
		wg.Go(func() {
			tick := time.NewTicker(checkpointEvery())
			defer tick.Stop()
			for {
				select {
				case <-saving.Done():
					return
				case <-tick.C:
					save(saving)
				}
			}
		})
	}
	res, err := e.Run(ctx, docs)
	stopSaving()
	wg.Wait()
	if err != nil && ctx.Err() != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		save(sctx)
		cancel()
	}
	return res, err
}

// newEngine is the engine of spec: a client of its endpoint with the spec's limits.
func newEngine(spec evalflow.JobSpec, apiKey string, network *netpolicy.Policy, reporter *adapter.Reporter, m *metrics.Runner, log *slog.Logger) *engine.Engine {
	transport := network.Transport() // the deployment's base_url policy, on every connection
	transport.MaxIdleConnsPerHost = max(spec.Concurrency, 2)
	if spec.Concurrency == 0 {
		transport.MaxIdleConnsPerHost = engine.MaxAutoConcurrency
	}
	opts := spec.Options
	return &engine.Engine{
		Client: &openai.Client{BaseURL: evalflow.APIBase(spec.Model.URL), APIKey: apiKey, HTTP: &http.Client{Transport: tracing.Transport(transport)}, // each request in the run's trace
			Limiter: engine.NewRequestLimiter(opts.RequestsPerSecond),
			Timeout: time.Duration(opts.RequestTimeoutSeconds) * time.Second,
			Observe: func(outcome string, retry bool, u openai.Usage) {
				m.Observe(outcome, retry, u.PromptTokens, u.CompletionTokens)
			}},
		Spec: spec,
		Report: func(ctx context.Context, p evalflow.Progress) {
			m.SamplesPerSecond.Set(p.Rate)
			reporter.Progress(ctx, p)
		},
		Tokens: engine.NewTokenLimiter(opts.TokensPerMinute),
		Log:    log,
	}
}

// sandboxFor is where the model's programs run, for a run of a task scored so
// (HumanEval): python3 under bubblewrap on this machine, for a local run; for a
// Kubernetes Job, the run's sandbox pod, which this pod's own token may exec in and
// nothing more. A sandbox that cannot run here fails the run before any sample.
func sandboxFor(ctx context.Context, spec evalflow.JobSpec, docs []task.Doc) (engine.Sandbox, error) {
	i := slices.IndexFunc(docs, func(d task.Doc) bool { return d.Program != nil })
	switch {
	case i < 0:
		return nil, nil
	case spec.Sandbox != nil:
		return podSandbox(ctx, *spec.Sandbox)
	case spec.Results != nil: // a Kubernetes Job's pod, without a sandbox pod
		return nil, evalflow.Permanent(fmt.Errorf("task %s runs the model's code, and this Job has no sandbox pod: name the task in task_yaml, not task_file, so that evalflow knows to make one", docs[i].Task))
	}
	s, err := sandbox.NewLocal(sandbox.DefaultLimits, runtime.NumCPU())
	if err != nil {
		return nil, evalflow.Permanent(fmt.Errorf("task %s runs the model's code: %w", docs[i].Task, err))
	}
	return s, nil
}

// SandboxStartup bounds the wait for the sandbox pod to run (its image pulled).
const SandboxStartup = 5 * time.Minute

// podSandbox is the run's sandbox pod, once it runs a program.
func podSandbox(ctx context.Context, t evalflow.SandboxTarget) (engine.Sandbox, error) {
	pod, err := podexec.InCluster(t.Namespace, t.Pod, t.TokenFile, t.CAFile)
	if err != nil {
		return nil, evalflow.Permanent(err)
	}
	wait, cancel := context.WithTimeout(ctx, SandboxStartup)
	defer cancel()
	if err := pod.WaitRunning(wait); err != nil {
		return nil, fmt.Errorf("the sandbox pod: %w", err)
	}
	exec := func(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
		return pod.Exec(ctx, []string{evalflow.SandboxProgram, "-batch", "-"}, stdin, stdout)
	}
	return sandbox.NewPod(ctx, exec, sandbox.DefaultLimits)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
