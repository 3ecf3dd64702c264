package function

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/oci"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
)

const runID = "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f"

type fixture struct {
	f *Function
	p *pipelinetest.Pipeline
}

// setup makes a run whose job finished with results, and the artifact step pushing to
// the destination ociEnv names.
func setup(t *testing.T, ociEnv map[string]string) *fixture {
	t.Helper()
	p := pipelinetest.New(t)
	results := t.TempDir()
	ociEnv["EVALFLOW_RESULTS_DIR"] = results
	cfg := p.With(ociEnv)
	f := New()
	if err := f.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Stop(context.Background()) })
	ctx := context.Background()
	r := evalflow.NewRun(evalflow.Request{EvalRequestID: runID, ModelName: "m", BaseURL: "http://127.0.0.1:1",
		Datasets: []evalflow.DatasetSpec{{Name: "mmlu", Limit: 1}}}, time.Now())
	p.Store.Create(ctx, r, nil)
	for _, s := range []evalflow.Status{evalflow.StatusVerifying, evalflow.StatusDeploying, evalflow.StatusRunning} {
		pipelinetest.Update(ctx, p.Store, runID, func(r *evalflow.Run) error { return r.Advance(s, time.Now()) })
	}
	dir := filepath.Join(results, runID)
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, evalflow.ResultsFile), []byte(`{"summary":{"scores":{"mmlu":0.25},"samples":4}}`), 0o644)
	os.WriteFile(filepath.Join(dir, evalflow.SamplesFile), []byte(`{"task":"mmlu_anatomy","doc_id":0}`+"\n"), 0o644)
	return &fixture{f: f, p: p}
}

func (fx *fixture) deliverConcurrently(t *testing.T, n int) []string {
	ready := cloudevent.New(evalflow.StepWatch, evalflow.TypeResultsReady, runID, evalflow.RunRef{RunID: runID})
	fx.f.Sign(&ready, runID)
	return testserver.DeliverConcurrently(t, n, fx.f.Handle, ready)
}

func TestArtifactIsPushedOnceToTheOCILayout(t *testing.T) {
	layout := t.TempDir()
	fx := setup(t, map[string]string{"EVALFLOW_OCI_LAYOUT": layout})

	replies := fx.deliverConcurrently(t, 8)

	r, _ := fx.p.Store.Get(context.Background(), runID)
	if r.Status != evalflow.StatusSucceeded || r.Artifact == nil || !strings.HasPrefix(r.Artifact.Reference, "oci-layout://"+layout+":"+runID+"@sha256:") {
		t.Fatalf("run %s artifact %+v", r.Status, r.Artifact)
	}
	if len(replies) != 1 || replies[0] != evalflow.TypeSucceeded.String() {
		t.Fatalf("replies %v; want one run.succeeded", replies)
	}
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	b, _ := os.ReadFile(filepath.Join(layout, "index.json"))
	json.Unmarshal(b, &index)
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != r.Artifact.Digest {
		t.Fatalf("layout index has %d manifests %+v; want one, %s", len(index.Manifests), index.Manifests, r.Artifact.Digest)
	}
}

func TestArtifactGoesToARegistryWithBasicAuth(t *testing.T) {
	registry := testserver.Registry(t, "pusher", "pw-31337")
	fx := setup(t, map[string]string{"EVALFLOW_REGISTRY": registry + "/evalflow/results", "EVALFLOW_REGISTRY_PLAIN_HTTP": "true",
		"EVALFLOW_REGISTRY_USERNAME": "pusher", "EVALFLOW_REGISTRY_PASSWORD": "pw-31337"})

	replies := fx.deliverConcurrently(t, 4)

	r, _ := fx.p.Store.Get(context.Background(), runID)
	if r.Status != evalflow.StatusSucceeded || !strings.HasPrefix(r.Artifact.Reference, registry+"/evalflow/results:"+runID+"@") {
		t.Fatalf("run %s %q artifact %+v", r.Status, r.Message, r.Artifact)
	}
	if len(replies) != 1 {
		t.Fatalf("replies %v; want one", replies)
	}
	for _, e := range fx.p.Sink.Got("/") {
		if strings.Contains(string(e.Data()), "pw-31337") {
			t.Fatal("an event carries the registry password")
		}
	}
}

func TestArtifactWithWrongRegistryCredentialsIsRedelivered(t *testing.T) {
	registry := testserver.Registry(t, "pusher", "pw-31337")
	fx := setup(t, map[string]string{"EVALFLOW_REGISTRY": registry + "/evalflow/results", "EVALFLOW_REGISTRY_PLAIN_HTTP": "true",
		"EVALFLOW_REGISTRY_USERNAME": "pusher", "EVALFLOW_REGISTRY_PASSWORD": "wrong"})
	ready := cloudevent.New(evalflow.StepWatch, evalflow.TypeResultsReady, runID, evalflow.RunRef{RunID: runID})
	fx.f.Sign(&ready, runID)

	_, err := fx.f.HandleEvent(context.Background(), ready)

	r, _ := fx.p.Store.Get(context.Background(), runID)
	if err == nil || r.Status != evalflow.StatusStoring || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("err %v, run %s; want an error (redeliver) that shows no password, the run still storing", err, r.Status)
	}
}

