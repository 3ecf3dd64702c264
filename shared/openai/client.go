// Package openai is evalflow's one client of OpenAI-compatible endpoints (the runner's
// completions, verify's model list), with retries (exponential backoff with jitter,
// honouring Retry-After in seconds or as an HTTP date), a per-request timeout and an
// optional request rate limit. An answer no retry can change (a refused key, a bad
// request, no such path) is evalflow.ErrPermanent.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v5"
	"golang.org/x/time/rate"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/netpolicy"
)

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ChatRequest is a chat completion request.
type ChatRequest struct {
	Model       string    `json:"model"`
	Messages    []Message `json:"messages"`
	MaxTokens   int       `json:"max_tokens,omitempty"`
	Temperature float64   `json:"temperature"`
	Seed        *int      `json:"seed,omitempty"`
	Stop        []string  `json:"stop,omitempty"`
	Logprobs    bool      `json:"logprobs,omitempty"`
	TopLogprobs int       `json:"top_logprobs,omitempty"`
	TopP        *float64  `json:"top_p,omitempty"`
}

// TokenLogprob is a token with its log-probability.
type TokenLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
}

// Usage is the token accounting of a response.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// ChatResponse is the part of a chat completion evalflow reads.
type ChatResponse struct {
	Choices []struct {
		Message      Message `json:"message"`
		FinishReason string  `json:"finish_reason"`
		Logprobs     *struct {
			Content []Step `json:"content"`
		} `json:"logprobs"`
	} `json:"choices"`
	Usage Usage `json:"usage"`
}

// Step is one generated token with its log-probability and its alternatives.
type Step struct {
	TokenLogprob
	TopLogprobs []TokenLogprob `json:"top_logprobs"`
}

// Steps are the generated tokens with their alternatives, nil when the endpoint
// returned no logprobs.
func (r *ChatResponse) Steps() []Step {
	if len(r.Choices) == 0 || r.Choices[0].Logprobs == nil {
		return nil
	}
	return r.Choices[0].Logprobs.Content
}

