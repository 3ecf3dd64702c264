package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
	// Two runs of the same samples that answer differently: the likeliest next token
	// (about a quarter right) and generated text (the tiny model's stories: none).
	a, b := e.request(25), e.request(25)
	a.Datasets[0].Method = "logprobs"
	for _, r := range []evalflow.Request{a, b} {
		if code, out := e.post(t, r); code != http.StatusAccepted {
			t.Fatalf("start: %d %v", code, out)
		}
	}
	for _, id := range []string{a.EvalRequestID, b.EvalRequestID} {
		if r := e.waitEnded(t, id, 3*time.Minute); r.Status != evalflow.StatusSucceeded {
			t.Fatalf("run %s %s: %s", id, r.Status, r.Message)
		}
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
