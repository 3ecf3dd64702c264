// Package function is evalflow's verify step: it checks that the run's target can run
// the evaluation — locally, that the model endpoint answers and serves model_name; on a
// Kubernetes target, that the cluster answers and the kubeconfig's credentials may
// create and follow the job.
package function

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/openai"
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
	if f.Env, err = pipeline.Open(ctx, evalflow.StepVerify, cfg); err != nil {
		return err
	}
	// The deployment's policy holds for every connection, whatever the name resolves to.
	f.http = &http.Client{Timeout: 5 * time.Second, Transport: f.Network.Transport()}
	return nil
}

// Handle serves the step's deliveries over HTTP, each in its own request's goroutine
// and context, from the broker alone where it has a delivery token (pipeline.Deliver).
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	f.Deliver(w, r, f.HandleEvent)
}

// HandleEvent verifies the run named by a run.started event and replies run.verified, or
// ends the run as failed saying why.
func (f *Function) HandleEvent(ctx context.Context, e event.Event) (*event.Event, error) {
	return f.Turn(ctx, e, evalflow.StatusVerifying, f.verify, pipeline.WithSecrets())
}

// verify checks where the run is to run: its cluster, or its model endpoint.
func (f *Function) verify(ctx context.Context, t *pipeline.Turn) (*event.Event, error) {
	run := t.Run
	if run.OnKubernetes() {
		return f.verifyCluster(ctx, run, t.Secrets)
	}
	if err := f.checkModel(ctx, run, t.Secrets[runstore.SecretAPIKey]); err != nil {
		return f.Settle(ctx, run.ID, "model endpoint", err)
	}
	if err := f.Notify(ctx, run, evalflow.NoteSucceeded, "model endpoint serves "+run.ModelName); err != nil {
		return nil, err
	}
	return f.Next(evalflow.TypeVerified, run.ID), nil
}

// verifyCluster checks that the run's cluster answers and lets its kubeconfig's
// credentials create and follow the evaluation job. The model endpoint is asked too
// where this step reaches what the Job will: in evalflow's own cluster. Another
// cluster's Job may reach an endpoint this step cannot: its runner asks the endpoint
// before any sample, and the run's timeline says so.
func (f *Function) verifyCluster(ctx context.Context, run *evalflow.Run, secrets map[string]string) (*event.Event, error) {
	cluster, err := f.ClusterOf(run, secrets[runstore.SecretKubeconfig])
	if err != nil {
		return f.Settle(ctx, run.ID, "cluster", err)
	}
	verify := cluster.Verify
	if run.RunsCode() { // and its sandbox pod, with the right to hand it the programs
		verify = cluster.VerifyWithSandbox
	}
	if err := pipeline.Within(ctx, f.cfg.Timeout, verify); err != nil {
		return f.Settle(ctx, run.ID, "cluster", err)
	}
	msg := fmt.Sprintf("cluster %s lets the credentials create the evaluation job in namespace %q", cluster.Server, cluster.Namespace)
	if run.OwnCluster {
		if err := f.checkModel(ctx, run, secrets[runstore.SecretAPIKey]); err != nil {
			return f.Settle(ctx, run.ID, "model endpoint", err)
		}
		msg += "; the model endpoint serves " + run.ModelName
	} else {
		msg += "; the model endpoint is the job's to reach, from inside that cluster: its runner asks it before any sample"
	}
	if err := f.Notify(ctx, run, evalflow.NoteSucceeded, msg); err != nil {
		return nil, err
	}
	return f.Next(evalflow.TypeVerified, run.ID), nil
}

// checkModel asks the endpoint's /models for model_name, retrying briefly where the
// endpoint does not answer. A wrong key, a missing model, or an endpoint that does not
// answer within the timeout fail the run: the job would fail the same way.
func (f *Function) checkModel(ctx context.Context, run *evalflow.Run, apiKey string) error {
	c := &openai.Client{BaseURL: evalflow.APIBase(run.BaseURL), APIKey: apiKey, HTTP: f.http,
		Timeout: 5 * time.Second, MaxElapsed: f.cfg.Timeout}
	models, err := c.Models(ctx)
	var status *openai.StatusError
	switch {
	case errors.As(err, &status) && (status.Status == http.StatusUnauthorized || status.Status == http.StatusForbidden):
		return evalflow.Permanent(fmt.Errorf("%s refused the api_key (%d)", c.BaseURL, status.Status))
	case errors.As(err, &status) && errors.Is(err, evalflow.ErrPermanent):
		return fmt.Errorf("%s/models answered %d: is base_url an OpenAI-compatible API? %w", c.BaseURL, status.Status, err)
	case err != nil: // still failing after MaxElapsed: as pipeline.Within, permanent
		return evalflow.Permanent(err)
	}
	ids := make([]string, len(models))
	for i, m := range models {
		if m.ID == run.ModelName || m.ID == run.ModelName+":latest" {
			return nil
		}
		ids[i] = m.ID
	}
	return evalflow.Permanent(fmt.Errorf("%s does not serve model_name %q (it serves: %s)", c.BaseURL, run.ModelName, strings.Join(ids, ", ")))
}
