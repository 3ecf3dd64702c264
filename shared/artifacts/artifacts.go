// Package artifacts reads a run's results back from its OCI artifact (results.json
// and samples.jsonl), for the results API and page, and keeps the newest few parsed:
// an artifact never changes, so its digest keys it.
package artifacts

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/oci"
)

// Results are one run's results, parsed.
type Results struct {
	Results *evalflow.Results
	Samples *evalflow.Samples
}

// Reader reads runs' results from where artifacts are pushed.
type Reader struct {
	dest      *oci.Destination
	cache     *lru.Cache[string, *Results]
	summaries *lru.Cache[string, *evalflow.Results] // small: kept for many more runs
	flight    singleflight.Group
}

// keptSummaries is how many runs' results.json a Reader keeps parsed.
const keptSummaries = 256

// Open returns a Reader of the artifacts cfg names, keeping the newest keep runs'
// results parsed (a full MMLU run's samples take some 100 MB).
func Open(cfg oci.Config, keep int) (*Reader, error) {
	dest, err := oci.Open(cfg)
	if err != nil {
		return nil, err
	}
	cache, err := lru.New[string, *Results](max(keep, 1))
	if err != nil {
		return nil, err
	}
	summaries, err := lru.New[string, *evalflow.Results](keptSummaries)
	if err != nil {
		return nil, err
	}
	return &Reader{dest: dest, cache: cache, summaries: summaries}, nil
}

// ErrNoResults is a run that has no results artifact (yet): it has not succeeded.
var ErrNoResults = &evalflow.Error{Code: evalflow.CodeConflict, Field: "id", Message: "run has no results yet (only a succeeded run has)"}

// Read returns run's results, parsed.
func (r *Reader) Read(ctx context.Context, run *evalflow.Run) (*Results, error) {
	if run.Artifact == nil {
		return nil, ErrNoResults
	}
	key := run.Artifact.Digest
	if res, ok := r.cache.Get(key); ok {
		return res, nil
	}
	v, err, _ := r.flight.Do(key, func() (any, error) {
		res, err := r.read(ctx, run)
		if err == nil {
			r.cache.Add(key, res)
		}
		return res, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*Results), nil
}

// Summary returns run's results.json, parsed, without reading its samples: what its
// scores need.
func (r *Reader) Summary(ctx context.Context, run *evalflow.Run) (*evalflow.Results, error) {
	if run.Artifact == nil {
		return nil, ErrNoResults
	}
	key := run.Artifact.Digest
	if res, ok := r.summaries.Get(key); ok {
		return res, nil
	}
	if res, ok := r.cache.Peek(key); ok {
		return res.Results, nil
	}
	v, err, _ := r.flight.Do(evalflow.ResultsFile+"@"+key, func() (any, error) {
		b, err := r.File(ctx, run.ID, key, evalflow.ResultsFile)
		if err != nil {
			return nil, err
		}
		var res evalflow.Results
		if err := json.Unmarshal(b, &res); err != nil {
			return nil, fmt.Errorf("results of run %s: %s: %w", run.ID, evalflow.ResultsFile, err)
		}
		r.summaries.Add(key, &res)
		return &res, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*evalflow.Results), nil
}

func (r *Reader) read(ctx context.Context, run *evalflow.Run) (*Results, error) {
	runID, ref := run.ID, run.Artifact.Digest
	res, err := r.Summary(ctx, run)
	if err != nil {
		return nil, err
	}
	lines, err := r.dest.OpenLayer(ctx, ref, oci.MediaTypeSamples)
	if err != nil {
		return nil, fmt.Errorf("results of run %s: %w", runID, err)
	}
	defer lines.Close()
	samples, err := readSamples(lines) // parsed as it streams in
	if err != nil {
		return nil, fmt.Errorf("results of run %s: %w", runID, err)
	}
	return &Results{Results: res, Samples: samples}, nil
}

// mediaTypes are the artifact's files by name.
var mediaTypes = map[string]string{evalflow.ResultsFile: oci.MediaTypeSummary, evalflow.SamplesFile: oci.MediaTypeSamples}

// File reads one of the artifact's files (results.json, samples.jsonl) of run id,
// at ref (its digest), as it was pushed.
func (r *Reader) File(ctx context.Context, runID, ref, name string) ([]byte, error) {
	f, err := r.Open(ctx, runID, ref, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("results of run %s: %s: %w", runID, name, err)
	}
	return b, nil
}

// Open streams one of the artifact's files of run id, at ref, as it was pushed:
// a file whose bytes do not match its digest fails its last Read.
func (r *Reader) Open(ctx context.Context, runID, ref, name string) (*oci.Layer, error) {
	mt, ok := mediaTypes[name]
	if !ok {
		return nil, evalflow.Invalidf("file", "must be %s or %s", evalflow.ResultsFile, evalflow.SamplesFile)
	}
	l, err := r.dest.OpenLayer(ctx, ref, mt)
	if err != nil {
		return nil, fmt.Errorf("results of run %s: %w", runID, err)
	}
	return l, nil
}

// PullCommand is the oras command line that fetches run's artifact into ./RUN_ID.
func (r *Reader) PullCommand(run *evalflow.Run) string {
	if run.Artifact == nil {
		return ""
	}
	return r.dest.PullCommand(run.Artifact, run.ID)
}
