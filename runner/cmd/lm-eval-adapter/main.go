// Command lm-eval-adapter runs EleutherAI's lm-evaluation-harness as an evalflow
// engine: it reads the job spec (/meta/job.json in a Job), runs lm_eval against the
// endpoint with the API key in its environment, turns lm_eval's progress bars into
// progress reports, and writes lm_eval's results as evalflow's results.json and
// samples.jsonl. lm_eval is $LM_EVAL, or lm_eval on PATH.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/engine"
	"github.com/evalflow/evalflow/runner/lmeval"
	"github.com/evalflow/evalflow/shared/pipeline"
)

func main() {
	jobPath := flag.String("job", "/meta/job.json", "the job spec")
	flag.Parse()
	log := pipeline.NewLogger(os.Getenv("LOG_LEVEL"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *jobPath, os.Stderr, log); err != nil {
		log.Error("evaluation failed", "error", err)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(adapter.ExitCode(err)) // a permanent failure is not started again
	}
}

// reportEvery bounds how often progress is reported.
const reportEvery = time.Second

// permanentSigns are what lm_eval prints when its job can never run: no restart of
// the pod mends them.
var permanentSigns = []string{
	"Tasks not found",
	"Loglikelihood is not supported",
	"Tokenizer is required for loglikelihood",
	"is not supported for chat completions",
}

func run(ctx context.Context, jobPath string, lmevalLog io.Writer, log *slog.Logger) error {
	spec, err := adapter.ReadSpec(jobPath, lmeval.Engine)
	if err != nil {
		return fmt.Errorf("lm-eval adapter: %w", err)
	}
	log = log.With("run_id", spec.RunID, "job", spec.ID)
	cfg, err := lmeval.ParseConfig(spec.EngineConfig)
	if err != nil {
		return fmt.Errorf("run %s: %w", spec.RunID, err)
	}
	args, err := lmeval.Args(spec, cfg)
	if err != nil {
		return fmt.Errorf("run %s: %w", spec.RunID, err)
	}
	apiKey, err := adapter.APIKey(spec)
	if err != nil {
		return fmt.Errorf("lm-eval adapter: %w", err)
	}
	report, err := adapter.NewReporter(spec, log)
	if err != nil {
		return fmt.Errorf("lm-eval adapter: %w", err)
	}
	program, err := exec.LookPath(cmp.Or(os.Getenv("LM_EVAL"), "lm_eval"))
	if err != nil {
		return fmt.Errorf("run %s: lm_eval is not installed in this image: %w: %w", spec.RunID, adapter.ErrPermanent, err)
	}
	if err := os.MkdirAll(spec.OutputDir, 0o755); err != nil {
		return fmt.Errorf("run %s: %w", spec.RunID, err)
	}

	log.Info("lm_eval starting", "tasks", cfg.Tasks, "model", cfg.Model)
	tracker := adapter.NewTracker(0, 0)
	report(ctx, tracker.Progress("starting"))
	cmd := exec.CommandContext(ctx, program, args...)
	cmd.Env = append(os.Environ(), lmeval.Env(apiKey)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	tail := &lastLines{n: 12}
	out := &lockedWriter{w: io.MultiWriter(lmevalLog, tail)} // lm_eval's stdout and stderr, copied at once
	cmd.Stdout = out                                         // lm_eval prints its results table here
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("run %s: lm_eval: %w", spec.RunID, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: lm_eval: %w", spec.RunID, err)
	}
	var last time.Time
	scanErr := lmeval.Scan(stderr, out, func(done, total int) {
		tracker.Set(done, total)
		if time.Since(last) >= reportEvery || done == total {
			last = time.Now()
			report(ctx, tracker.Progress("requesting"))
		}
	})
	if err := cmd.Wait(); err != nil {
		what := tail.String()
		for _, sign := range permanentSigns {
			if strings.Contains(what, sign) {
				err = fmt.Errorf("%w: %w", adapter.ErrPermanent, err)
				break
			}
		}
		return fmt.Errorf("run %s: lm_eval failed: %w; its last words:\n%s", spec.RunID, err, what)
	}
	if scanErr != nil {
		log.Warn("lm_eval's log was cut short", "error", scanErr)
	}

	report(ctx, tracker.Progress("writing"))
	res, samples, err := lmeval.Read(filepath.Join(spec.OutputDir, lmeval.OutputSubdir), spec, cfg)
	if err != nil {
		return fmt.Errorf("run %s: %w", spec.RunID, err)
	}
	if err := engine.WriteOutput(spec.OutputDir, res, samples); err != nil {
		return fmt.Errorf("run %s: %w", spec.RunID, err)
	}
	tracker.Set(len(samples), len(samples))
	report(context.WithoutCancel(ctx), tracker.Progress("done"))
	log.Info("lm_eval finished", "samples", len(samples), "scores", res.Summary.Scores)
	return nil
}

// lockedWriter lets two copies write to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// lastLines keeps the last n lines written to it.
type lastLines struct {
	mu    sync.Mutex
	n     int
	lines []string
	part  string
}

func (l *lastLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	text := l.part + string(p)
	parts := strings.Split(text, "\n")
	l.part = parts[len(parts)-1]
	for _, line := range parts[:len(parts)-1] {
		if strings.TrimSpace(line) == "" {
			continue
		}
		l.lines = append(l.lines, line)
		if len(l.lines) > l.n {
			l.lines = l.lines[1:]
		}
	}
	return len(p), nil
}

func (l *lastLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(append(append([]string(nil), l.lines...), l.part), "\n")
}
