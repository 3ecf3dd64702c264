// Command evalflow-bench-ui times the results page's samples view in headless
// chromium on a run of all of MMLU: local mode with a scripted model server answers
// every MMLU test question (5-shot prompts), then shared/ui/browser/bench.mjs opens
// the run's page (cold: the start function restarted, so it reads and parses the
// artifact; warm: parsed already) and sets each filter. It writes the figures, with
// the command that reproduces them, to a Markdown file.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/evalflow/evalflow/local/stack"
	evalflow "github.com/evalflow/evalflow/shared"
)

func main() {
	data := flag.String("data", "../shared/datasets", "datasets directory")
	out := flag.String("out", "docs/benchmarks-ui.md", "the Markdown file written")
	repeats := flag.Int("repeats", 5, "measurements of each kind")
	modules := flag.String("playwright", os.Getenv("EVALFLOW_PLAYWRIGHT"), "node_modules holding playwright-core (hack/install-browser.sh)")
	flag.Parse()
	if err := run(*data, *out, *modules, *repeats); err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-bench-ui:", err)
		os.Exit(1)
	}
}

func run(data, out, modules string, repeats int) error {
	ctx := context.Background()
	model := httptest.NewServer(scripted())
	defer model.Close()
	s, down, err := stack.ForBenchmark(ctx, data)
	if err != nil {
		return err
	}
	defer down()
	root, _ := filepath.Abs(".")

	fmt.Fprintln(os.Stderr, "evaluating every MMLU test question (5-shot) against a scripted model server ...")
	began := time.Now()
	run, err := evaluateAllOfMMLU(ctx, s, model.URL+"/v1")
	if err != nil {
		return err
	}
	took := time.Since(began)
	samplesSize := layerSize(s.StateDir(), run)
	// The run's files written out (as a while after a run ends), so that the disk's
	// writeback does not count against the first opening.
	syscall.Sync()
	time.Sleep(2 * time.Second)

	b := browser{api: s.API, token: s.OperatorToken, run: run.ID, modules: modules, root: root}
	// Cold: the start function restarted before each opening (the browser stays).
	restarter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := restart(ctx, s, "start"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	defer restarter.Close()
	b.restart = restarter.URL
	var cold struct{ Open []float64 }
	if err := b.measure("open", repeats, &cold); err != nil {
		return err
	}
	b.restart = ""
	var warm struct{ Open []float64 }
	if err := b.measure("open", repeats, &warm); err != nil {
		return err
	}
	var filters struct {
		Filters map[string][]float64
		Total   int
	}
	if err := b.measure("filters", repeats, &filters); err != nil {
		return err
	}
	report := markdown(run, took, samplesSize, cold.Open, warm.Open, filters.Filters, repeats)
	fmt.Print(report)
	return os.WriteFile(out, []byte(report), 0o644)
}

// evaluateAllOfMMLU runs every MMLU test question, 5-shot, and waits for its end.
func evaluateAllOfMMLU(ctx context.Context, s *stack.Stack, model string) (*evalflow.Run, error) {
	five := 5
	req := evalflow.Request{EvalRequestID: uuid.NewString(), ModelName: "scripted", BaseURL: model, Concurrency: 32,
		Source: "bench-ui", SourceTopic: "bench", Datasets: []evalflow.DatasetSpec{{Name: "mmlu_generative", NumFewshot: &five}}}
	body, _ := json.Marshal(req)
	httpReq, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.API+"/evals/start", strings.NewReader(string(body)))
	httpReq.Header.Set("Content-Type", "application/json")
	httpReq.Header.Set("Authorization", "Bearer "+s.OperatorToken)
	resp, err := http.DefaultClient.Do(httpReq)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("start: %s", resp.Status)
	}
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		r, err := get(ctx, s, req.EvalRequestID)
		if err != nil {
			return nil, err
		}
		if r.Status.Terminal() {
			if r.Status != evalflow.StatusSucceeded {
				return nil, fmt.Errorf("run %s %s: %s", r.ID, r.Status, r.Message)
			}
			return r, nil
		}
		time.Sleep(time.Second)
	}
	return nil, fmt.Errorf("run %s did not end in 30 minutes", req.EvalRequestID)
}

func get(ctx context.Context, s *stack.Stack, id string) (*evalflow.Run, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.API+"/evals/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+s.OperatorToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r evalflow.Run
	return &r, json.NewDecoder(resp.Body).Decode(&r)
}

// layerSize is the size of the run's samples.jsonl as the runner wrote it.
func layerSize(state string, run *evalflow.Run) int64 {
	st, err := os.Stat(evalflow.ResultsPath(filepath.Join(state, "results"), run.ID) + "/" + evalflow.SamplesFile)
	if err != nil {
		return 0
	}
	return st.Size()
}

