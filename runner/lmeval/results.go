package lmeval

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/evalflow/evalflow/runner/results"
	"github.com/evalflow/evalflow/runner/task/pyjson"
	evalflow "github.com/evalflow/evalflow/shared"
)

// output is the part of lm_eval's results_<date>.json evalflow reads.
type output struct {
	Results       map[string]map[string]any    `json:"results"`
	Groups        map[string]map[string]any    `json:"groups"`
	GroupSubtasks map[string][]string          `json:"group_subtasks"`
	Configs       map[string]json.RawMessage   `json:"configs"`
	Versions      map[string]any               `json:"versions"`
	NShot         map[string]any               `json:"n-shot"`
	NSamples      map[string]evalflow.NSamples `json:"n-samples"`
	Config        map[string]any               `json:"config"`
}

// taskConfig is what evalflow reads of a task's config: its first metric and first
// filter make its primary score, as lm_eval's own table lists them first.
type taskConfig struct {
	OutputType string `json:"output_type"`
	MetricList []struct {
		Metric any `json:"metric"`
	} `json:"metric_list"`
	FilterList []struct {
		Name string `json:"name"`
	} `json:"filter_list"`
}

// ErrNoResults is an lm_eval run that left no results file.
var ErrNoResults = errors.New("lm_eval wrote no results file")

// Read reads the newest results file lm_eval wrote under dir (lm_eval writes
// <dir>/<model>/results_<date>.json and samples_<task>_<date>.jsonl beside it) into
// evalflow's results and samples: lm_eval's results, groups, n-samples, configs,
// versions and n-shot are kept as they are; the summary scores each task and group by
// its primary metric; each sample line merges a document's filters.
func Read(dir string, spec evalflow.JobSpec, c Config) (*evalflow.Results, []results.Sample, error) {
	path, err := newestResults(dir)
	if err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("lm-eval: results: %w", err)
	}
	var out output
	if err := json.Unmarshal(pyjson.Standard(b), &out); err != nil {
		return nil, nil, fmt.Errorf("lm-eval: results %s: %w", path, err)
	}
	if len(out.Results) == 0 {
		return nil, nil, fmt.Errorf("lm-eval: results %s: no task results", path)
	}
	configs := map[string]taskConfig{}
	for name, raw := range out.Configs {
		var tc taskConfig
		if err := json.Unmarshal(raw, &tc); err != nil {
			return nil, nil, fmt.Errorf("lm-eval: results %s: configs.%s: %w", path, name, err)
		}
		configs[name] = tc
	}
	res := summarize(out, configs, spec, c)

	date := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "results_"), ".json")
	groupOf := topGroups(out)
	var samples []results.Sample
	for _, name := range slices.Sorted(maps.Keys(configs)) {
		s, err := readSamples(filepath.Join(filepath.Dir(path), "samples_"+name+"_"+date+".jsonl"), name, configs[name], groupOf[name])
		if err != nil {
			return nil, nil, err
		}
		samples = append(samples, s...)
	}
	return res, samples, nil
}

// newestResults finds the newest results_<date>.json under dir; lm_eval's dates are
// ISO 8601, so the newest sorts last.
func newestResults(dir string) (string, error) {
	var newest string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if !d.IsDir() && strings.HasPrefix(name, "results_") && strings.HasSuffix(name, ".json") &&
			(newest == "" || name > filepath.Base(newest)) {
			newest = path
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) || (err == nil && newest == "") {
		return "", fmt.Errorf("lm-eval: %w under %s", ErrNoResults, dir)
	}
	if err != nil {
		return "", fmt.Errorf("lm-eval: results: %w", err)
	}
	return newest, nil
}

// summarize is evalflow's results: lm_eval's tables, and a summary of each task's and
// group's primary metric.
func summarize(out output, configs map[string]taskConfig, spec evalflow.JobSpec, c Config) *evalflow.Results {
	res := &evalflow.Results{
		Results: out.Results, Groups: out.Groups, NSamples: out.NSamples,
		Configs: out.Configs, Versions: out.Versions, NShot: out.NShot,
		Config:  map[string]any{},
		Summary: evalflow.Summary{Scores: map[string]float64{}, Metrics: map[string]string{}},
	}
	maps.Copy(res.Config, out.Config)
	res.Config["engine"] = Engine
	res.Config["tasks"] = c.Tasks
	res.Config["model_name"] = spec.Model.Name
	if res.NSamples == nil {
		res.NSamples = map[string]evalflow.NSamples{}
	}
	for _, n := range res.NSamples {
		res.Summary.Samples += n.Effective
	}
	for name, row := range out.Results {
		key := primaryKey(name, row, out, configs)
		if v, ok := number(row[key]); ok && key != "" {
			res.Summary.Scores[name] = v
			res.Summary.Metrics[name], _, _ = strings.Cut(key, ",")
		}
	}
	first := append(slices.Clone(c.Tasks), slices.Sorted(maps.Keys(res.Summary.Metrics))...)
	for _, name := range first {
		if m, ok := res.Summary.Metrics[name]; ok {
			res.Summary.Metric = m
			break
		}
	}
	return res
}

// primaryKey is the "metric,filter" key of a task's primary score: its config's first
// metric under its first filter; a group's is that of its first task. Without a
// config it is the row's first metric key in sorted order.
func primaryKey(name string, row map[string]any, out output, configs map[string]taskConfig) string {
	for seen := 0; seen < 16; seen++ { // a group's first task, down to a task (bounded: no cycles)
		subtasks := out.GroupSubtasks[name]
		if _, isTask := configs[name]; isTask || len(subtasks) == 0 {
			break
		}
		name = subtasks[0]
	}
	if tc, ok := configs[name]; ok && len(tc.MetricList) > 0 {
		filter := "none"
		if len(tc.FilterList) > 0 {
			filter = tc.FilterList[0].Name
		}
		if key := fmt.Sprint(tc.MetricList[0].Metric) + "," + filter; row[key] != nil {
			return key
		}
	}
	for _, key := range slices.Sorted(maps.Keys(row)) {
		if _, ok := number(row[key]); ok && strings.Contains(key, ",") && !strings.Contains(key, "_stderr") {
			return key
		}
	}
	return ""
}

// topGroups maps each task to the top-level group it is part of (mmlu_anatomy → mmlu).
func topGroups(out output) map[string]string {
	groupOf := map[string]string{}
	var walk func(top, name string, depth int)
	walk = func(top, name string, depth int) {
		if depth > 16 {
			return
		}
		for _, sub := range out.GroupSubtasks[name] {
			if _, set := groupOf[sub]; !set {
				groupOf[sub] = top
			}
			walk(top, sub, depth+1)
		}
	}
	for _, top := range slices.Sorted(maps.Keys(out.Groups)) {
		walk(top, top, 0)
	}
	return groupOf
}
