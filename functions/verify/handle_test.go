package function

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/evalflow/evalflow/devkit/localserver"
	"github.com/evalflow/evalflow/devkit/testserver"
	evalflow "github.com/evalflow/evalflow/shared"
	"github.com/evalflow/evalflow/shared/cloudevent"
	"github.com/evalflow/evalflow/shared/pipeline/pipelinetest"
)

const runID = "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b"

func verify(t *testing.T, p *pipelinetest.Pipeline, req evalflow.Request) (*evalflow.Run, string) {
	t.Helper()
	return verifyIn(t, p, "", req)
}

// verifyIn verifies req's run; with ownCluster (a kubeconfig file), the run is one
// without a kubeconfig, in the deployment's own cluster, as start makes it.
func verifyIn(t *testing.T, p *pipelinetest.Pipeline, ownCluster string, req evalflow.Request) (*evalflow.Run, string) {
	t.Helper()
	settings := map[string]string{"VERIFY_TIMEOUT": "1s"}
	if ownCluster != "" {
		settings["EVALFLOW_OWN_CLUSTER"] = ownCluster
	}
	cfg := p.With(settings)
	f := New()
	if err := f.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	defer f.Stop(context.Background())
	req.EvalRequestID = runID
	req.Datasets = []evalflow.DatasetSpec{{Name: "mmlu", Limit: 1}}
	run := evalflow.NewRun(req, time.Now())
	if ownCluster != "" {
		run.Target, run.OwnCluster = evalflow.TargetKubernetes, true
	}
	p.Store.Create(context.Background(), run, map[string]string{"api_key": req.APIKey, "kubeconfig": req.Kubeconfig})
	started := cloudevent.New(evalflow.StepStart, evalflow.TypeStarted, runID, evalflow.RunRef{RunID: runID})
	f.Sign(&started, runID)

	reply, err := f.HandleEvent(context.Background(), started)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.HandleEvent(context.Background(), started) // a duplicate
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
	p := pipelinetest.New(t)
	url := testserver.Ollama(t, 0)

	r, reply := verify(t, p, evalflow.Request{ModelName: testserver.Model, BaseURL: url})

	if reply != evalflow.TypeVerified.String() || r.Status != evalflow.StatusVerifying {
		t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
	}
}

func TestVerifyFailsAModelTheEndpointDoesNotServe(t *testing.T) {
	p := pipelinetest.New(t)
	url := testserver.Ollama(t, 0)

	r, reply := verify(t, p, evalflow.Request{ModelName: "gpt-9", BaseURL: url + "/v1"})

	if reply != evalflow.TypeFailed.String() || r.Status != evalflow.StatusFailed ||
		!strings.Contains(r.Message, `model_name "gpt-9"`) || !strings.Contains(r.Message, testserver.Model) {
		t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
	}
}

func TestVerifyFailsAnEndpointThatDoesNotAnswer(t *testing.T) {
	p := pipelinetest.New(t)
	port := testserver.FreePort(t)

	r, reply := verify(t, p, evalflow.Request{ModelName: "m", BaseURL: fmt.Sprintf("http://127.0.0.1:%d", port)})

	if reply != evalflow.TypeFailed.String() || !strings.Contains(r.Message, "does not answer") {
		t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
	}
}

// ollama takes any key, so a refused key can only be caused by a stand-in endpoint.
func TestVerifyReportsARefusedAPIKey_FakeEndpoint(t *testing.T) {
	p := pipelinetest.New(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer right-key" {
			http.Error(w, "bad key", http.StatusUnauthorized)
		}
	}))
	defer srv.Close()

	r, reply := verify(t, p, evalflow.Request{ModelName: "m", BaseURL: srv.URL, APIKey: "wrong-key"})

	if reply != evalflow.TypeFailed.String() || !strings.Contains(r.Message, "refused the api_key") || strings.Contains(r.Message, "wrong-key") {
		t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
	}
}

