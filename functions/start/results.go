package function

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/artifacts"
	"github.com/evalflow/evalflow/shared/oci"
)

// The results API reads a succeeded run's results back from its artifact:
//
//	GET /evals/{id}/results         its scores with standard errors, and its summary
//	GET /evals/{id}/samples         a page of its samples (?task=, ?correct=, ?q=, ?offset=, ?limit=)
//	GET /evals/{id}/results.json    the artifact's files, as pushed
//	GET /evals/{id}/samples.jsonl
//	GET /compare?runs=A,B,...       runs side by side, task by task, with a significance test

// errNoArtifacts is a start function with nowhere to read artifacts from.
var errNoArtifacts = &evalflow.Error{Code: evalflow.CodeInternal, Message: "no results store configured (EVALFLOW_OCI_LAYOUT or EVALFLOW_REGISTRY)"}

// ResultsView is the answer to GET /evals/{id}/results.
type ResultsView struct {
	RunID    string             `json:"run_id"`
	Model    string             `json:"model_name"`
	Artifact *evalflow.Artifact `json:"artifact"`
	// PullCommand is the oras command line that fetches the artifact.
	PullCommand string               `json:"pull_command"`
	Scores      []evalflow.TaskScore `json:"scores"`
	Summary     evalflow.Summary     `json:"summary"`
}

// succeeded is run id, if the caller may see it and it has results to read.
func (f *Function) succeeded(ctx context.Context, id string) (*evalflow.Run, error) {
	run, err := f.owned(ctx, id)
	switch {
	case err != nil:
		return nil, err
	case f.artifacts == nil:
		return nil, errNoArtifacts
	case run.Artifact == nil:
		return nil, artifacts.ErrNoResults
	}
	return run, nil
}

// readResults is the results of run id, samples included, if the caller may see it.
func (f *Function) readResults(ctx context.Context, id string) (*evalflow.Run, *artifacts.Results, error) {
	run, err := f.succeeded(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	res, err := f.artifacts.Read(ctx, run)
	return run, res, err
}

func (f *Function) results(w http.ResponseWriter, r *http.Request) {
	ctx, id := r.Context(), r.PathValue("id")
	run, err := f.succeeded(ctx, id)
	var res *evalflow.Results
	if err == nil {
		res, err = f.artifacts.Summary(ctx, run) // the samples are not needed for the scores
	}
	if err != nil {
		f.writeError(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, ResultsView{RunID: run.ID, Model: run.ModelName, Artifact: run.Artifact,
		PullCommand: f.artifacts.PullCommand(run), Scores: res.Scores(), Summary: res.Summary})
}

func (f *Function) samples(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q, err := sampleQuery(r)
	if err != nil {
		f.writeError(w, id, err)
		return
	}
	_, res, err := f.readResults(r.Context(), id)
	if err != nil {
		f.writeError(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, res.Samples.Query(q))
}

// sampleQuery reads a samples query from r's parameters, naming the one at fault.
func sampleQuery(r *http.Request) (evalflow.SampleQuery, error) {
	p := r.URL.Query()
	q := evalflow.SampleQuery{Task: p.Get("task"), Text: p.Get("q")}
	if c := p.Get("correct"); c != "" {
		v, err := strconv.ParseBool(c)
		if err != nil {
			return q, evalflow.Invalidf("correct", "must be true or false, got %q", c)
		}
		q.Correct = &v
	}
	for _, n := range []struct {
		name string
		to   *int
	}{{"offset", &q.Offset}, {"limit", &q.Limit}} {
		if s := p.Get(n.name); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil {
				return q, evalflow.Invalidf(n.name, "must be a whole number, got %q", s)
			}
			if n.name == "limit" && v < 1 { // 0 is the default's, never the caller's
				return q, evalflow.Invalidf("limit", "must be from 1 to %d", evalflow.MaxSamplePage)
			}
			*n.to = v
		}
	}
	return q, q.Validate()
}

// file answers one of the artifact's files as it was pushed.
func (f *Function) file(name, contentType string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, id := r.Context(), r.PathValue("id")
		run, err := f.succeeded(ctx, id)
		var file *oci.Layer
		if err == nil {
			file, err = f.artifacts.Open(ctx, run.ID, run.Artifact.Digest, name)
		}
		if err != nil {
			f.writeError(w, id, err)
			return
		}
		defer file.Close()
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Length", strconv.FormatInt(file.Size, 10))
		// Streamed as read: a file that turns out not to match its digest is cut
		// short, which the caller sees against Content-Length.
		if err := copyVerified(w, file); err != nil {
			f.Log.ErrorContext(ctx, "serving artifact file", "run_id", run.ID, "file", name, "error", err)
			panic(http.ErrAbortHandler)
		}
	}
}

// compare answers GET /compare?runs=A,B,...: the first run is the baseline.
func (f *Function) compare(w http.ResponseWriter, r *http.Request) {
	ids := strings.FieldsFunc(r.URL.Query().Get("runs"), func(c rune) bool { return c == ',' })
	if len(ids) < 2 || len(ids) > evalflow.MaxCompared {
		f.writeError(w, "", evalflow.Invalidf("runs", "must name 2 to %d runs, comma-separated", evalflow.MaxCompared))
		return
	}
	scored := make([]evalflow.Scored, 0, len(ids))
	for i, id := range ids {
		run, res, err := f.readResults(r.Context(), id)
		if err != nil {
			f.writeError(w, id, err)
			return
		}
		samples := res.Samples
		if i > 0 { // only the baseline's prompts are shown: the others are held compacted
			samples = samples.Compact()
		}
		scored = append(scored, evalflow.Scored{RunID: run.ID, Model: run.ModelName, Results: res.Results, Samples: samples})
	}
	writeJSON(w, http.StatusOK, evalflow.Compare(scored))
}

// copyVerified copies r, which checks its bytes at their end, to w, holding the last
// byte back until r has said they are right.
func copyVerified(w io.Writer, r io.Reader) error {
	buf := make([]byte, 64<<10)
	var held []byte
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(held); werr != nil {
				return werr
			}
			if _, werr := w.Write(buf[:n-1]); werr != nil {
				return werr
			}
			held = append(held[:0], buf[n-1])
		}
		if err == io.EOF {
			_, err = w.Write(held)
			return err
		}
		if err != nil {
			return err
		}
	}
}
