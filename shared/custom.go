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

func (d *DatasetSpec) validateCustom(field string) error {
	if d.Name != "custom" {
		switch {
		case len(d.Samples) > 0:
			return Invalidf(field+".samples", "only a custom dataset has samples")
		case d.Path != "":
			return Invalidf(field+".path", "only a custom dataset has a path")
		case d.Task != "":
			return Invalidf(field+".task", "only a custom dataset has a task name")
		}
		return nil
	}
	switch {
	case (len(d.Samples) == 0) == (d.Path == ""):
		return Invalidf(field+".samples", "a custom dataset needs samples or a path, not both")
	case len(d.Samples) > MaxCustomSamples:
		return Invalidf(field+".samples", "more than %d inline samples; use a path", MaxCustomSamples)
	case d.Path != "" && (path.IsAbs(d.Path) || strings.Contains(d.Path, "..") || !strings.HasSuffix(d.Path, ".jsonl")):
		return Invalidf(field+".path", "must be a relative .jsonl path under the data directory's custom/, without ..")
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
