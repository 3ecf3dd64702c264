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
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

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

// Handle pushes the results of the run named by results.ready, records the artifact,
// ends the run as succeeded and replies run.succeeded.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	id := f.RunID(e)
	if id == "" {
		return nil, nil
	}
	run, ok, err := f.Begin(ctx, id, evalflow.StatusStoring)
	if err != nil || !ok {
		return nil, err
	}
	artifact, err := f.push(ctx, run)
	if errors.Is(err, fs.ErrNotExist) {
		return f.Fail(ctx, id, "artifact: "+err.Error())
	}
	if err != nil {
		return nil, err // transient (registry down): redeliver
	}
	run, err = f.Store.Update(ctx, id, func(r *evalflow.Run) error {
		if err := r.Advance(evalflow.StatusSucceeded, f.Now()); err != nil {
			return err
		}
		r.Artifact = artifact
		return nil
	})
	if errors.Is(err, evalflow.ErrStale) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := f.Notify(ctx, run, evalflow.NoteSucceeded, "results pushed to "+artifact.Reference); err != nil {
		return nil, err
	}
	return f.Next(evalflow.TypeSucceeded, id), nil
}

func (f *Function) push(ctx context.Context, run *evalflow.Run) (*evalflow.Artifact, error) {
	dir := evalflow.ResultsPath(f.cfg.ResultsDir, run.ID)
	names := make([]string, len(run.Datasets))
	for i, d := range run.Datasets {
		names[i] = d.Name
	}
	a := oci.Artifact{
		Tag: run.ID,
		Files: []oci.File{
			{Path: filepath.Join(dir, evalflow.ResultsFile), MediaType: oci.MediaTypeSummary},
			{Path: filepath.Join(dir, evalflow.SamplesFile), MediaType: oci.MediaTypeSamples},
		},
		Annotations: map[string]string{oci.AnnotationRunID: run.ID, oci.AnnotationModel: run.ModelName,
			oci.AnnotationDatasets: strings.Join(names, ",")},
		Created: run.CreatedAt,
	}
	push := f.dest.Push
	if run.Target == evalflow.TargetKubernetes { // its Job pushed the results under the staging tag
		push = func(ctx context.Context, a oci.Artifact) (ocispec.Descriptor, bool, error) {
			return f.dest.PushStaged(ctx, a, evalflow.StagingTag(run.ID))
		}
	}
	desc, pushed, err := push(ctx, a)
	if errors.Is(err, errdef.ErrNotFound) {
		err = fmt.Errorf("%w: %w", fs.ErrNotExist, err) // nothing staged: no redelivery mends it
	}
	if err != nil {
		return nil, fmt.Errorf("artifact: push results of run %s: %w", run.ID, err)
	}
	if run.Target == evalflow.TargetKubernetes {
		// The staging tag has served; a registry that refuses deletions keeps it.
		if err := f.dest.Delete(ctx, evalflow.StagingTag(run.ID)); err != nil {
			f.Log.Warn("staging tag left in place", "run_id", run.ID, "tag", evalflow.StagingTag(run.ID), "error", err)
		}
	}
	ref := f.dest.Reference(run.ID, desc)
	f.Log.Info("results artifact", "run_id", run.ID, "reference", ref, "pushed", pushed)
	return &evalflow.Artifact{Reference: ref, Digest: desc.Digest.String(), MediaType: desc.MediaType}, nil
}
