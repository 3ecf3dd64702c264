package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/evalflow/evalflow/devkit/localserver"
)

// The benchmark's report: docs/benchmarks.md.

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

func render(results map[string]map[int]measurement, clients []client, cs []int, n, repeats, maxTokens int, command, dataset string) string {
	var b strings.Builder
	prompts := "zero-shot MMLU prompts"
	if dataset != "mmlu" {
		fmt.Fprintf(&b, "# Benchmarks: the runner on lm-eval's %s\n\n", dataset)
		fmt.Fprintf(&b, "Reproduce with `make bench`, which runs `%s`. The runner on MMLU, and beside promptfoo: [benchmarks.md](benchmarks.md).\n\n", command)
		prompts = "prompts of lm-eval's " + dataset + " (the first of each task, with its few-shot context, as chat turns)"
		return b.String() + measured(results, clients, cs, n, repeats, maxTokens, prompts)
	}
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Reproduce with `make bench`, which runs `%s`.\n\n", command)
	b.WriteString("The runner on lm-eval's BBH (bbh_cot_fewshot, few-shot chain-of-thought as chat turns): [benchmarks-bbh.md](benchmarks-bbh.md), " +
		"also `make bench`.\n\n")
	b.WriteString("The pipeline on Knative (image sizes, cold starts, idle memory, POST → Job, orchestration overhead): " +
		"[benchmarks-knative.md](benchmarks-knative.md), `sudo make bench-knative`.\n\n")
	b.WriteString("A burst of 1,000 runs against local mode (all accepted and ended, time to drain, peak memory, jobs at once against " +
		"the slots, Redis round trips per step): [benchmarks-load.md](benchmarks-load.md), `make bench-load`.\n\n")
	b.WriteString("The results page in headless chromium on a run of every MMLU question (opening the samples view, cold and warm; " +
		"each filter): [benchmarks-ui.md](benchmarks-ui.md), `make bench-ui`.\n\n")
	b.WriteString("HumanEval's 164 canonical solutions run in the local sandbox, and rendering every BBH prompt: " +
		"[tasks.md](tasks.md), `go test -bench` as it says.\n\n")
	return b.String() + measured(results, clients, cs, n, repeats, maxTokens, prompts)
}

// measured is the report's table and notes.
func measured(results map[string]map[int]measurement, clients []client, cs []int, n, repeats, maxTokens int, prompts string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %s/%s, %d cores; ollama %s serving stories260K (OLLAMA_NUM_PARALLEL=8) on loopback; "+
		"%d distinct %s, %d generated tokens each; each client is a subprocess, its CPU (user + system) and "+
		"peak RSS from rusage; median of %d runs.\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), localserver.OllamaVersion, n, prompts, maxTokens, repeats)
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