// CompletionRequest is a (legacy) text completion request; with Echo and Logprobs it
// scores the prompt itself.
type CompletionRequest struct {
	Model       string   `json:"model"`
	Prompt      string   `json:"prompt"`
	MaxTokens   int      `json:"max_tokens"`
	Temperature float64  `json:"temperature"`
	Echo        bool     `json:"echo,omitempty"`
	Logprobs    int      `json:"logprobs,omitempty"`
	Seed        *int     `json:"seed,omitempty"`
	Stop        []string `json:"stop,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
}

// CompletionResponse is the part of a text completion evalflow reads.
type CompletionResponse struct {
	Choices []struct {
		Text     string              `json:"text"`
		Logprobs *completionLogprobs `json:"logprobs"`
	} `json:"choices"`
	Usage Usage `json:"usage"`
}

// completionLogprobs are a text completion's tokens, their log-probabilities and where
// each starts in the returned text.
type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []*float64           `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// ErrNoPromptLogprobs says the endpoint did not score the echoed prompt.
var ErrNoPromptLogprobs = errors.New("the endpoint returned no log-probabilities for the echoed prompt (echo + logprobs)")

// ContinuationLogprob is the log-likelihood of continuation after context: the sum of
// the log-probabilities of the echoed tokens that start within the continuation (a
// generated token past the echo is left out). Servers measure text_offset in their own
// unit: OpenAI and vLLM count characters (Python's str), others bytes; the unit is read
// off the answer (see countsBytes), so a prompt with ’, “ or é is scored where it ends.
func (r *CompletionResponse) ContinuationLogprob(context, continuation string) (float64, error) {
	ll, _, err := r.Continuation(context, continuation)
	return ll, err
}

// Continuation is ContinuationLogprob, and whether the continuation is the greedy one
// (lm-eval's is_greedy): each of its tokens as likely as the likeliest of its
// top_logprobs (to 1e-6, the servers' float32 arithmetic; lm-eval compares the two
// numbers as the server wrote them). A token without top_logprobs is taken as greedy.
func (r *CompletionResponse) Continuation(context, continuation string) (ll float64, greedy bool, err error) {
	if len(r.Choices) == 0 || r.Choices[0].Logprobs == nil || len(r.Choices[0].Logprobs.TextOffset) == 0 {
		return 0, false, ErrNoPromptLogprobs
	}
	lp := r.Choices[0].Logprobs
	from, to := utf8.RuneCountInString(context), utf8.RuneCountInString(context+continuation)
	if lp.countsBytes(context + continuation) {
		from, to = len(context), len(context)+len(continuation)
	}
	sum, n, greedy := 0.0, 0, true
	for i, off := range lp.TextOffset {
		if off >= from && off < to && i < len(lp.TokenLogprobs) && lp.TokenLogprobs[i] != nil {
			sum += *lp.TokenLogprobs[i]
			n++
			if i < len(lp.TopLogprobs) && len(lp.TopLogprobs[i]) > 0 {
				top := math.Inf(-1)
				for _, v := range lp.TopLogprobs[i] {
					top = max(top, v)
				}
				greedy = greedy && *lp.TokenLogprobs[i] >= top-1e-6
			}
		}
	}
	if n == 0 {
		return 0, false, ErrNoPromptLogprobs
	}
	return sum, greedy, nil
}

// countsBytes reports whether the echo of text measures text_offset in bytes rather than
// characters. A token whose bytes and characters differ in number says so by how far
// the next offset moves; failing that (byte-fallback tokens, one byte each), an offset
// past the text's length in characters can only be counted in bytes. Without either
// sign the two units agree wherever it matters, or the server follows OpenAI: characters.
func (lp *completionLogprobs) countsBytes(text string) bool {
	if len(text) == utf8.RuneCountInString(text) {
		return false // ASCII: the units agree
	}
	// The first token is skipped: servers shift it by a tokenizer's leading space.
	for i := 1; i+1 < len(lp.TextOffset) && i < len(lp.Tokens); i++ {
		bytes, chars := len(lp.Tokens[i]), utf8.RuneCountInString(lp.Tokens[i])
		switch advance := lp.TextOffset[i+1] - lp.TextOffset[i]; {
		case bytes == chars:
		case advance == bytes:
			return true
		case advance == chars:
			return false
		}
	}
	return slices.Max(lp.TextOffset) > utf8.RuneCountInString(text)
}

// Text is the first choice's text.
func (r *CompletionResponse) Text() string {
	if len(r.Choices) == 0 {
		return ""
	}
	return r.Choices[0].Text
}

// Text is the first choice's content.
func (r *ChatResponse) Text() string {
	if len(r.Choices) == 0 {
		return ""
	}
	return r.Choices[0].Message.Content
}

// StatusError is an HTTP error answer from the endpoint.
type StatusError struct {
	Status     int
	Body       string
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("endpoint answered %d: %s", e.Status, e.Body)
}

// Client calls one endpoint.
type Client struct {
	// BaseURL is the API root, e.g. http://127.0.0.1:11434/v1.
	BaseURL string
	APIKey  string
	HTTP    *http.Client
	// Limiter, when set, bounds the request rate.
	Limiter *rate.Limiter
	// Timeout bounds one attempt (default 60 s); MaxElapsed all attempts (default 5 min).
	Timeout    time.Duration
	MaxElapsed time.Duration
	// MaxTries bounds attempts per request (default 8).
	MaxTries uint
	// Observe, when set, is told of each attempt: its outcome ("ok", the answer's HTTP
	// status code, or "error" when none came), whether it retried an earlier attempt,
	// and the tokens an answer counted.
	Observe func(outcome string, retry bool, usage Usage)

	redactOnce sync.Once
	redactor   *evalflow.Redactor
}

// redact is what the client redacts from what an endpoint says: APIKey, in any form
// (evalflow.Redactor).
func (c *Client) redact() *evalflow.Redactor {
	c.redactOnce.Do(func() { c.redactor = evalflow.NewRedactor(c.APIKey) })
	return c.redactor
}

// maxErrorBody bounds what of an error answer is read (and redacted) before it is
// cut to errorBodyShown: a key that straddles the cut is found whole first.
const (
	maxErrorBody   = 64 << 10
	errorBodyShown = 512
)

// usageOf is the token accounting of an answer that has one.
func usageOf(v any) Usage {
	switch a := v.(type) {
	case *ChatResponse:
		if a != nil {
			return a.Usage
		}
	case *CompletionResponse:
		if a != nil {
			return a.Usage
		}
	}
	return Usage{}
}

// Chat sends a chat completion, retrying transient failures.
func (c *Client) Chat(ctx context.Context, req ChatRequest) (*ChatResponse, error) {
	out, err := post[ChatResponse](ctx, c, "/chat/completions", req)
	if err == nil && len(out.Choices) == 0 {
		return nil, errors.New("chat completion has no choices")
	}
	return out, err
}

// Complete sends a text completion, retrying transient failures.
func (c *Client) Complete(ctx context.Context, req CompletionRequest) (*CompletionResponse, error) {
	out, err := post[CompletionResponse](ctx, c, "/completions", req)
	if err == nil && len(out.Choices) == 0 {
		return nil, errors.New("completion has no choices")
	}
	return out, err
}

// Model is an entry of the endpoint's model list.
type Model struct {
	ID string `json:"id"`
}

// Models lists the models the endpoint serves (GET /models), retrying transient
// failures. An answer that is not a model list is evalflow.ErrPermanent.
func (c *Client) Models(ctx context.Context) ([]Model, error) {
	out, err := call[struct {
		Data []Model `json:"data"`
	}](ctx, c, http.MethodGet, "/models", nil)
	if err != nil {
		return nil, err
	}
	return out.Data, nil
}

func post[T any](ctx context.Context, c *Client, path string, req any) (*T, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	return call[T](ctx, c, http.MethodPost, path, body)
}

func call[T any](ctx context.Context, c *Client, method, path string, body []byte) (*T, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 10 * time.Second
	attempt := 0
	return backoff.Retry(ctx, func() (*T, error) {
		attempt++
		out, outcome, err := once[T](ctx, c, method, path, body)
		if c.Observe != nil && outcome != "" {
			c.Observe(outcome, attempt > 1, usageOf(out))
		}
		return out, err
	},
		backoff.WithBackOff(b), backoff.WithMaxTries(orDefault(c.MaxTries, 8)),
		backoff.WithMaxElapsedTime(orDefault(c.MaxElapsed, 5*time.Minute)))
}

// once makes one attempt; outcome says how it went ("" when none was made).
func once[T any](ctx context.Context, c *Client, method, path string, body []byte) (_ *T, outcome string, _ error) {
	if c.Limiter != nil {
		if err := c.Limiter.Wait(ctx); err != nil {
			return nil, "", backoff.Permanent(err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(c.Timeout, 60*time.Second))
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return nil, "", backoff.Permanent(evalflow.Permanent(err))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if errors.Is(err, netpolicy.ErrRefused) { // the deployment's policy: no retry changes it
		return nil, "", backoff.Permanent(evalflow.Permanent(fmt.Errorf("%s: %w", c.BaseURL, err)))
	}
	if err != nil {
		return nil, "error", fmt.Errorf("%s does not answer: %w", c.BaseURL, err) // network: retry
	}
	defer resp.Body.Close()
	code := strconv.Itoa(resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		body := c.redact().Clip(string(bytes.TrimSpace(msg)), errorBodyShown) // an endpoint (or a proxy) may echo the key back
		se := &StatusError{Status: resp.StatusCode, Body: body, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
		switch {
		case (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) && se.RetryAfter > 0:
			return nil, code, backoff.RetryAfter(int(math.Ceil(se.RetryAfter.Seconds())))
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			return nil, code, se
		}
		return nil, code, backoff.Permanent(evalflow.Permanent(se))
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBytes))
	if err != nil {
		return nil, "error", fmt.Errorf("%s%s: reading the answer: %w", c.BaseURL, path, err)
	}
	answer = c.redact().Bytes(answer) // echoed back, in any form: never into samples or results
	var out T
	if err := json.Unmarshal(answer, &out); err != nil {
		err = fmt.Errorf("%s%s is not an OpenAI-compatible answer: %w", c.BaseURL, path, err)
		if method == http.MethodGet { // a listing is not cut short by load: it is the wrong API
			err = backoff.Permanent(evalflow.Permanent(err))
		}
		return nil, "error", err
	}
	return &out, "ok", nil
}

// MaxAnswerBytes bounds an answer the client reads (a listing of many models, a long
// generation with logprobs fit many times over).
const MaxAnswerBytes = 64 << 20

// retryAfter reads a Retry-After header: seconds, or an HTTP date (RFC 9110 §10.2.3);
// 0 for none, an unreadable one, or a time past.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if secs, err := strconv.Atoi(h); err == nil {
		return time.Duration(max(secs, 0)) * time.Second
	}
	if at, err := http.ParseTime(h); err == nil && at.After(now) {
		return at.Sub(now)
	}
	return 0
}

func orDefault[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}
