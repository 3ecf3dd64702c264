package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
)

// TestAnExternalEngineRunsLocallyWithAFakeLMEval runs lm-evaluation-harness as a local
// engine through the whole local stack: start validates its engine_config, deploy
// starts lm-eval-adapter as the job, job-watch and artifact follow as for the built-in
// runner. lm_eval itself is a fake (runner/lmeval/testdata/fake-lm_eval): the real one
// needs PyPI, which these machines cannot reach.
func TestAnExternalEngineRunsLocallyWithAFakeLMEval(t *testing.T) {
	t.Setenv("LM_EVAL", filepath.Join(testserver.RepoRoot(), "runner", "lmeval", "testdata", "fake-lm_eval"))
	e := up(t)
	req := evalflow.Request{EvalRequestID: uuid.NewString(), ModelName: testserver.Model, BaseURL: e.model,
		APIKey: apiKeyCanary, Source: "e2e-test", SourceTopic: callerTopic,
		Engine: "lm-evaluation-harness", EngineConfig: []byte(`{"tasks": ["gsm8k", "mmlu"], "limit": 3}`)}

	code, body := e.post(t, req)
	r := e.waitEnded(t, req.EvalRequestID, 2*time.Minute)

	if code != http.StatusAccepted {
		t.Fatalf("start: %d %v", code, body)
	}
	if r.Status != evalflow.StatusSucceeded || r.Summary == nil {
		t.Fatalf("run ended %s: %s", r.Status, r.Message)
	}
	if math.Abs(r.Summary.Scores["gsm8k"]-1.0/3) > 1e-12 || r.Summary.Scores["mmlu"] != 0.75 || r.Summary.Samples != 7 {
		t.Fatalf("summary = %+v; want lm_eval's scores", r.Summary)
	}
	if r.Progress.Total == 0 || r.Progress.Done != r.Progress.Total {
		t.Fatalf("progress = %+v; want the adapter's reports, complete", r.Progress)
	}
	// The fake records its call in its output folder, the key as a hash.
	b, err := os.ReadFile(filepath.Join(e.state, "results", r.ID, "lm-eval", "fake-call"))
	sum := sha256.Sum256([]byte(apiKeyCanary))
	if err != nil || !strings.HasPrefix(string(b), "key_sha256="+hex.EncodeToString(sum[:])+"\n") || !strings.Contains(string(b), "--tasks\ngsm8k,mmlu\n") {
		t.Fatalf("lm_eval was called as %q (%v); want the tasks, and the key in its environment", b, err)
	}
	pulled := orasPull(t, e, r.ID)
	samples, err := os.ReadFile(filepath.Join(pulled, evalflow.SamplesFile))
	if err != nil || strings.Count(string(samples), "\n") != 7 {
		t.Fatalf("the artifact's samples.jsonl: %v, %d lines", err, strings.Count(string(samples), "\n"))
	}
	e.settle(t)
	scanDir(t, e.state)
}

func TestAnExternalEngineRequestWithDatasetsIsRefusedNamingTheField(t *testing.T) {
	e := up(t)
	req := e.request(3)
	req.Engine, req.EngineConfig = "lm-evaluation-harness", []byte(`{"tasks": ["gsm8k"]}`)

	code, body := e.post(t, req)

	errBody, _ := body["error"].(map[string]any)
	if code != http.StatusBadRequest || errBody["field"] != "datasets" {
		t.Fatalf("start answered %d %v; want 400 naming datasets", code, body)
	}
}
