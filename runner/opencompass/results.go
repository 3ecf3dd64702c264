package opencompass

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/results"
	"github.com/evalflow/evalflow/runner/task"
	evalflow "github.com/evalflow/evalflow/shared"
)

// ErrNoResults is an OpenCompass run that scored no dataset.
var ErrNoResults = errors.New("OpenCompass wrote no results")

// percentMetrics are the metrics OpenCompass reports in percent; evalflow reports
// them as fractions, as lm-eval and evalflow's own engine do.
var percentMetrics = map[string]bool{"accuracy": true, "score": true, "acc": true}

// Newest is the newest run folder in OpenCompass's work directory (its names are
// timestamps, YYYYMMDD_HHMMSS, so the newest sorts last).
func Newest(workDir string) (string, error) {
	entries, err := os.ReadDir(workDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("opencompass: %w", err)
	}
	var newest string
	for _, e := range entries {
		if e.IsDir() && e.Name() > newest {
			newest = e.Name()
		}
	}
	if newest == "" {
		return "", fmt.Errorf("opencompass: %w in %s", ErrNoResults, workDir)
	}
	return filepath.Join(workDir, newest), nil
}

// Count is how many datasets the newest run has predicted and scored so far.
func Count(workDir string) (predicted, scored int) {
	run, err := Newest(workDir)
	if err != nil {
		return 0, 0
	}
	return len(datasetFiles(filepath.Join(run, "predictions", ModelAbbr))), len(datasetFiles(filepath.Join(run, "results", ModelAbbr)))
}

// datasetFiles maps each dataset abbreviation in dir to its files: abbr.json, or the
// parts abbr_0.json, abbr_1.json... of a prediction written in pieces.
func datasetFiles(dir string) map[string][]string {
	entries, _ := os.ReadDir(dir)
	files := map[string][]string{}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		base := name
		if i := strings.LastIndexByte(name, '_'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil && names[name[:i]+"_0.json"] && !names[name[:i]+".json"] {
				base = name[:i] // a part
			}
		}
		files[base] = append(files[base], filepath.Join(dir, e.Name()))
	}
	for name := range files {
		slices.SortFunc(files[name], func(a, b string) int { return partIndex(a) - partIndex(b) })
	}
	return files
}

func partIndex(path string) int {
	name := strings.TrimSuffix(filepath.Base(path), ".json")
	i := strings.LastIndexByte(name, '_')
	n, err := strconv.Atoi(name[i+1:])
	if i < 0 || err != nil {
		return -1
	}
	return n
}

// Read reads the newest run in OpenCompass's work directory: each dataset's metrics
// (results/<model>/<dataset>.json) and its predictions with their per-sample details.
func Read(workDir string, spec evalflow.JobSpec, c Config) (*evalflow.Results, []results.Sample, error) {
	run, err := Newest(workDir)
	if err != nil {
		return nil, nil, err
	}
	resultFiles := datasetFiles(filepath.Join(run, "results", ModelAbbr))
	if len(resultFiles) == 0 {
		return nil, nil, fmt.Errorf("opencompass: %w in %s", ErrNoResults, run)
	}
	predictions := datasetFiles(filepath.Join(run, "predictions", ModelAbbr))
	res := &evalflow.Results{
		Results: map[string]map[string]any{}, NSamples: map[string]evalflow.NSamples{},
		Config: map[string]any{"engine": Engine, "model": "OpenAISDK", "model_name": spec.Model.Name,
			"datasets": c.Datasets, "work_dir": filepath.Base(run)},
		Summary: evalflow.Summary{Scores: map[string]float64{}, Metrics: map[string]string{}},
	}
	var samples []results.Sample
	for _, name := range slices.Sorted(maps.Keys(resultFiles)) {
		metrics, details, err := readResult(resultFiles[name][0])
		if err != nil {
			return nil, nil, err
		}
		primary := primaryMetric(metrics)
		row := map[string]any{"alias": name}
		for m, v := range metrics {
			row[m+",none"] = v
		}
		res.Results[name] = row
		if primary != "" {
			res.Summary.Scores[name] = metrics[primary]
			res.Summary.Metrics[name] = primary
			if res.Summary.Metric == "" {
				res.Summary.Metric = primary
			}
		}
		preds, err := readPredictions(predictions[name])
		if err != nil {
			return nil, nil, fmt.Errorf("opencompass: predictions of %s: %w", name, err)
		}
		for i, p := range preds {
			s := results.Sample{Sample: evalflow.Sample{Task: name, DocID: i, Prompt: promptText(p.OriginPrompt), Response: adapter.Text(p.Prediction),
				Target: adapter.Text(p.Gold), Metric: primary}}
			if d, ok := detailAt(details, i); ok {
				s.Extracted = adapter.Text(cmpRaw(d["pred"], d["predictions"]))
				s.Correct = isTrue(cmpRaw(d["correct"], d["is_correct"]))
				s.Filters = []task.Filtered{{Filter: "none", Extracted: s.Extracted, Correct: s.Correct, Metric: primary}}
			}
			samples = append(samples, s)
		}
		res.NSamples[name] = evalflow.NSamples{Original: len(preds), Effective: len(preds)}
		res.Summary.Samples += len(preds)
	}
	return res, samples, nil
}

