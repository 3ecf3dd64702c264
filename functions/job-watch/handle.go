// Package function is evalflow's job-watch step: it follows the run's job — the
// runner's progress reports and the job's end — into the run record, and hands a
// finished run's results to the artifact step.
package function

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/pipeline"
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
}

// New returns the function; Start connects it.
func New() *Function { return &Function{} }

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

// Handle serves the step's deliveries over HTTP, each in its own request's goroutine
// and context, from the broker alone where it has a delivery token (pipeline.Deliver).
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	f.Deliver(w, r, f.HandleEvent)
}

// HandleEvent follows job.created, job.progress and job.finished into the run, and on a
// PingSource's tick looks for Kubernetes Jobs that ended and runs that stand still. A
// finished job's run gets its results summary and results.ready is the reply; a failed
// job fails the run.
func (f *Function) HandleEvent(ctx context.Context, e event.Event) (*event.Event, error) {
	switch {
	case isDeadLetter(e):
		return f.Serve(ctx, e, f.deadLetter)
	case cloudevent.TypeOf(e) == evalflow.TypePing:
		return f.Serve(ctx, e, f.tick)
	case cloudevent.TypeOf(e) == evalflow.TypeJobChanged:
		return f.Serve(ctx, e, f.jobChanged)
	}
	// A job's report, only if signed by the run's own job (or evalflow). Whichever of
	// the job's events comes first (they may arrive in any order), the run is now
	// running.
	return f.Turn(ctx, e, evalflow.StatusRunning, f.report, pipeline.OneAtATime())
}
