// Package external runs an evaluation engine that is another program (lm_eval,
// opencompass) as an evalflow job: it reads the job spec, starts the program with the
// API key in its environment, reports the program's progress, and writes what the
// program produced as evalflow's results.json and samples.jsonl.
package external

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/results"
	evalflow "github.com/evalflow/evalflow/shared"
)

// Engine describes an external engine.
type Engine struct {
	// Name is the engine's name in the registry; a job spec for another is refused.
	Name string
	// Program is the program to run, unless the environment variable ProgramEnv names
	// another (a path, or a name looked up on PATH).
	Program, ProgramEnv string
	// Prepare turns the spec into the program's arguments, writing any file the
	// program needs under the spec's output directory. An error wrapping
	// evalflow.ErrPermanent fails the job for good.
	Prepare func(spec evalflow.JobSpec) ([]string, error)
	// Scan, when set, reads the program's stderr until it ends, copying its log to w
	// and calling progress with done and total as the program reports them.
	Scan func(stderr io.Reader, w io.Writer, progress func(done, total int)) error
	// Poll, when set, is asked every PollEvery how far the program is.
	Poll      func(spec evalflow.JobSpec) (phase string, done, total int)
	PollEvery time.Duration
	// Read reads the program's output into results and samples.
	Read func(spec evalflow.JobSpec) (*evalflow.Results, []results.Sample, error)
	// PermanentSigns are what the program prints when its job can never run: a
	// failure whose last lines hold one is not started again.
	PermanentSigns []string
	// ReportEvery bounds how often progress is reported (default 1 s).
	ReportEvery time.Duration
}

// Run runs the job at jobPath with the engine; the program's own output goes to
// programLog.
func (x Engine) Run(ctx context.Context, jobPath string, programLog io.Writer, log *slog.Logger) error {
	spec, err := adapter.ReadSpec(jobPath, x.Name)
	if err != nil {
		return fmt.Errorf("%s adapter: %w", x.Name, err)
	}
	log = log.With("run_id", spec.RunID, "job", spec.ID)
	if err := os.MkdirAll(spec.OutputDir, 0o755); err != nil {
		return fmt.Errorf("run %s: %w", spec.RunID, err)
	}
	args, err := x.Prepare(spec)
	if err != nil {
		return fmt.Errorf("run %s: %w", spec.RunID, err)
	}
	apiKey, err := adapter.APIKey(spec)
	if err != nil {
		return fmt.Errorf("%s adapter: %w", x.Name, err)
	}
	report, err := adapter.NewReporter(spec, log)
	if err != nil {
		return fmt.Errorf("%s adapter: %w", x.Name, err)
	}
	program, err := exec.LookPath(cmp.Or(os.Getenv(x.ProgramEnv), x.Program))
	if err != nil {
		return evalflow.Permanent(fmt.Errorf("run %s: %s is not installed in this image: %w", spec.RunID, x.Program, err))
	}

	log.Info(x.Program+" starting", "args", args)
	p := &progress{tracker: adapter.NewTracker(0, 0), report: report, every: cmp.Or(x.ReportEvery, time.Second)}
	p.send(ctx, "starting", 0, 0, true)
	if err := x.run(ctx, spec, program, args, apiKey, programLog, p); err != nil {
		return fmt.Errorf("run %s: %w", spec.RunID, err)
	}

	p.send(ctx, "writing", -1, -1, true)
	res, samples, err := x.Read(spec)
	if err != nil {
		return fmt.Errorf("run %s: %w", spec.RunID, err)
	}
	if err := results.Write(spec.OutputDir, res, samples, apiKey); err != nil {
		return fmt.Errorf("run %s: %w", spec.RunID, err)
	}
	if err := adapter.Publish(ctx, spec); err != nil {
		return err
	}
	p.finish(context.WithoutCancel(ctx), len(samples))
	report.Succeeded(context.WithoutCancel(ctx), &res.Summary)
	log.Info(x.Program+" finished", "samples", len(samples), "scores", res.Summary.Scores)
	return nil
}

