package evalflow

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxRequestBytes bounds the body of a start request (a kubeconfig fits easily).
const MaxRequestBytes = 1 << 20

// Request is what a caller submits to start an evaluation.
type Request struct {
	EvalRequestID string        `json:"eval_request_id"`
	ModelName     string        `json:"model_name"`
	BaseURL       string        `json:"base_url"`
	APIKey        string        `json:"api_key,omitempty"`
	Kubeconfig    string        `json:"kubeconfig,omitempty"`
	Datasets      []DatasetSpec `json:"datasets"`
	Source        string        `json:"source,omitempty"`
	SourceTopic   string        `json:"source_topic,omitempty"`
	// Concurrency is how many requests the runner keeps in flight (0: sized to the
	// endpoint by the runner).
	Concurrency int `json:"concurrency,omitempty"`
	// Options tune how the runner treats the endpoint.
	Options *RunOptions `json:"options,omitempty"`
	// Engine names the evaluation engine in the registry ("" is the built-in runner);
	// EngineConfig is its config, validated against the engine's JSON Schema.
	Engine       string          `json:"engine,omitempty"`
	EngineConfig json.RawMessage `json:"engine_config,omitempty"`
}

// DefaultEngine is the built-in runner's name in the engine registry.
const DefaultEngine = "evalflow"

// RunOptions tune how the runner treats the endpoint. Zero values mean defaults.
type RunOptions struct {
	// RequestsPerSecond caps the request rate (0: no cap).
	RequestsPerSecond float64 `json:"requests_per_second,omitempty"`
	// TokensPerMinute caps prompt + completion tokens a minute, estimated before each
	// request (0: no cap).
	TokensPerMinute int `json:"tokens_per_minute,omitempty"`
	// RequestTimeoutSeconds bounds one attempt (default 60).
	RequestTimeoutSeconds int `json:"request_timeout_seconds,omitempty"`
	// MaxErrorRate is the share of samples that may still fail after retries; past it
	// the run fails with the count and the last errors (default 0: none may).
	MaxErrorRate float64 `json:"max_error_rate,omitempty"`
	// CostPer1KPromptTokens and CostPer1KCompletionTokens price the run's tokens in
	// the summary (any currency).
	CostPer1KPromptTokens     float64 `json:"cost_per_1k_prompt_tokens,omitempty"`
	CostPer1KCompletionTokens float64 `json:"cost_per_1k_completion_tokens,omitempty"`
	// GenerationAPI is how generated samples are asked: "chat" (the default: the prompt
	// as one user message to /chat/completions, as lm-eval's local-chat-completions) or
	// "completions" (the raw prompt to /completions, as lm-eval's local-completions:
	// a base model is evaluated exactly as lm-eval evaluates it).
	GenerationAPI string `json:"generation_api,omitempty"`
	// FewshotTurns is how a chat request holds a task's few-shot examples: "multi"
	// (the default, as lm-eval's --apply_chat_template: each example a user turn and an
	// assistant turn, then the question) or "single" (--fewshot_as_multiturn false:
	// examples and question in one user message).
	FewshotTurns string `json:"fewshot_turns,omitempty"`
	// NoProgressSeconds is how long a run may go without a finished sample before it
	// fails, saying the endpoint answered nothing (default DefaultNoProgress).
	NoProgressSeconds int `json:"no_progress_seconds,omitempty"`
}

// FewshotAsMultiturn reports whether a chat request holds few-shot examples as turns.
func (o *RunOptions) FewshotAsMultiturn() bool { return o == nil || o.FewshotTurns != "single" }

