package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
)

// The command users run (make run): it brings the stack up itself, serves the model,
// shows progress and prints scores and the artifact reference.
func TestEvalflowRunCommand(t *testing.T) {
	shared := testserver.SharedDir(t)
	testserver.Ollama(t, 0) // skips or fails, as the others, where ollama is not built
	exe := testserver.Build(t, "github.com/evalflow/evalflow/local/cmd/evalflow")
	testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/evalflow-runner") // beside exe
	state := t.TempDir()
	elsewhere := t.TempDir() // as a CLI people install: run from a directory that is no checkout

	cmd := exec.Command(exe, "run", "--state", state, "--data", filepath.Join(shared, "datasets"),
		"--gguf", filepath.Join(shared, "models", "stories260K.gguf"), "--subjects", "anatomy,virology", "--limit", "2",
		"--options", `{"generation_api": "completions"}`)
	cmd.Dir = elsewhere
	out, err := cmd.Output()

	if err != nil {
		t.Fatalf("evalflow run: %v\n%s", err, out)
	}
	for _, want := range []string{": succeeded", "mmlu_anatomy", "mmlu_virology", "exact_match", "(4 samples)", "results artifact: oci-layout://" + state + "/oci:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "oci", "index.json")); err != nil {
		t.Errorf("no OCI layout: %v", err)
	}
	// -options reached the runner: it asked the raw prompts, as lm-eval's local-completions.
	files, _ := filepath.Glob(filepath.Join(state, "results", "*", evalflow.ResultsFile))
	if len(files) != 1 {
		t.Fatalf("results files %v", files)
	}
	if b, _ := os.ReadFile(files[0]); !strings.Contains(string(b), `"model": "local-completions"`) {
		t.Errorf("results.json does not say the prompts went to /completions:\n%s", b)
	}
	// Without the data where --data says (its default is beside a checkout), it says so.
	cmd = exec.Command(exe, "run", "--state", t.TempDir(), "--gguf", filepath.Join(shared, "models", "stories260K.gguf"))
	cmd.Dir = elsewhere
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "give --data DIR") {
		t.Errorf("no data directory: %v\n%s", err, out)
	}
}

// TestEvalflowRunWithAnExternalEngine runs lm-evaluation-harness from the command:
// lm-eval-adapter is found beside evalflow, lm_eval is the fake of runner/lmeval
// (the real one needs PyPI).
func TestEvalflowRunWithAnExternalEngine(t *testing.T) {
	shared := testserver.SharedDir(t)
	testserver.Ollama(t, 0)
	exe := testserver.Build(t, "github.com/evalflow/evalflow/local/cmd/evalflow")
	testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/evalflow-runner")
	testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/lm-eval-adapter") // beside exe
	root := testserver.RepoRoot()

	cmd := exec.Command(exe, "run", "--state", t.TempDir(), "--data", filepath.Join(shared, "datasets"),
		"--gguf", filepath.Join(shared, "models", "stories260K.gguf"),
		"--engine", "lm-evaluation-harness", "--engine-config", `{"tasks": ["gsm8k", "mmlu"], "limit": 3}`)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "LM_EVAL="+filepath.Join(root, "runner", "lmeval", "testdata", "fake-lm_eval"))
	out, err := cmd.Output()

	if err != nil {
		t.Fatalf("evalflow run: %v\n%s", err, out)
	}
	for _, want := range []string{": succeeded", "gsm8k", "mmlu_abstract_algebra", "(7 samples)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestCancellingARunStopsItsJob(t *testing.T) {
	e := up(t)
	req := e.request(0) // two whole subjects: long enough to cancel mid-way
	req.Options = &evalflow.RunOptions{RequestsPerSecond: 2}
	if code, out := e.post(t, req); code != http.StatusAccepted {
		t.Fatalf("start: %d %v", code, out)
	}
	testserver.Eventually(t, 60*time.Second, "the job runs", func() bool { return e.stack.JobsCreated() == 1 && e.run(t, req.EvalRequestID).Progress.Done > 0 })

	resp := e.call(t, http.MethodDelete, "/evals/"+req.EvalRequestID, nil)
	resp.Body.Close()
	e.settle(t)

	r := e.run(t, req.EvalRequestID)
	if resp.StatusCode != http.StatusOK || r.Status != evalflow.StatusCancelled || r.Artifact != nil {
		t.Fatalf("after cancel: %d, run %s artifact %v", resp.StatusCode, r.Status, r.Artifact)
	}
	finished := e.sink.OfType("/all", evalflow.TypeJobFinished)
	if len(finished) != 1 {
		t.Fatalf("%d job.finished events; want the stopped job's one", len(finished))
	}
	var fin evalflow.JobFinished
	json.Unmarshal(finished[0].Data(), &fin)
	if fin.Succeeded {
		t.Fatal("the job ran to the end: it was not stopped")
	}
}