// readResult reads a dataset's metrics (percentages as fractions) and its details.
func readResult(path string) (map[string]float64, json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("opencompass: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, nil, fmt.Errorf("opencompass: %s: %w", path, err)
	}
	if e, failed := raw["error"]; failed {
		return nil, nil, fmt.Errorf("opencompass: dataset %s failed: %s", strings.TrimSuffix(filepath.Base(path), ".json"), adapter.Text(e))
	}
	metrics := map[string]float64{}
	for k, v := range raw {
		var f float64
		if json.Unmarshal(v, &f) != nil || math.IsNaN(f) {
			continue // details, type, and other non-metrics
		}
		if percentMetrics[k] {
			f /= 100
		}
		metrics[k] = f
	}
	return metrics, raw["details"], nil
}

// primaryMetric is accuracy when there is one, else score, else the first in order.
func primaryMetric(metrics map[string]float64) string {
	for _, m := range []string{"accuracy", "score"} {
		if _, ok := metrics[m]; ok {
			return m
		}
	}
	if len(metrics) == 0 {
		return ""
	}
	return slices.Sorted(maps.Keys(metrics))[0]
}

// prediction is one entry of a predictions file, {"0": {...}, "1": {...}}.
type prediction struct {
	OriginPrompt json.RawMessage `json:"origin_prompt"`
	Prediction   json.RawMessage `json:"prediction"`
	Gold         json.RawMessage `json:"gold"`
}

// readPredictions reads a dataset's predictions in order, across its parts.
func readPredictions(paths []string) ([]prediction, error) {
	var all []prediction
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var part map[string]prediction
		if err := json.Unmarshal(b, &part); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for i := range len(part) {
			p, ok := part[strconv.Itoa(i)]
			if !ok {
				return nil, fmt.Errorf("%s: no prediction %d of %d", path, i, len(part))
			}
			all = append(all, p)
		}
	}
	return all, nil
}

// detailAt is sample i's entry in a result's details: a list, or an object keyed by
// the sample's index, as OpenCompass's evaluators write them.
func detailAt(details json.RawMessage, i int) (map[string]json.RawMessage, bool) {
	var list []map[string]json.RawMessage
	if json.Unmarshal(details, &list) == nil && i < len(list) {
		return list[i], true
	}
	var byIndex map[string]map[string]json.RawMessage
	if json.Unmarshal(details, &byIndex) == nil {
		d, ok := byIndex[strconv.Itoa(i)]
		return d, ok
	}
	return nil, false
}

func cmpRaw(a, b json.RawMessage) json.RawMessage {
	if len(a) > 0 {
		return a
	}
	return b
}

func isTrue(raw json.RawMessage) bool {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b
	}
	var list []bool // a sample scored several times (pass@k): correct when one is
	if json.Unmarshal(raw, &list) == nil {
		return slices.Contains(list, true)
	}
	return false
}

// promptText is a prompt as text: OpenCompass writes an API model's prompt as a list
// of messages; a single message is its text.
func promptText(raw json.RawMessage) string {
	var messages []struct {
		Role   string `json:"role"`
		Prompt string `json:"prompt"`
	}
	if json.Unmarshal(raw, &messages) == nil && len(messages) == 1 && messages[0].Prompt != "" {
		return messages[0].Prompt
	}
	return adapter.Text(raw)
}
