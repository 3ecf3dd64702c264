// Package function is evalflow's artifact step: it pushes a finished run's results
// (results.json and samples.jsonl) as one OCI artifact, tagged with the run id, and
// records the reference. A redelivery pushes nothing twice. A Kubernetes Job pushed
// its results itself, under a staging tag: the run's manifest is written over the
// same layers.
package function

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/pipeline"
)

// Config is artifact's own configuration.
type Config struct {
	ResultsDir string `env:"EVALFLOW_RESULTS_DIR, required"`
	OCI        oci.Config
}

// Function is the artifact step.
type Function struct {
	*pipeline.Env // the store, the sender, the logger; Stop and Ready
	cfg           Config
	dest          *oci.Destination
}

// New returns the function; Start connects it.
func New() *Function { return &Function{} }

// Start connects to Redis, the broker and the OCI destination.
func (f *Function) Start(ctx context.Context, cfg map[string]string) (err error) {
	if err = pipeline.Load(ctx, cfg, &f.cfg); err != nil {
		return fmt.Errorf("artifact: config: %w", err)
	}
	if f.dest, err = oci.Open(f.cfg.OCI); err != nil {
		return fmt.Errorf("artifact: %w", err)
	}
	f.Env, err = pipeline.Open(ctx, evalflow.StepArtifact, cfg)
	return err
}

// Handle serves the step's deliveries over HTTP, each in its own request's goroutine
// and context, from the broker alone where it has a delivery token (pipeline.Deliver).
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	f.Deliver(w, r, f.HandleEvent)
}

// HandleEvent pushes the results of the run named by results.ready, records the artifact,
// ends the run as succeeded and replies run.succeeded.
func (f *Function) HandleEvent(ctx context.Context, e event.Event) (*event.Event, error) {
	return f.Turn(ctx, e, evalflow.StatusStoring, f.store)
}

// store pushes the run's results as its artifact and ends the run as succeeded.
func (f *Function) store(ctx context.Context, t *pipeline.Turn) (*event.Event, error) {
	run := t.Run
	artifact, err := f.push(ctx, run)
	if err != nil { // results missing: the run fails; the registry down: redeliver
		return f.Settle(ctx, run.ID, "push results", err)
	}
	_, err = f.Change(ctx, run, func(r *evalflow.Run) error {
		if err := r.Advance(evalflow.StatusSucceeded, f.Now()); err != nil {
			return err
		}
		r.Artifact = artifact
		return nil
	}, evalflow.NoteSucceeded, "results pushed to "+artifact.Reference)
	if errors.Is(err, evalflow.ErrStale) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return f.Next(evalflow.TypeSucceeded, run.ID), nil
}

func (f *Function) push(ctx context.Context, run *evalflow.Run) (*evalflow.Artifact, error) {
	a := oci.Results(evalflow.ResultsPath(f.cfg.ResultsDir, run.ID), run.ID, run.ID, run.ModelName, run.Datasets, run.CreatedAt)
	push := f.dest.Push
	if run.OnKubernetes() { // its Job pushed the results under the staging tag
		push = func(ctx context.Context, a oci.Artifact) (*evalflow.Artifact, bool, error) {
			return f.dest.PushStaged(ctx, a, evalflow.StagingTag(run.ID))
		}
	}
	artifact, pushed, err := push(ctx, a)
	if err != nil {
		return nil, fmt.Errorf("push results of run %s: %w", run.ID, err)
	}
	if run.OnKubernetes() {
		// The staging tag has served; a registry that refuses deletions keeps it.
		if err := f.dest.DropStaged(ctx, evalflow.StagingTag(run.ID), artifact); err != nil {
			f.Log.Warn("staging tag left in place", "run_id", run.ID, "tag", evalflow.StagingTag(run.ID), "error", err)
		}
	}
	f.Log.Info("results artifact", "run_id", run.ID, "reference", artifact.Reference, "pushed", pushed)
	return artifact, nil
}
