// Package openai is a small client for OpenAI-compatible chat completions, with
// retries (exponential backoff with jitter, honouring 429 Retry-After), a per-request
// timeout and an optional request rate limit.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"golang.org/x/time/rate"
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
	Model       string  `json:"model"`
	Prompt      string  `json:"prompt"`
	MaxTokens   int     `json:"max_tokens"`
	Temperature float64 `json:"temperature"`
	Echo        bool    `json:"echo,omitempty"`
	Logprobs    int     `json:"logprobs,omitempty"`
	Seed        *int    `json:"seed,omitempty"`
}

// CompletionResponse is the part of a text completion evalflow reads.
type CompletionResponse struct {
	Choices []struct {
		Text     string `json:"text"`
		Logprobs *struct {
			Tokens        []string   `json:"tokens"`
			TokenLogprobs []*float64 `json:"token_logprobs"`
			TextOffset    []int      `json:"text_offset"`
		} `json:"logprobs"`
	} `json:"choices"`
	Usage Usage `json:"usage"`
}

// ErrNoPromptLogprobs says the endpoint did not score the echoed prompt.
var ErrNoPromptLogprobs = errors.New("the endpoint returned no log-probabilities for the echoed prompt (echo + logprobs)")

// ContinuationLogprob sums the log-probabilities of the echoed tokens that start in
// the byte range [from, to): the log-likelihood of a continuation (a generated token
// past the echo is left out).
func (r *CompletionResponse) ContinuationLogprob(from, to int) (float64, error) {
	if len(r.Choices) == 0 || r.Choices[0].Logprobs == nil || len(r.Choices[0].Logprobs.TextOffset) == 0 {
		return 0, ErrNoPromptLogprobs
	}
	lp := r.Choices[0].Logprobs
	sum, n := 0.0, 0
	for i, off := range lp.TextOffset {
		if off >= from && off < to && i < len(lp.TokenLogprobs) && lp.TokenLogprobs[i] != nil {
			sum += *lp.TokenLogprobs[i]
			n++
		}
	}
	if n == 0 {
		return 0, ErrNoPromptLogprobs
	}
	return sum, nil
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

func post[T any](ctx context.Context, c *Client, path string, req any) (*T, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 10 * time.Second
	return backoff.Retry(ctx, func() (*T, error) { return once[T](ctx, c, path, body) },
		backoff.WithBackOff(b), backoff.WithMaxTries(orDefault(c.MaxTries, 8)),
		backoff.WithMaxElapsedTime(orDefault(c.MaxElapsed, 5*time.Minute)))
}

func once[T any](ctx context.Context, c *Client, path string, body []byte) (*T, error) {
	if c.Limiter != nil {
		if err := c.Limiter.Wait(ctx); err != nil {
			return nil, backoff.Permanent(err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(c.Timeout, 60*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return nil, backoff.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err // network: retry
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		body := string(bytes.TrimSpace(msg))
		if c.APIKey != "" { // an endpoint (or a proxy) may echo the key back
			body = strings.ReplaceAll(body, c.APIKey, "[redacted]")
		}
		se := &StatusError{Status: resp.StatusCode, Body: body}
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
			se.RetryAfter = time.Duration(secs) * time.Second
		}
		switch {
		case resp.StatusCode == http.StatusTooManyRequests && se.RetryAfter > 0:
			return nil, backoff.RetryAfter(int(se.RetryAfter.Seconds()))
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			return nil, se
		}
		return nil, backoff.Permanent(se)
	}
	var out T
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode %s answer: %w", path, err)
	}
	return &out, nil
}

func orDefault[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}