// TestAKubernetesRunsArtifactIsWrittenOverWhatItsJobPushed: a Job pushed the results
// under the staging tag (its results directory is not evalflow's); artifact writes the
// run's manifest over the same layers, once, in a real registry.
func TestAKubernetesRunsArtifactIsWrittenOverWhatItsJobPushed(t *testing.T) {
	registry := testserver.Registry(t, "pusher", "pw-31337")
	fx := setup(t, map[string]string{"EVALFLOW_REGISTRY": registry + "/evalflow/results", "EVALFLOW_REGISTRY_PLAIN_HTTP": "true",
		"EVALFLOW_REGISTRY_USERNAME": "pusher", "EVALFLOW_REGISTRY_PASSWORD": "pw-31337"})
	ctx := context.Background()
	pipelinetest.Update(ctx, fx.p.Store, runID, func(r *evalflow.Run) error {
		r.Target = evalflow.TargetKubernetes
		return nil
	})
	dest, err := oci.Open(oci.Config{Registry: registry + "/evalflow/results", PlainHTTP: true, Username: "pusher", Password: "pw-31337"})
	if err != nil {
		t.Fatal(err)
	}
	job := t.TempDir() // what the Job wrote, elsewhere than the results directory
	os.WriteFile(filepath.Join(job, evalflow.ResultsFile), []byte(`{"summary":{"scores":{"gsm8k":0.75},"samples":4}}`), 0o644)
	os.WriteFile(filepath.Join(job, evalflow.SamplesFile), []byte(`{"task":"gsm8k","doc_id":3}`+"\n"), 0o644)
	if _, _, err := dest.Push(ctx, oci.Artifact{Tag: evalflow.StagingTag(runID), Created: time.Now(), Files: []oci.File{
		{Path: filepath.Join(job, evalflow.ResultsFile), MediaType: oci.MediaTypeSummary},
		{Path: filepath.Join(job, evalflow.SamplesFile), MediaType: oci.MediaTypeSamples}}}); err != nil {
		t.Fatal(err)
	}

	replies := fx.deliverConcurrently(t, 4)

	r, _ := fx.p.Store.Get(ctx, runID)
	if r.Status != evalflow.StatusSucceeded || len(replies) != 1 || !strings.HasPrefix(r.Artifact.Reference, registry+"/evalflow/results:"+runID+"@"+r.Artifact.Digest) {
		t.Fatalf("run %s %q artifact %+v replies %v", r.Status, r.Message, r.Artifact, replies)
	}
	samples, err := dest.FetchLayer(ctx, runID, oci.MediaTypeSamples)
	if err != nil || string(samples) != `{"task":"gsm8k","doc_id":3}`+"\n" {
		t.Fatalf("the run's artifact holds samples %q (%v); want the Job's", samples, err)
	}
	if _, err := dest.FetchLayer(ctx, evalflow.StagingTag(runID), oci.MediaTypeSummary); err == nil {
		t.Fatal("the staging tag outlives the run's artifact")
	}
}

// A Job packs its staged results as the run's artifact is packed (oci.Results, with
// the run's time), so the two manifests can be one: dropping the staging tag then
// must not delete the run's artifact with it.
func TestAKubernetesRunsArtifactSurvivesAStagedManifestItEquals(t *testing.T) {
	registry := testserver.Registry(t, "", "")
	fx := setup(t, map[string]string{"EVALFLOW_REGISTRY": registry + "/evalflow/results", "EVALFLOW_REGISTRY_PLAIN_HTTP": "true"})
	ctx := context.Background()
	r, err := pipelinetest.Update(ctx, fx.p.Store, runID, func(r *evalflow.Run) error {
		r.Target = evalflow.TargetKubernetes
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dest, err := oci.Open(oci.Config{Registry: registry + "/evalflow/results", PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	job := t.TempDir()
	os.WriteFile(filepath.Join(job, evalflow.ResultsFile), []byte(`{"summary":{"scores":{"gsm8k":0.75},"samples":4}}`), 0o644)
	os.WriteFile(filepath.Join(job, evalflow.SamplesFile), []byte(`{"task":"gsm8k","doc_id":3}`+"\n"), 0o644)
	if _, _, err := dest.Push(ctx, oci.Results(job, evalflow.StagingTag(runID), runID, r.ModelName, r.Datasets, r.CreatedAt)); err != nil {
		t.Fatal(err)
	}

	fx.deliverConcurrently(t, 2)

	r, _ = fx.p.Store.Get(ctx, runID)
	if r.Status != evalflow.StatusSucceeded {
		t.Fatalf("run %s %q", r.Status, r.Message)
	}
	if samples, err := dest.FetchLayer(ctx, runID, oci.MediaTypeSamples); err != nil || len(samples) == 0 {
		t.Fatalf("the run's artifact %s is gone from the registry: %v", r.Artifact.Reference, err)
	}
}

func TestAKubernetesRunWhoseJobPushedNothingFails(t *testing.T) {
	registry := testserver.Registry(t, "", "")
	fx := setup(t, map[string]string{"EVALFLOW_REGISTRY": registry + "/evalflow/results", "EVALFLOW_REGISTRY_PLAIN_HTTP": "true"})
	ctx := context.Background()
	pipelinetest.Update(ctx, fx.p.Store, runID, func(r *evalflow.Run) error {
		r.Target = evalflow.TargetKubernetes
		return nil
	})

	replies := fx.deliverConcurrently(t, 2)

	r, _ := fx.p.Store.Get(ctx, runID)
	if r.Status != evalflow.StatusFailed || !strings.Contains(r.Message, evalflow.StagingTag(runID)) || len(replies) != 1 || replies[0] != evalflow.TypeFailed.String() {
		t.Fatalf("run %s %q replies %v; want it failed naming the staging tag", r.Status, r.Message, replies)
	}
}
