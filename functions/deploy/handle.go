// Package function is evalflow's deploy step: it creates the run's evaluation job
// exactly once, whatever the broker redelivers, and stops it when the run is cancelled.
// A run without a kubeconfig runs as a local process (localjob); a run with one, as a
// Kubernetes Job in the cluster and namespace its kubeconfig names.
package function

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/evalflow/evalflow/localjob"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/engines"
	"github.com/evalflow/evalflow/shared/kube"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/pipeline"
	"github.com/evalflow/evalflow/shared/runstore"
	"github.com/evalflow/evalflow/shared/tracing"
)

// Config is deploy's own configuration.
type Config struct {
	// JobsURL is the local job runtime (localjob) that runs the runner as a process
	// (local mode). A cluster deployment has none: its runs' Jobs run in a cluster.
	JobsURL string `env:"EVALFLOW_JOBS_URL"`
	// JobsToken is the local job runtime's bearer token.
	JobsToken  string        `env:"EVALFLOW_JOBS_TOKEN"`
	DataDir    string        `env:"EVALFLOW_DATA_DIR, required"`
	ResultsDir string        `env:"EVALFLOW_RESULTS_DIR, required"`
	Deadline   time.Duration `env:"EVALFLOW_JOB_DEADLINE, default=6h"`
	TTL        time.Duration `env:"EVALFLOW_JOB_TTL, default=1h"`
	// Sink is where the runner sends its progress reports (the broker).
	Sink string `env:"K_SINK, required"`
	// OCI is where results go: a Kubernetes Job pushes its results there itself (its
	// output directory goes with its pod), under a staging tag artifact then reads.
	OCI oci.Config
	// JobRegistry is that repository as Jobs reach it, when their address for it is
	// not evalflow's (default: EVALFLOW_REGISTRY).
	JobRegistry string `env:"EVALFLOW_JOB_REGISTRY"`
	// JobCallbackURL is the broker as Kubernetes Jobs reach it, for their progress
	// reports, when their address for it is not K_SINK (a Job in another cluster).
	JobCallbackURL string `env:"EVALFLOW_JOB_CALLBACK_URL"`
	// JobCallbackAudience is the broker's audience in Knative Eventing's OIDC
	// authentication: a Job of evalflow's own cluster posts its reports with a token of
	// its pod's ServiceAccount for it (eventing/eventpolicy.yaml lets those in).
	JobCallbackAudience string `env:"EVALFLOW_JOB_CALLBACK_AUDIENCE"`
	// DataArtifact is the benchmark data as an OCI artifact in that registry,
	// HOST[:PORT]/REPOSITORY@sha256:... as Jobs reach it (evalflow publish-data): a
	// Kubernetes Job pulls it, as no volume of its holds the data.
	DataArtifact string `env:"EVALFLOW_DATA_ARTIFACT"`
	// MaxJobs is how many runs' jobs run at once; later runs wait in line, in the
	// order they were started, and a run's end lets the next one in.
	MaxJobs int `env:"EVALFLOW_MAX_JOBS, default=8"`
	// JobMetricsAddress is where a Kubernetes Job's runner serves its Prometheus
	// metrics in its pod (local jobs, many on one machine, serve none).
	JobMetricsAddress string `env:"EVALFLOW_JOB_METRICS_ADDRESS, default=:9464"`
}

// Jobs creates and deletes evaluation jobs: a job runtime. Create of an existing job
// is evalflow.ErrJobExists.
type Jobs interface {
	Create(ctx context.Context, spec evalflow.JobSpec, secrets evalflow.JobSecrets) error
	Delete(ctx context.Context, name string) error
}

var (
	_ Jobs = (*localjob.Client)(nil) // local target: the runner as a process
	_ Jobs = (*kube.Cluster)(nil)    // Kubernetes target: a Job in the run's cluster
)

// Function is the deploy step.
type Function struct {
	*pipeline.Env // the store, the sender, the logger; Stop and Ready
	jobs          Jobs
	defaults      evalflow.JobDefaults
	maxJobs       int
	jobMetrics    string
	// registryPassword lets Kubernetes Jobs push their results (in their Secret).
	registryPassword string
}

// New returns the function; Start connects it.
func New() *Function { return &Function{} }