func TestAModelTheEndpointDoesNotServeFailsTheRunAndTellsTheCaller(t *testing.T) {
	e := up(t)
	req := e.request(1)
	req.ModelName = "no-such-model"

	e.post(t, req)
	r := e.waitEnded(t, req.EvalRequestID, time.Minute)

	if r.Status != evalflow.StatusFailed || !strings.Contains(r.Message, `"no-such-model"`) || e.stack.JobsCreated() != 0 {
		t.Fatalf("run %s %q, %d jobs", r.Status, r.Message, e.stack.JobsCreated())
	}
	e.settle(t)
	var failed bool
	for _, ev := range e.sink.Got("/caller") {
		var n evalflow.Notification
		json.Unmarshal(ev.Data(), &n)
		failed = failed || (n.Step == evalflow.StepVerify && n.Status == evalflow.NoteFailed && strings.Contains(n.Message, "no-such-model"))
	}
	if !failed {
		t.Fatal("the caller was not told verify failed, and why")
	}
}

// An endpoint that echoes the caller's Authorization header back — in every answer and
// every error body — gets the key into nothing evalflow keeps or shows: not the run's
// message (GET /evals, GET /evals/{id}), not the caller's notifications, not the
// samples or the artifact, not the logs or Redis.
func TestAnEndpointEchoingTheKeyGetsItIntoNothing(t *testing.T) {
	model := testserver.OllamaOn(t, "", 4)
	e := upWith(t, options{model: testserver.EchoingEndpoint(t, model)})
	ok := e.request(1)
	ok.Options = &evalflow.RunOptions{MaxErrorRate: 1} // whatever the echo does to the answers, the run ends with its samples
	refused := e.request(1)
	refused.ModelName = "no-such-model" // the endpoint's error body, key appended, becomes the run's message

	e.post(t, ok)
	e.post(t, refused)
	r := e.waitEnded(t, ok.EvalRequestID, 3*time.Minute)
	failed := e.waitEnded(t, refused.EvalRequestID, time.Minute)
	e.settle(t)

	if r.Status != evalflow.StatusSucceeded || failed.Status != evalflow.StatusFailed {
		t.Fatalf("runs ended %s %q and %s %q; want succeeded and failed", r.Status, r.Message, failed.Status, failed.Message)
	}
	if !strings.Contains(failed.Message, evalflow.Redacted) {
		t.Fatalf("the refused run's message %q does not show the echo redacted: the test proves nothing", failed.Message)
	}
	pulled := orasPull(t, e, r.ID)
	samples, _ := os.ReadFile(filepath.Join(pulled, evalflow.SamplesFile))
	if !strings.Contains(string(samples), evalflow.Redacted) {
		t.Fatalf("the samples do not show the echo redacted: the test proves nothing\n%s", samples)
	}
	for _, path := range []string{"/evals", "/evals/" + r.ID, "/evals/" + failed.ID} {
		resp := e.call(t, http.MethodGet, path, nil)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), apiKeyCanary) {
			t.Errorf("GET %s shows the api_key: %s", path, b)
		}
	}
	scanDir(t, e.state)
	scanDir(t, pulled)
	if bytes.Contains(e.sink.Raw(), []byte(apiKeyCanary)) {
		t.Error("an event carries the api_key")
	}
	scanRedis(t, e)
}

// kill -9 of the redis-server local mode runs, or of a function, loses no run: each is
// started again, Redis from its append-only file, and the next run succeeds. Redis
// killed while a run is under way: the run still succeeds.
func TestLocalModeComesBackFromKill9(t *testing.T) {
	e := up(t)
	first := e.request(1)
	e.post(t, first)
	if r := e.waitEnded(t, first.EvalRequestID, 2*time.Minute); r.Status != evalflow.StatusSucceeded {
		t.Fatalf("the first run ended %s: %s", r.Status, r.Message)
	}

	for _, name := range []string{"redis", "verify", "job-watch"} {
		kill9(t, e, name)
	}
	second := e.request(1)
	if code, out := e.post(t, second); code != http.StatusAccepted {
		t.Fatalf("start after the kills: %d %v", code, out)
	}
	if r := e.waitEnded(t, second.EvalRequestID, 2*time.Minute); r.Status != evalflow.StatusSucceeded {
		t.Fatalf("the run after the kills ended %s: %s", r.Status, r.Message)
	}
	if r := e.run(t, first.EvalRequestID); r.Status != evalflow.StatusSucceeded || r.Artifact == nil {
		t.Fatalf("the first run after redis was killed: %s, artifact %v; want it as it was", r.Status, r.Artifact)
	}

	third := e.request(1)
	third.Options = &evalflow.RunOptions{RequestsPerSecond: 1} // long enough to kill redis under it
	e.post(t, third)
	testserver.Eventually(t, time.Minute, "the third run's job runs", func() bool { return e.run(t, third.EvalRequestID).Status == evalflow.StatusRunning })
	kill9(t, e, "redis")
	if r := e.waitEnded(t, third.EvalRequestID, 3*time.Minute); r.Status != evalflow.StatusSucceeded {
		t.Fatalf("the run redis was killed under ended %s: %s", r.Status, r.Message)
	}
	for _, name := range []string{"redis", "verify", "job-watch"} {
		if e.stack.Restarts(name) == 0 {
			t.Errorf("%s was not started again", name)
		}
	}
}

