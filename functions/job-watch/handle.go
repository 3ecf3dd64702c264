// Package function is evalflow's job-watch step: it follows the run's job — the
// runner's progress reports and the job's end — into the run record, and hands a
// finished run's results to the artifact step.
package function

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/moby/locker"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/pipeline"
	"github.com/evalflow/evalflow/shared/runstore"
)

// Config is job-watch's own configuration.
type Config struct {
	ResultsDir string `env:"EVALFLOW_RESULTS_DIR, required"`
	// DriveAfter is how long a run may stand still in a step before the event its
	// step waits for is sent again (the same event: a lost one, or one whose step
	// died); FailAfter, before it is failed saying what it waited for.
	DriveAfter time.Duration `env:"EVALFLOW_DRIVE_AFTER, default=2m"`
	FailAfter  time.Duration `env:"EVALFLOW_FAIL_AFTER, default=15m"`
	// OCI is where Kubernetes Jobs push their results (EVALFLOW_REGISTRY).
	OCI oci.Config
}

// Function is the job-watch step.
type Function struct {
	*pipeline.Env // the store, the sender, the logger; Stop and Ready
	cfg           Config
	staged        *oci.Destination // nil without a registry
	// runs has a run's reports handled one at a time: a job sends several at once,
	// and each then writes the run as the one before left it, with no conflict.
	runs *locker.Locker
}

// New returns the function; Start connects it.
func New() *Function { return &Function{runs: locker.New()} }

// Start connects to Redis and the broker.
func (f *Function) Start(ctx context.Context, cfg map[string]string) (err error) {
	if err = pipeline.Load(ctx, cfg, &f.cfg); err != nil {
		return fmt.Errorf("job-watch: config: %w", err)
	}
	if f.cfg.OCI.Registry != "" {
		if f.staged, err = oci.Open(f.cfg.OCI); err != nil {
			return fmt.Errorf("job-watch: %w", err)
		}
	}
	f.Env, err = pipeline.Open(ctx, evalflow.StepWatch, cfg)
	return err
}

// Handle serves the step's events over HTTP, each in its own request's goroutine and
// context (cloudevent.Serve).
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	cloudevent.Serve(w, r, f.HandleEvent)
}

// HandleEvent follows job.created, job.progress and job.finished, and on a PingSource's tick
// looks for Kubernetes Jobs that ended. A finished job's run gets
// its results summary and results.ready is the reply; a failed job fails the run.
func (f *Function) HandleEvent(ctx context.Context, e event.Event) (reply *event.Event, err error) {
	ctx, done := f.Handling(ctx, e)
	defer done(&reply, &err)
	if _, lost := e.Extensions()[extErrorDest]; lost {
		return f.deadLetter(ctx, e)
	}
	switch e.Type() {
	case evalflow.TypePing:
		if err := f.sweep(ctx); err != nil {
			return nil, err
		}
		return nil, f.drive(ctx)
	case evalflow.TypeJobChanged:
		return nil, f.jobChanged(ctx, e)
	}
	ref := f.Ref(e) // a job's report only if signed by the run's own job (or evalflow)
	id := ref.ID
	if id == "" {
		return nil, nil
	}
	f.runs.Lock(id)
	defer f.runs.Unlock(id)
	// Whichever of the job's events comes first (they may arrive in any order), the
	// run is now running.
	run, ok, err := f.Begin(ctx, ref, evalflow.StatusRunning)
	if err != nil || !ok {
		return nil, err
	}
	switch e.Type() {
	case evalflow.TypeJobProgress:
		return nil, f.progress(ctx, run, e)
	case evalflow.TypeJobFinished:
		return f.finished(ctx, run, e)
	}
	return nil, nil
}

// The extensions Knative sets on an event it dead-letters.
const (
	extErrorDest = "knativeerrordest"
	extErrorCode = "knativeerrorcode"
	extErrorData = "knativeerrordata"
)

