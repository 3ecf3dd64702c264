package lmeval

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/results"
	"github.com/evalflow/evalflow/runner/task"
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
	if err := json.Unmarshal(pythonJSON(b), &out); err != nil {
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

// sampleLine is one line of lm_eval's samples_<task>_<date>.jsonl: one document
// under one filter, with that filter's metric values as further keys.
type sampleLine struct {
	DocID         int                                   `json:"doc_id"`
	Target        string                                `json:"target"`
	Arguments     map[string]map[string]json.RawMessage `json:"arguments"`
	Resps         []json.RawMessage                     `json:"resps"`
	FilteredResps []json.RawMessage                     `json:"filtered_resps"`
	Filter        string                                `json:"filter"`
	Metrics       []string                              `json:"metrics"`
}

// readSamples reads a task's samples file into evalflow samples, one per document.
func readSamples(path, name string, tc taskConfig, group string) ([]results.Sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("lm-eval: samples of task %s: %w", name, err)
	}
	defer f.Close()
	byDoc := map[int]*results.Sample{}
	primary := fmt.Sprint(firstMetric(tc))
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1024*1024), 64*1024*1024) // a line holds the whole document
	for line := 1; sc.Scan(); line++ {
		var l sampleLine
		raw := map[string]json.RawMessage{}
		b := pythonJSON(sc.Bytes())
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, fmt.Errorf("lm-eval: %s line %d: %w", path, line, err)
		}
		if err := json.Unmarshal(b, &raw); err != nil {
			return nil, fmt.Errorf("lm-eval: %s line %d: %w", path, line, err)
		}
		s := byDoc[l.DocID]
		if s == nil {
			s = &results.Sample{Sample: evalflow.Sample{Task: name, Group: group, DocID: l.DocID, Prompt: l.argument(0, 0),
				Target: l.Target, Metric: cmp.Or(primary, first(l.Metrics))}}
			byDoc[l.DocID] = s
		}
		addLine(s, l, raw, tc)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("lm-eval: %s: %w", path, err)
	}
	samples := make([]results.Sample, 0, len(byDoc))
	for _, id := range slices.Sorted(maps.Keys(byDoc)) {
		samples = append(samples, primaryFirst(*byDoc[id], tc))
	}
	return samples, nil
}

// addLine adds one line of a document (one filter's) to its sample: the answer,
// and a result for each per-sample metric.
func addLine(s *results.Sample, l sampleLine, raw map[string]json.RawMessage, tc taskConfig) {
	extracted, response, logprobs := l.answer(tc.OutputType)
	if i, err := strconv.Atoi(l.Target); err == nil && tc.OutputType == "multiple_choice" && i >= 0 && i < len(l.Arguments) {
		s.Target = strings.TrimSpace(l.argument(i, 1)) // the gold choice's index, as its text
	}
	if s.Response == "" {
		s.Response, s.Logprobs = response, logprobs
	}
	for _, metric := range l.Metrics {
		v, ok := numberJSON(raw[metric])
		if !ok {
			continue // a corpus-level metric's per-sample pair (bleu's references and prediction)
		}
		s.Filters = append(s.Filters, task.Filtered{Filter: l.Filter, Extracted: extracted, Correct: v == 1, Value: &v, Metric: metric})
	}
}

// primaryFirst orders s's results: the primary metric's first, then by the config's
// filter order; the first is the sample's answer.
func primaryFirst(s results.Sample, tc taskConfig) results.Sample {
	order := filterOrder(tc)
	sort.SliceStable(s.Filters, func(i, j int) bool {
		fi, fj := s.Filters[i], s.Filters[j]
		if (fi.Metric == s.Metric) != (fj.Metric == s.Metric) {
			return fi.Metric == s.Metric
		}
		return order(fi.Filter) < order(fj.Filter)
	})
	if len(s.Filters) > 0 {
		s.Extracted, s.Correct = s.Filters[0].Extracted, s.Filters[0].Correct
	}
	return s
}

func firstMetric(tc taskConfig) any {
	if len(tc.MetricList) == 0 {
		return ""
	}
	return tc.MetricList[0].Metric
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// filterOrder ranks filters as the task's config lists them ("none" when it lists none).
func filterOrder(tc taskConfig) func(string) int {
	return func(name string) int {
		for i, f := range tc.FilterList {
			if f.Name == name {
				return i
			}
		}
		return len(tc.FilterList)
	}
}

// argument is argument j of request i (gen_args_i.arg_j) as text.
func (l *sampleLine) argument(i, j int) string {
	raw := l.Arguments["gen_args_"+strconv.Itoa(i)]["arg_"+strconv.Itoa(j)]
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw) // generation arguments: a JSON object
}

// answer reads what the model answered: for a multiple-choice task, the choice with
// the highest log-likelihood (as lm_eval's acc takes it) and every choice's
// log-likelihood; for generation, the generated text and the filter's extraction.
func (l *sampleLine) answer(outputType string) (extracted, response string, logprobs []*float64) {
	if outputType == "multiple_choice" {
		best := -1
		for i, raw := range l.FilteredResps {
			var pair []json.RawMessage // (log-likelihood, is_greedy), as strings
			var lp *float64
			if json.Unmarshal(raw, &pair) == nil && len(pair) > 0 {
				if v, ok := numberJSON(pair[0]); ok {
					lp = &v
				}
			}
			logprobs = append(logprobs, lp)
			if lp != nil && (best < 0 || logprobs[best] == nil || *lp > *logprobs[best]) {
				best = i
			}
		}
		if best >= 0 {
			choice := l.argument(best, 1)
			return strings.TrimSpace(choice), choice, logprobs
		}
		return "", "", logprobs
	}
	if len(l.FilteredResps) > 0 {
		extracted = adapter.Text(l.FilteredResps[0])
	}
	if len(l.Resps) > 0 {
		var first []json.RawMessage
		if json.Unmarshal(l.Resps[0], &first) == nil && len(first) > 0 {
			response = adapter.Text(first[0])
		}
	}
	return extracted, response, nil
}

// number reads a metric value: a JSON number, or a number lm_eval wrote as text.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, !math.IsNaN(x)
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil && !math.IsNaN(f)
	}
	return 0, false
}

func numberJSON(raw json.RawMessage) (float64, bool) {
	var v any
	if len(raw) == 0 || json.Unmarshal(raw, &v) != nil {
		return 0, false
	}
	return number(v)
}

// pythonJSON turns the bare NaN, Infinity and -Infinity that Python's json module
// writes (lm_eval's stderr of a one-sample task is NaN) into null, which Go's decoder
// accepts; strings are left as they are.
func pythonJSON(b []byte) []byte {
	if !bytes.Contains(b, []byte("NaN")) && !bytes.Contains(b, []byte("Infinity")) {
		return b
	}
	out := make([]byte, 0, len(b))
	inString, escaped := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			out = append(out, c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
		}
		replaced := false
		for _, tok := range []string{"-Infinity", "Infinity", "NaN"} {
			if bytes.HasPrefix(b[i:], []byte(tok)) {
				out = append(out, "null"...)
				i += len(tok) - 1
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, c)
		}
	}
	return out
}