// Start connects to Redis, the broker and the job runtime.
func (f *Function) Start(ctx context.Context, cfg map[string]string) (err error) {
	var c Config
	if err = pipeline.Load(ctx, cfg, &c); err != nil {
		return fmt.Errorf("deploy: config: %w", err)
	}
	if c.JobsURL != "" {
		f.jobs = &localjob.Client{URL: c.JobsURL, Token: c.JobsToken}
	}
	if c.MaxJobs < 1 {
		return fmt.Errorf("deploy: config EVALFLOW_MAX_JOBS: %d: at least 1", c.MaxJobs)
	}
	f.maxJobs, f.jobMetrics = c.MaxJobs, c.JobMetricsAddress
	f.defaults = evalflow.JobDefaults{CallbackURL: c.Sink, ClusterCallbackURL: c.JobCallbackURL, CallbackAudience: c.JobCallbackAudience, DataDir: c.DataDir, ResultsDir: c.ResultsDir,
		DeadlineSeconds: int64(c.Deadline.Seconds()), TTLSecondsAfterFinished: int32(c.TTL.Seconds())}
	if c.OCI.Registry != "" {
		f.defaults.Results = &evalflow.ResultsTarget{Repository: cmp.Or(c.JobRegistry, c.OCI.Registry),
			RegistryAccess: evalflow.RegistryAccess{PlainHTTP: c.OCI.PlainHTTP, Username: c.OCI.Username}}
		f.registryPassword = c.OCI.Password
		if c.DataArtifact != "" {
			f.defaults.Data = &evalflow.DataArtifact{Reference: c.DataArtifact, RegistryAccess: f.defaults.Results.RegistryAccess}
		}
	}
	if f.Env, err = pipeline.Open(ctx, evalflow.StepDeploy, cfg); err != nil {
		return err
	}
	f.defaults.BaseURLAllow, f.defaults.BaseURLDeny = f.Network.Lists() // the job refuses what verify refuses
	return nil
}

// Handle serves the step's deliveries over HTTP, each in its own request's goroutine
// and context, from the broker alone where it has a delivery token (pipeline.Deliver).
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	f.Deliver(w, r, f.HandleEvent)
}

// HandleEvent creates the job of a verified run, once it has one of the job slots, and
// replies job.created; a run in line is let in again (run.verified) by the end of the
// run whose slot it is handed (pipeline.Env.Change). When a run is cancelled or fails,
// it stops the run's job.
func (f *Function) HandleEvent(ctx context.Context, e event.Event) (*event.Event, error) {
	if cloudevent.TypeOf(e) == evalflow.TypeCancelled || cloudevent.TypeOf(e) == evalflow.TypeFailed {
		return f.Signed(ctx, e, func(ctx context.Context, id string) (*event.Event, error) { return nil, f.stop(ctx, id) })
	}
	// The run asks for a job slot with the write that moves it to deploying.
	slot := runstore.Admission{Slots: f.maxJobs}
	return f.Turn(ctx, e, evalflow.StatusDeploying, func(ctx context.Context, t *pipeline.Turn) (*event.Event, error) {
		if admitted, err := f.admit(ctx, t.Run, slot); err != nil || !admitted {
			return nil, err
		}
		return f.createJob(ctx, t.Run, t.Secrets)
	}, pipeline.WithSecrets(), pipeline.Updating(runstore.Admitting(&slot)))
}

// admit gives run a job slot, or puts it in line saying where and when it may start
// (once: a run let in again that still finds no free slot keeps its place and its
// estimate; the API shows its place as it is now). slot is what the run's move to
// deploying was answered; a run that was deploying already asks now.
func (f *Function) admit(ctx context.Context, run *evalflow.Run, slot runstore.Admission) (bool, error) {
	admitted, position := slot.Admitted, slot.Position
	if !slot.Decided {
		var err error
		if admitted, position, err = f.Store.Admit(ctx, run.ID, run.CreatedAt, f.maxJobs); err != nil {
			return false, err
		}
	}
	if admitted {
		return true, nil
	}
	if run.Queued {
		return false, nil // in line already: the API shows its place as it is now
	}
	now := f.Now()
	message := fmt.Sprintf("waiting for one of %d job slots (queue_position: its place in line now; %d before it when it joined)", f.maxJobs, position-1)
	_, err := f.Change(ctx, run, func(r *evalflow.Run) error {
		if r.Status != evalflow.StatusDeploying || r.Queued {
			return evalflow.ErrStale
		}
		r.Queued, r.QueuePosition = true, position
		// Its turn comes when the runs ahead have run, a slot's worth at a time.
		ahead := time.Duration((position+f.maxJobs-1)/f.maxJobs) * evalflow.EstimateDuration(r.Progress.Total, r.Concurrency)
		r.ETA = now.Add(ahead + evalflow.EstimateDuration(r.Progress.Total, r.Concurrency))
		r.Message = message
		return nil
	}, evalflow.NoteQueued, message)
	if errors.Is(err, evalflow.ErrStale) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	f.Log.Info("run waits for a job slot", "run_id", run.ID, "position", position)
	return false, nil
}