// kill9 kills the stack's process name outright and waits until it is back.
func kill9(t *testing.T, e *env, name string) {
	t.Helper()
	pid := e.stack.PID(name)
	if pid == 0 {
		t.Fatalf("no process %s", name)
	}
	restarts := e.stack.Restarts(name)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 30*time.Second, name+" started again", func() bool { return e.stack.Restarts(name) > restarts })
}

// Events get lost (a broker gone down with them in flight): the first event that hands
// a run on at each step is lost here, and the run still finishes — job-watch's tick
// finds it stalled and sends the lost event again. (The ticks come a second apart
// here, sent as the PingSource sends its minute's.) Forged events change nothing: a
// local process without the broker's token is refused, and unsigned events posted
// with it (as any pod may post to a cluster's broker) are dropped.
func TestARunWhoseEventsAreLostAtEachStepStillFinishes(t *testing.T) {
	var mu sync.Mutex
	lost := map[string]bool{}
	e := upWith(t, options{extraEnv: []string{"EVALFLOW_DRIVE_AFTER=2s", "EVALFLOW_FAIL_AFTER=5m"},
		lose: func(ev event.Event) bool {
			switch cloudevent.TypeOf(ev) {
			case evalflow.TypeStarted, evalflow.TypeVerified, evalflow.TypeResultsReady:
			default:
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			first := !lost[ev.Type()]
			lost[ev.Type()] = true
			return first
		}})
	// A tick a second, as the PingSource's (a minute's) would come.
	sender, err := cloudevent.NewSender(e.stack.Broker, cloudevent.Bearer(e.stack.BrokerToken))
	if err != nil {
		t.Fatal(err)
	}
	ticking, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		for n := 0; ticking.Err() == nil; n++ {
			tick := event.New()
			tick.SetID(fmt.Sprintf("tick-%d", n))
			tick.SetType(string(evalflow.TypePing))
			tick.SetSource("/apis/v1/namespaces/evalflow/pingsources/evalflow-job-watch-tick")
			_ = tick.SetData("application/json", map[string]string{"reason": "test"})
			_ = sender.Send(ticking, tick)
			time.Sleep(time.Second)
		}
	}()
	req := e.request(1)

	e.post(t, req)
	// Another local process, without the broker's token, cannot post into the
	// pipeline: a forged run.failed is refused, and the run goes on.
	forger, _ := cloudevent.NewSender(e.stack.Broker, nil)
	forger.Retries = 0
	forged := cloudevent.New("/forger", evalflow.TypeFailed, req.EvalRequestID, evalflow.RunRef{RunID: req.EvalRequestID})
	if err := forger.Send(context.Background(), forged); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a forged run.failed without the broker's token: %v; want 401", err)
	}
	r := e.waitEnded(t, req.EvalRequestID, 2*time.Minute)
	stop()
	// One that may post to the broker (as any pod may in a cluster) cannot sign as
	// a step does: its run.cancelled and run.verified are delivered, and dropped
	// unsigned.
	insider, _ := cloudevent.NewSender(e.stack.Broker, cloudevent.Bearer(e.stack.BrokerToken))
	for _, typ := range []evalflow.EventType{evalflow.TypeCancelled, evalflow.TypeVerified} {
		if err := insider.Send(context.Background(), cloudevent.New("/insider", typ, req.EvalRequestID, evalflow.RunRef{RunID: req.EvalRequestID})); err != nil {
			t.Errorf("an unsigned %s with the broker's token: %v; want it taken, then dropped", typ, err)
		}
	}
	testserver.Eventually(t, 30*time.Second, "deploy's count of the insider's 2 unsigned events", func() bool {
		return value(e.scrape(t, "deploy"), `evalflow_unsigned_events_total{step="deploy"}`) >= 2
	})

	if r.Status != evalflow.StatusSucceeded || r.Artifact == nil {
		t.Fatalf("run ended %s %q; want succeeded though an event was lost at each step", r.Status, r.Message)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lost) != 3 {
		t.Fatalf("lost %v: the test lost fewer events than it says", lost)
	}
	if e.stack.JobsCreated() != 1 {
		t.Errorf("%d jobs; want 1", e.stack.JobsCreated())
	}
}

