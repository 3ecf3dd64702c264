package function

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/testserver"
)

const runID = "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b"

func verify(t *testing.T, p *testserver.Pipeline, req evalflow.Request) (*evalflow.Run, string) {
	t.Helper()
	cfg := p.With(map[string]string{"VERIFY_TIMEOUT": "1s"})
	f := New()
	if err := f.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	defer f.Stop(context.Background())
	req.EvalRequestID = runID
	req.Datasets = []evalflow.DatasetSpec{{Name: "mmlu", Limit: 1}}
	p.Store.Create(context.Background(), evalflow.NewRun(req, time.Now()), map[string]string{"api_key": req.APIKey, "kubeconfig": req.Kubeconfig})
	started := cloudevent.New(evalflow.StepStart, evalflow.TypeStarted, runID, evalflow.RunRef{RunID: runID})

	reply, err := f.Handle(context.Background(), started)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.Handle(context.Background(), started) // a duplicate
	if err != nil {
		t.Fatal(err)
	}

	r, _ := p.Store.Get(context.Background(), runID)
	if reply == nil {
		t.Fatalf("no reply; run %s %q", r.Status, r.Message)
	}
	if again != nil && again.ID() != reply.ID() {
		t.Fatalf("a duplicate replied a different event: %v", again)
	}
	return r, reply.Type()
}

func TestVerifyPassesAServedModel(t *testing.T) {
	p := testserver.NewPipeline(t)
	url := testserver.Ollama(t, 0)

	r, reply := verify(t, p, evalflow.Request{ModelName: testserver.Model, BaseURL: url})

	if reply != evalflow.TypeVerified || r.Status != evalflow.StatusVerifying {
		t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
	}
}

func TestVerifyFailsAModelTheEndpointDoesNotServe(t *testing.T) {
	p := testserver.NewPipeline(t)
	url := testserver.Ollama(t, 0)

	r, reply := verify(t, p, evalflow.Request{ModelName: "gpt-9", BaseURL: url + "/v1"})

	if reply != evalflow.TypeFailed || r.Status != evalflow.StatusFailed ||
		!strings.Contains(r.Message, `model_name "gpt-9"`) || !strings.Contains(r.Message, testserver.Model) {
		t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
	}
}

func TestVerifyFailsAnEndpointThatDoesNotAnswer(t *testing.T) {
	p := testserver.NewPipeline(t)
	port := testserver.FreePort(t)

	r, reply := verify(t, p, evalflow.Request{ModelName: "m", BaseURL: fmt.Sprintf("http://127.0.0.1:%d", port)})

	if reply != evalflow.TypeFailed || !strings.Contains(r.Message, "does not answer") {
		t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
	}
}

// ollama takes any key, so a refused key can only be caused by a stand-in endpoint.
func TestVerifyReportsARefusedAPIKey_FakeEndpoint(t *testing.T) {
	p := testserver.NewPipeline(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer right-key" {
			http.Error(w, "bad key", http.StatusUnauthorized)
		}
	}))
	defer srv.Close()

	r, reply := verify(t, p, evalflow.Request{ModelName: "m", BaseURL: srv.URL, APIKey: "wrong-key"})

	if reply != evalflow.TypeFailed || !strings.Contains(r.Message, "refused the api_key") || strings.Contains(r.Message, "wrong-key") {
		t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
	}
}

func TestVerifyFailsAKubernetesTargetSayingItIsNotBuiltYet(t *testing.T) {
	p := testserver.NewPipeline(t)
	kubeconfig := "apiVersion: v1\nclusters:\n- cluster: {server: https://127.0.0.1:6443}\n  name: c\n"

	r, reply := verify(t, p, evalflow.Request{ModelName: "m", BaseURL: "http://127.0.0.1:1", Kubeconfig: kubeconfig})

	if reply != evalflow.TypeFailed || r.Target != evalflow.TargetKubernetes || !strings.Contains(r.Message, "kubernetes targets") {
		t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
	}
	for _, k := range p.Redis.Keys(context.Background(), "*").Val() {
		if strings.Contains(p.Redis.Dump(context.Background(), k).Val(), "127.0.0.1:6443") {
			t.Fatalf("redis key %s holds the kubeconfig in clear", k)
		}
	}
}
