package function

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

// tick is a PingSource's: it looks for Kubernetes Jobs that ended, then drives runs
// that stand still; with none in flight, the tick stops until the next run.
func (f *Function) tick(ctx context.Context, _ event.Event) (*event.Event, error) {
	if err := f.sweep(ctx); err != nil {
		return nil, err
	}
	if err := f.drive(ctx); err != nil {
		return nil, err
	}
	return nil, f.StopTickingIfIdle(ctx)
}

// sweep reads the Job of every running Kubernetes run, oldest first, and reports each that ended (or
// is gone) to the broker as job.finished, whose id derives from the run: ticks that
// find the same end send the same event. One cluster's trouble does not stop the rest.
func (f *Function) sweep(ctx context.Context) error {
	if err := f.Store.Each(ctx, evalflow.StatusRunning, func(run *evalflow.Run) error { return f.reportEnd(ctx, run) }); err != nil {
		return fmt.Errorf("job-watch: sweep: %w", err)
	}
	return nil
}

// jobChanged reads the state of a Job an ApiServerSource says changed (the Job or its
// pod), if it is the job of a running run, and reports its end. The event names the Job only: its state
// is read from the run's cluster, never taken from the event.
func (f *Function) jobChanged(ctx context.Context, e event.Event) (*event.Event, error) {
	return nil, f.reportChange(ctx, e)
}

func (f *Function) reportChange(ctx context.Context, e event.Event) error {
	var ref evalflow.JobRef
	if err := cloudevent.Decode(e, &ref); err != nil {
		f.Log.Error("bad job reference dropped", "id", e.ID(), "error", err)
		return nil
	}
	job := ref.Name
	if ref.Kind == "Pod" { // a Job's pod is named JOB-xxxxx
		job = job[:max(strings.LastIndexByte(job, '-'), 0)]
	}
	id := evalflow.RunOfJob(job)
	if id == "" {
		return nil
	}
	run, err := f.Store.Get(ctx, id)
	if errors.Is(err, evalflow.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("job-watch: job %s changed: read run %s: %w", ref.Name, id, err)
	}
	if run.Status != evalflow.StatusRunning || run.Job != job {
		return nil
	}
	return f.reportEnd(ctx, run)
}

// reportEnd reports the end of running run's Kubernetes Job to the broker as
// job.finished, once it has ended (or is gone). The event's id derives from the run:
// each look that finds the same end sends the same event. One cluster's trouble is
// logged, not returned: it does not stop the rest.
func (f *Function) reportEnd(ctx context.Context, run *evalflow.Run) error {
	if !run.OnKubernetes() || run.Job == "" {
		return nil
	}
	fin, stop, err := f.jobEnd(ctx, run)
	if err != nil {
		f.Log.Error("cannot read the job of a running run", "run_id", run.ID, "job", run.Job, "error", err)
		return nil
	}
	if fin == nil {
		return nil
	}
	ev := cloudevent.New(evalflow.StepWatch, evalflow.TypeJobFinished, run.ID, fin, "kubernetes")
	cloudevent.Sign(&ev, f.ReportKey(run.ID))
	if err := f.Events.Send(ctx, ev); err != nil {
		return fmt.Errorf("job-watch: report the end of job %s of run %s: %w", run.Job, run.ID, err)
	}
	if stop != nil { // reported first: a Job gone before its end is told would be "gone", not why
		if err := stop(ctx); err != nil {
			f.Log.Error("cannot delete a job that will not progress", "run_id", run.ID, "job", run.Job, "error", err)
		}
	}
	return nil
}

// jobEnd is how run's Job ended, nil while it runs; stop, when set, deletes a Job that
// has not ended but will not progress, once its end is told.
func (f *Function) jobEnd(ctx context.Context, run *evalflow.Run) (fin *evalflow.JobFinished, stop func(context.Context) error, err error) {
	cluster, err := f.Cluster(ctx, run)
	if err != nil {
		return nil, nil, err
	}
	st, err := cluster.State(ctx, run.Job)
	switch {
	case err != nil:
		return nil, nil, err
	case !st.Found:
		return &evalflow.JobFinished{RunID: run.ID, Job: run.Job, Message: "the Job is gone from namespace " + cluster.Namespace + " (deleted, or past its TTL)"}, nil, nil
	case !st.Finished:
		return nil, nil, nil
	case st.Stuck: // it would hold its pod until its deadline: stop it once its end is told
		stop = func(ctx context.Context) error { return cluster.Delete(ctx, run.Job) }
	}
	return &evalflow.JobFinished{RunID: run.ID, Job: run.Job, Succeeded: st.Succeeded, Message: st.Message}, stop, nil
}
