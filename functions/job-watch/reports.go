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
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/pipeline"
)

// report records a report of the run's job, in the run's turn: its progress, or its
// end.
func (f *Function) report(ctx context.Context, t *pipeline.Turn) (*event.Event, error) {
	switch cloudevent.TypeOf(t.Event) {
	case evalflow.TypeJobProgress:
		return nil, f.progress(ctx, t.Run, t.Event)
	case evalflow.TypeJobFinished:
		return f.finished(ctx, t.Run, t.Event)
	}
	return nil, nil // job.created: the run is running, and that is all
}

// progress records a progress report unless a newer one is already there.
func (f *Function) progress(ctx context.Context, run *evalflow.Run, e event.Event) error {
	var p evalflow.JobProgress
	if err := cloudevent.Decode(e, &p); err != nil {
		f.Log.Error("bad progress report dropped", "run_id", e.Subject(), "error", err)
		return nil
	}
	_, err := f.Change(ctx, run, func(r *evalflow.Run) error { return r.Report(p.Progress, f.Now()) },
		evalflow.NoteProgress, fmt.Sprintf("%s: %d/%d", p.Phase, p.Done, p.Total))
	if errors.Is(err, evalflow.ErrStale) {
		return nil // an older report, or the run has moved on
	}
	return err
}

// handOverAgain replies results.ready again for a run whose end a copy of the
// report recorded, while the run still waits for the artifact step: the run as
// stored decides (the step's own copy may be behind).
func (f *Function) handOverAgain(ctx context.Context, id string) (*event.Event, error) {
	run, err := f.Store.Get(ctx, id)
	switch {
	case errors.Is(err, evalflow.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("job-watch: run %s: %w", id, err)
	case run.Status != evalflow.StatusRunning:
		return nil, nil // the artifact step has it
	}
	return f.Next(evalflow.TypeResultsReady, id), nil
}

// errHandedOver is a job's end that a copy of its report recorded meanwhile.
var errHandedOver = errors.New("the job's end is recorded already")

// finished ends the watch: a failed job fails the run; a succeeded one records the
// results summary and replies results.ready (again, the same event, for a copy of the
// report: the first reply may have been lost).
func (f *Function) finished(ctx context.Context, run *evalflow.Run, e event.Event) (*event.Event, error) {
	var fin evalflow.JobFinished
	if err := cloudevent.Decode(e, &fin); err != nil {
		f.Log.Error("bad job.finished dropped", "run_id", run.ID, "error", err)
		return nil, nil
	}
	if !fin.Succeeded {
		return f.Fail(ctx, run.ID, "job-watch: job "+fin.Job+" failed: "+fin.Message)
	}
	if run.Summary != nil { // a copy of this report recorded the end: hand over again (the same event)
		return f.handOverAgain(ctx, run.ID)
	}
	summary := fin.Summary // the job's own signed report carries it
	var err error
	if summary == nil {
		if summary, err = f.summary(ctx, run); err != nil { // none, or unreadable: the run fails; the registry did not answer: redeliver
			return f.Settle(ctx, run.ID, "job "+fin.Job+" succeeded but left no usable results", err)
		}
	}
	run, err = f.Change(ctx, run, func(r *evalflow.Run) error {
		if r.Status != evalflow.StatusRunning {
			return evalflow.ErrStale
		}
		if r.Summary != nil {
			return errHandedOver
		}
		r.Summary = summary
		r.Progress.Done, r.Progress.ETASeconds = r.Progress.Total, 0
		r.UpdatedAt = f.Now() // a stalled hand-over to the artifact step counts from here
		return nil
	}, evalflow.NoteSucceeded, "job "+fin.Job+" finished")
	if errors.Is(err, evalflow.ErrStale) {
		return nil, nil
	}
	if err != nil && !errors.Is(err, errHandedOver) {
		return nil, err
	}
	return f.Next(evalflow.TypeResultsReady, run.ID), nil
}

// summary reads the summary of run's results: from the registry a Kubernetes Job
// pushed them to, or from the results directory a local job wrote them in. Results
// that are not there, or not readable, are evalflow.ErrPermanent.
func (f *Function) summary(ctx context.Context, run *evalflow.Run) (*evalflow.Summary, error) {
	var b []byte
	var err error
	switch {
	case !run.OnKubernetes():
		b, err = os.ReadFile(filepath.Join(evalflow.ResultsPath(f.cfg.ResultsDir, run.ID), evalflow.ResultsFile))
		if err != nil {
			return nil, evalflow.Permanent(err)
		}
	case f.staged == nil:
		return nil, evalflow.Permanent(errors.New("a Kubernetes Job pushes its results to EVALFLOW_REGISTRY, which job-watch lacks"))
	default:
		if b, err = f.staged.FetchLayer(ctx, evalflow.StagingTag(run.ID), oci.MediaTypeSummary); err != nil {
			return nil, err // oci.ErrNotFound is permanent; a registry that does not answer is not
		}
	}
	var res evalflow.Results
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, evalflow.Permanent(fmt.Errorf("%s: %w", evalflow.ResultsFile, err))
	}
	return &res.Summary, nil
}
