// Package e2e drives evalflow end to end in local mode, through the same stack
// `evalflow run` brings up: real redis-server, the local broker routing by
// triggers/*.yaml, every function as a process, the runner against real ollama serving
// the tiny model, and results pushed to a real docker-registry with basic auth.
package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/evalflow/evalflow/devkit/testserver"
	"github.com/evalflow/evalflow/local/stack"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/runstore"
)

const (
	apiKeyCanary = "sk-evalflow-canary-7f3a9c"
	regUser      = "evalflow"
	regPassword  = "registry-pw-5d1e"
	callerTopic  = "team-a-evals"
)

type env struct {
	stack    *stack.Stack
	sink     *testserver.Sink
	registry string
	state    string
	model    string
}

// up brings a whole local evalflow up for a test.
func up(t *testing.T) *env { return upWith(t, options{}) }

// options change what up brings up.
type options struct {
	// host is where the model server and the registry listen (loopback when empty):
	// a node's address, for its pods to reach them.
	host string
	// jobAddress is Config.JobAddress; extraEnv goes to every function.
	jobAddress string
	extraEnv   []string
	// eventing is a directory of PingSources and config-features.yaml (default:
	// the project's eventing/).
	eventing string
	// model is the endpoint (default: ollama serving the tiny model on host).
	model string
	// lose is the broker's Options.Lose.
	lose func(event.Event) bool
	// triggers are more Trigger manifests (YAML) beside the project's.
	triggers string
}

func upWith(t *testing.T, o options) *env {
	t.Helper()
	shared := testserver.SharedDir(t)
	e := &env{model: o.model, sink: testserver.NewSink(t), state: t.TempDir()}
	os.Chmod(e.state, 0o755) // as a user's .state is, made with the usual umask
	if e.model == "" {
		e.model = testserver.OllamaOn(t, o.host, 4)
	}
	e.registry = testserver.RegistryOn(t, o.host, regUser, regPassword)
	exe := testserver.Build(t, "github.com/evalflow/evalflow/local/cmd/evalflow")
	runner := testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/evalflow-runner")
	commands := map[string]string{
		"lm-evaluation-harness": testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/lm-eval-adapter"),
		"opencompass":           testserver.Build(t, "github.com/evalflow/evalflow/runner/cmd/opencompass-adapter"),
	}
	root := testserver.RepoRoot()
	if o.eventing == "" {
		o.eventing = filepath.Join(root, "eventing")
	}

	s, err := stack.Up(context.Background(), stack.Config{
		StateDir: e.state, Triggers: os.DirFS(e.triggers(t, filepath.Join(root, "triggers"), o.triggers)),
		Eventing: os.DirFS(o.eventing),
		DataDir:  filepath.Join(shared, "datasets"), Executable: exe, RunnerPath: runner, Commands: commands, LogLevel: "debug",
		OCI:        oci.Config{Registry: e.registry + "/evalflow/results", PlainHTTP: true, Username: regUser, Password: regPassword},
		JobAddress: o.jobAddress, ExtraEnv: o.extraEnv, LoseEvents: o.lose,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Down()
		if t.Failed() {
			for _, f := range stack.Functions {
				b, _ := os.ReadFile(filepath.Join(e.state, "logs", f+".log"))
				t.Logf("--- %s.log\n%s", f, b)
			}
			logs, _ := filepath.Glob(filepath.Join(e.state, "jobs", "*", "runner.log"))
			for _, f := range logs {
				b, _ := os.ReadFile(f)
				t.Logf("--- %s (its last 4 KB)\n%s", f, b[max(0, len(b)-4096):])
			}
		}
	})
	e.stack = s
	return e
}

