// Command evalflow-bench-knative measures evalflow as make deploy puts it on the
// node's Knative (make bench-knative runs it after make deploy), and writes
// docs/benchmarks-knative.md:
//
//	evalflow-bench-knative -node .state/node -gguf ../shared/models/stories260K.gguf -out docs/benchmarks-knative.md
//
// Per function: its image's size (the node's platform, compressed, as pulled), its
// cold start (a CloudEvent of its own sent through the ingress to the function at zero
// pods, until it answers) and its idle memory (working set of the function's container
// right after, from the kubelet). Then, functions warm: POST to start → the run's Job
// created (p50 of -runs), and each run's orchestration overhead (its wall time, POST
// to succeeded, less the runner's own wall time from its log).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/uuid"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evalflow/evalflow/devkit/knative"
	"github.com/evalflow/evalflow/devkit/node"
	"github.com/evalflow/evalflow/local/deploy"
	"github.com/evalflow/evalflow/local/install"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/auth"
)

func main() {
	dir := flag.String("node", ".state/node", "the node of make node-up, with Knative and evalflow deployed (make deploy)")
	gguf := flag.String("gguf", "../shared/models/stories260K.gguf", "the model ollama serves")
	runs := flag.Int("runs", 10, "warm runs")
	colds := flag.Int("cold", 3, "cold starts per function")
	out := flag.String("out", "docs/benchmarks-knative.md", "the Markdown report")
	flag.Parse()
	if err := run(context.Background(), *dir, *gguf, *runs, *colds, *out); err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-bench-knative:", err)
		os.Exit(1)
	}
}

type bench struct {
	n       *node.Node
	in      *knative.Ingress
	cluster *knative.Cluster
	http    *http.Client
}

// bearer sends an operator's token with every request that carries no token of its
// own (a delivery's, with its Trigger's token), as start asks of callers.
type bearer string

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+string(b))
	}
	return http.DefaultTransport.RoundTrip(r)
}

// function is what is measured of one function.
type function struct {
	name            string
	imageMB         float64
	coldMS, idleMiB []float64
}

func run(ctx context.Context, dir, gguf string, runs, colds int, out string) error {
	b, err := connect(ctx, dir)
	if err != nil {
		return err
	}
	// Idle functions go to zero within seconds (the autoscaler's shortest settings),
	// so that cold starts can be measured a few times; put back after.
	restore, err := b.quickScaleDown(ctx)
	if err != nil {
		return err
	}
	defer restore()
	fns, err := b.colds(ctx, colds)
	if err != nil {
		return err
	}
	// Warm functions: the autoscaler's own settings back, which keep a function a
	// minute after its last request.
	restore()
	toJob, overhead, spans, err := b.warmRuns(ctx, gguf, runs)
	if err != nil {
		return err
	}
	return os.WriteFile(out, []byte(report(fns, toJob, overhead, spans, runs, colds)), 0o644)
}

// connect reaches the node of dir, its ingress and its cluster, as the operator.
func connect(ctx context.Context, dir string) (*bench, error) {
	n, err := node.Load(dir)
	if err != nil {
		return nil, err
	}
	in, err := knative.LoadIngress(dir)
	if err != nil {
		return nil, err
	}
	kc, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		return nil, err
	}
	c, err := knative.Connect(kc)
	if err != nil {
		return nil, err
	}
	tokens, err := c.Kube.CoreV1().Secrets(deploy.Namespace).Get(ctx, install.TokensSecret, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the callers' tokens (make deploy first): %w", err)
	}
	token := auth.OperatorToken(tokens.Data["tokens"])
	return &bench{n: n, in: in, cluster: c, http: &http.Client{Timeout: time.Minute, Transport: bearer(token)}}, nil
}

// colds measures each function's image, and its cold start and idle memory colds
// times.
func (b *bench) colds(ctx context.Context, colds int) ([]*function, error) {
	var fns []*function
	for _, step := range evalflow.Steps {
		f := &function{name: string(step.ID)}
		var err error
		if f.imageMB, err = b.imageMB(ctx, f.name); err != nil {
			return nil, err
		}
		fns = append(fns, f)
	}
	services := make([]string, len(fns))
	for i, f := range fns {
		services[i] = "evalflow-" + f.name
	}
	every := "serving.knative.dev/service in (" + strings.Join(services, ",") + ")"
	for range colds {
		for _, f := range fns {
			// Every function at zero, so that no pod winding down (the one woken just
			// before, or job-watch woken by a tick of the PingSource) shares the node's
			// two cores with the start measured.
			if err := b.waitZero(ctx, every); err != nil {
				return nil, err
			}
			ms, mib, err := b.cold(ctx, f.name)
			if err != nil {
				return nil, err
			}
			f.coldMS, f.idleMiB = append(f.coldMS, ms), append(f.idleMiB, mib)
			fmt.Fprintf(os.Stderr, "%s: cold start %.0f ms, idle %.1f MiB\n", f.name, ms, mib)
		}
	}
	return fns, nil
}