// validate checks every option is in its range, naming it.
func (o *RunOptions) validate() error {
	switch {
	case o == nil:
		return nil
	case o.RequestsPerSecond < 0 || o.RequestsPerSecond > MaxRequestsPerSecond:
		return Invalidf("options.requests_per_second", "must be between 0 (no cap) and %d", MaxRequestsPerSecond)
	case o.TokensPerMinute < 0 || o.TokensPerMinute > MaxTokensPerMinute:
		return Invalidf("options.tokens_per_minute", "must be between 0 (no cap) and %d", MaxTokensPerMinute)
	case o.RequestTimeoutSeconds < 0 || o.RequestTimeoutSeconds > 3600:
		return Invalidf("options.request_timeout_seconds", "must be between 1 and 3600")
	case o.FewshotTurns != "" && o.FewshotTurns != "multi" && o.FewshotTurns != "single":
		return Invalidf("options.fewshot_turns", "must be %q or %q, got %q", "multi", "single", clip(o.FewshotTurns))
	case o.NoProgressSeconds < 0 || o.NoProgressSeconds > 86400:
		return Invalidf("options.no_progress_seconds", "must be between 1 and 86400")
	case o.MaxErrorRate < 0 || o.MaxErrorRate > 1:
		return Invalidf("options.max_error_rate", "must be between 0 and 1")
	case o.CostPer1KPromptTokens < 0 || o.CostPer1KPromptTokens > MaxCostPer1K:
		return Invalidf("options.cost_per_1k_prompt_tokens", "must be between 0 and %d", MaxCostPer1K)
	case o.CostPer1KCompletionTokens < 0 || o.CostPer1KCompletionTokens > MaxCostPer1K:
		return Invalidf("options.cost_per_1k_completion_tokens", "must be between 0 and %d", MaxCostPer1K)
	case o.GenerationAPI != "" && o.GenerationAPI != GenerationChat && o.GenerationAPI != GenerationCompletions:
		return Invalidf("options.generation_api", "must be %q or %q, got %q", GenerationChat, GenerationCompletions, clip(o.GenerationAPI))
	}
	return nil
}

// DefaultNoProgress is how long a run may go without a finished sample, by default.
const DefaultNoProgress = 3 * time.Minute

// NoProgress is how long a run with options o may go without a finished sample.
func (o *RunOptions) NoProgress() time.Duration {
	if o == nil || o.NoProgressSeconds == 0 {
		return DefaultNoProgress
	}
	return time.Duration(o.NoProgressSeconds) * time.Second
}

// Generation APIs (RunOptions.GenerationAPI).
const (
	GenerationChat        = "chat"
	GenerationCompletions = "completions"
)

// Bounds of the options: far above any real endpoint's, far from overflowing what
// they are multiplied with.
const (
	MaxRequestsPerSecond = 100_000
	MaxTokensPerMinute   = 1_000_000_000
	MaxCostPer1K         = 1_000_000
)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// DecodeRequest reads a JSON request strictly: unknown fields, trailing data, wrong
// types and oversized bodies are errors naming the field. The result is validated.
func DecodeRequest(r io.Reader) (Request, error) {
	var req Request
	body, err := io.ReadAll(io.LimitReader(r, MaxRequestBytes+1))
	if err != nil {
		return req, &Error{Code: CodeInvalid, Field: "body", Message: "cannot read", Err: err}
	}
	if len(body) > MaxRequestBytes {
		return req, Invalidf("body", "larger than %d bytes", MaxRequestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, jsonError(err)
	}
	if dec.More() {
		return req, Invalidf("body", "unexpected data after the JSON object")
	}
	return req, req.Validate()
}

func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return Invalidf(field, "must be a JSON %s", jsonKind(typeErr.Type.Kind().String()))
	case errors.As(err, &syntaxErr):
		return Invalidf("body", "not valid JSON (at byte %d)", syntaxErr.Offset)
	case errors.Is(err, io.EOF):
		return Invalidf("body", "empty; a JSON object is required")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return Invalidf(name, "unknown field")
	}
	return &Error{Code: CodeInvalid, Field: "body", Message: "not a valid request", Err: err}
}

func jsonKind(k string) string {
	switch k {
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	case "int", "int64":
		return "integer"
	}
	return k
}