// triggers copies the project's triggers and adds two a caller would make: one for
// its notifications, and a spy that records every event; and extra.
func (e *env) triggers(t *testing.T, src, extra string) string {
	dir := t.TempDir()
	files, _ := filepath.Glob(filepath.Join(src, "*.yaml"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644)
	}
	caller := fmt.Sprintf(`apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: caller-notifications, namespace: evalflow}
spec:
  broker: evalflow
  filter:
    attributes: {type: %s, %s: %s}
  subscriber: {uri: "%s/caller"}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: spy, namespace: evalflow}
spec:
  broker: evalflow
  subscriber: {uri: "%s/all"}
`, evalflow.TypeNotification, evalflow.ExtCallerTopic, callerTopic, e.sink.URL, e.sink.URL)
	os.WriteFile(filepath.Join(dir, "zz-caller.yaml"), []byte(caller), 0o644)
	if extra != "" {
		os.WriteFile(filepath.Join(dir, "zz-extra.yaml"), []byte(extra), 0o644)
	}
	return dir
}

// scrape reads function name's metrics, without a token.
func (e *env) scrape(t *testing.T, name string) string {
	t.Helper()
	resp, err := http.Get(e.stack.Metrics[name])
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", e.stack.Metrics[name], resp.StatusCode, b)
	}
	return string(b)
}

// value is a sample's value, by its name and labels as Prometheus's text format
// writes them (-1 for none).
func value(text, sample string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			v, _ := strconv.ParseFloat(rest, 64)
			return v
		}
	}
	return -1
}

func (e *env) request(limit float64) evalflow.Request {
	zero := 0
	return evalflow.Request{EvalRequestID: uuid.NewString(), ModelName: testserver.Model, BaseURL: e.model,
		APIKey: apiKeyCanary, Source: "e2e-test", SourceTopic: callerTopic, Concurrency: 4,
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"abstract_algebra", "marketing"}, Limit: limit, NumFewshot: &zero}}}
}

