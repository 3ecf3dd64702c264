package e2e

import (
	"cmp"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
)

// TestTheResultsPageInChromium drives the results page in Debian's headless chromium
// (playwright-core, shared/ui/browser/ui.test.mjs) against a running local evalflow:
// login by ?token= then a cookie, the runs list with a run's progress moving without
// a reload, its filters, a run's timeline, chart, scores and samples (each filter
// answering as the API does), and two runs compared. Screenshots go to
// .state/screenshots in the checkout.
func TestTheResultsPageInChromium(t *testing.T) {
	chromium, modules := testserver.Browser(t)
	e := up(t)
	// Two runs of the same samples that answer differently: generated text (the tiny
	// model's stories: none right), then the likeliest next token among the letters
	// (about a quarter right), asked of the same prompts as custom datasets of the
	// same tasks.
	b := e.request(25)
	if code, out := e.post(t, b); code != http.StatusAccepted {
		t.Fatalf("start: %d %v", code, out)
	}
	if r := e.waitEnded(t, b.EvalRequestID, 3*time.Minute); r.Status != evalflow.StatusSucceeded {
		t.Fatalf("run %s %s: %s", b.EvalRequestID, r.Status, r.Message)
	}
	a := e.request(25)
	a.Datasets = e.asLetterChoices(t, b.EvalRequestID)
	if code, out := e.post(t, a); code != http.StatusAccepted {
		t.Fatalf("start: %d %v", code, out)
	}
	if r := e.waitEnded(t, a.EvalRequestID, 3*time.Minute); r.Status != evalflow.StatusSucceeded {
		t.Fatalf("run %s %s: %s", a.EvalRequestID, r.Status, r.Message)
	}
	live := e.request(0) // every sample of two subjects: it runs while the page watches
	live.Datasets[0].Subjects = []string{"professional_law", "high_school_psychology"}
	if code, out := e.post(t, live); code != http.StatusAccepted {
		t.Fatalf("start: %d %v", code, out)
	}
	for e.run(t, live.EvalRequestID).Progress.Done == 0 {
		time.Sleep(200 * time.Millisecond)
	}

	shots := filepath.Join(testserver.RepoRoot(), ".state", "screenshots")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", filepath.Join(testserver.RepoRoot(), "shared", "ui", "browser", "ui.test.mjs"))
	cmd.Env = append(os.Environ(), "BASE="+e.stack.API, "TOKEN="+e.stack.OperatorToken, "RUN_A="+a.EvalRequestID,
		"RUN_B="+b.EvalRequestID, "RUN_LIVE="+live.EvalRequestID, "SHOTS="+shots, "CHROMIUM="+chromium, "PLAYWRIGHT_MODULES="+modules)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the results page in chromium: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	for _, name := range []string{"runs.png", "run.png", "samples.png", "compare.png"} {
		if st, err := os.Stat(filepath.Join(shots, name)); err != nil || st.Size() < 10_000 {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}
}

// asLetterChoices are the samples of run id, each task a custom dataset of the same
// name whose samples (in document order) are its prompts, scored by which of the
// letters A to D is the likeliest next token.
func (e *env) asLetterChoices(t *testing.T, id string) []evalflow.DatasetSpec {
	t.Helper()
	resp := e.call(t, http.MethodGet, "/evals/"+id+"/samples?limit=500", nil)
	defer resp.Body.Close()
	var page evalflow.SamplePage
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(page.Samples, func(x, y evalflow.Sample) int {
		return cmp.Or(strings.Compare(x.Task, y.Task), x.DocID-y.DocID)
	})
	var out []evalflow.DatasetSpec
	for _, s := range page.Samples {
		if len(out) == 0 || out[len(out)-1].Task != s.Task {
			out = append(out, evalflow.DatasetSpec{Name: "custom", Task: s.Task, Method: "logprobs"})
		}
		d := &out[len(out)-1]
		if s.DocID != len(d.Samples) {
			t.Fatalf("%s's samples are not documents 0 to n-1: %d at %d", s.Task, s.DocID, len(d.Samples))
		}
		d.Samples = append(d.Samples, evalflow.CustomSample{Prompt: s.Prompt, Choices: []string{"A", "B", "C", "D"}, Target: s.Target})
	}
	return out
}
