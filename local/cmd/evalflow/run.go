package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/schollz/progressbar/v3"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/local/stack"
	evalflow "github.com/evalflow/evalflow/shared"
)

// datasetsOf is what the run command evaluates: -datasets as given, else the built-in
// runner's MMLU subjects, generative (lm-eval's mmlu_generative: any chat endpoint can
// answer it); an external engine takes what to evaluate from its config.
func datasetsOf(engine, datasets, subjects string, limit int, fewshot *int) ([]evalflow.DatasetSpec, error) {
	var specs []evalflow.DatasetSpec
	switch {
	case datasets != "":
		if err := json.Unmarshal([]byte(datasets), &specs); err != nil {
			return nil, fmt.Errorf("-datasets: %w", err)
		}
	case engine == evalflow.DefaultEngine:
		ds := evalflow.DatasetSpec{Name: "mmlu_generative", Limit: float64(limit), NumFewshot: fewshot}
		if subjects != "" {
			ds.Subjects = strings.Split(subjects, ",")
		}
		specs = []evalflow.DatasetSpec{ds}
	}
	return specs, nil
}

// optionsOf reads -options strictly (an unknown field is an error naming it; start
// checks the values).
func optionsOf(options string) (*evalflow.RunOptions, error) {
	if options == "" {
		return nil, nil
	}
	var o evalflow.RunOptions
	dec := json.NewDecoder(strings.NewReader(options))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return nil, fmt.Errorf("-options: %w", err)
	}
	return &o, nil
}

// requestFlags registers the flags that say what to evaluate, for run and submit.
func requestFlags(fs *flag.FlagSet, defaultModel string) func(baseURL string) (evalflow.Request, error) {
	model := fs.String("model", defaultModel, "model_name")
	subjects := fs.String("subjects", "abstract_algebra,astronomy,college_biology,marketing", "MMLU subjects (comma-separated; empty: all 57)")
	limit := fs.Int("limit", 10, "samples per subject (0: all)")
	fewshot := fs.Int("num-fewshot", 0, "few-shot examples per prompt")
	concurrency := fs.Int("concurrency", 0, "requests in flight (0: sized to the endpoint)")
	datasets := fs.String("datasets", "", `the request's datasets as JSON, e.g. '["gsm8k", {"name": "bbh_zeroshot", "subjects": ["snarks"], "limit": 20}]' (overrides -subjects, -limit, -num-fewshot)`)
	engine := fs.String("engine", evalflow.DefaultEngine, "the engine: evalflow, lm-evaluation-harness or opencompass (their adapters and programs must be installed)")
	engineConfig := fs.String("engine-config", "", `the engine's config as JSON, e.g. '{"tasks": ["gsm8k"], "limit": 20}' for lm-evaluation-harness`)
	options := fs.String("options", "", `the run's options as JSON, e.g. '{"generation_api": "completions", "requests_per_second": 5}' (docs/datasets.md)`)
	id := fs.String("id", "", "the eval_request_id (default: a new UUID; the same id again is the same run)")
	topic := fs.String("topic", "local", "source_topic: the topic the run's notifications carry")
	return func(baseURL string) (evalflow.Request, error) {
		req := evalflow.Request{EvalRequestID: cmp.Or(*id, uuid.NewString()), ModelName: *model, BaseURL: baseURL,
			APIKey: os.Getenv("EVALFLOW_API_KEY"), Source: "evalflow-cli", SourceTopic: *topic, Concurrency: *concurrency,
			Engine: *engine, EngineConfig: json.RawMessage(*engineConfig)}
		var err error
		if req.Datasets, err = datasetsOf(*engine, *datasets, *subjects, *limit, fewshot); err != nil {
			return req, err
		}
		req.Options, err = optionsOf(*options)
		return req, err
	}
}