// restart kills function name; the stack's supervisor starts it again, with nothing
// in memory. It returns once the API answers.
func restart(ctx context.Context, s *stack.Stack, name string) error {
	was := s.Restarts(name)
	if err := syscall.Kill(s.PID(name), syscall.SIGKILL); err != nil {
		return fmt.Errorf("restart %s: %w", name, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if s.Restarts(name) > was {
			if resp, err := http.Get(s.API + "/ui/"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not come back in 30 s", name)
}

// browser runs shared/ui/browser/bench.mjs.
type browser struct{ api, token, run, modules, root, restart string }

func (b browser) measure(mode string, repeats int, out any) error {
	cmd := exec.Command("node", filepath.Join(b.root, "shared", "ui", "browser", "bench.mjs"))
	cmd.Env = append(os.Environ(), "BASE="+b.api, "TOKEN="+b.token, "RUN="+b.run, "MODE="+mode,
		fmt.Sprintf("REPEATS=%d", repeats), "PLAYWRIGHT_MODULES="+b.modules, "RESTART="+b.restart)
	cmd.Stderr = os.Stderr
	line, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("bench.mjs %s: %w", mode, err)
	}
	return json.Unmarshal(line, out)
}

// scripted is an OpenAI-compatible server answering at once with a letter (which one
// follows from the prompt, so about a quarter are right) and a short sentence, as a
// chat model might.
func scripted() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"list","data":[{"id":"scripted","object":"model"}]}`)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		h := sha256.New()
		for _, m := range req.Messages {
			h.Write([]byte(m.Content))
		}
		letter := "ABCD"[h.Sum(nil)[0]%4]
		answer, _ := json.Marshal(string(letter))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c","object":"chat.completion","model":"scripted","choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],"usage":{"prompt_tokens":600,"completion_tokens":1,"total_tokens":601}}`, answer)
	})
	return mux
}

func stats(ms []float64) (median, worst float64) {
	s := slices.Clone(ms)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

func markdown(run *evalflow.Run, took time.Duration, samplesSize int64, cold, warm []float64, filters map[string][]float64, repeats int) string {
	var b strings.Builder
	b.WriteString("# The results page: benchmarks\n\n")
	b.WriteString("Reproduce with `make bench-ui`, which runs `bin/evalflow-bench-ui -data ../shared/datasets -out docs/benchmarks-ui.md`.\n\n")
	fmt.Fprintf(&b, "Measured %s on %s/%s, %d cores, in Debian's headless chromium driven by playwright-core "+
		"(shared/ui/browser/bench.mjs), against local mode on loopback. The run: every MMLU test question of ../shared "+
		"(%d samples, 5-shot prompts), answered by a scripted model server (a letter each), evaluated in %.0f s; its "+
		"samples.jsonl is %.1f MB.\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), run.Summary.Samples,
		took.Seconds(), float64(samplesSize)/1e6)
	b.WriteString("**Opening the run's page**: from navigation to the samples view showing its first page and its count " +
		"(a `performance.mark` the page sets), after the scores and the run's timeline, in one browser. Cold: the " +
		"start function restarted before each, so it reads the artifact and parses every sample; warm: parsed already.\n\n")
	b.WriteString("| | median | worst | each, in order | target | met |\n|---|---|---|---|---|---|\n")
	row := func(name string, ms []float64, target float64) {
		med, worst := stats(ms)
		met := "yes"
		if worst > target {
			met = "no"
		}
		each := make([]string, len(ms))
		for i, v := range ms {
			each[i] = fmt.Sprintf("%.0f", v)
		}
		fmt.Fprintf(&b, "| %s | %.0f ms | %.0f ms | %s | ≤ %.0f ms | %s |\n", name, med, worst, strings.Join(each, ", "), target, met)
	}
	row(fmt.Sprintf("open, cold (%d)", len(cold)), cold, 2000)
	row(fmt.Sprintf("open, warm (%d)", len(warm)), warm, 2000)
	b.WriteString("\n**A filter**: from the change (a select, or the last keystroke in the search box, whose 50 ms " +
		"debounce is counted) to the new page of samples painted; the server filters all samples for each. Each " +
		"filter set and cleared " + fmt.Sprint(repeats) + " times.\n\n")
	b.WriteString("| filter | median | worst | target | met |\n|---|---|---|---|---|\n")
	names := make([]string, 0, len(filters))
	for n := range filters {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		med, worst := stats(filters[n])
		met := "yes"
		if worst > 200 {
			met = "no"
		}
		fmt.Fprintf(&b, "| %s | %.0f ms | %.0f ms | ≤ 200 ms | %s |\n", n, med, worst, met)
	}
	return b.String()
}