// call sends method path (body as JSON, nil for none) to the API as the operator.
func (e *env) call(t *testing.T, method, path string, body any) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.stack.API+path, rd)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.stack.OperatorToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (e *env) post(t *testing.T, req any) (int, map[string]any) {
	t.Helper()
	resp := e.call(t, http.MethodPost, "/evals/start", req)
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (e *env) run(t *testing.T, id string) *evalflow.Run {
	t.Helper()
	resp := e.call(t, http.MethodGet, "/evals/"+id, nil)
	defer resp.Body.Close()
	var r evalflow.Run
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func (e *env) waitEnded(t *testing.T, id string, within time.Duration) *evalflow.Run {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := e.run(t, id)
		if r.Status.Terminal() {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s still %s after %s", id, r.Status, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// settle waits until the broker has stayed idle for a while.
func (e *env) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	idleSince := time.Time{}
	for time.Now().Before(deadline) {
		if e.stack.Idle() {
			if idleSince.IsZero() {
				idleSince = time.Now()
			} else if time.Since(idleSince) > 500*time.Millisecond {
				return
			}
		} else {
			idleSince = time.Time{}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("broker never settled; in flight:\n%s", strings.Join(e.stack.InFlight(), "\n"))
}

func TestEvaluationEndToEnd(t *testing.T) {
	e := up(t)
	req := e.request(3)

	// Act: start, and start again (a caller's retry).
	code, first := e.post(t, req)
	code2, second := e.post(t, req)
	r := e.waitEnded(t, req.EvalRequestID, 3*time.Minute)

	// Assert: one run, succeeded, with scores and an artifact.
	if code != http.StatusAccepted || first["created"] != true || first["run_id"] != req.EvalRequestID {
		t.Fatalf("first start: %d %v", code, first)
	}
	if steps, _ := first["steps"].([]any); len(steps) != 5 {
		t.Fatalf("start answered %d steps, want 5", len(steps))
	}
	if code2 != http.StatusOK || second["created"] != false || second["run_id"] != req.EvalRequestID {
		t.Fatalf("second start of the same eval_request_id: %d %v", code2, second)
	}
	if r.Status != evalflow.StatusSucceeded {
		t.Fatalf("run ended %s: %s", r.Status, r.Message)
	}
	if r.Summary == nil || r.Summary.Samples != 6 {
		t.Fatalf("summary = %+v, want 6 samples", r.Summary)
	}
	if _, ok := r.Summary.Scores["mmlu_marketing_generative"]; !ok {
		t.Fatalf("no per-subject score: %v", r.Summary.Scores)
	}
	if r.Progress.Done != 6 || r.Progress.Total != 6 {
		t.Fatalf("progress = %+v, want 6/6", r.Progress)
	}
	wantRef := e.registry + "/evalflow/results:" + r.ID + "@" + r.Artifact.Digest
	if r.Artifact == nil || r.Artifact.Reference != wantRef {
		t.Fatalf("artifact = %+v, want reference %s", r.Artifact, wantRef)
	}

	t.Run("the artifact pulls back with the oras CLI, equal to the results", func(t *testing.T) {
		pulled := orasPull(t, e, r.ID)
		for _, f := range []string{evalflow.ResultsFile, evalflow.SamplesFile} {
			want, _ := os.ReadFile(filepath.Join(e.state, "results", r.ID, f))
			got, err := os.ReadFile(filepath.Join(pulled, f))
			if err != nil || !bytes.Equal(got, want) || len(want) == 0 {
				t.Errorf("%s pulled back differs from the runner's (%d vs %d bytes, %v)", f, len(got), len(want), err)
			}
		}
		var samples []map[string]any
		b, _ := os.ReadFile(filepath.Join(pulled, evalflow.SamplesFile))
		for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			var s map[string]any
			json.Unmarshal(line, &s)
			samples = append(samples, s)
		}
		for _, k := range []string{"prompt", "response", "extracted", "target", "correct"} {
			if _, ok := samples[0][k]; !ok {
				t.Errorf("samples.jsonl lacks %q: %v", k, samples[0])
			}
		}
		manifest := orasOut(t, e, "manifest", "fetch", e.registry+"/evalflow/results:"+r.ID)
		for _, want := range []string{oci.ArtifactType, `"` + oci.AnnotationRunID + `":"` + r.ID + `"`, `"` + oci.AnnotationModel + `":"` + testserver.Model + `"`} {
			if !strings.Contains(manifest, want) {
				t.Errorf("manifest lacks %s:\n%s", want, manifest)
			}
		}
	})

	t.Run("the caller hears every step start and succeed, addressed to it", func(t *testing.T) {
		seen := map[string]bool{}
		for _, ev := range e.sink.Got("/caller") {
			var n evalflow.Notification
			if err := json.Unmarshal(ev.Data(), &n); err != nil || n.RunID != r.ID {
				t.Fatalf("bad notification %v: %v", ev, err)
			}
			if ev.Extensions()[evalflow.ExtCallerSource] != "e2e-test" {
				t.Errorf("notification not addressed to the caller's source: %v", ev.Extensions())
			}
			seen[string(n.Step)+" "+n.Status] = true
		}
		for _, want := range []string{"start succeeded", "verify started", "verify succeeded", "deploy started",
			"deploy succeeded", "job-watch started", "job-watch progress", "job-watch succeeded", "artifact started", "artifact succeeded"} {
			if !seen[want] {
				t.Errorf("no %q notification; got %v", want, seen)
			}
		}
	})

	t.Run("every event delivered again, late and out of order, changes nothing", func(t *testing.T) {
		e.settle(t)
		before := e.run(t, r.ID)
		var replay []event.Event
		for _, ev := range e.sink.Got("/all") {
			if cloudevent.TypeOf(ev) != evalflow.TypeNotification {
				replay = append(replay, ev)
			}
		}
		types := map[evalflow.EventType]bool{}
		for _, ev := range replay {
			types[cloudevent.TypeOf(ev)] = true
		}
		for _, want := range []evalflow.EventType{evalflow.TypeStarted, evalflow.TypeVerified, evalflow.TypeJobCreated,
			evalflow.TypeJobProgress, evalflow.TypeJobFinished, evalflow.TypeResultsReady, evalflow.TypeSucceeded} {
			if !types[want] {
				t.Fatalf("the spy saw no %s to replay (saw %v)", want, types)
			}
		}
		sender, err := cloudevent.NewSender(e.stack.Broker, cloudevent.Bearer(e.stack.BrokerToken))
		if err != nil {
			t.Fatal(err)
		}
		send := func(ev event.Event) {
			if err := sender.Send(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
		}
		for range 2 {
			for _, ev := range replay {
				send(ev)
			}
		}
		for i := len(replay) - 1; i >= 0; i-- {
			send(replay[i])
		}
		e.settle(t)

		after := e.run(t, r.ID)
		if e.stack.JobsCreated() != 1 {
			t.Errorf("%d jobs created; want 1", e.stack.JobsCreated())
		}
		if after.Status != before.Status || after.Artifact.Digest != before.Artifact.Digest ||
			!after.UpdatedAt.Equal(before.UpdatedAt) || after.Progress != before.Progress {
			t.Errorf("run changed under redelivery:\nbefore %+v\nafter  %+v", before, after)
		}
		tags := strings.Fields(orasOut(t, e, "repo", "tags", e.registry+"/evalflow/results"))
		if len(tags) != 1 || tags[0] != r.ID {
			t.Errorf("registry tags = %v; want exactly [%s]", tags, r.ID)
		}
	})

	t.Run("every function's metrics tell of the run, scraped without a token", func(t *testing.T) {
		start := e.scrape(t, "start")
		for sample, atLeast := range map[string]float64{
			`evalflow_runs{status="succeeded"}`:                                              1,
			`evalflow_api_requests_total{code="202",route="POST /evals/start",step="start"}`: 1,
			`evalflow_api_requests_total{code="200",route="POST /evals/start",step="start"}`: 1,
			`evalflow_queue_length`: 0,
		} {
			if v := value(start, sample); v < atLeast {
				t.Errorf("start's %s = %v; want at least %v", sample, v, atLeast)
			}
		}
		for name, typ := range map[string]evalflow.EventType{"verify": evalflow.TypeStarted, "deploy": evalflow.TypeVerified,
			"job-watch": evalflow.TypeJobFinished, "artifact": evalflow.TypeResultsReady} {
			text := e.scrape(t, name)
			handled := fmt.Sprintf(`evalflow_event_handling_seconds_count{outcome="ok",step=%q,type=%q}`, name, typ)
			if v := value(text, handled); v < 1 {
				t.Errorf("%s's %s = %v; want at least 1", name, handled, v)
			}
			// Every event was replayed: each step dropped the copies as late.
			if !strings.Contains(text, "evalflow_dropped_events_total{") {
				t.Errorf("%s counts no dropped duplicates after the replay", name)
			}
		}
	})

	t.Run("the run's timeline has every step's start and end once, in order", func(t *testing.T) {
		resp := e.call(t, http.MethodGet, "/evals/"+r.ID+"/events", nil)
		var timeline struct{ Events []evalflow.TimelineEntry }
		json.NewDecoder(resp.Body).Decode(&timeline)
		resp.Body.Close()
		var seen []string
		for i, ev := range timeline.Events {
			if i > 0 && ev.Time.Before(timeline.Events[i-1].Time) {
				t.Errorf("entry %d is older than the one before it", i)
			}
			if ev.Status != evalflow.NoteProgress {
				seen = append(seen, string(ev.Step)+" "+ev.Status)
			}
		}
		// Each once, though every event was delivered three times; each step's start
		// before its end, and the steps' starts in order (a job's first report may
		// reach job-watch before deploy has said it succeeded).
		want := []string{"start succeeded", "verify started", "verify succeeded", "deploy started", "deploy succeeded",
			"job-watch started", "job-watch succeeded", "artifact started", "artifact succeeded"}
		at := map[string]int{}
		for i, s := range seen {
			if _, twice := at[s]; twice {
				t.Errorf("timeline has %q twice: %v", s, seen)
			}
			at[s] = i
		}
		for i, w := range want {
			if _, ok := at[w]; !ok || len(seen) != len(want) {
				t.Fatalf("timeline (progress aside) %v; want %v", seen, want)
			}
			if step, end, ok := strings.Cut(w, " "); ok && end == "succeeded" && step != "start" && at[step+" started"] > at[w] {
				t.Errorf("%s before %s started: %v", w, step, seen)
			}
			if i > 1 && strings.HasSuffix(w, "started") && at[w] < at[want[i-2]] {
				t.Errorf("%s before %s: %v", w, want[i-2], seen)
			}
		}
	})

	t.Run("no api_key in clear in logs, Redis, events, job files or the artifact", func(t *testing.T) {
		e.settle(t)
		scanDir(t, e.state)
		scanDir(t, orasPull(t, e, r.ID))
		if bytes.Contains(e.sink.Raw(), []byte(apiKeyCanary)) {
			t.Error("an event carries the api_key")
		}
		scanRedis(t, e)
	})

	t.Run("the state directory and Redis are the user's alone", func(t *testing.T) {
		ownerOnly(t, e.state)
		rdb := redis.NewClient(&redis.Options{Addr: e.stack.Redis})
		defer rdb.Close()
		if err := rdb.Get(context.Background(), "evalflow:run:"+r.ID).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
			t.Errorf("redis without its password answered %v; want NOAUTH", err)
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", e.stack.PID("redis")))
		if len(cmdline) == 0 || bytes.Contains(cmdline, []byte(e.stack.RedisPassword)) {
			t.Errorf("redis's command line (which any local user reads) %q holds its password", cmdline)
		}
	})
}

// ownerOnly fails the test where another user (of the group, or any) can read a file
// under dir or list a directory: every directory on the way to it lets them through
// (x), and it lets them read (r).
func ownerOnly(t *testing.T, dir string) {
	t.Helper()
	n := 0
	through := map[string]fs.FileMode{filepath.Dir(dir): 0o011} // the bits others pass a directory by
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil || info.Mode()&fs.ModeSymlink != 0 {
			return err
		}
		n++
		perm, passed := info.Mode().Perm(), through[filepath.Dir(path)]
		if readable := perm & (passed << 2) & 0o044; readable != 0 { // r for whom can reach it
			t.Errorf("%s (mode %v) can be read by another user", path, perm)
		}
		if d.IsDir() {
			through[path] = perm & passed & 0o011
		}
		return nil
	})
	if n < 10 {
		t.Fatalf("only %d entries under %s: the check would prove nothing", n, dir)
	}
}

// scanRedis fails the test where a key of Redis holds the api_key, or an ended run
// still has its sealed secrets.
func scanRedis(t *testing.T, e *env) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: e.stack.Redis, Password: e.stack.RedisPassword})
	defer rdb.Close()
	ctx := context.Background()
	keys := rdb.Keys(ctx, "*").Val()
	if len(keys) == 0 {
		t.Fatal("redis holds nothing: the scan would prove nothing")
	}
	for _, k := range keys {
		if strings.Contains(rdb.Dump(ctx, k).Val(), apiKeyCanary) {
			t.Errorf("redis key %s holds the api_key", k)
		}
		// A run that ended keeps no secret — but a failed or cancelled run's sealed
		// kubeconfig, a while, for its job to be stopped (runstore.StopGrace).
		if strings.HasSuffix(k, ":secrets") {
			fields := rdb.HKeys(ctx, k).Val()
			ttl := rdb.TTL(ctx, k).Val()
			if len(fields) != 1 || fields[0] != runstore.SecretKubeconfig || ttl <= 0 || ttl > runstore.StopGrace {
				t.Errorf("the run ended but its sealed secrets %s are still stored: %v, for %s", k, fields, ttl)
			}
		}
	}
}

func orasPull(t *testing.T, e *env, tag string) string {
	t.Helper()
	dir := t.TempDir()
	orasOut(t, e, "pull", e.registry+"/evalflow/results:"+tag, "-o", dir)
	return dir
}

func orasOut(t *testing.T, e *env, args ...string) string {
	t.Helper()
	args = append(args, "--plain-http", "-u", regUser, "--password-stdin")
	cmd := exec.Command(testserver.Oras(t), args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	cmd.Stdin = strings.NewReader(regPassword)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("oras %v: %v\n%s%s", args, err, out, stderr.Bytes())
	}
	return string(out)
}

// scanDir fails the test where any file below dir holds the api_key.
func scanDir(t *testing.T, dir string) {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		n++
		for _, form := range []string{apiKeyCanary, base64.StdEncoding.EncodeToString([]byte("Bearer " + apiKeyCanary))} {
			if bytes.Contains(b, []byte(form)) {
				t.Errorf("%s holds the api_key (as %q)", path, form)
			}
		}
		return nil
	})
	if n == 0 {
		t.Errorf("no file under %s: the scan proves nothing", dir)
	}
}
