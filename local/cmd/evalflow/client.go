package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.api+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
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
	if err := c.do(ctx, http.MethodGet, "/evals/"+id, nil, &r); err != nil {
		return nil, fmt.Errorf("get run %s: %w", id, err)
	}
	return &r, nil
}