// run runs the program to its end.
// The program's output is copied with apiKey redacted: it may log what the endpoint
// echoed.
func (x Engine) run(ctx context.Context, spec evalflow.JobSpec, program string, args []string, apiKey string, programLog io.Writer, p *progress) error {
	cmd := exec.CommandContext(ctx, program, args...)
	cmd.Env = append(os.Environ(), adapter.OpenAIKeyEnv(apiKey)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	tail := &lastLines{n: 12}
	redacted := &redactingWriter{w: io.MultiWriter(programLog, tail), redact: evalflow.NewRedactor(apiKey)}
	out := &lockedWriter{w: redacted} // stdout and stderr, copied at once
	cmd.Stdout = out
	var stderr io.Reader
	if x.Scan != nil {
		pipe, err := cmd.StderrPipe()
		if err != nil {
			return fmt.Errorf("%s: %w", x.Program, err)
		}
		stderr = pipe
	} else {
		cmd.Stderr = out
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", x.Program, err)
	}
	stopPolling := x.poll(ctx, spec, p)
	if stderr != nil {
		if err := x.Scan(stderr, out, func(done, total int) { p.send(ctx, "requesting", done, total, done == total) }); err != nil {
			// Progress is lost, not the run: the rest of the log is copied as it is,
			// so that the program never blocks on a full pipe.
			fmt.Fprintf(out, "\nevalflow: %s's progress is no longer followed: %v\n", x.Program, err)
			_, _ = io.Copy(out, stderr)
		}
	}
	err := cmd.Wait()
	stopPolling()
	out.flush(redacted)
	if err != nil {
		last := tail.String()
		for _, sign := range x.PermanentSigns {
			if strings.Contains(last, sign) {
				err = evalflow.Permanent(err)
				break
			}
		}
		return fmt.Errorf("%s failed: %w; its last words:\n%s", x.Program, err, last)
	}
	return nil
}

// poll asks Poll how far the program is until the returned stop is called.
func (x Engine) poll(ctx context.Context, spec evalflow.JobSpec, p *progress) (stop func()) {
	if x.Poll == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(cmp.Or(x.PollEvery, 2*time.Second))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				phase, n, total := x.Poll(spec)
				p.send(ctx, phase, n, total, false)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// progress sends reports at most once every every, except those forced.
type progress struct {
	mu      sync.Mutex
	every   time.Duration
	tracker *adapter.Tracker
	report  *adapter.Reporter
	last    time.Time
	sent    evalflow.Progress
}

// send reports phase at done of total (negative: as before).
func (p *progress) send(ctx context.Context, phase string, done, total int, force bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if done >= 0 {
		p.tracker.Set(done, total)
	}
	next := p.tracker.Progress(phase)
	same := next.Phase == p.sent.Phase && next.Done == p.sent.Done && next.Total == p.sent.Total
	if !force && (same || time.Since(p.last) < p.every) {
		return
	}
	p.last, p.sent = time.Now(), next
	p.report.Progress(ctx, next)
}

// finish reports the end in the units the program's progress had (its requests,
// datasets), or in samples when it reported none: job-watch keeps only reports that
// do not count backwards.
func (p *progress) finish(ctx context.Context, samples int) {
	p.mu.Lock()
	last := p.sent
	p.mu.Unlock()
	if last.Total == 0 {
		p.send(ctx, "done", samples, samples, true)
		return
	}
	p.send(ctx, "done", last.Total, last.Total, true)
}

// redactingWriter writes to w what is written to it, a line at a time, with secret
// redacted: a line is whole before it is looked at, so no write boundary splits a
// secret past it. A line longer than maxHeldLine is written as it stands so far.
type redactingWriter struct {
	w      io.Writer
	redact *evalflow.Redactor
	held   []byte
}

const maxHeldLine = 1 << 20

func (r *redactingWriter) Write(b []byte) (int, error) {
	r.held = append(r.held, b...)
	for {
		i := bytes.IndexByte(r.held, '\n')
		if i < 0 && len(r.held) < maxHeldLine {
			return len(b), nil
		}
		if i < 0 {
			i = len(r.held) - 1
		}
		if _, err := r.w.Write(r.redact.Bytes(r.held[:i+1])); err != nil {
			return len(b), err
		}
		r.held = r.held[i+1:]
	}
}

// flush writes what r holds of a last line without its end.
func (r *redactingWriter) flush() {
	if len(r.held) > 0 {
		_, _ = r.w.Write(r.redact.Bytes(r.held))
		r.held = nil
	}
}

// lockedWriter lets two copies write to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// flush flushes r, which l writes to, under l's lock.
func (l *lockedWriter) flush(r *redactingWriter) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.flush()
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// lastLines keeps the last n lines written to it.
type lastLines struct {
	mu    sync.Mutex
	n     int
	lines []string
	part  string
}

func (l *lastLines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	parts := strings.Split(l.part+string(b), "\n")
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
	return len(b), nil
}

func (l *lastLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(append(append([]string(nil), l.lines...), l.part), "\n")
}

// Main is an adapter program's main: it runs the job named by --job (default
// /meta/job.json) with x and exits with adapter.ExitCode.
func Main(x Engine) {
	jobPath := flag.String("job", "/meta/job.json", "the job spec")
	flag.Parse()
	log := evalflow.NewLogger(os.Getenv("LOG_LEVEL"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := x.Run(ctx, *jobPath, os.Stderr, log)
	stop()
	if err != nil {
		log.Error("evaluation failed", "error", err)
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(adapter.ExitCode(err)) // a permanent failure is not started again
}
