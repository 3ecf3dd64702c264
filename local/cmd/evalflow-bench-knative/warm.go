package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/cenkalti/backoff/v5"
	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/local/deploy"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Warm runs: POST to Job, the orchestration overhead, and where the time goes.

// ollama serves the model on the node address, where the Jobs reach it.
func (b *bench) ollama(ctx context.Context, gguf string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "evalflow-bench-ollama")
	if err != nil {
		return "", nil, err
	}
	p, err := localserver.Ollama(ctx, localserver.OllamaBinary(), dir, b.n.Address, 4)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	stop := func() { p.Stop(); os.RemoveAll(dir) }
	if err := localserver.CreateModel(ctx, localserver.OllamaBinary(), p.Addr, "stories260k", gguf, 0); err != nil {
		stop()
		return "", nil, err
	}
	return "http://" + p.Addr + "/v1", stop, nil
}

// warmRun POSTs a run to start and returns POST → Job created, and the run's wall
// time less the runner's, in ms.
// phases split a run's wall at notifications of its timeline: each from the first
// notification of one step and status to the first of the next (the run's creation
// and end are its own).
var phases = []struct {
	name     string
	from, to [2]string
}{
	{"POST → Job created (deploy succeeded)", [2]string{"", "created"}, [2]string{"deploy", "succeeded"}},
	{"Job created → the runner's first report (its pod's start; the spec and data read)", [2]string{"deploy", "succeeded"}, [2]string{"job-watch", "progress"}},
	{"first report → the job's end recorded (scoring, results, their push)", [2]string{"job-watch", "progress"}, [2]string{"job-watch", "succeeded"}},
	{"the job's end → the run succeeded (the artifact step)", [2]string{"job-watch", "succeeded"}, [2]string{"", "ended"}},
}

// phaseTimes are run's phases in ms, from its timeline.
func (b *bench) phaseTimes(ctx context.Context, host string, run evalflow.Run) ([]float64, error) {
	get, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.in.Loopback+"/evals/"+run.ID+"/events", nil)
	get.Host = host
	resp, err := b.http.Do(get)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var timeline struct {
		Events []evalflow.TimelineEntry `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&timeline); err != nil {
		return nil, fmt.Errorf("timeline of run %s: %w", run.ID, err)
	}
	at := map[[2]string]time.Time{{"", "created"}: run.CreatedAt, {"", "ended"}: run.EndedAt}
	for _, e := range timeline.Events {
		k := [2]string{string(e.Step), e.Status}
		if _, seen := at[k]; !seen {
			at[k] = e.Time
		}
	}
	out := make([]float64, len(phases))
	for i, p := range phases {
		from, ok1 := at[p.from]
		to, ok2 := at[p.to]
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("timeline of run %s lacks %v or %v", run.ID, p.from, p.to)
		}
		out[i] = float64(to.Sub(from).Microseconds()) / 1000
	}
	return out, nil
}

func (b *bench) warmRun(ctx context.Context, model string) (toJob, overhead float64, took []float64, err error) {
	req := evalflow.Request{EvalRequestID: uuid.NewString(), ModelName: "stories260k", BaseURL: model, APIKey: "sk-bench",
		Source: "bench", SourceTopic: "bench", Datasets: []evalflow.DatasetSpec{{Name: "mmlu_generative", Subjects: []string{"anatomy"}, Limit: 1}}}
	body, _ := json.Marshal(req)
	post, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+b.in.Loopback+"/evals/start", bytes.NewReader(body))
	post.Host = "evalflow-start." + deploy.Namespace + "." + b.in.Domain
	post.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := b.http.Do(post)
	if err != nil {
		return 0, 0, nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return 0, 0, nil, fmt.Errorf("POST: %d", resp.StatusCode)
	}
	job := "evalflow-" + req.EvalRequestID
	for {
		if _, err := b.cluster.Kube.BatchV1().Jobs(deploy.JobNamespace).Get(ctx, job, metav1.GetOptions{}); err == nil {
			break
		}
		if time.Since(start) > 2*time.Minute {
			return 0, 0, nil, fmt.Errorf("no Job %s", job)
		}
		time.Sleep(10 * time.Millisecond)
	}
	toJob = float64(time.Since(start).Microseconds()) / 1000
	var run evalflow.Run
	for {
		get, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.in.Loopback+"/evals/"+req.EvalRequestID, nil)
		get.Host = post.Host
		if resp, err := b.http.Do(get); err == nil {
			json.NewDecoder(resp.Body).Decode(&run)
			resp.Body.Close()
		}
		if run.Status.Terminal() {
			break
		}
		if time.Since(start) > 5*time.Minute {
			return 0, 0, nil, fmt.Errorf("run %s did not end", req.EvalRequestID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if run.Status != evalflow.StatusSucceeded {
		return 0, 0, nil, fmt.Errorf("run %s: %s %s", run.ID, run.Status, run.Message)
	}
	runner, err := b.runnerWall(ctx, job)
	if err != nil {
		return 0, 0, nil, err
	}
	if took, err = b.phaseTimes(ctx, post.Host, run); err != nil {
		return 0, 0, nil, err
	}
	return toJob, float64(run.EndedAt.Sub(run.CreatedAt).Microseconds())/1000 - runner, took, nil
}

// runnerWall sums the runner's stage timings from its pod's log.
func (b *bench) runnerWall(ctx context.Context, job string) (float64, error) {
	pods, err := b.cluster.Kube.CoreV1().Pods(deploy.JobNamespace).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + job})
	if err != nil || len(pods.Items) == 0 {
		return 0, fmt.Errorf("pod of %s: %v", job, err)
	}
	// The API server reads the log from the kubelet, which at times answers neither
	// yes nor no at once ("the server rejected our request for an unknown reason").
	raw, err := backoff.Retry(ctx, func() ([]byte, error) {
		return b.cluster.Kube.CoreV1().Pods(deploy.JobNamespace).GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{}).DoRaw(ctx)
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(30*time.Second))
	if err != nil {
		return 0, fmt.Errorf("the log of %s's pod: %w", job, err)
	}
	sum := 0.0
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		for k, v := range m {
			if f, ok := v.(float64); ok && slices.Contains(stages, k) {
				sum += f
			}
		}
	}
	if sum == 0 {
		return 0, fmt.Errorf("no stage timings in %s's log", job)
	}
	return sum, nil
}

// stages are the runner's stage timings in its log (as evalflow-bench reads them).
var stages = []string{"spec_ms", "data_ms", "resume_ms", "probe_ms", "scoring_ms", "results_ms"}