// Validate checks every field and returns the first problem, naming its field.
func (r *Request) Validate() error {
	if r.EvalRequestID == "" {
		return Invalidf("eval_request_id", "is required")
	}
	if !uuidRE.MatchString(r.EvalRequestID) {
		return Invalidf("eval_request_id", "must be a UUID, got %q", clip(r.EvalRequestID))
	}
	r.EvalRequestID = strings.ToLower(r.EvalRequestID)
	if err := checkText("model_name", r.ModelName, 256, true); err != nil {
		return err
	}
	if err := checkBaseURL("base_url", r.BaseURL); err != nil {
		return err
	}
	if len(r.APIKey) > 4096 {
		return Invalidf("api_key", "longer than 4096 bytes")
	}
	if strings.ContainsFunc(r.APIKey, unicode.IsControl) {
		return Invalidf("api_key", "contains control characters")
	}
	if len(r.Kubeconfig) > MaxRequestBytes/2 {
		return Invalidf("kubeconfig", "larger than %d bytes", MaxRequestBytes/2)
	}
	if r.Kubeconfig != "" && !strings.Contains(r.Kubeconfig, "clusters") {
		return Invalidf("kubeconfig", "not a kubeconfig (no clusters)")
	}
	if err := checkText("source", r.Source, 1024, false); err != nil {
		return err
	}
	if err := checkText("source_topic", r.SourceTopic, 256, false); err != nil {
		return err
	}
	return validateWork(r.Engine, r.Concurrency, r.Options, r.Datasets)
}

// validateWork checks what a run evaluates and how (a request's, a job spec's): the
// same rules wherever a spec comes from.
func validateWork(engine string, concurrency int, opts *RunOptions, datasets []DatasetSpec) error {
	if concurrency < 0 || concurrency > 256 {
		return Invalidf("concurrency", "must be between 1 and 256")
	}
	if err := opts.validate(); err != nil {
		return err
	}
	if engine != "" && engine != DefaultEngine && len(datasets) == 0 {
		return nil // an external engine takes what to evaluate from engine_config
	}
	if len(datasets) == 0 {
		return Invalidf("datasets", "at least one dataset is required (known: %s)", knownNames())
	}
	seen := map[string]bool{}
	for i := range datasets {
		if err := datasets[i].validate(fmt.Sprintf("datasets[%d]", i)); err != nil {
			return err
		}
		// A name once; custom datasets once each task name (their results are by task).
		key, field := datasets[i].Name, "name"
		switch d := datasets[i]; {
		case d.TaskFile != "":
			key, field = "custom/"+d.TaskFile, "task_file"
		case d.TaskYAML != "":
			key, field = "custom/"+d.TaskYAML, "task_yaml"
		case d.Name == "custom":
			key, field = "custom/"+cmp.Or(d.Task, "custom"), "task"
		}
		if seen[key] {
			return Invalidf(fmt.Sprintf("datasets[%d].%s", i, field), "%q is listed twice", strings.TrimPrefix(key, "custom/"))
		}
		seen[key] = true
	}
	return nil
}

func checkBaseURL(field, s string) error {
	if s == "" {
		return Invalidf(field, "is required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return Invalidf(field, "not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Invalidf(field, "scheme must be http or https, got %q", clip(u.Scheme))
	}
	if u.Host == "" {
		return Invalidf(field, "has no host")
	}
	if u.User != nil {
		return Invalidf(field, "must not carry credentials; use api_key")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Invalidf(field, "must not have a query or fragment")
	}
	return nil
}

func checkText(field, s string, max int, required bool) error {
	switch {
	case s == "" && required:
		return Invalidf(field, "is required")
	case len(s) > max:
		return Invalidf(field, "longer than %d bytes", max)
	case strings.ContainsFunc(s, unicode.IsControl):
		return Invalidf(field, "contains control characters")
	case strings.ContainsRune(s, utf8.RuneError): // what JSON decoding makes of invalid UTF-8
		return Invalidf(field, "is not valid UTF-8")
	}
	return nil
}

// clip shortens a caller's value for an error message.
func clip(s string) string { return Clip(s, 64) }

// Clip shortens s to at most n bytes (whole characters), marking the cut with "…".
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