// createJob creates run's job, exactly once, and replies job.created.
func (f *Function) createJob(ctx context.Context, run *evalflow.Run, secrets map[string]string) (*event.Event, error) {
	id := run.ID
	if run.Job != "" { // a copy of this event created the job and recorded it: reply again (the same event)
		return f.jobCreated(id), nil
	}
	jobs, err := f.jobsOf(run, secrets)
	if err != nil {
		return f.Settle(ctx, id, "job runtime", err)
	}
	spec := evalflow.NewJobSpec(run, f.defaults)
	spec.TraceParent, _ = tracing.Inject(ctx) // the job goes on in the run's trace
	spec.OTLPEndpoint = f.OTLPEndpoint
	if run.OnKubernetes() {
		spec.MetricsAddress = f.jobMetrics
	}
	switch err := jobs.Create(ctx, spec, evalflow.JobSecrets{APIKey: secrets[runstore.SecretAPIKey], RegistryPassword: f.registryPassword, ReportKey: f.ReportKey(run.ID)}); {
	case errors.Is(err, evalflow.ErrJobExists):
		f.Log.Info("job exists already: a redelivery", "run_id", id, "job", spec.ID)
	case err != nil:
		return f.Settle(ctx, id, "job "+spec.ID, err)
	default:
		f.Log.Info("job created", "run_id", id, "job", spec.ID)
	}
	run, err = f.Change(ctx, run, func(r *evalflow.Run) error {
		// The job's first report may have moved the run to running already: it
		// still records its job (job-watch and the stalled-run driver need it).
		if r.Status != evalflow.StatusDeploying && (r.Status != evalflow.StatusRunning || r.Job != "") {
			return evalflow.ErrStale
		}
		if r.Job != "" {
			return errRecorded
		}
		if r.Queued { // its wait is over
			r.Message = ""
		}
		r.Job, r.Queued, r.QueuePosition = spec.ID, false, 0
		return nil
	}, evalflow.NoteSucceeded, "job "+spec.ID+" created")
	if errors.Is(err, evalflow.ErrStale) {
		return nil, f.stopIfEnded(ctx, run)
	}
	if err != nil && !errors.Is(err, errRecorded) {
		return nil, err
	}
	return f.jobCreated(id), nil
}

// errRecorded is a job that a copy of the event recorded meanwhile.
var errRecorded = errors.New("the job is recorded already")

// jobCreated is the reply that hands run id to job-watch.
func (f *Function) jobCreated(id string) *event.Event {
	created := f.Next(evalflow.TypeJobCreated, id)
	cloudevent.Sign(created, f.ReportKey(id)) // job-watch takes only the run's signed job events
	return created
}

// jobsOf is the job runtime of run's target: the local one, evalflow's own cluster,
// or the cluster its kubeconfig (among its secrets) reaches.
func (f *Function) jobsOf(run *evalflow.Run, secrets map[string]string) (Jobs, error) {
	if !run.OnKubernetes() {
		if e, ok := engines.Default().Get(run.Engine); !ok || !e.Local {
			return nil, evalflow.Permanent(fmt.Errorf("engine %q runs only as a container image in a Kubernetes Job; "+
				"without a kubeconfig runs are local processes (built-in engine %q)", run.Engine, evalflow.DefaultEngine))
		}
		if f.jobs == nil {
			return nil, evalflow.Permanent(errors.New("this deployment runs no local jobs (no EVALFLOW_JOBS_URL): a run needs a kubeconfig, or EVALFLOW_OWN_CLUSTER"))
		}
		return f.jobs, nil
	}
	if f.defaults.Results == nil {
		return nil, evalflow.Permanent(errors.New("a Kubernetes Job's results leave it through an OCI registry, and this deployment has none " +
			"(set EVALFLOW_REGISTRY, reachable from the cluster)"))
	}
	return f.ClusterOf(run, secrets[runstore.SecretKubeconfig])
}

// stopIfEnded stops a job created for a run that was cancelled (or failed) meanwhile.
func (f *Function) stopIfEnded(ctx context.Context, run *evalflow.Run) error {
	if stoppable(run) {
		return f.stop(ctx, run.ID)
	}
	return nil
}

// stoppable is whether run's job is to be stopped: the run was cancelled or failed.
// An event saying so of a run that has not (a forgery, or a late copy) stops nothing.
func stoppable(run *evalflow.Run) bool {
	return run.Status == evalflow.StatusCancelled || run.Status == evalflow.StatusFailed
}

// stop deletes run id's job. A Kubernetes target's kubeconfig outlives the cancelled
// run a while for this (runstore.StopGrace): also for a create that races the cancel
// and stops its own job once it sees the run cancelled.
func (f *Function) stop(ctx context.Context, id string) error {
	run, secrets, err := f.Store.GetWithSecrets(ctx, id)
	if errors.Is(err, evalflow.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deploy: stop job of run %s: %w", id, err)
	}
	if !stoppable(run) {
		f.Log.Warn("a stop for a run that has not ended so dropped", "run_id", id, "run_status", run.Status)
		return nil
	}
	jobs, err := f.jobsOf(run, secrets)
	if err != nil {
		// Never created, or stopped already by an earlier delivery of this cancel.
		f.Log.Info("no job to stop", "run_id", id, "reason", err.Error())
		return nil
	}
	if err := jobs.Delete(ctx, evalflow.JobName(id)); err != nil {
		return fmt.Errorf("deploy: stop job of run %s: %w", id, err)
	}
	f.Log.Info("job stopped", "run_id", id, "job", evalflow.JobName(id))
	return nil
}
