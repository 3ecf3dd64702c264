// Package function is evalflow's verify step: it checks that the run's target can run
// the evaluation — locally, that the model endpoint answers and serves model_name; on a
// Kubernetes target, that the cluster answers and the kubeconfig's credentials may
// create and follow the job.
package function

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/cloudevents/sdk-go/v2/event"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/kube"
	"github.com/evalflow/evalflow/shared/pipeline"
	"github.com/evalflow/evalflow/shared/runstore"
)

// Config is verify's own configuration.
type Config struct {
	// Timeout bounds the whole check, retries included.
	Timeout time.Duration `env:"VERIFY_TIMEOUT, default=15s"`
}

// Function is the verify step.
type Function struct {
	*pipeline.Env // the store, the sender, the logger; Stop and Ready
	cfg           Config
	http          *http.Client
}

// New returns the function; Start connects it.
func New() *Function { return &Function{} }

// Start connects to Redis and the broker.
func (f *Function) Start(ctx context.Context, cfg map[string]string) (err error) {
	if err = pipeline.Load(ctx, cfg, &f.cfg); err != nil {
		return fmt.Errorf("verify: config: %w", err)
	}
	f.http = &http.Client{Timeout: 5 * time.Second}
	f.Env, err = pipeline.Open(ctx, evalflow.StepVerify, cfg)
	return err
}

// Handle verifies the run named by a run.started event and replies run.verified, or
// ends the run as failed saying why.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	id := f.RunID(e)
	if id == "" {
		return nil, nil
	}
	run, ok, err := f.Begin(ctx, id, evalflow.StatusVerifying)
	if err != nil || !ok {
		return nil, err
	}
	if run.Target == evalflow.TargetKubernetes {
		return f.verifyCluster(ctx, run)
	}
	apiKey, err := f.Store.Secret(ctx, id, runstore.SecretAPIKey)
	if err != nil {
		return nil, err
	}
	if err := f.checkModel(ctx, run, apiKey); err != nil {
		return f.Fail(ctx, id, "verify: "+err.Error())
	}
	if err := f.Notify(ctx, run, evalflow.NoteSucceeded, "model endpoint serves "+run.ModelName); err != nil {
		return nil, err
	}
	return f.Next(evalflow.TypeVerified, id), nil
}

// verifyCluster checks that the run's cluster answers and lets its kubeconfig's
// credentials create and follow the evaluation job. The model endpoint is not asked:
// it is the job's, and may be reachable only from inside that cluster.
func (f *Function) verifyCluster(ctx context.Context, run *evalflow.Run) (*event.Event, error) {
	cluster, err := f.Cluster(ctx, run.ID)
	if errors.Is(err, kube.ErrBadKubeconfig) {
		return f.Fail(ctx, run.ID, "verify: "+err.Error())
	}
	if err != nil {
		return nil, err
	}
	op := func() (struct{}, error) {
		err := cluster.Verify(ctx)
		if errors.Is(err, kube.ErrForbidden) || errors.Is(err, kube.ErrUnauthorized) {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	}
	if _, err := backoff.Retry(ctx, op, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(f.cfg.Timeout)); err != nil {
		return f.Fail(ctx, run.ID, "verify: "+err.Error())
	}
	msg := fmt.Sprintf("cluster %s lets the credentials create the evaluation job in namespace %q", cluster.Server, cluster.Namespace)
	if err := f.Notify(ctx, run, evalflow.NoteSucceeded, msg); err != nil {
		return nil, err
	}
	return f.Next(evalflow.TypeVerified, run.ID), nil
}

// checkModel asks the endpoint's /models for model_name, retrying briefly where the
// endpoint does not answer; a wrong key or a missing model fails at once.
func (f *Function) checkModel(ctx context.Context, run *evalflow.Run, apiKey string) error {
	url := evalflow.APIBase(run.BaseURL) + "/models"
	op := func() ([]string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, backoff.Permanent(err)
		}
		if apiKey != "" {
			req.Header.Set("Authorization", "Bearer "+apiKey)
		}
		resp, err := f.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("model endpoint %s does not answer: %w", url, err)
		}
		defer resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return nil, backoff.Permanent(fmt.Errorf("model endpoint %s refused the api_key (%s)", url, resp.Status))
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			return nil, fmt.Errorf("model endpoint %s answered %s", url, resp.Status)
		case resp.StatusCode != http.StatusOK:
			return nil, backoff.Permanent(fmt.Errorf("model endpoint %s answered %s: is base_url an OpenAI-compatible API?", url, resp.Status))
		}
		var list struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			return nil, backoff.Permanent(fmt.Errorf("model endpoint %s: /models is not an OpenAI model list: %w", url, err))
		}
		ids := make([]string, len(list.Data))
		for i, m := range list.Data {
			ids[i] = m.ID
		}
		return ids, nil
	}
	ids, err := backoff.Retry(ctx, op, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(f.cfg.Timeout))
	if err != nil {
		return err
	}
	for _, m := range ids {
		if m == run.ModelName || m == run.ModelName+":latest" {
			return nil
		}
	}
	return fmt.Errorf("model endpoint %s does not serve model_name %q (it serves: %s)", url, run.ModelName, strings.Join(ids, ", "))
}