// deadLetter receives what the broker could not deliver after a trigger's retries
// (every trigger's deadLetterSink is job-watch, reached inside the cluster only), keeps
// it, and fails the run it was about, so that no run waits forever on a lost event. A
// lost notification, request (start never recorded its run) or progress report fails
// nothing, nor does an event not evalflow's (a tick, a Job's reference: the next tick
// looks again). A run's event not signed for it is forged: neither kept nor counted.
func (f *Function) deadLetter(ctx context.Context, e event.Event) (*event.Event, error) {
	id := e.Subject()
	runEvent := id != "" && strings.HasPrefix(e.Type(), "dev.evalflow.") &&
		e.Type() != evalflow.TypeNotification && e.Type() != evalflow.TypeRequested
	if runEvent && f.Ref(e).ID != id {
		return nil, nil
	}
	dest, _ := e.Extensions()[extErrorDest].(string)
	code, _ := e.Extensions()[extErrorCode].(string)
	f.Log.Error("undeliverable event", "run_id", id, "type", e.Type(), "destination", dest, "code", code)
	f.Metrics.DeadLetters.WithLabelValues(e.Type()).Inc()
	if err := f.Store.KeepDeadLetter(ctx, evalflow.DeadLetter{ID: e.ID(), Type: e.Type(), Source: e.Source(), RunID: id,
		Destination: dest, Code: code, Reason: errorData(e), Time: f.Now().UTC()}); err != nil {
		return nil, err
	}
	if !runEvent || e.Type() == evalflow.TypeJobProgress {
		return nil, nil
	}
	return f.Fail(ctx, id, fmt.Sprintf("%s could not be delivered to %s after retries (last answer %s)", e.Type(), dest, code))
}

// errorData is what Knative says of a dead letter's last failure (knativeerrordata:
// the answer's body, base64), cut short; "" for none.
func errorData(e event.Event) string {
	v, _ := e.Extensions()[extErrorData].(string)
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return ""
	}
	return evalflow.Clip(strings.ToValidUTF8(string(b), "?"), 500)
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

// sweep reads the Job of every running Kubernetes run and reports each that ended (or
// is gone) to the broker as job.finished, whose id derives from the run: ticks that
// find the same end send the same event. One cluster's trouble does not stop the rest.
func (f *Function) sweep(ctx context.Context) error {
	runs, err := f.Store.List(ctx, runstore.ListOptions{Status: evalflow.StatusRunning, Limit: runstore.MaxList})
	if err != nil {
		return fmt.Errorf("job-watch: sweep: %w", err)
	}
	for _, run := range runs {
		if err := f.reportEnd(ctx, run); err != nil {
			return err
		}
	}
	return nil
}

// drive looks at every run that has not ended: one that has stood still in its step
// for DriveAfter gets the event its step waits for again (the same id: a step that
// had it already drops it), and one stalled for FailAfter is failed saying what it
// waited for. Events are lost, and steps die, between a broker and its subscribers.
func (f *Function) drive(ctx context.Context) error {
	for _, st := range []evalflow.Status{evalflow.StatusPending, evalflow.StatusVerifying, evalflow.StatusDeploying, evalflow.StatusRunning, evalflow.StatusStoring} {
		runs, err := f.Store.List(ctx, runstore.ListOptions{Status: st, Limit: runstore.MaxList})
		if err != nil {
			return fmt.Errorf("job-watch: drive stalled runs: %w", err)
		}
		for _, run := range runs {
			if err := f.driveRun(ctx, run); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *Function) driveRun(ctx context.Context, run *evalflow.Run) error {
	resend, waiting := run.Stalled()
	still := f.Now().Sub(run.UpdatedAt)
	switch {
	case (waiting == "" && resend == "") || still < f.cfg.DriveAfter:
		return nil
	case waiting != "" && still >= f.cfg.FailAfter:
		_, err := f.Fail(ctx, run.ID, fmt.Sprintf("stalled: %s for %s waiting for %s", run.Status, still.Round(time.Second), waiting))
		return err
	case resend == "":
		return nil
	}
	f.Log.Warn("stalled run driven again", "run_id", run.ID, "status", run.Status, "still_for", still.String(), "resent", resend)
	if err := f.Events.Send(ctx, *f.Next(resend, run.ID)); err != nil {
		return fmt.Errorf("job-watch: drive run %s: %w", run.ID, err)
	}
	return nil
}

// jobChanged reads the state of a Job an ApiServerSource says changed (the Job or its
// pod), if it is the job of a running run, and reports its end. The event names the Job only: its state
// is read from the run's cluster, never taken from the event.
func (f *Function) jobChanged(ctx context.Context, e event.Event) error {
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
