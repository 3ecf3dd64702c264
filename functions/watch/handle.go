// Package function is evalflow's job-watch step: it follows the run's job — the
// runner's progress reports and the job's end — into the run record, and hands a
// finished run's results to the artifact step.
package function

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cloudevents/sdk-go/v2/event"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/pipeline"
)

// Config is job-watch's own configuration.
type Config struct {
	ResultsDir string `env:"EVALFLOW_RESULTS_DIR, required"`
}

// Function is the job-watch step.
type Function struct {
	*pipeline.Env // the store, the sender, the logger; Stop and Ready
	cfg           Config
}

// New returns the function; Start connects it.
func New() *Function { return &Function{} }

// Start connects to Redis and the broker.
func (f *Function) Start(ctx context.Context, cfg map[string]string) (err error) {
	if err = pipeline.Load(ctx, cfg, &f.cfg); err != nil {
		return fmt.Errorf("job-watch: config: %w", err)
	}
	f.Env, err = pipeline.Open(ctx, evalflow.StepWatch, cfg)
	return err
}

// Handle follows job.created, job.progress and job.finished. A finished job's run gets
// its results summary and results.ready is the reply; a failed job fails the run.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	id := f.RunID(e)
	if id == "" {
		return nil, nil
	}
	// Whichever of the job's events comes first (they may arrive in any order), the
	// run is now running.
	run, ok, err := f.Begin(ctx, id, evalflow.StatusRunning)
	if err != nil || !ok {
		return nil, err
	}
	switch e.Type() {
	case evalflow.TypeJobProgress:
		return nil, f.progress(ctx, e)
	case evalflow.TypeJobFinished:
		return f.finished(ctx, run, e)
	}
	return nil, nil
}

// progress records a progress report unless a newer one is already there.
func (f *Function) progress(ctx context.Context, e event.Event) error {
	var p evalflow.JobProgress
	if err := cloudevent.Decode(e, &p); err != nil {
		f.Log.Error("bad progress report dropped", "run_id", e.Subject(), "error", err)
		return nil
	}
	run, err := f.Store.Update(ctx, p.RunID, func(r *evalflow.Run) error { return r.Report(p.Progress, f.Now()) })
	if errors.Is(err, evalflow.ErrStale) {
		return nil // an older report, or the run has moved on
	}
	if err != nil {
		return err
	}
	return f.Notify(ctx, run, evalflow.NoteProgress, fmt.Sprintf("%s: %d/%d", p.Phase, p.Done, p.Total))
}

// finished ends the watch: a failed job fails the run; a succeeded one records the
// results summary and replies results.ready.
func (f *Function) finished(ctx context.Context, run *evalflow.Run, e event.Event) (*event.Event, error) {
	var fin evalflow.JobFinished
	if err := cloudevent.Decode(e, &fin); err != nil {
		f.Log.Error("bad job.finished dropped", "run_id", run.ID, "error", err)
		return nil, nil
	}
	if !fin.Succeeded {
		return f.Fail(ctx, run.ID, "job-watch: job "+fin.Job+" failed: "+fin.Message)
	}
	summary, err := readSummary(filepath.Join(evalflow.ResultsPath(f.cfg.ResultsDir, run.ID), evalflow.ResultsFile))
	if err != nil {
		return f.Fail(ctx, run.ID, "job-watch: job "+fin.Job+" succeeded but left no usable results: "+err.Error())
	}
	run, err = f.Store.Update(ctx, run.ID, func(r *evalflow.Run) error {
		if r.Status != evalflow.StatusRunning {
			return evalflow.ErrStale
		}
		r.Summary = summary
		r.Progress.Done, r.Progress.ETASeconds = r.Progress.Total, 0
		return nil
	})
	if errors.Is(err, evalflow.ErrStale) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := f.Notify(ctx, run, evalflow.NoteSucceeded, "job "+fin.Job+" finished"); err != nil {
		return nil, err
	}
	return f.Next(evalflow.TypeResultsReady, run.ID), nil
}

func readSummary(path string) (*evalflow.Summary, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var res evalflow.Results
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return &res.Summary, nil
}
