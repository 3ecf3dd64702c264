// Package custom runs a user's own dataset: samples given inline in the request or as
// a JSONL file under the data directory's custom/ (schema: evalflow.CustomSample,
// documented in docs/datasets.md).
package custom

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/evalflow/evalflow/runner/task"
	"github.com/evalflow/evalflow/runner/task/source"
	evalflow "github.com/evalflow/evalflow/shared"
)

// Load returns the dataset's samples: inline, or read (and validated line by line)
// from dataDir/custom/<path>.
func Load(dataDir string, d evalflow.DatasetSpec) ([]evalflow.CustomSample, error) {
	if d.Path == "" {
		return d.Samples, nil
	}
	out, err := source.JSONLines(filepath.Join(dataDir, "custom", filepath.Clean(d.Path)), true,
		func(line int, s evalflow.CustomSample) error { return s.Validate(fmt.Sprintf("line %d", line)) })
	if err != nil {
		return nil, fmt.Errorf("custom: %w", err)
	}
	return out, nil
}

// Docs renders a custom dataset's samples that pick chooses (nil: all), scored by
// d.Method.
func Docs(dataDir string, d evalflow.DatasetSpec, pick task.Picker) ([]task.Doc, error) {
	samples, err := Load(dataDir, d)
	if err != nil {
		return nil, err
	}
	name := d.Task
	if name == "" {
		name = "custom"
	}
	idx := pick.Indices(len(samples))
	docs := make([]task.Doc, len(idx))
	for n, i := range idx {
		s := samples[i]
		doc := task.Doc{Task: name, Index: i, Prompt: s.Prompt, Target: s.Target, MaxTokens: s.MaxTokens}
		if doc.MaxTokens == 0 {
			doc.MaxTokens = 64
		}
		target := s.Target
		switch {
		case len(s.Choices) > 0 && (d.Method == task.Logprobs || d.Method == task.Loglikelihood):
			choices := s.Choices
			doc.Method, doc.Metric = d.Method, "acc"
			for _, c := range choices {
				doc.Choices = append(doc.Choices, " "+c)
			}
			doc.ScoreChoices = func(lp []float64) []task.Filtered {
				i := task.Argmax(lp)
				if i < 0 || math.IsInf(lp[i], -1) {
					return []task.Filtered{{Filter: "none", Extracted: "[invalid]"}}
				}
				return []task.Filtered{{Filter: "none", Extracted: choices[i], Correct: choices[i] == target}}
			}
		case s.Metric == "includes":
			doc.Method, doc.Metric = task.Generate, "includes"
			doc.Score = func(resp string) []task.Filtered {
				ok := strings.Contains(strings.ToLower(resp), strings.ToLower(target))
				return []task.Filtered{{Filter: "none", Extracted: strings.TrimSpace(resp), Correct: ok}}
			}
		default:
			doc.Method, doc.Metric, doc.Stop = task.Generate, "exact_match", []string{"\n\n"}
			doc.Score = func(resp string) []task.Filtered {
				ext := task.FirstLine(resp)
				return []task.Filtered{{Filter: "none", Extracted: ext, Correct: task.ExactMatch(ext, target)}}
			}
		}
		docs[n] = doc
	}
	return docs, nil
}

// Config is a custom dataset's task config: its file (or "inline"), zero-shot.
func Config(name string, d evalflow.DatasetSpec) task.Config {
	path := d.Path
	if path == "" {
		path = "inline"
	}
	return task.Config{Task: name, DatasetPath: path, TestSplit: "test", Metadata: task.Metadata{Version: 1.0}}
}