// TestVerifyKubernetesTargets runs against a real kube-apiserver (RBAC).
func TestVerifyKubernetesTargets(t *testing.T) {
	deployer := localserver.KubeUser{Name: "deployer", Token: "deployer-token-7"}
	reader := localserver.KubeUser{Name: "reader", Token: "reader-token-7"}
	k := testserver.Kube(t, localserver.KubeOptions{Users: []localserver.KubeUser{deployer, reader}})
	admin := testserver.KubeAdmin(t, k)
	testserver.Namespace(t, admin, "evals")
	testserver.Grant(t, admin, "evals", deployer.Name, testserver.EvalRules)
	testserver.Grant(t, admin, "evals", reader.Name, []rbacv1.PolicyRule{{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"get"}}})
	// The model endpoint is the job's to reach, from inside the cluster: not asked here.
	const closed = "http://127.0.0.1:1"

	t.Run("a cluster that lets the credentials deploy passes", func(t *testing.T) {
		p := pipelinetest.New(t)
		r, reply := verify(t, p, evalflow.Request{ModelName: "m", BaseURL: closed, Kubeconfig: string(k.Kubeconfig(deployer.Token, "evals"))})
		if reply != evalflow.TypeVerified.String() || r.Target != evalflow.TargetKubernetes {
			t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
		}
		notes := p.Sink.OfType("/", evalflow.TypeNotification)
		if len(notes) == 0 || !strings.Contains(string(notes[len(notes)-1].Data()), `namespace \"evals\"`) ||
			!strings.Contains(string(notes[len(notes)-1].Data()), "its runner asks it before any sample") {
			t.Fatalf("notifications %v", notes)
		}
		for _, key := range p.Redis.Keys(context.Background(), "*").Val() {
			if strings.Contains(p.Redis.Dump(context.Background(), key).Val(), deployer.Token) {
				t.Fatalf("redis key %s holds the kubeconfig's token in clear", key)
			}
		}
	})

	t.Run("in evalflow's own cluster, the model endpoint is asked too", func(t *testing.T) {
		own := filepath.Join(t.TempDir(), "own.kubeconfig")
		if err := os.WriteFile(own, k.Kubeconfig(deployer.Token, "evals"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := pipelinetest.New(t)
		r, reply := verifyIn(t, p, own, evalflow.Request{ModelName: "m", BaseURL: closed})
		if reply != evalflow.TypeFailed.String() || !strings.Contains(r.Message, "model endpoint") {
			t.Fatalf("an endpoint that does not answer: reply %s, run %s %q", reply, r.Status, r.Message)
		}
		p = pipelinetest.New(t)
		r, reply = verifyIn(t, p, own, evalflow.Request{ModelName: testserver.Model, BaseURL: testserver.Ollama(t, 0)})
		notes := p.Sink.OfType("/", evalflow.TypeNotification)
		if reply != evalflow.TypeVerified.String() || len(notes) == 0 || !strings.Contains(string(notes[len(notes)-1].Data()), "the model endpoint serves "+testserver.Model) {
			t.Fatalf("a served model: reply %s, run %s %q, notifications %v", reply, r.Status, r.Message, notes)
		}
	})

	t.Run("missing permissions fail the run naming them", func(t *testing.T) {
		p := pipelinetest.New(t)
		r, reply := verify(t, p, evalflow.Request{ModelName: "m", BaseURL: closed, Kubeconfig: string(k.Kubeconfig(reader.Token, "evals"))})
		if reply != evalflow.TypeFailed.String() || !strings.Contains(r.Message, "may not create configmaps, get configmaps, create secrets, create jobs.batch, delete jobs.batch, list pods in namespace \"evals\"") {
			t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
		}
	})

	t.Run("a kubeconfig that would run a program is refused, the program never run", func(t *testing.T) {
		p := pipelinetest.New(t)
		pwned := filepath.Join(t.TempDir(), "pwned")
		kc := strings.Replace(string(k.Kubeconfig("x", "evals")), "    token: x\n",
			"    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, 'touch "+pwned+"'], interactiveMode: Never}\n", 1)
		r, reply := verify(t, p, evalflow.Request{ModelName: "m", BaseURL: closed, Kubeconfig: kc})
		if reply != evalflow.TypeFailed.String() || !strings.Contains(r.Message, "kubeconfig refused: unsafe: user user runs a program") {
			t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
		}
		if _, err := os.Stat(pwned); err == nil {
			t.Fatal("the kubeconfig's exec program ran")
		}
	})

	t.Run("a cluster that does not answer fails the run", func(t *testing.T) {
		p := pipelinetest.New(t)
		gone := *k
		gone.URL = fmt.Sprintf("https://127.0.0.1:%d", testserver.FreePort(t))
		r, reply := verify(t, p, evalflow.Request{ModelName: "m", BaseURL: closed, Kubeconfig: string(gone.Kubeconfig(deployer.Token, "evals"))})
		if reply != evalflow.TypeFailed.String() || !strings.Contains(r.Message, "is not reachable") {
			t.Fatalf("reply %s, run %s %q", reply, r.Status, r.Message)
		}
	})
}

// A base_url whose name resolves to an address the deployment refuses fails the run,
// at once and for good, and no request reaches it.
func TestVerifyRefusesAnAddressTheDeploymentDenies(t *testing.T) {
	p := pipelinetest.New(t)
	p.Config["EVALFLOW_BASE_URL_DENY"] = "127.0.0.0/8"
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { asked.Add(1) }))
	defer srv.Close()
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/v1" // a name: the check is where it leads

	r, reply := verify(t, p, evalflow.Request{ModelName: "m", BaseURL: url})

	if reply != evalflow.TypeFailed.String() || !strings.Contains(r.Message, "refused by the deployment's base_url policy") || asked.Load() != 0 {
		t.Fatalf("reply %s, run %s %q, %d requests", reply, r.Status, r.Message, asked.Load())
	}
}
