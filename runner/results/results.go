// Package results is what every engine produces: scored samples (samples.jsonl), their
// lm-evaluation-harness style aggregate (results.json), and the writing of both. The
// built-in engine, and the lm-evaluation-harness and OpenCompass adapters, all end here.
package results

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/evalflow/evalflow/runner/task"
	evalflow "github.com/evalflow/evalflow/shared"
)

// Sample is one scored sample, a line of samples.jsonl: what callers read of it
// (evalflow.Sample: Extracted and Correct are the primary filter's), and every
// filter's verdict and the choices' log-probabilities.
type Sample struct {
	evalflow.Sample
	Filters []task.Filtered `json:"filters"`
	// Logprobs are the choices' log-probabilities (null: not among the top tokens).
	Logprobs []*float64 `json:"logprobs,omitempty"`
}

// Key names the sample within a run: its task and document.
func (s Sample) Key() string { return Key(s.Task, s.DocID) }

// Key names document doc of task.
func Key(task string, doc int) string { return fmt.Sprintf("%s/%d", task, doc) }

// Write writes samples.jsonl, one sample a line in the order given (so two runs give
// the same file), then results.json, each replaced atomically: results.json exists
// only beside a complete samples.jsonl. Each of secrets (the run's key) is redacted,
// in any form (evalflow.Redactor), where an engine's output echoed it.
func Write(dir string, res *evalflow.Results, samples []Sample, secrets ...string) error {
	redact := evalflow.NewRedactor(secrets...)
	var b bytes.Buffer
	for _, s := range samples {
		line, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("results: sample %s: %w", s.Key(), err)
		}
		b.Write(redact.Bytes(line))
		b.WriteByte('\n')
	}
	if err := writeFile(filepath.Join(dir, evalflow.SamplesFile), b.Bytes()); err != nil {
		return err
	}
	body, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return writeFile(filepath.Join(dir, evalflow.ResultsFile), redact.Bytes(body))
}

// writeFile replaces path atomically.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return nil
}
