// Package opencompass adapts OpenCompass to evalflow's adapter contract: it writes a
// model config for the endpoint (OpenCompass's OpenAISDK model), turns a job spec into
// an opencompass command line, counts what OpenCompass has finished, and reads its
// work directory (predictions/ and results/ per model and dataset) into evalflow's
// results.json and samples.jsonl.
package opencompass

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/external"
	"github.com/evalflow/evalflow/runner/results"
	evalflow "github.com/evalflow/evalflow/shared"
)

// Engine is the registry name of OpenCompass.
const Engine = "opencompass"

// ModelAbbr is the name the endpoint has in OpenCompass's work directory.
const ModelAbbr = "evalflow-endpoint"

// Config is the engine_config of an OpenCompass run (its schema is the registry
// entry's config_schema, checked at start).
type Config struct {
	// Datasets are OpenCompass dataset config names, e.g. "gsm8k_gen", "mmlu_gen".
	Datasets       []string `json:"datasets"`
	MaxOutLen      int      `json:"max_out_len,omitempty"`
	BatchSize      int      `json:"batch_size,omitempty"`
	QueryPerSecond float64  `json:"query_per_second,omitempty"`
}

// ParseConfig reads an engine_config.
func ParseConfig(raw json.RawMessage) (Config, error) {
	var c Config
	if err := adapter.DecodeConfig(raw, &c); err != nil {
		return c, fmt.Errorf("opencompass: %w", err)
	}
	if len(c.Datasets) == 0 {
		return c, evalflow.Permanent(errors.New("opencompass: engine_config.datasets: at least one dataset is required"))
	}
	for _, d := range c.Datasets {
		if d == "" || strings.ContainsAny(d, "/\\ ") {
			return c, evalflow.Permanent(fmt.Errorf("opencompass: engine_config.datasets: %q is not a dataset config name", d))
		}
	}
	return c, nil
}

// Folders under the job's output directory.
const (
	// ConfigDir holds the model config OpenCompass is pointed at (--config-dir).
	ConfigDir = "opencompass-configs"
	// WorkDir is OpenCompass's work directory (-w); a restarted job reuses what it
	// holds (--reuse latest), so no finished prediction is asked again.
	WorkDir = "opencompass"
)

// ModelConfig is the Python config of the endpoint as an OpenCompass model. The key is
// not in it: "ENV" makes OpenCompass read OPENAI_API_KEY (see Env).
func ModelConfig(spec evalflow.JobSpec, c Config) []byte {
	concurrency := spec.Concurrency
	if concurrency == 0 {
		concurrency = evalflow.DefaultConcurrency
	}
	batch := c.BatchSize
	if batch == 0 {
		batch = concurrency // OpenCompass's API models ask a batch's prompts concurrently
	}
	maxOut := c.MaxOutLen
	if maxOut == 0 {
		maxOut = 1024
	}
	qps := c.QueryPerSecond
	if qps == 0 {
		qps = spec.Options.RequestsPerSecond
	}
	if qps == 0 {
		qps = 1000 // no cap: OpenCompass's default of 1 query a second is a cap
	}
	var b strings.Builder
	b.WriteString("# Written by evalflow's OpenCompass adapter for run " + pyString(spec.RunID) + ".\n")
	b.WriteString("from opencompass.models import OpenAISDK\n\n")
	b.WriteString("models = [\n    dict(\n")
	fields := []struct{ key, value string }{
		{"abbr", pyString(ModelAbbr)},
		{"type", "OpenAISDK"},
		{"path", pyString(spec.Model.Name)},
		{"key", pyString("ENV")},
		{"openai_api_base", pyString(evalflow.APIBase(spec.Model.URL))},
		{"query_per_second", strconv.FormatFloat(qps, 'f', -1, 64)},
		{"max_out_len", strconv.Itoa(maxOut)},
		{"max_seq_len", "32768"},
		{"batch_size", strconv.Itoa(batch)},
		{"temperature", "0"},
		{"retry", "5"},
	}
	for _, f := range fields {
		fmt.Fprintf(&b, "        %s=%s,\n", f.key, f.value)
	}
	b.WriteString("    ),\n]\n")
	return []byte(b.String())
}

// pyString is s as a Python string literal: a JSON string is one.
func pyString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// WriteModelConfig writes ModelConfig where Args points OpenCompass.
func WriteModelConfig(spec evalflow.JobSpec, c Config) error {
	dir := filepath.Join(spec.OutputDir, ConfigDir, "models")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("opencompass: model config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, modelConfigName+".py"), ModelConfig(spec, c), 0o644); err != nil {
		return fmt.Errorf("opencompass: model config: %w", err)
	}
	return nil
}

const modelConfigName = "evalflow_endpoint"

// Args is the opencompass command line (without the program) for spec.
func Args(spec evalflow.JobSpec, c Config) []string {
	args := []string{
		"--models", modelConfigName,
		"--datasets",
	}
	args = append(args, c.Datasets...)
	return append(args,
		"--config-dir", filepath.Join(spec.OutputDir, ConfigDir),
		"--work-dir", filepath.Join(spec.OutputDir, WorkDir),
		"--reuse", "latest",
		"--dump-eval-details",
	)
}

// permanentSigns are what opencompass prints when its job can never run.
var permanentSigns = []string{
	"Not matched patterns", // an unknown dataset config name
	"No module named",
}

// External is OpenCompass as an external engine: opencompass ($OPENCOMPASS, or on
// PATH) run on the job's model config and datasets, progress counted from its work
// directory, and its newest run read into evalflow's output.
func External() external.Engine {
	var c Config
	return external.Engine{
		Name: Engine, Program: "opencompass", ProgramEnv: "OPENCOMPASS",
		Prepare: func(spec evalflow.JobSpec) ([]string, error) {
			var err error
			if c, err = ParseConfig(spec.EngineConfig); err != nil {
				return nil, err
			}
			if err := WriteModelConfig(spec, c); err != nil {
				return nil, err
			}
			return Args(spec, c), nil
		},
		// Progress counts two steps a dataset, its inference then its evaluation, so
		// that it never counts backwards.
		Poll: func(spec evalflow.JobSpec) (string, int, int) {
			predicted, scored := Count(filepath.Join(spec.OutputDir, WorkDir))
			total := 2 * max(predicted, len(c.Datasets))
			if scored == 0 {
				return "inferring", predicted, total
			}
			return "evaluating", predicted + scored, total
		},
		Read: func(spec evalflow.JobSpec) (*evalflow.Results, []results.Sample, error) {
			return Read(filepath.Join(spec.OutputDir, WorkDir), spec, c)
		},
		PermanentSigns: permanentSigns,
	}
}
