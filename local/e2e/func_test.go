package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"

	"github.com/evalflow/evalflow/devkit/modproxy"
	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

// Each function builds from its own directory, alone, as the func CLI builds it
// (evalflow's own modules come from a file-based module proxy, not from the
// checkout's replace directives), and runs and answers with func run and func
// invoke: start records a run.requested CloudEvent's run and says so; verify drops
// the run.started func invoke sends (unsigned), and, given the one start sent, fails
// the run for a model the endpoint does not serve; the other steps take an event of
// theirs.
func TestEveryFunctionRunsWithTheFuncCLIFromItsOwnDirectory(t *testing.T) {
	fn := testserver.FuncCLI(t)
	proxy := t.TempDir()
	modules := []string{"shared", "localjob", "devkit", "runner"}
	version, err := modproxy.Version(testserver.RepoRoot(), modules...)
	if err != nil {
		t.Fatal(err)
	}
	paths, err := modproxy.Write(proxy, testserver.RepoRoot(), version, modules...)
	if err != nil {
		t.Fatal(err)
	}
	pin := func(dir string) error { return modproxy.Pin(dir, paths, version) }
	model := testserver.Ollama(t, 0)
	sink := testserver.NewSink(t)
	key := make([]byte, 32)
	rand.Read(key)
	// func v0.44's host runs give the function no environment but PORT: its
	// configuration is func-go's static ./cfg file, which stands in for func.yaml's
	// cluster envs here.
	common := []string{"REDIS_ADDR=" + testserver.Redis(t), "EVALFLOW_SEAL_KEY=" + base64.StdEncoding.EncodeToString(key),
		"K_SINK=" + sink.URL, "EVALFLOW_RESULTS_DIR=" + t.TempDir(), "EVALFLOW_DATA_DIR=" + t.TempDir(),
		"EVALFLOW_OCI_LAYOUT=" + t.TempDir(), "LOG_LEVEL=debug"}

	id := uuid.NewString()
	req, _ := json.Marshal(evalflow.Request{EvalRequestID: id, ModelName: "no-such-model", BaseURL: model,
		Source: "func-test", SourceTopic: "t", Datasets: []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"anatomy"}, Limit: 1}}})
	ref, _ := json.Marshal(evalflow.RunRef{RunID: id})
	for _, step := range evalflow.Steps {
		t.Run(string(step.ID), func(t *testing.T) {
			f := funcRun(t, fn, proxy, pin, string(step.ID), common)
			switch step.ID {
			case evalflow.StepStart:
				f.invoke(t, evalflow.TypeRequested, req)
				waitFor(t, sink, evalflow.TypeStarted, id)
			case evalflow.StepVerify:
				// func invoke cannot sign an event as a step does (it sets no extension):
				// verify takes it, and drops it.
				if reply := f.invoke(t, evalflow.TypeStarted, ref); strings.Contains(reply, "dev.evalflow.") {
					t.Errorf("verify replied %s to an unsigned run.started; want nothing", reply)
				}
				// The run.started start sent: its reply, and its notification to the broker.
				if reply := f.deliver(t, waitFor(t, sink, evalflow.TypeStarted, id)); reply != evalflow.TypeFailed {
					t.Errorf("verify replied %q; want %s", reply, evalflow.TypeFailed)
				}
				waitFor(t, sink, evalflow.TypeNotification, id)
			default: // the run has ended: each takes its event and changes nothing
				typ := map[evalflow.StepID]evalflow.EventType{evalflow.StepDeploy: evalflow.TypeVerified, evalflow.StepWatch: evalflow.TypeJobCreated,
					evalflow.StepArtifact: evalflow.TypeResultsReady}[step.ID]
				f.invoke(t, typ, ref)
			}
		})
	}
	why := ""
	for _, ev := range sink.Got("/") {
		var n evalflow.Notification
		if cloudevent.TypeOf(ev) == evalflow.TypeNotification && json.Unmarshal(ev.Data(), &n) == nil &&
			n.RunID == id && n.Step == evalflow.StepVerify && n.Status == evalflow.NoteFailed {
			why = n.Message
		}
	}
	if !strings.Contains(why, "no-such-model") {
		t.Errorf("verify did not tell why the run failed: %q", why)
	}
}

// running is a function run by func run, in a copy of its directory alone, at url.
type running struct {
	fn, dir, url string
}

// funcRun copies functions/name alone to a fresh directory and runs it there with
// func run on this machine (no container), until the test ends.
func funcRun(t *testing.T, fn, proxy string, pin func(dir string) error, name string, env []string) *running {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("cp", "-r", filepath.Join(testserver.RepoRoot(), "functions", name), dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	if err := pin(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cfg"), []byte(strings.Join(env, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(fn, "run", "--container=false", "--verbose", "--path", dir)
	cmd.Env = append(os.Environ(), "GOPROXY=file://"+proxy+","+goEnv(t, "GOPROXY"), "GONOSUMDB=github.com/evalflow",
		"GOFLAGS=-mod=mod", "GOWORK=off")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("func run %s:\n%s", name, log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Minute) // the first function's build is cold: every dependency
	for time.Now().Before(deadline) {
		ports, _ := filepath.Glob(filepath.Join(dir, ".func", "runs", "*"))
		for _, p := range ports {
			if resp, err := http.Get("http://127.0.0.1:" + filepath.Base(p) + "/health/readiness"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return &running{fn: fn, dir: dir, url: "http://127.0.0.1:" + filepath.Base(p)}
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("func run %s: not ready:\n%s", name, log.String())
	return nil
}

// invoke sends a CloudEvent of type typ to the running function with func invoke, and
// returns what func invoke printed (the reply, if any).
func (r *running) invoke(t *testing.T, typ evalflow.EventType, data []byte) string {
	t.Helper()
	out, err := exec.Command(r.fn, "invoke", "--path", r.dir, "--target", "local", "--format", "cloudevent",
		"--type", typ.String(), "--source", "func-test", "--id", uuid.NewString(), "--data", string(data)).CombinedOutput()
	if err != nil {
		t.Fatalf("func invoke %s: %v\n%s", typ, err, out)
	}
	return string(out)
}

// deliver sends ev to the running function as a broker delivers it, and returns the
// type of its reply ("" for none).
func (r *running) deliver(t *testing.T, ev event.Event) evalflow.EventType {
	t.Helper()
	c, err := cloudevents.NewClientHTTP()
	if err != nil {
		t.Fatal(err)
	}
	reply, res := c.Request(cloudevents.ContextWithTarget(context.Background(), r.url), ev)
	if !cloudevents.IsACK(res) {
		t.Fatalf("deliver %s: %v", ev.Type(), res)
	}
	if reply == nil {
		return ""
	}
	return cloudevent.TypeOf(*reply)
}

// waitFor returns the event of type typ about run id once the sink has it.
func waitFor(t *testing.T, sink *testserver.Sink, typ evalflow.EventType, id string) event.Event {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, ev := range sink.Got("/") {
			if cloudevent.TypeOf(ev) == typ && ev.Subject() == id {
				return ev
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no %s for run %s reached the broker", typ, id)
	return event.Event{}
}

func goEnv(t *testing.T, name string) string {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
