package function

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
)

// pushResults writes a run's results.json and samples.jsonl (20 astronomy samples,
// the first right ones of them right) and pushes them to the layout as the artifact
// step does; it returns the artifact and the two files.
func pushResults(t *testing.T, layout, id string, right int) (*evalflow.Artifact, []byte, []byte) {
	t.Helper()
	dir := t.TempDir()
	var lines strings.Builder
	for doc := range 20 {
		ok := doc < right
		b, _ := json.Marshal(evalflow.Sample{Task: "mmlu_astronomy", Group: "mmlu", DocID: doc, Prompt: fmt.Sprintf("Which planet is number %d?", doc),
			Response: " A", Extracted: map[bool]string{true: "B", false: "A"}[ok], Target: "B", Correct: ok, Metric: "exact_match"})
		lines.Write(append(b, '\n'))
	}
	score := float64(right) / 20
	res := evalflow.Results{Results: map[string]map[string]any{"mmlu_astronomy": {"exact_match,none": score, "exact_match_stderr,none": 0.1}},
		NSamples: map[string]evalflow.NSamples{"mmlu_astronomy": {Original: 152, Effective: 20}},
		Summary:  evalflow.Summary{Scores: map[string]float64{"mmlu_astronomy": score}, Metric: "exact_match", Samples: 20}}
	summary, _ := json.MarshalIndent(res, "", "  ")
	os.WriteFile(filepath.Join(dir, evalflow.ResultsFile), summary, 0o644)
	os.WriteFile(filepath.Join(dir, evalflow.SamplesFile), []byte(lines.String()), 0o644)
	dest, err := oci.Open(oci.Config{Layout: layout})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := dest.Push(context.Background(), oci.Results(dir, id, id, "stories260k", nil, time.Unix(0, 0)))
	if err != nil {
		t.Fatal(err)
	}
	return a, summary, []byte(lines.String())
}

// succeed records run id as succeeded with artifact a, as the artifact step does.
func succeed(t *testing.T, p *pipelinetest.Pipeline, id string, a *evalflow.Artifact) {
	t.Helper()
	if _, err := p.Store.Update(context.Background(), id, func(r *evalflow.Run) error {
		r.Status, r.Artifact = evalflow.StatusSucceeded, a
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestTheResultsAPIReadsARunsArtifact(t *testing.T) {
	layout := t.TempDir()
	srv, p := newAuthFunction(t, map[string]string{"EVALFLOW_OCI_LAYOUT": layout})
	alice, bob := callers["alice"], callers["bob"]
	ids := []string{"7a0e6c1e-0b51-4c4e-9d36-0c6f3a3b9a01", "7a0e6c1e-0b51-4c4e-9d36-0c6f3a3b9a02", "7a0e6c1e-0b51-4c4e-9d36-0c6f3a3b9a03"}
	for _, id := range ids {
		if code, body := call(t, srv, "POST", "/evals/start", alice, mustJSON(validBody(id))); code != 202 {
			t.Fatalf("start %s: %d %s", id, code, body)
		}
	}
	a0, summary, samples := pushResults(t, layout, ids[0], 18)
	a1, _, _ := pushResults(t, layout, ids[1], 2)
	succeed(t, p, ids[0], a0)
	succeed(t, p, ids[1], a1)

	code, body := call(t, srv, "GET", "/evals/"+ids[0]+"/results", alice, nil)
	var view ResultsView
	json.Unmarshal([]byte(body), &view)
	if code != 200 || len(view.Scores) != 1 || view.Scores[0].Value != 0.9 || view.Scores[0].Stderr != 0.1 || view.Artifact.Digest != a0.Digest {
		t.Fatalf("GET results: %d %s", code, body)
	}
	if code, body := call(t, srv, "GET", "/evals/"+ids[0]+"/samples?task=mmlu_astronomy&correct=false&limit=1", alice, nil); code != 200 ||
		!strings.Contains(body, `"matched":2`) || !strings.Contains(body, `"doc_id":18`) || strings.Contains(body, `"doc_id":19`) {
		t.Errorf("GET the wrong samples, a page of 1: %d %s", code, body)
	}
	if code, body := call(t, srv, "GET", "/evals/"+ids[0]+"/samples?q=NUMBER+7%3F", alice, nil); code != 200 || !strings.Contains(body, `"matched":1`) {
		t.Errorf("search for a text: %d %s", code, body)
	}
	for _, f := range []struct {
		path string
		want []byte
	}{{"/results.json", summary}, {"/samples.jsonl", samples}} {
		if code, body := call(t, srv, "GET", "/evals/"+ids[0]+f.path, alice, nil); code != 200 || body != string(f.want) {
			t.Errorf("GET %s: %d; not the file pushed", f.path, code)
		}
	}

	code, body = call(t, srv, "GET", "/compare?runs="+ids[0]+","+ids[1], alice, nil)
	var c evalflow.Comparison
	json.Unmarshal([]byte(body), &c)
	if code != 200 || len(c.Tasks) != 1 || c.Tasks[0].Diffs[0] == nil || c.Tasks[0].Diffs[0].OnlyFirst != 16 || !c.Tasks[0].Diffs[0].Significant ||
		c.DisagreementsTotal != 16 || !strings.Contains(c.Test, "McNemar") {
		t.Fatalf("compare: %d %s", code, body)
	}

	for _, bad := range []struct {
		path, token, field string
		code               int
	}{
		{"/evals/" + ids[0] + "/samples?correct=maybe", alice, "correct", 400},
		{"/evals/" + ids[0] + "/samples?limit=5000", alice, "limit", 400},
		{"/evals/" + ids[0] + "/samples?offset=-1", alice, "offset", 400},
		{"/compare?runs=" + ids[0], alice, "runs", 400},
		{"/evals/" + ids[2] + "/results", alice, "id", 409}, // pending: no results yet
		{"/compare?runs=" + ids[0] + "," + ids[2], alice, "id", 409},
		{"/evals/" + ids[0] + "/results", bob, "", 404}, // another caller's
		{"/evals/" + ids[0] + "/samples.jsonl", bob, "", 404},
		{"/compare?runs=" + ids[0] + "," + ids[1], bob, "", 404},
		{"/evals/" + ids[0] + "/results", "", "Authorization", 401},
	} {
		code, body := call(t, srv, "GET", bad.path, bad.token, nil)
		if code != bad.code || bad.field != "" && !strings.Contains(body, `"field":"`+bad.field+`"`) || strings.Contains(body, "astronomy") {
			t.Errorf("GET %s: %d %s; want %d naming %q and showing nothing", bad.path, code, body, bad.code, bad.field)
		}
	}
}
