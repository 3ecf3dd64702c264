package artifacts

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/oci"
)

// push writes results.json and samples.jsonl and pushes them to a layout.
func push(t testing.TB, samples string) (string, *evalflow.Run) {
	t.Helper()
	dir, layout := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(dir, evalflow.ResultsFile), []byte(`{"results": {}, "summary": {"scores": {"t": 0.5}, "samples": 2}}`), 0o644)
	os.WriteFile(filepath.Join(dir, evalflow.SamplesFile), []byte(samples), 0o644)
	dest, err := oci.Open(oci.Config{Layout: layout})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := dest.Push(context.Background(), oci.Results(dir, "r", "r", "m", nil, time.Unix(0, 0)))
	if err != nil {
		t.Fatal(err)
	}
	return layout, &evalflow.Run{ID: "r", Artifact: a}
}

const twoSamples = `{"task": "t", "doc_id": 0, "prompt": "Two plus two?", "target": "4", "correct": true}
{"task": "t", "doc_id": 1, "prompt": "Three plus one?", "target": "4", "correct": false}
`

func TestReadParsesTheArtifactAndKeepsIt(t *testing.T) {
	layout, run := push(t, twoSamples)
	r, err := Open(oci.Config{Layout: layout}, 2)
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Read(context.Background(), run)
	if err != nil || res.Samples.Len() != 2 || res.Results.Summary.Scores["t"] != 0.5 {
		t.Fatalf("Read: %v %+v", err, res)
	}
	if p := res.Samples.Query(evalflow.SampleQuery{Text: "three"}); p.Matched != 1 || p.Samples[0].DocID != 1 {
		t.Errorf("search: %+v", p)
	}
	again, _ := r.Read(context.Background(), run)
	if again != res {
		t.Error("read again: parsed again, not kept")
	}
	if cmd := r.PullCommand(run); cmd != "oras pull --oci-layout "+layout+"@"+run.Artifact.Digest+" -o r" {
		t.Errorf("pull command %q", cmd)
	}
	if _, err := r.Read(context.Background(), &evalflow.Run{ID: "x"}); err != ErrNoResults {
		t.Errorf("a run with no artifact: %v", err)
	}
}

func TestATamperedLayerIsRefused(t *testing.T) {
	layout, run := push(t, twoSamples)
	blobs, _ := filepath.Glob(filepath.Join(layout, "blobs", "sha256", "*"))
	tampered := 0
	for _, b := range blobs {
		body, _ := os.ReadFile(b)
		if strings.Contains(string(body), "Three plus one?") {
			os.WriteFile(b, []byte(strings.Replace(string(body), `"correct": false`, `"correct": true `, 1)), 0o644)
			tampered++
		}
	}
	if tampered != 1 {
		t.Fatalf("found %d samples blobs", tampered)
	}
	r, _ := Open(oci.Config{Layout: layout}, 2)
	if _, err := r.Read(context.Background(), run); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("a layer whose bytes changed was read: %v", err)
	}
}

func TestABadLineIsNamed(t *testing.T) {
	layout, run := push(t, twoSamples+"{not json\n")
	r, _ := Open(oci.Config{Layout: layout}, 2)
	if _, err := r.Read(context.Background(), run); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("a bad line: %v", err)
	}
}

// BenchmarkRead reads a run of 14,079 MMLU-sized samples (5-shot prompts, about
// 44 MB) from a layout: what the results page waits for on a run's first opening.
func BenchmarkRead(b *testing.B) {
	shots := strings.Repeat(`The following are multiple choice questions (with answers) about anatomy.\n\nWhat is the \"hyoid\" bone's origin?\nA. The first arch\nB. The second arch\nC. The third arch\nD. The second and third arches\nAnswer: D\n\n`, 14)
	var lines strings.Builder
	for i := range 14079 {
		fmt.Fprintf(&lines, `{"task":"mmlu_anatomy","group":"mmlu","doc_id":%d,"prompt":"%sQuestion %d?","response":" A","extracted":"A","target":"B","correct":false,"metric":"exact_match","filters":[{"filter":"none","extracted":"A","correct":false}],"usage":{"prompt_tokens":900,"completion_tokens":1}}`+"\n", i, shots, i)
	}
	layout, run := push(b, lines.String())
	b.SetBytes(int64(lines.Len()))
	for b.Loop() {
		r, _ := Open(oci.Config{Layout: layout}, 1)
		if res, err := r.Read(context.Background(), run); err != nil || res.Samples.Len() != 14079 {
			b.Fatal(err)
		}
	}
}
