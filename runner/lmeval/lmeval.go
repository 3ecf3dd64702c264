// Package lmeval adapts EleutherAI's lm-evaluation-harness to evalflow's adapter
// contract: it turns a job spec into an lm_eval command line against the endpoint,
// follows lm_eval's progress bars, and reads lm_eval's output (results_<date>.json and
// samples_<task>_<date>.jsonl) into evalflow's results.json and samples.jsonl.
package lmeval

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/evalflow/evalflow/runner/adapter"
	"github.com/evalflow/evalflow/runner/external"
	"github.com/evalflow/evalflow/runner/results"
	evalflow "github.com/evalflow/evalflow/shared"
)

// Engine is the registry name of lm-evaluation-harness.
const Engine = "lm-evaluation-harness"

// Models lm_eval can drive an OpenAI-compatible endpoint with.
const (
	ModelCompletions     = "local-completions"
	ModelChatCompletions = "local-chat-completions"
)

// Config is the engine_config of an lm-evaluation-harness run (its schema is the
// registry entry's config_schema, checked at start).
type Config struct {
	// Tasks are lm_eval task or group names, e.g. "mmlu", "gsm8k", "truthfulqa_mc2".
	Tasks []string `json:"tasks"`
	// Model is local-completions (default; needed for loglikelihood tasks) or
	// local-chat-completions (generation tasks only).
	Model      string   `json:"model,omitempty"`
	NumFewshot *int     `json:"num_fewshot,omitempty"`
	BatchSize  any      `json:"batch_size,omitempty"`
	Limit      *float64 `json:"limit,omitempty"`
	// ApplyChatTemplate defaults to true with the chat model, which requires it.
	ApplyChatTemplate *bool `json:"apply_chat_template,omitempty"`
	// Tokenizer and TokenizerBackend tell lm_eval how to count the prompt's tokens,
	// which loglikelihood tasks need (e.g. a Hugging Face tokenizer id and
	// "huggingface", or "remote" for a server with a tokenize endpoint).
	Tokenizer        string `json:"tokenizer,omitempty"`
	TokenizerBackend string `json:"tokenizer_backend,omitempty"`
}

// ParseConfig reads an engine_config.
func ParseConfig(raw json.RawMessage) (Config, error) {
	var c Config
	if err := adapter.DecodeConfig(raw, &c); err != nil {
		return c, fmt.Errorf("lm-eval: %w", err)
	}
	if len(c.Tasks) == 0 {
		return c, evalflow.Permanent(errors.New("lm-eval: engine_config.tasks: at least one task is required"))
	}
	if c.Model == "" {
		c.Model = ModelCompletions
	}
	return c, nil
}

// Output folders under the job's output directory.
const (
	// OutputSubdir receives lm_eval's own results and samples files.
	OutputSubdir = "lm-eval"
	// CacheName is lm_eval's response cache (--use_cache): a restarted job asks the
	// endpoint nothing it already answered.
	CacheName = "lm-eval-cache"
)

// Args is the lm_eval command line (without the program) for spec. It holds no
// secret: lm_eval reads the API key from OPENAI_API_KEY (adapter.OpenAIKeyEnv).
func Args(spec evalflow.JobSpec, c Config) ([]string, error) {
	endpoint := evalflow.APIBase(spec.Model.URL) + "/completions"
	chat := c.Model == ModelChatCompletions
	if chat {
		endpoint = evalflow.APIBase(spec.Model.URL) + "/chat/completions"
	} else if c.Model != ModelCompletions {
		return nil, evalflow.Permanent(fmt.Errorf("lm-eval: engine_config.model: %q is not %s or %s", c.Model, ModelCompletions, ModelChatCompletions))
	}
	concurrency := spec.Concurrency
	if concurrency == 0 {
		concurrency = evalflow.DefaultConcurrency
	}
	modelArgs := []arg{
		{"model", spec.Model.Name, "model.name"},
		{"base_url", endpoint, "model.url"},
		{"num_concurrent", strconv.Itoa(concurrency), ""},
		{"tokenized_requests", "False", ""},
	}
	if t := spec.Options.RequestTimeoutSeconds; t > 0 {
		modelArgs = append(modelArgs, arg{"timeout", strconv.Itoa(t), ""})
	}
	if c.Tokenizer != "" {
		modelArgs = append(modelArgs, arg{"tokenizer", c.Tokenizer, "engine_config.tokenizer"})
	}
	if c.TokenizerBackend != "" {
		modelArgs = append(modelArgs, arg{"tokenizer_backend", c.TokenizerBackend, "engine_config.tokenizer_backend"})
	}
	kv := make([]string, 0, len(modelArgs))
	for _, a := range modelArgs {
		// lm_eval splits model_args on commas; a value with one would be cut in two.
		if a.value == "" || strings.Contains(a.value, ",") {
			return nil, evalflow.Permanent(fmt.Errorf("lm-eval: %s: %q cannot be passed in model_args (empty or holds a comma)", a.field, a.value))
		}
		kv = append(kv, a.key+"="+a.value)
	}
	args := []string{
		"--model", c.Model,
		"--model_args", strings.Join(kv, ","),
		"--tasks", strings.Join(c.Tasks, ","),
		"--output_path", outputPath(spec),
		"--log_samples",
		"--use_cache", cachePath(spec),
	}
	if c.NumFewshot != nil {
		args = append(args, "--num_fewshot", strconv.Itoa(*c.NumFewshot))
	}
	if c.BatchSize != nil {
		args = append(args, "--batch_size", fmt.Sprint(c.BatchSize))
	}
	if c.Limit != nil {
		args = append(args, "--limit", strconv.FormatFloat(*c.Limit, 'f', -1, 64))
	}
	if (c.ApplyChatTemplate == nil && chat) || (c.ApplyChatTemplate != nil && *c.ApplyChatTemplate) {
		args = append(args, "--apply_chat_template")
	}
	return args, nil
}

type arg struct{ key, value, field string }

func outputPath(spec evalflow.JobSpec) string { return filepath.Join(spec.OutputDir, OutputSubdir) }
func cachePath(spec evalflow.JobSpec) string  { return filepath.Join(spec.OutputDir, CacheName) }

// permanentSigns are what lm_eval prints when its job can never run.
var permanentSigns = []string{
	"Tasks not found",
	"Loglikelihood is not supported",
	"Tokenizer is required for loglikelihood",
	"not a valid model identifier", // the tokenizer (by default the model's name) is not on the Hugging Face Hub
	"is not supported for chat completions",
}

// External is lm-evaluation-harness as an external engine: lm_eval ($LM_EVAL, or on
// PATH) run with the job's command line, progress from its request bars, and its
// output read into evalflow's.
func External() external.Engine {
	var c Config
	return external.Engine{
		Name: Engine, Program: "lm_eval", ProgramEnv: "LM_EVAL",
		Prepare: func(spec evalflow.JobSpec) ([]string, error) {
			var err error
			if c, err = ParseConfig(spec.EngineConfig); err != nil {
				return nil, err
			}
			return Args(spec, c)
		},
		Scan: Scan,
		Read: func(spec evalflow.JobSpec) (*evalflow.Results, []results.Sample, error) {
			return Read(outputPath(spec), spec, c)
		},
		PermanentSigns: permanentSigns,
	}
}
