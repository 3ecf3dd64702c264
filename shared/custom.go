package evalflow

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// CustomSample is one sample of a user's own dataset: a line of its JSONL file.
//
//	{"prompt": "2+2=", "target": "4"}                                   generated, exact_match
//	{"prompt": "Capital of France?", "target": "Paris", "metric": "includes"}
//	{"prompt": "The sky is", "choices": ["green", "blue"], "target": "blue"}   multiple choice
//
// A generated answer is scored by metric: exact_match (case, punctuation and
// surrounding space ignored; the default) or includes (the target appears in the
// answer, case ignored). A multiple-choice sample (choices given) is scored by the
// dataset's method: generate (the answer must equal the target choice, as exact_match),
// or logprobs / loglikelihood over " "+choice (acc).
type CustomSample struct {
	ID        string   `json:"id,omitempty"`
	Prompt    string   `json:"prompt"`
	Target    string   `json:"target"`
	Choices   []string `json:"choices,omitempty"`
	Metric    string   `json:"metric,omitempty"`
	MaxTokens int      `json:"max_tokens,omitempty"`
}

// CustomMetrics are the metrics a generated custom sample can use.
var CustomMetrics = []string{"exact_match", "includes"}

// MaxCustomSamples bounds an inline custom dataset (a larger one goes in a file).
const MaxCustomSamples = 10000

// Validate checks the sample, naming the field at fault under field.
func (s *CustomSample) Validate(field string) error {
	switch {
	case strings.TrimSpace(s.Prompt) == "":
		return Invalidf(field+".prompt", "is required")
	case s.Target == "":
		return Invalidf(field+".target", "is required")
	case s.Metric != "" && !slices.Contains(CustomMetrics, s.Metric):
		return Invalidf(field+".metric", "unknown metric %q (known: %s)", clip(s.Metric), strings.Join(CustomMetrics, ", "))
	case s.MaxTokens < 0:
		return Invalidf(field+".max_tokens", "must not be negative")
	case len(s.Choices) == 1:
		return Invalidf(field+".choices", "needs at least two choices")
	case len(s.Choices) > 1 && !slices.Contains(s.Choices, s.Target):
		return Invalidf(field+".target", "must be one of the choices")
	}
	return nil
}

// MaxTaskYAML bounds an inline task file (a larger one goes in the data directory).
const MaxTaskYAML = 64 << 10

// validateCustom checks a custom dataset's own fields (and that no other dataset has
// them): samples inline or in a file, or a task file in lm-eval's schema, inline or
// in a file, exactly one.
func (d *DatasetSpec) validateCustom(field string) error {
	if d.Name != "custom" {
		for _, f := range []struct {
			name string
			set  bool
		}{{"samples", len(d.Samples) > 0}, {"path", d.Path != ""}, {"task", d.Task != ""},
			{"task_yaml", d.TaskYAML != ""}, {"task_file", d.TaskFile != ""}} {
			if f.set {
				return Invalidf(field+"."+f.name, "only a custom dataset has %s", f.name)
			}
		}
		return nil
	}
	given := 0
	for _, set := range []bool{len(d.Samples) > 0, d.Path != "", d.TaskYAML != "", d.TaskFile != ""} {
		if set {
			given++
		}
	}
	taskFile := d.TaskYAML != "" || d.TaskFile != ""
	switch {
	case given != 1:
		return Invalidf(field+".samples", "a custom dataset needs one of samples, path, task_yaml or task_file")
	case len(d.Samples) > MaxCustomSamples:
		return Invalidf(field+".samples", "more than %d inline samples; use a path", MaxCustomSamples)
	case d.Path != "" && !underCustom(d.Path, ".jsonl"):
		return Invalidf(field+".path", "must be a relative .jsonl path under the data directory's custom/, without ..")
	case d.TaskFile != "" && !underCustom(d.TaskFile, ".yaml"):
		return Invalidf(field+".task_file", "must be a relative .yaml path under the data directory's custom/, without ..")
	case len(d.TaskYAML) > MaxTaskYAML:
		return Invalidf(field+".task_yaml", "larger than %d bytes; put it in the data directory's custom/ and name it in task_file", MaxTaskYAML)
	case taskFile && d.Task != "":
		return Invalidf(field+".task", "a task file names its task")
	case taskFile && d.Method != "":
		return Invalidf(field+".method", "a task file says how it is asked (output_type)")
	case d.Task != "" && !taskNameRE.MatchString(d.Task):
		return Invalidf(field+".task", "must be lower-case letters, digits, _ or - (at most 64)")
	}
	for i := range d.Samples {
		if err := d.Samples[i].Validate(fmt.Sprintf("%s.samples[%d]", field, i)); err != nil {
			return err
		}
	}
	return nil
}

// underCustom is whether p is a relative path with extension ext, inside the data
// directory's custom/.
func underCustom(p, ext string) bool {
	return !path.IsAbs(p) && !strings.Contains(p, "..") && !strings.Contains(p, "\\") && strings.HasSuffix(p, ext)
}
