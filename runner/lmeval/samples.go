package lmeval

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/results"
	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/task/pyjson"
	evalflow "github.com/evalflow/evalflow/shared"
)

// lm_eval's samples files, read into evalflow's samples.

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
		b := pyjson.Standard(sc.Bytes())
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
