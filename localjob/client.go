package localjob

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

// Client calls a Server.
type Client struct {
	URL   string
	Token string // the server's Token
	HTTP  *http.Client
}

// Create creates the job; evalflow.ErrJobExists when it exists.
func (c *Client) Create(ctx context.Context, spec evalflow.JobSpec, secrets evalflow.JobSecrets) error {
	body, _ := json.Marshal(CreateRequest{Spec: spec, APIKey: secrets.APIKey, ReportKey: secrets.ReportKey})
	resp, err := c.do(ctx, http.MethodPut, spec.ID, body)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		return nil
	case http.StatusConflict:
		return evalflow.ErrJobExists
	case http.StatusUnprocessableEntity:
		return fmt.Errorf("%w: engine %q", ErrNoProgram, spec.Engine)
	}
	return fmt.Errorf("localjob: create job %s: %s", spec.ID, resp.Status)
}

// Delete stops and removes the job.
func (c *Client) Delete(ctx context.Context, name string) error {
	resp, err := c.do(ctx, http.MethodDelete, name, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("localjob: delete job %s: %s", name, resp.Status)
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, name string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+"/jobs/"+name, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("localjob: %s job %s: %w", method, name, err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("localjob: %s job %s: %w", method, name, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}