// run brings the stack up, evaluates one model and prints its scores.
func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	config := stackFlags(fs)
	baseURL := fs.String("base-url", "", "the model's OpenAI-compatible endpoint (empty: serve --gguf with ollama)")
	gguf := fs.String("gguf", "../shared/models/stories260K.gguf", "GGUF model ollama serves when --base-url is empty")
	request := requestFlags(fs, "stories260k")
	var cluster clusterRun
	fs.StringVar(&cluster.kubeconfig, "kubeconfig", "", "run the evaluation's Job on this cluster (needs -registry, which the cluster reaches too)")
	fs.StringVar(&cluster.jobAddress, "job-address", "", "this machine's address as the cluster's pods reach it (default: the API server's, when it is on this machine)")
	fs.StringVar(&cluster.images, "images", os.Getenv("EVALFLOW_JOB_IMAGES"), "registry prefix the cluster pulls the engines' images from (default: -registry; make images pushes them)")
	_ = fs.Parse(args)
	cfg, err := config()
	if err != nil {
		return err
	}
	req, err := request(*baseURL)
	if err != nil {
		return err
	}
	modelHost := ""
	if cluster.kubeconfig != "" {
		if modelHost, err = cluster.prepare(ctx, &cfg, &req); err != nil {
			return err
		}
	}
	if req.BaseURL == "" {
		p, err := serveModel(ctx, *gguf, req.ModelName, filepath.Join(cfg.StateDir, "ollama"), modelHost)
		if err != nil {
			return err
		}
		defer p.Stop()
		req.BaseURL = "http://" + p.Addr
	}
	fmt.Println("bringing evalflow up (redis, broker, 5 functions) ...")
	s, err := stack.Up(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Down()

	api := newClient(s.API, cmp.Or(s.OperatorToken, os.Getenv("EVALFLOW_TOKEN")))
	id, err := api.submit(ctx, req)
	if err != nil {
		return err
	}
	fmt.Printf("run %s submitted to %s\n", id, s.API)
	r, err := follow(ctx, api, id)
	if err != nil {
		return err
	}
	printResults(os.Stdout, r)
	if r.Status != evalflow.StatusSucceeded {
		return fmt.Errorf("run %s %s: %s (logs in %s)", r.ID, r.Status, r.Message, filepath.Join(cfg.StateDir, "logs"))
	}
	return nil
}

// serveModel starts ollama (built by hack/install-ollama.sh) with a GGUF model, on a
// free port of host (loopback when empty).
func serveModel(ctx context.Context, gguf, name, dir, host string) (*localserver.Proc, error) {
	bin := localserver.OllamaBinary()
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("ollama not found at %s: run hack/install-ollama.sh (make deps)", bin)
	}
	abs, err := filepath.Abs(gguf)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("model file: %w", err)
	}
	fmt.Printf("serving %s with ollama as %q ...\n", filepath.Base(abs), name)
	p, err := localserver.Ollama(ctx, bin, dir, host, 8)
	if err != nil {
		return nil, err
	}
	if err := localserver.CreateModel(ctx, bin, p.Addr, name, abs, 0); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// follow polls the run and draws its progress until it ends.
func follow(ctx context.Context, api *client, id string) (*evalflow.Run, error) {
	bar := progressbar.NewOptions(1,
		progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetDescription("start"), progressbar.OptionClearOnFinish())
	defer bar.Exit()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		r, err := api.run(ctx, id)
		if err != nil {
			return nil, err
		}
		total := max(r.Progress.Total, 1)
		bar.ChangeMax(total)
		_ = bar.Set(min(r.Progress.Done, total))
		desc := fmt.Sprintf("%-9s %-9s", r.Step, r.Status)
		if r.Status == evalflow.StatusRunning && r.Progress.ETASeconds > 0 {
			desc += fmt.Sprintf(" ETA %4.0fs", r.Progress.ETASeconds)
		}
		bar.Describe(desc)
		if r.Status.Terminal() {
			_ = bar.Finish()
			return r, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

func printResults(w io.Writer, r *evalflow.Run) {
	fmt.Fprintf(w, "\nrun %s: %s", r.ID, r.Status)
	if r.Message != "" {
		fmt.Fprintf(w, " (%s)", r.Message)
	}
	fmt.Fprintln(w)
	if r.Summary != nil {
		tasks := make([]string, 0, len(r.Summary.Scores))
		for t := range r.Summary.Scores {
			tasks = append(tasks, t)
		}
		isGroup := func(name string) bool { // a shipped group, or one named without "_" (truthfulqa, stem)
			t, ok := evalflow.LookupTask(name)
			return ok && t.Group || !strings.Contains(name, "_")
		}
		sort.Slice(tasks, func(i, j int) bool { // tasks first, groups last
			gi, gj := isGroup(tasks[i]), isGroup(tasks[j])
			if gi != gj {
				return gj
			}
			return tasks[i] < tasks[j]
		})
		fmt.Fprintf(w, "\n%-36s %-12s %s\n", "task", "metric", "value")
		fmt.Fprintf(w, "%-36s %-12s %s\n", strings.Repeat("-", 36), strings.Repeat("-", 12), strings.Repeat("-", 8))
		for _, t := range tasks {
			metric := r.Summary.Metrics[t]
			if metric == "" {
				metric = r.Summary.Metric
			}
			fmt.Fprintf(w, "%-36s %-12s %.4f\n", t, metric, r.Summary.Scores[t])
		}
		fmt.Fprintf(w, "(%d samples)\n", r.Summary.Samples)
	}
	if r.Artifact != nil {
		fmt.Fprintf(w, "\nresults artifact: %s\n", r.Artifact.Reference)
	}
}