// At most EVALFLOW_MAX_JOBS jobs run at once: more runs wait in line, in the order they
// were started, each shown its place, and all of them finish.
func TestRunsBeyondTheJobSlotsWaitInLineAndAllFinish(t *testing.T) {
	e := upWith(t, options{extraEnv: []string{"EVALFLOW_MAX_JOBS=2"}})
	var reqs []evalflow.Request
	for range 6 {
		r := e.request(1)
		r.Options = &evalflow.RunOptions{RequestsPerSecond: 2} // long enough to queue behind
		reqs = append(reqs, r)
	}
	for _, r := range reqs {
		if code, out := e.post(t, r); code != http.StatusAccepted {
			t.Fatalf("start: %d %v", code, out)
		}
	}
	most, placed := 0, map[string]int{}
	testserver.Eventually(t, 4*time.Minute, "every run ended", func() bool {
		most = max(most, e.stack.JobsRunning())
		ended := 0
		for _, req := range reqs {
			r := e.run(t, req.EvalRequestID)
			if r.QueuePosition > 0 {
				placed[r.ID] = r.QueuePosition
			}
			if r.Status.Terminal() {
				ended++
			}
		}
		return ended == len(reqs)
	})
	for _, req := range reqs {
		if r := e.run(t, req.EvalRequestID); r.Status != evalflow.StatusSucceeded || r.Queued {
			t.Errorf("run %s ended %s %q (queued %v)", r.ID, r.Status, r.Message, r.Queued)
		}
	}
	if most > 2 {
		t.Errorf("%d jobs ran at once; want at most 2", most)
	}
	// Which runs wait is decided at deploy: the first two there get the slots (verify
	// may pass a later run first). The others stand in line, at most four deep.
	if len(placed) == 0 {
		t.Errorf("no run ever showed a place in line, with 6 runs on 2 slots")
	}
	for id, place := range placed {
		if place < 1 || place > len(reqs)-2 {
			t.Errorf("run %s showed place %d in line; want 1 to %d", id, place, len(reqs)-2)
		}
	}
	if e.stack.JobsCreated() != len(reqs) {
		t.Errorf("%d jobs created; want %d", e.stack.JobsCreated(), len(reqs))
	}
}

// A run is one trace, from the POST to the artifact: every step's handling is a span
// of it, and so is the runner's, whose requests to the model carry it; received by an
// OTLP receiver from each process's exporter.
func TestARunIsOneTraceAcrossEveryStepAndTheRunner(t *testing.T) {
	rcv := testserver.NewOTLPReceiver(t)
	model := testserver.CountingEndpoint(t, "", testserver.OllamaOn(t, "", 4), 0)
	e := upWith(t, options{model: model.URL, extraEnv: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.URL}})
	req := e.request(1)

	e.post(t, req)
	if r := e.waitEnded(t, req.EvalRequestID, 2*time.Minute); r.Status != evalflow.StatusSucceeded {
		t.Fatalf("run ended %s %q", r.Status, r.Message)
	}

	// The trace is the one start's span began; each process sends its spans in batches.
	want := map[string]string{"evalflow-start": "start POST /evals/start", "evalflow-verify": "verify " + evalflow.TypeStarted.String(),
		"evalflow-deploy": "deploy " + evalflow.TypeVerified.String(), "evalflow-job-watch": "job-watch " + evalflow.TypeJobFinished.String(),
		"evalflow-artifact": "artifact " + evalflow.TypeResultsReady.String(), "evalflow-runner": "runner evalflow"}
	var trace string
	oneTrace := func() bool {
		inTrace := map[string]bool{}
		for _, s := range rcv.Spans() {
			if s.Service == "evalflow-start" && s.Name == "start POST /evals/start" {
				trace = s.TraceID
			}
		}
		for _, s := range rcv.Spans() {
			if s.TraceID == trace {
				inTrace[s.Service+"|"+s.Name] = true
			}
		}
		for service, name := range want {
			if !inTrace[service+"|"+name] {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(30 * time.Second); !oneTrace(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			var got []string
			for _, s := range rcv.Spans() {
				got = append(got, s.Service+" | "+s.Name+" | "+s.TraceID)
			}
			t.Fatalf("no one trace with every process's span within 30 s; received:\n%s", strings.Join(got, "\n"))
		}
	}
	tps := model.TraceParents()
	if len(tps) == 0 {
		t.Fatal("the model's requests carried no traceparent")
	}
	for _, tp := range tps {
		if parts := strings.Split(tp, "-"); len(parts) != 4 || parts[1] != trace {
			t.Errorf("a request to the model carried traceparent %s, not of the run's trace %s", tp, trace)
		}
	}
}