// warmRuns times runs warm runs (after one that wakes every function): POST to Job,
// the orchestration overhead, and each phase's span.
func (b *bench) warmRuns(ctx context.Context, gguf string, runs int) (toJob, overhead []float64, spans [][]float64, err error) {
	model, stopModel, err := b.ollama(ctx, gguf)
	if err != nil {
		return nil, nil, nil, err
	}
	defer stopModel()
	spans = make([][]float64, len(phases))
	for i := range runs + 1 {
		job, over, took, err := b.warmRun(ctx, model)
		if err != nil {
			return nil, nil, nil, err
		}
		if i == 0 {
			continue // wakes every function
		}
		toJob, overhead = append(toJob, job), append(overhead, over)
		for p, ms := range took {
			spans[p] = append(spans[p], ms)
		}
		fmt.Fprintf(os.Stderr, "run %d: POST → Job %.0f ms, overhead %.0f ms, phases %.0f\n", i, job, over, took)
	}
	return toJob, overhead, spans, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func report(fns []*function, toJob, overhead []float64, spans [][]float64, runs, colds int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Benchmarks: the pipeline on Knative

Reproduce with `+"`sudo make bench-knative`"+` (about 45 minutes after the builds are cached, most of it waiting for functions to reach zero): it
brings up the node and Knative (make knative-up), deploys evalflow (make deploy) and runs
`+"`bin/evalflow-bench-knative -node .state/node -gguf ../shared/models/stories260K.gguf -runs %d -cold %d -out docs/benchmarks-knative.md`"+`.

Measured %s on linux/%s, 2 cores: Knative Serving and Eventing v0.50.0 on the single-node
Kubernetes of devkit/node, Traefik as the ingress, Eventing's OIDC on; functions as the
release builds them (make deploy: local/release, then local/install); ollama serving
stories260K on the node address.

| function | image (%s, compressed) | cold start, median of %d | idle memory |
|---|---|---|---|
`, runs, colds, time.Now().UTC().Format("2006-01-02"), runtime.GOARCH, runtime.GOARCH, colds)
	for _, f := range fns {
		fmt.Fprintf(&b, "| %s | %.1f MB | %.0f ms | %.1f MiB |\n", f.name, f.imageMB, median(f.coldMS), median(f.idleMiB))
	}
	fmt.Fprintf(&b, `
- Image: the sum of the image's compressed layers and config for this platform, as a
  node pulls it (local/release: evalflow's base with CA certificates, and the function's
  static binary, built alone by its tag).
- Cold start: a CloudEvent of the function's own (for start, a GET of /evals) sent
  through Traefik to the function at zero pods, every other function at zero too,
  until it answers; the activator holds the request while the pod starts.
- Idle memory: the working set of the function's container, from the kubelet's summary,
  just after that answer.

Warm functions, %d runs of one MMLU question each (POST to start through Traefik):

| measure | p50 | max | target |
|---|---|---|---|
| POST → the run's Job created | %.0f ms | %.0f ms | ≤ 1000 ms |
| orchestration overhead (run wall − runner wall) | %.0f ms | %.0f ms | ≤ 3000 ms |

- Run wall: the run's created_at to its ended_at (succeeded). Runner wall: the sum of
  the runner's own stage timings in its pod's log. The overhead holds the broker's
  deliveries, the Job's pod start (sandbox, image from the node's registry, the data
  artifact's pull), the progress reports, the results push and the artifact step.

Where a run's wall goes, from its timeline (GET /evals/{id}/events: each step's
notifications, timed as sent), p50 of the same runs:

| from → to | p50 | max |
|---|---|---|
`, runs, median(toJob), slices.Max(toJob), median(overhead), slices.Max(overhead))
	for i, p := range phases {
		fmt.Fprintf(&b, "| %s | %.0f ms | %.0f ms |\n", p.name, median(spans[i]), slices.Max(spans[i]))
	}
	return b.String()
}

func (b *bench) quickScaleDown(ctx context.Context) (func(), error) {
	cms := b.cluster.Kube.CoreV1().ConfigMaps(knative.ServingNamespace)
	cm, err := cms.Get(ctx, "config-autoscaler", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	before := cm.Data
	cm.Data = map[string]string{"stable-window": "6s", "scale-to-zero-grace-period": "3s"}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return nil, err
	}
	return func() {
		if cm, err := cms.Get(ctx, "config-autoscaler", metav1.GetOptions{}); err == nil {
			cm.Data = before
			cms.Update(ctx, cm, metav1.UpdateOptions{})
		}
	}, nil
}

// imageMB is the size of the function's image for this platform, as pulled.
func (b *bench) imageMB(ctx context.Context, fn string) (float64, error) {
	image, err := install.Image(ctx, b.cluster, "evalflow-"+fn)
	if err != nil {
		return 0, err
	}
	ref, err := name.ParseReference(image, name.Insecure)
	if err != nil {
		return 0, err
	}
	img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", fn, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return float64(size) / 1e6, nil
}

func (b *bench) pods(ctx context.Context, selector string) (int, error) {
	l, err := b.cluster.Kube.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return 0, err
	}
	return len(l.Items), nil
}

// waitZero waits until no pod matches selector, terminating ones included.
func (b *bench) waitZero(ctx context.Context, selector string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		if k, err := b.pods(ctx, selector); err == nil && k == 0 {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("%s: not at zero pods within 5 minutes", selector)
}

// cold sends the function, at zero pods, an event of its own through Traefik (start:
// a GET of /evals), and returns how long it took to answer and its container's
// working set then.
func (b *bench) cold(ctx context.Context, fn string) (ms, mib float64, err error) {
	svc := "evalflow-" + fn
	var req *http.Request
	if fn == string(evalflow.StepStart) {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.in.Public+"/evals", nil)
		req.Host = svc + "." + deploy.Namespace + "." + b.in.Domain
	} else {
		typ := map[string]evalflow.EventType{"verify": evalflow.TypeStarted, "deploy": evalflow.TypeVerified,
			"job-watch": evalflow.TypeJobCreated, "artifact": evalflow.TypeResultsReady}[fn]
		id := uuid.NewString()
		body, _ := json.Marshal(evalflow.RunRef{RunID: id})
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, "http://"+b.in.Private+"/", bytes.NewReader(body))
		req.Host = svc + "." + deploy.Namespace + ".svc.cluster.local"
		for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": uuid.NewString(), "Ce-Source": "bench",
			"Ce-Type": typ.String(), "Ce-Subject": id, "Content-Type": "application/json"} {
			req.Header.Set(k, v)
		}
		// As the broker delivers: with a token of the function's Trigger's account for
		// its audience (Knative Eventing's OIDC), which the function has reviewed.
		token, err := b.cluster.Kube.CoreV1().ServiceAccounts(deploy.Namespace).CreateToken(ctx, svc+"-oidc-eventing.knative.dev-trigger",
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{
				"serving.knative.dev/service/" + deploy.Namespace + "/" + svc}}}, metav1.CreateOptions{})
		if err != nil {
			return 0, 0, fmt.Errorf("%s: the Trigger's token: %w", fn, err)
		}
		req.Header.Set("Authorization", "Bearer "+token.Status.Token)
	}
	start := time.Now()
	resp, err := b.http.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", fn, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode >= 300 {
		return 0, 0, fmt.Errorf("%s answered %d", fn, resp.StatusCode)
	}
	time.Sleep(2 * time.Second)
	mib, err = b.workingSet(ctx, svc)
	return float64(took.Microseconds()) / 1000, mib, err
}

// workingSet is the working set of the service's user container, from the
// kubelet's summary (through the API server).
func (b *bench) workingSet(ctx context.Context, svc string) (float64, error) {
	nodes, err := b.cluster.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		return 0, fmt.Errorf("nodes: %v", err)
	}
	for range 20 {
		raw, err := b.cluster.Kube.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", nodes.Items[0].Name, "proxy", "stats", "summary").DoRaw(ctx)
		if err != nil {
			return 0, err
		}
		var summary struct {
			Pods []struct {
				PodRef     struct{ Name, Namespace string }
				Containers []struct {
					Name   string
					Memory struct {
						WorkingSetBytes *float64
					}
				}
			}
		}
		if err := json.Unmarshal(raw, &summary); err != nil {
			return 0, err
		}
		for _, p := range summary.Pods {
			if p.PodRef.Namespace == deploy.Namespace && strings.HasPrefix(p.PodRef.Name, svc+"-") {
				for _, c := range p.Containers {
					if c.Name == "user-container" && c.Memory.WorkingSetBytes != nil {
						return *c.Memory.WorkingSetBytes / (1 << 20), nil
					}
				}
			}
		}
		time.Sleep(time.Second) // the kubelet has not sampled the new pod yet
	}
	return 0, fmt.Errorf("no memory figure for %s", svc)
}
