package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	evalflow "github.com/evalflow/evalflow/shared"
)

// client calls a running evalflow's API (local mode's start function, or a cluster's
// START_URL) as the caller of token.
type client struct {
	api   string
	token string
	http  *http.Client
}

func newClient(api, token string) *client {
	return &client{api: strings.TrimRight(api, "/"), token: token, http: http.DefaultClient}
}

// do sends method path with body as JSON (nil: none) and decodes a 2xx answer into
// out; any other answer is an error quoting the API's.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	b, err := c.raw(ctx, method, path, body)
	if err != nil || out == nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// raw sends method path with body as JSON (nil: none) and returns a 2xx answer's body.
func (c *client) raw(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.api+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 512<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, apiError(method, path, resp.Status, b)
	}
	return b, nil
}

// apiError is an error answer as a user reads it: the API's message, naming its
// field, and what to do about a missing token.
func apiError(method, path, status string, body []byte) error {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := string(bytes.TrimSpace(body))
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		msg = e.Error.Message
	}
	if e.Error.Code == string(evalflow.CodeUnauthenticated) {
		msg += " (set EVALFLOW_TOKEN; evalflow up prints the operator's)"
	}
	return fmt.Errorf("%s %s: %s: %s", method, path, status, msg)
}

// submit starts req and returns its run id.
func (c *client) submit(ctx context.Context, req evalflow.Request) (string, error) {
	var out struct {
		RunID string `json:"run_id"`
	}
	if err := c.do(ctx, http.MethodPost, "/evals/start", req, &out); err != nil {
		return "", fmt.Errorf("submit: %w", err)
	}
	return out.RunID, nil
}

// run reads run id.
func (c *client) run(ctx context.Context, id string) (*evalflow.Run, error) {
	var r evalflow.Run
	if err := c.do(ctx, http.MethodGet, "/evals/"+url.PathEscape(id), nil, &r); err != nil {
		return nil, fmt.Errorf("get run %s: %w", id, err)
	}
	return &r, nil
}

// list reads the caller's runs, newest first (status "": any).
func (c *client) list(ctx context.Context, status string, limit int) ([]*evalflow.Run, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Runs []*evalflow.Run `json:"runs"`
	}
	if err := c.do(ctx, http.MethodGet, "/evals?"+q.Encode(), nil, &out); err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	return out.Runs, nil
}

// cancel cancels run id.
func (c *client) cancel(ctx context.Context, id string) (*evalflow.Run, error) {
	var r evalflow.Run
	if err := c.do(ctx, http.MethodDelete, "/evals/"+url.PathEscape(id), nil, &r); err != nil {
		return nil, fmt.Errorf("cancel run %s: %w", id, err)
	}
	return &r, nil
}

// file reads one of run id's results files (results.json, samples.jsonl) as pushed.
func (c *client) file(ctx context.Context, id, name string) ([]byte, error) {
	b, err := c.raw(ctx, http.MethodGet, "/evals/"+url.PathEscape(id)+"/"+name, nil)
	if err != nil {
		return nil, fmt.Errorf("results of run %s: %w", id, err)
	}
	return b, nil
}

// compare sets runs side by side.
func (c *client) compare(ctx context.Context, ids []string) (*evalflow.Comparison, error) {
	var out evalflow.Comparison
	if err := c.do(ctx, http.MethodGet, "/compare?runs="+url.QueryEscape(strings.Join(ids, ",")), nil, &out); err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	return &out, nil
}

// deadLetters reads the events Triggers could not deliver (runID "": every run's).
func (c *client) deadLetters(ctx context.Context, runID string) ([]evalflow.DeadLetter, error) {
	q := url.Values{}
	if runID != "" {
		q.Set("run_id", runID)
	}
	var out struct {
		DeadLetters []evalflow.DeadLetter `json:"dead_letters"`
	}
	if err := c.do(ctx, http.MethodGet, "/deadletters?"+q.Encode(), nil, &out); err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	return out.DeadLetters, nil
}

// tasks is what the running evalflow can evaluate.
func (c *client) tasks(ctx context.Context) (evalflow.Catalogue, error) {
	var out evalflow.Catalogue
	if err := c.do(ctx, http.MethodGet, "/tasks", nil, &out); err != nil {
		return out, fmt.Errorf("tasks: %w", err)
	}
	return out, nil
}
