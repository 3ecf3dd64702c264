package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
)

// TestTheCLIAgainstARunningEvalflow drives a running local evalflow with the evalflow
// command, as a user would: submit (following to the end), status, list, results,
// compare and cancel, in tables and in JSON, and its errors.
func TestTheCLIAgainstARunningEvalflow(t *testing.T) {
	// A caller whose Trigger refuses every notification of the topic "refusing": after
	// its retries, each becomes a dead letter.
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "this subscriber is down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(refusing.Close)
	e := upWith(t, options{triggers: fmt.Sprintf(`apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: refusing, namespace: evalflow}
spec:
  broker: evalflow
  filter:
    attributes: {type: %s, %s: refusing}
  subscriber: {uri: "%s"}
  delivery:
    retry: 1
    backoffDelay: PT0.1S
    deadLetterSink:
      ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: evalflow-job-watch}
`, evalflow.TypeNotification, evalflow.ExtCallerTopic, refusing.URL)})
	exe := testserver.Build(t, "github.com/evalflow/evalflow/local/cmd/evalflow")
	cli := func(token string, args ...string) (string, string, error) {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), "EVALFLOW_API="+e.stack.API, "EVALFLOW_TOKEN="+token, "EVALFLOW_API_KEY="+apiKeyCanary)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	op := e.stack.OperatorToken
	chat, completions := uuid.NewString(), uuid.NewString()
	must := func(args ...string) string {
		t.Helper()
		out, errOut, err := cli(op, args...)
		if err != nil {
			t.Fatalf("evalflow %s: %v\n%s\n%s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}
	submit := []string{"submit", "--base-url", e.model, "--model", testserver.Model, "--subjects", "abstract_algebra,anatomy", "--limit", "4"}

	// submit follows the run to its end and prints its scores.
	out := must(append(submit, "--id", chat)...)
	for _, want := range []string{"run " + chat + ": succeeded", "mmlu_anatomy", "(8 samples)", "results artifact: "} {
		if !strings.Contains(out, want) {
			t.Errorf("submit's output lacks %q:\n%s", want, out)
		}
	}
	// The same run asked of the raw completions API answers differently.
	var second evalflow.Run
	json.Unmarshal([]byte(must(append(submit, "--id", completions, "--options", `{"generation_api": "completions"}`, "--output", "json")...)), &second)
	if second.ID != completions || second.Status != evalflow.StatusSucceeded || second.Summary.Samples != 8 {
		t.Fatalf("submit --output json: %+v", second)
	}

	if out := must("status", chat); !strings.Contains(out, "succeeded (step artifact)") || !strings.Contains(out, "8/8") {
		t.Errorf("status:\n%s", out)
	}
	var runs []evalflow.Run
	json.Unmarshal([]byte(must("list", "--output", "json")), &runs)
	if len(runs) != 2 || runs[0].ID != completions || runs[1].ID != chat {
		t.Errorf("list --output json: %+v; want both runs, newest first", runs)
	}
	if out := must("list", "--status", "failed"); strings.Contains(out, chat) {
		t.Errorf("list --status failed shows a succeeded run:\n%s", out)
	}

	// results writes the artifact's files into a folder, and shows the scores.
	dir := filepath.Join(t.TempDir(), "pulled")
	out = must("results", chat, "--dir", dir)
	if !strings.Contains(out, "mmlu_anatomy") || !strings.Contains(out, "STDERR") {
		t.Errorf("results:\n%s", out)
	}
	pulled := orasPull(t, e, chat)
	for _, name := range []string{evalflow.ResultsFile, evalflow.SamplesFile} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		want, _ := os.ReadFile(filepath.Join(pulled, name))
		if err != nil || len(want) == 0 || !bytes.Equal(got, want) {
			t.Errorf("results wrote %s unlike the artifact's (%v)", name, err)
		}
	}

	// compare prints the per-task table with the test it applied.
	out = must("compare", chat, completions)
	for _, want := range []string{"mmlu_abstract_algebra", "[2]-[1]", "McNemar", "samples on which the runs disagree"} {
		if !strings.Contains(out, want) {
			t.Errorf("compare lacks %q:\n%s", want, out)
		}
	}
	var c evalflow.Comparison
	json.Unmarshal([]byte(must("compare", chat, completions, "--output", "json")), &c)
	if len(c.Runs) != 2 || len(c.Tasks) != 4 || c.Tasks[0].Diffs[0] == nil || c.Tasks[0].Diffs[0].Paired != 4 { // 2 stem subjects, mmlu_generative, stem
		t.Errorf("compare --output json: %+v", c)
	}

	// cancel ends a run that has not ended; a run that has ended says so.
	id := strings.TrimSpace(must("submit", "--detach", "--base-url", e.model, "--model", testserver.Model, "--subjects", "", "--limit", "0"))
	if out := must("cancel", id); !strings.Contains(out, "run "+id+": cancelled") {
		t.Errorf("cancel:\n%s", out)
	}
	if _, errOut, err := cli(op, "cancel", chat); err == nil || !strings.Contains(errOut, "already succeeded") {
		t.Errorf("cancel of a succeeded run: %v %s", err, errOut)
	}

	// deadletters lists what the broker could not deliver: here every notification of
	// a run whose caller's subscriber refuses them, and nothing of the others.
	refused := uuid.NewString()
	must(append(submit, "--id", refused, "--topic", "refusing")...)
	var letters []evalflow.DeadLetter
	testserver.Eventually(t, 30*time.Second, "the refused notifications dead-lettered", func() bool {
		letters = nil
		json.Unmarshal([]byte(must("deadletters", "--run", refused, "--output", "json")), &letters)
		return len(letters) >= 5
	})
	for _, d := range letters {
		if d.RunID != refused || d.Type != evalflow.TypeNotification || d.Destination != refusing.URL || !strings.Contains(d.Code, "503") {
			t.Errorf("dead letter %+v", d)
		}
	}
	if out := must("deadletters"); !strings.Contains(out, refused) || !strings.Contains(out, refusing.URL) || strings.Contains(out, chat) {
		t.Errorf("deadletters:\n%s", out)
	}

	// What a run may name: evalflow's datasets and the lm-eval tasks it ships.
	if out := must("tasks"); !strings.Contains(out, "bbh_zeroshot") || !strings.Contains(out, "group of 27") ||
		!strings.Contains(out, "mmlu_generative") || !strings.Contains(out, "tag of 3") || strings.Contains(out, "bbh_zeroshot_snarks") ||
		strings.Contains(out, "mmlu_anatomy") {
		t.Errorf("tasks:\n%s", out)
	}
	if out := must("tasks", "--expand", "truthfulqa"); !strings.Contains(out, "  truthfulqa_mc2") || !strings.Contains(out, "bleu_max,none") {
		t.Errorf("tasks --expand truthfulqa:\n%s", out)
	}
	if out := must("tasks", "--expand", "bbh_fewshot"); !strings.Contains(out, "  bbh_fewshot_snarks") || !strings.Contains(out, "exact_match,none") {
		t.Errorf("tasks --expand bbh_fewshot:\n%s", out)
	}

	// Errors name what is wrong.
	for _, c := range []struct {
		token string
		args  []string
		want  string
	}{
		{op, []string{"submit", "--model", "m"}, "base_url"},
		{"", []string{"list"}, "set EVALFLOW_TOKEN"},
		{op, []string{"status", "no-such-run"}, "404"},
		{op, []string{"results", id}, "no results yet"},
		{op, []string{"compare", chat}, "usage: evalflow compare"},
		{op, []string{"list", "--output", "yaml"}, "--output"},
	} {
		if _, errOut, err := cli(c.token, c.args...); err == nil || !strings.Contains(errOut, c.want) {
			t.Errorf("evalflow %s: %v; stderr %q lacks %q", strings.Join(c.args, " "), err, errOut, c.want)
		}
	}
}
