package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
)

// evalflowUp is `evalflow up` as a user runs it, on one state directory and API port,
// started and stopped (or killed) by the test.
type evalflowUp struct {
	exe, state, api string
	port            int
	cmd             *exec.Cmd
	token           string
}

func newEvalflowUp(t *testing.T) *evalflowUp {
	exe := testserver.Build(t, "github.com/evalflow/evalflow/local/cmd/evalflow")
	testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/evalflow-runner") // beside it
	port := testserver.FreePort(t)
	u := &evalflowUp{exe: exe, state: t.TempDir(), port: port, api: "http://127.0.0.1:" + strconv.Itoa(port)}
	t.Cleanup(func() {
		if u.cmd != nil && u.cmd.ProcessState == nil {
			u.cmd.Process.Signal(syscall.SIGTERM)
			u.cmd.Wait()
		}
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(u.state, "logs", "*.log"))
			for _, l := range append(logs, filepath.Join(u.state, "up.log")) {
				b, _ := os.ReadFile(l)
				t.Logf("--- %s\n%s", filepath.Base(l), b[max(0, len(b)-3000):])
			}
		}
	})
	return u
}

// start runs evalflow up and waits until its API answers.
func (u *evalflowUp) start(t *testing.T) {
	t.Helper()
	root := testserver.RepoRoot()
	u.cmd = exec.Command(u.exe, "up", "--state", u.state, "--port", strconv.Itoa(u.port),
		"--data", filepath.Join(testserver.SharedDir(t), "datasets"), "--triggers", filepath.Join(root, "triggers"),
		"--eventing", filepath.Join(root, "eventing"))
	log, _ := os.OpenFile(filepath.Join(u.state, "up.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	u.cmd.Stdout, u.cmd.Stderr = log, log
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, time.Minute, "evalflow up answering", func() bool {
		if u.token == "" {
			u.token = operatorOf(filepath.Join(u.state, "tokens"))
		}
		code, _, err := u.do(http.MethodGet, "/evals", nil)
		return err == nil && code == http.StatusOK
	})
}

// operatorOf reads the operator's token from a tokens file ("" until it is there).
func operatorOf(path string) string {
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == "*" {
			return f[0]
		}
	}
	return ""
}

// do sends method path (body as JSON) to the API as the operator: the answer's status
// and body.
func (u *evalflowUp) do(method, path string, body any) (int, []byte, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, u.api+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+u.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

func (u *evalflowUp) run(t *testing.T, id string) evalflow.Run {
	t.Helper()
	var r evalflow.Run
	_, b, err := u.do(http.MethodGet, "/evals/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &r)
	return r
}

// After evalflow up is killed outright (kill -9) or stopped (SIGTERM) mid-run, the next
// evalflow up on the same state resumes the run from its checkpoint: it succeeds, the
// endpoint is asked again at most what was in flight, no runner of the first is left
// running, and once the run has ended no key file is left on disk.
func TestAStoppedOrKilledEvalflowResumesItsRunsWhenStartedAgain(t *testing.T) {
	for _, stop := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(stop.String(), func(t *testing.T) {
			endpoint := testserver.CountingEndpoint(t, "", testserver.Ollama(t, 2), 100*time.Millisecond)
			u := newEvalflowUp(t)
			u.start(t)
			zero := 0
			req := evalflow.Request{EvalRequestID: uuid.NewString(), ModelName: testserver.Model, BaseURL: endpoint.URL,
				APIKey: apiKeyCanary, Concurrency: 2,
				Datasets: []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"anatomy"}, Limit: 60, NumFewshot: &zero}}}
			if code, b, err := u.do(http.MethodPost, "/evals/start", req); err != nil || code != http.StatusAccepted {
				t.Fatalf("start: %d %s %v", code, b, err)
			}
			asked := func() int {
				n := 0
				for _, c := range endpoint.Asked() {
					n += c
				}
				return n
			}
			testserver.Eventually(t, 2*time.Minute, "10 samples asked", func() bool { return asked() >= 10 })
			runner := runnerPID(u.state)
			u.cmd.Process.Signal(stop)
			u.cmd.Wait()
			if asked() >= 60 {
				t.Fatal("the run finished before evalflow was stopped: the test proves little")
			}
			testserver.Eventually(t, 10*time.Second, "the first evalflow's runner gone", func() bool {
				return runner == 0 || syscall.Kill(runner, 0) != nil
			})

			u.start(t)
			var r evalflow.Run
			testserver.Eventually(t, 3*time.Minute, "the run ended", func() bool { r = u.run(t, req.EvalRequestID); return r.Status.Terminal() })

			if r.Status != evalflow.StatusSucceeded || r.Summary == nil || r.Summary.Samples != 60 {
				t.Fatalf("the run after the restart: %s %q (%+v)", r.Status, r.Message, r.Summary)
			}
			extra := 0
			for _, c := range endpoint.Asked() {
				extra += c - 1
			}
			if extra > req.Concurrency {
				t.Errorf("samples asked again %d times; want at most %d (what was in flight)", extra, req.Concurrency)
			}
			// The job's end removes them: a moment after its run may have ended.
			testserver.Eventually(t, 10*time.Second, "no key file left after the run ended", func() bool {
				keys, _ := filepath.Glob(filepath.Join(u.state, "jobs", "*", "secret", "*"))
				return len(keys) == 0
			})
		})
	}
}

// runnerPID is the pid of the one job's runner under state ("0" when there is none).
func runnerPID(state string) int {
	pids, _ := filepath.Glob(filepath.Join(state, "jobs", "*", "meta", "pid"))
	if len(pids) != 1 {
		return 0
	}
	b, _ := os.ReadFile(pids[0])
	pid, _ := strconv.Atoi(string(bytes.TrimSpace(b)))
	return pid
}
